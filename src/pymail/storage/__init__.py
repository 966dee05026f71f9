"""Storage backends behind :mod:`pymail.interfaces` (memory, Maildir)."""
