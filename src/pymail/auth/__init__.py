"""Authentication: the realm, the checkers and the portal every protocol logs in through."""
