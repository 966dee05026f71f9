"""
Server-side SASL (RFC 4422), independent of the protocol that carries it.

IMAP ``AUTHENTICATE``, POP3 ``AUTH`` and SMTP ``AUTH`` all frame SASL the
same way: a mechanism name, an optional initial response, then base64 lines
answering base64 challenges, ``*`` to cancel.  This module does everything
between the framing and ``portal.login``::

    from pymail.auth import sasl

    names = sasl.mechanisms(policy, tls_active=..., client_is_loopback=...)
    # advertise `names` (CAPA "SASL PLAIN LOGIN", EHLO "AUTH PLAIN LOGIN",
    # CAPABILITY "AUTH=PLAIN AUTH=LOGIN"); [] means advertise nothing.

    exchange = sasl.start(b"PLAIN", initial)   # initial: the SASL-IR text or None
    step = exchange.step                        # first step
    while isinstance(step, sasl.Challenge):
        send(b"+ " + step.encoded)              # protocol's continuation
        step = exchange.respond(client_line)    # raises SASLError on bad input
    credentials = step.credentials              # a twisted.cred IUsernamePassword

Every error is a :class:`SASLError` subclass whose ``str()`` is safe to put
in a reply; it never contains the client's data.

SCRAM-SHA-256 is not offered: pymail's accounts file holds argon2id hashes,
from which no SCRAM key can be derived (it would need a ``{SCRAM-SHA-256}``
credential stored beside the password hash).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable

import attrs
from twisted.cred.credentials import IUsernamePassword, UsernamePassword

#: Clear-text mechanisms this module implements, in the order advertised.
CLEARTEXT_MECHANISMS: tuple[bytes, ...] = (b"PLAIN", b"LOGIN")
#: RFC 4616 section 2: authcid and passwd are at most 255 octets of UTF-8;
#: with the authzid and separators a PLAIN response fits well in this.
MAX_RESPONSE_OCTETS = 2048
#: The policies of ``[security] cleartext_auth``.
POLICIES = ("tls", "loopback", "always")


class SASLError(Exception):
    """The exchange failed; ``str()`` is a reason fit for the client."""


class UnknownMechanism(SASLError):
    """The client asked for a mechanism pymail does not offer."""


class Cancelled(SASLError):
    """The client sent ``*`` (RFC 4422 section 3.5)."""


class MalformedResponse(SASLError):
    """The response is not base64, too long, or not what the mechanism expects."""


def cleartext_allowed(policy: str, tls_active: bool, client_is_loopback: bool) -> bool:
    """
    Whether a password may be sent on this connection under ``policy`` (the
    ``[security] cleartext_auth`` value: ``"tls"``, ``"loopback"`` or
    ``"always"``).  Over TLS it always may.
    """
    if tls_active or policy == "always":
        return True
    return policy == "loopback" and client_is_loopback


def is_loopback(host: str | None) -> bool:
    """Whether a peer address (``transport.getPeer().host``) is loopback."""
    if not host:
        return False
    if host.startswith("::ffff:"):
        host = host[len("::ffff:"):]
    return host.startswith("127.") or host == "::1"


def mechanisms(policy: str, tls_active: bool, client_is_loopback: bool) -> list[bytes]:
    """
    The mechanism names to advertise on this connection now: PLAIN and
    LOGIN where clear text is allowed, else none (RFC 4954 / RFC 3501 /
    RFC 5034 all say not to advertise what would be refused).
    """
    if cleartext_allowed(policy, tls_active, client_is_loopback):
        return list(CLEARTEXT_MECHANISMS)
    return []


@attrs.frozen
class Challenge:
    """The server needs another response; ``encoded`` is the base64 to send."""

    data: bytes

    @property
    def encoded(self) -> bytes:
        return base64.b64encode(self.data)


@attrs.frozen
class Done:
    """The exchange is complete: check ``credentials`` with the portal."""

    credentials: IUsernamePassword = attrs.field(repr=False)

    @property
    def username(self) -> bytes:
        return self.credentials.username  # type: ignore[no-any-return]


Step = Challenge | Done


def decode(line: bytes) -> bytes:
    """
    One client response line to bytes: ``*`` cancels, ``=`` is an empty
    initial response (RFC 4959 / RFC 5034), anything else must be base64.

    :raises Cancelled: the line is ``*``.
    :raises MalformedResponse: not base64, or too long.
    """
    line = line.strip()
    if line == b"*":
        raise Cancelled("authentication cancelled")
    if line == b"=":
        return b""
    if len(line) > MAX_RESPONSE_OCTETS * 4 // 3 + 4:
        raise MalformedResponse("authentication response too long")
    try:
        return base64.b64decode(line, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedResponse("authentication response is not valid base64") from None


def _check_text(value: bytes, what: str) -> bytes:
    if not value or len(value) > 255:
        raise MalformedResponse(f"{what} must be 1 to 255 octets")
    if b"\x00" in value or b"\r" in value or b"\n" in value:
        raise MalformedResponse(f"{what} must not contain NUL, CR or LF")
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedResponse(f"{what} must be UTF-8") from None
    return value


def _parse_plain(message: bytes) -> Done:
    # RFC 4616 section 2: [authzid] NUL authcid NUL passwd
    parts = message.split(b"\x00")
    if len(parts) != 3:
        raise MalformedResponse("PLAIN response must be authzid NUL authcid NUL password")
    authzid, authcid, password = parts
    _check_text(authcid, "user name")
    if not password or len(password) > 255:
        raise MalformedResponse("password must be 1 to 255 octets")
    if authzid and authzid.lower() != authcid.lower():
        # Proxy authorization (acting as another user) is not offered.
        raise MalformedResponse("authorization identity must be empty or the user name")
    return Done(UsernamePassword(authcid, password))


class Exchange:
    """One SASL exchange on the server side; see the module docstring."""

    def __init__(self, mechanism: bytes, initial: bytes | None) -> None:
        self.mechanism = mechanism
        self._responses: list[bytes] = []
        self._next: Callable[[bytes], Step]
        if mechanism == b"PLAIN":
            self._next = _parse_plain
            self.step: Step = Challenge(b"") if initial is None else self.respond(initial)
        elif mechanism == b"LOGIN":
            # draft-murchison-sasl-login: "Username:" then "Password:".
            self._next = self._login_username
            if initial is None:
                self.step = Challenge(b"Username:")
            else:
                self.step = self.respond(initial)
        else:
            raise UnknownMechanism("unsupported authentication mechanism")

    def respond(self, line: bytes) -> Step:
        """
        Take the client's next response line (base64, ``*`` or ``=``).

        :raises SASLError: cancelled or malformed; the exchange is over.
        """
        self.step = self._next(decode(line))
        return self.step

    def _login_username(self, data: bytes) -> Step:
        self._username = _check_text(data, "user name")
        self._next = self._login_password
        return Challenge(b"Password:")

    def _login_password(self, data: bytes) -> Step:
        if not data or len(data) > 255:
            raise MalformedResponse("password must be 1 to 255 octets")
        return Done(UsernamePassword(self._username, data))


def start(mechanism: bytes, initial: bytes | None = None) -> Exchange:
    """
    Begin an exchange.  ``mechanism`` is compared case-insensitively;
    ``initial`` is the initial response as sent (base64, or ``=`` for empty),
    ``None`` when the client sent none.

    :raises UnknownMechanism: not PLAIN or LOGIN.
    :raises SASLError: the initial response is malformed.
    """
    return Exchange(mechanism.upper(), initial)
