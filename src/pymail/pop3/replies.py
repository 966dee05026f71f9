"""
The POP3 replies pymail sends, by meaning; shared by the server and its
tests.  Each is a status line without its CRLF; ``{}`` fields are filled with
``str.format``.

Response codes in brackets are those of RFC 2449 section 8 (``IN-USE``) and
RFC 3206 (``AUTH``, ``SYS/TEMP``, ``SYS/PERM``).
"""

from __future__ import annotations

GREETING = "+OK pymail POP3 server ready on {hostname}"
CAPA_FOLLOWS = "+OK capability list follows"
USER_ACCEPTED = "+OK send PASS"
LOGGED_IN = "+OK maildrop has {count} messages ({octets} octets)"
STAT = "+OK {count} {octets}"
LIST_FOLLOWS = "+OK {count} messages ({octets} octets)"
LIST_ONE = "+OK {number} {size}"
UIDL_FOLLOWS = "+OK unique-id listing follows"
UIDL_ONE = "+OK {number} {uidl}"
RETR_FOLLOWS = "+OK {size} octets"
TOP_FOLLOWS = "+OK top of message follows"
DELETED = "+OK message {number} deleted"
RSET_DONE = "+OK maildrop has {count} messages ({octets} octets)"
NOOP = "+OK"
SIGNING_OFF = "+OK pymail POP3 server signing off"
SIGNING_OFF_DELETED = "+OK pymail POP3 server signing off ({count} messages deleted)"

STLS_BEGIN = "+OK begin TLS negotiation"
AUTH_LIST = "+OK supported SASL mechanisms follow"

AUTH_FAILED = "-ERR [AUTH] authentication failed"
IN_USE = "-ERR [IN-USE] maildrop already locked by another POP3 session"
LOGIN_UNAVAILABLE = "-ERR [SYS/TEMP] cannot log in now, try again later"
MAILDROP_UNAVAILABLE = "-ERR [SYS/TEMP] cannot open the maildrop, try again later"
CLEARTEXT_REFUSED = "-ERR [AUTH] plain-text authentication needs TLS here: use STLS first"
BAD_USER_NAME = "-ERR user name must not contain NUL"
AUTH_UNKNOWN_MECHANISM = "-ERR unsupported authentication mechanism"
AUTH_MALFORMED = "-ERR {reason}"
AUTH_CANCELLED = "-ERR authentication cancelled"
STLS_UNAVAILABLE = "-ERR TLS is not configured on this server"
STLS_ALREADY = "-ERR TLS is already active"
STLS_AFTER_USER = "-ERR STLS must come before USER"
PASS_WITHOUT_USER = "-ERR send USER first"
UNKNOWN_COMMAND = "-ERR unknown command {command}"
UNKNOWN_COMMAND_UNPRINTABLE = "-ERR unknown command"
EMPTY_COMMAND = "-ERR empty command line"
WRONG_STATE = "-ERR {command} is not allowed in the {state} state"
SYNTAX = "-ERR syntax: {syntax}"
LINE_TOO_LONG = "-ERR command line too long (max {limit} octets with CRLF)"
BAD_MESSAGE_NUMBER = "-ERR {reason}"
MESSAGE_GONE = "-ERR message {number} was removed by another session"
STORAGE_FAILED = "-ERR [SYS/TEMP] cannot read message {number} now, try again later"
INTERNAL_ERROR = "-ERR [SYS/TEMP] internal server error, try again later"
UPDATE_FAILED = "-ERR [SYS/TEMP] some deleted messages not removed, try again later"
TOO_MANY_ERRORS = "{reply} (too many errors, closing the connection)"


def line(template: str, **fields: object) -> bytes:
    """A reply template filled in, as an ASCII status line with CRLF."""
    return (template.format(**fields) + "\r\n").encode("ascii", "backslashreplace")
