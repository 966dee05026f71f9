"""
Every reply the SMTP server gives, as named constants shared by the server,
the delivery policy and the tests.

Codes are RFC 5321 section 4.2; enhanced status codes RFC 3463 (and its
registry: RFC 5248), advertised with ENHANCEDSTATUSCODES (RFC 2034); AUTH
codes RFC 4954 section 6.  A reply whose text depends on the transaction
(the queue id, a parse error) is made from its constant with
:meth:`Reply.with_text` or :meth:`Reply.format`, so the code and enhanced
code stay in one place.
"""

from __future__ import annotations

import functools

import attrs

from pymail.errors import PymailError

#: Encoded replies kept (the constants, plus recent formatted ones).
REPLY_CACHE_SIZE = 256


@attrs.frozen
class Reply:
    """
    One SMTP reply.

    :ivar code: the three-digit reply code.
    :ivar enhanced: the RFC 3463 enhanced status code (``"2.0.0"``), or
        ``None`` for the replies that carry none (greeting, 334 challenges).
    :ivar text: the human-readable text; newlines make a multi-line reply.
    """

    code: int
    enhanced: str | None
    text: str

    @property
    def is_error(self) -> bool:
        """Whether this is a transient (4xx) or permanent (5xx) failure."""
        return self.code >= 400

    @property
    def permanent(self) -> bool:
        """Whether this is a permanent (5xx) failure."""
        return self.code >= 500

    # Made directly rather than with attrs.evolve, which inspects the class
    # on every call (a Reply is formatted for every message: "queued as").
    def with_text(self, text: str) -> Reply:
        """The same codes with other text."""
        return Reply(self.code, self.enhanced, text)

    def format(self, **fields: object) -> Reply:
        """The same codes with ``{name}`` fields of the text filled in."""
        return Reply(self.code, self.enhanced, self.text.format(**fields))

    def lines(self) -> list[str]:
        """The reply as it goes on the wire, one string per line, no CRLF."""
        texts = self.text.split("\n")
        prefix = f"{self.enhanced} " if self.enhanced else ""
        last = len(texts) - 1
        out = []
        for i, text in enumerate(texts):
            line = f"{self.code}{' ' if i == last else '-'}{prefix}{text}"
            # RFC 4954 section 4: a challenge is "334" SP [base64], even
            # when empty (s-nail drops the connection on a bare "334").
            out.append(line if self.code == 334 else line.rstrip(" "))
        return out

    def to_bytes(self) -> bytes:
        """The reply as it goes on the wire, every line ending in CRLF."""
        return _wire(self)

    def __str__(self) -> str:
        return " / ".join(self.lines())


@functools.lru_cache(maxsize=REPLY_CACHE_SIZE)
def _wire(reply: Reply) -> bytes:
    # The same few replies (250 2.1.0, 250 2.1.5, 354...) go out for every
    # message: encode each once.
    return "".join(line + "\r\n" for line in reply.lines()).encode("utf-8")


class ReplyError(PymailError):
    """
    Something refused with a specific SMTP reply (an unknown recipient,
    relaying denied...).  The server sends :attr:`reply` as it is.
    """

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


# Connection ------------------------------------------------------------------
READY_FOR_TLS = Reply(220, "2.0.0", "Ready to start TLS")
GREETING = Reply(220, None, "{hostname} ESMTP pymail")
CLOSING = Reply(221, "2.0.0", "Bye")
SHUTTING_DOWN = Reply(421, "4.3.2", "{hostname} Service shutting down, try again later")
TIMEOUT = Reply(421, "4.4.2", "{hostname} Timeout waiting for input, closing connection")
TOO_MANY_ERRORS = Reply(421, "4.7.0", "{hostname} Too many errors, closing connection")

# Generic commands ------------------------------------------------------------
OK = Reply(250, "2.0.0", "Ok")
HELO_OK = Reply(250, None, "{hostname} Hello {helo}")
HELP = Reply(
    214,
    "2.0.0",
    "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP AUTH STARTTLS\n"
    "See RFC 5321 (https://www.rfc-editor.org/rfc/rfc5321)",
)
VRFY_CANNOT = Reply(252, "2.1.5", "Cannot VRFY user, but will accept message and attempt delivery")
EXPN_DISABLED = Reply(502, "5.5.1", "EXPN is not available")
UNKNOWN_COMMAND = Reply(500, "5.5.2", "Command not recognised")
LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long (max {limit} octets)")
BARE_LINE_ENDING_IN_COMMAND = Reply(500, "5.5.2", "Command lines must end with CRLF")
COMMAND_NOT_IMPLEMENTED = Reply(502, "5.5.1", "{command} is not available on this port")
SYNTAX_ERROR = Reply(501, "5.5.4", "Syntax: {usage}")
BAD_HELO = Reply(501, "5.5.4", "HELO/EHLO needs a domain name or address literal")
BAD_SEQUENCE = Reply(503, "5.5.1", "{why}")
HELO_FIRST = BAD_SEQUENCE.format(why="Send HELO or EHLO first")
NESTED_MAIL = BAD_SEQUENCE.format(why="Sender already given; RSET to start over")
MAIL_FIRST = BAD_SEQUENCE.format(why="Send MAIL FROM first")
RCPT_FIRST = BAD_SEQUENCE.format(why="Send RCPT TO first")
NO_VALID_RECIPIENTS = Reply(554, "5.5.1", "No valid recipients")
LOCAL_ERROR = Reply(451, "4.3.0", "Local error in processing, try again later")

# MAIL FROM -------------------------------------------------------------------
SENDER_OK = Reply(250, "2.1.0", "Sender ok")
BAD_SENDER_SYNTAX = Reply(501, "5.1.7", "{why}")
PARAMETER_UNKNOWN = Reply(555, "5.5.4", "Unsupported parameter {name}")
PARAMETER_INVALID = Reply(501, "5.5.4", "Bad parameter {name}: {why}")
MESSAGE_TOO_BIG_FOR_SIZE = Reply(552, "5.3.4", "Message too big (max {limit} octets)")
AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")
SENDER_NOT_OWNED = Reply(
    553, "5.7.1", "Sender address <{sender}> is not owned by the authenticated user {user}"
)

# RCPT TO ---------------------------------------------------------------------
RECIPIENT_OK = Reply(250, "2.1.5", "Recipient ok")
BAD_RECIPIENT_SYNTAX = Reply(501, "5.1.3", "{why}")
RCPT_UNKNOWN_USER = Reply(550, "5.1.1", "No such user here: <{address}>")
RELAY_DENIED = Reply(554, "5.7.1", "Relay access denied for <{address}>")
OUTBOUND_RELAY_DISABLED = Reply(
    550, "5.7.1", "Outbound relay is not enabled on this server; cannot send to <{address}>"
)
ROUTED_ADDRESS_DENIED = Reply(
    550, "5.7.1", "Source routes, '%', '!' and '@' in the local part are not relayed: <{address}>"
)
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients (max {limit} per message)")
DIRECTORY_UNAVAILABLE = Reply(451, "4.3.0", "Cannot look up recipients now, try again later")

# DATA ------------------------------------------------------------------------
START_DATA = Reply(354, None, "End data with <CR><LF>.<CR><LF>")
TEXT_LINE_TOO_LONG = Reply(
    500, "5.5.2", "Message has a line longer than 1000 octets (RFC 5321 section 4.5.3.1.6)"
)
CHUNK_OK = Reply(250, "2.0.0", "{size} octets received")
BAD_BDAT = Reply(
    501, "5.5.4", "Syntax: BDAT <size> [LAST]; closing, as the chunk cannot be skipped"
)
QUEUED = Reply(250, "2.0.0", "Ok: queued as {queue_id}")
MESSAGE_TOO_BIG = Reply(552, "5.3.4", "Message too big (max {limit} octets)")
MAIL_LOOP = Reply(554, "5.4.6", "Mail loop detected (more than {limit} Received headers)")
BARE_LINE_ENDING = Reply(550, "5.6.0", "Message contains a bare CR or LF; lines must end with CRLF")
DELIVERY_FAILED = Reply(451, "4.3.0", "Could not store the message, try again later")

# AUTH (RFC 4954) -------------------------------------------------------------
AUTH_CHALLENGE = Reply(334, None, "{challenge}")
AUTH_OK = Reply(235, "2.7.0", "Authentication successful")
AUTH_FAILED = Reply(535, "5.7.8", "Authentication credentials invalid")
AUTH_CANCELLED = Reply(501, "5.0.0", "Authentication cancelled")
AUTH_BAD_BASE64 = Reply(501, "5.5.2", "Cannot decode the base64 response")
AUTH_MALFORMED = Reply(
    501, "5.5.2", "Malformed PLAIN response: expected authzid NUL authcid NUL passwd"
)
AUTH_SASL_MALFORMED = Reply(501, "5.5.2", "Malformed SASL response")
AUTH_UNKNOWN_MECHANISM = Reply(
    504, "5.5.4", "Unsupported mechanism {mechanism}; use PLAIN or LOGIN"
)
AUTH_ALREADY = BAD_SEQUENCE.format(why="Already authenticated")
AUTH_IN_TRANSACTION = BAD_SEQUENCE.format(why="AUTH is not allowed during a mail transaction")
ENCRYPTION_REQUIRED = Reply(
    538, "5.7.11", "Encryption required for requested authentication mechanism; use STARTTLS"
)
AUTH_TEMPORARY_FAILURE = Reply(454, "4.7.0", "Temporary authentication failure, try again later")
