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

SCRAM-SHA-256 (RFC 5802, RFC 7677) needs the stored credential of the
account: ``sasl.start(b"SCRAM-SHA-256", initial, scram=scram_source(portal))``.
It ends in :class:`IScramVerified` credentials, checked by the portal like a
password, so disabled accounts and the login throttle work the same.  SCRAM
never sends the password, so it is offered where clear text is not.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import os
from collections.abc import Callable
from typing import Any

import attrs
from twisted.cred.credentials import ICredentials, IUsernamePassword, UsernamePassword
from zope.interface import Attribute, Interface, implementer

from pymail.directory.passwords import SCRAM_ITERATIONS, SCRAM_SALT_OCTETS, parse_scram_credential

#: Clear-text mechanisms this module implements, in the order advertised.
CLEARTEXT_MECHANISMS: tuple[bytes, ...] = (b"PLAIN", b"LOGIN")
#: The mechanism that does not send the password (RFC 7677).
SCRAM_SHA_256 = b"SCRAM-SHA-256"
#: Octets of server nonce (before base64) added to the client's.
SCRAM_NONCE_OCTETS = 18
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


def mechanisms(policy: str, tls_active: bool, client_is_loopback: bool,
               scram: bool = False) -> list[bytes]:
    """
    The mechanism names to advertise on this connection now: SCRAM-SHA-256
    when ``scram`` (the portal can look up SCRAM credentials, see
    :func:`scram_source`), then PLAIN and LOGIN where clear text is allowed
    (RFC 4954 / RFC 3501 / RFC 5034 all say not to advertise what would be
    refused).
    """
    names = [SCRAM_SHA_256] if scram else []
    if cleartext_allowed(policy, tls_active, client_is_loopback):
        names.extend(CLEARTEXT_MECHANISMS)
    return names


class IScramVerified(ICredentials):
    """
    The outcome of a SCRAM exchange: ``username`` sent a ClientProof, and
    ``verified`` says whether it matched the stored credential.  A checker
    accepts it only when verified and the account may log in.
    """

    username = Attribute("The authentication identity, bytes.")
    verified = Attribute("Whether the ClientProof matched, bool.")


class IScramCredentialSource(Interface):
    """A checker that can hand out the stored SCRAM-SHA-256 credentials."""

    def scram_credential(username: str) -> str | None:
        """
        ``<iterations>:<salt>:<StoredKey>:<ServerKey>`` of an account that
        may log in, or None (unknown, disabled, or no SCRAM credential).
        """


@implementer(IScramVerified)
@attrs.frozen
class ScramVerified:
    username: bytes
    verified: bool


ScramLookup = Callable[[str], "str | None"]


def scram_source(portal: Any) -> ScramLookup | None:
    """
    The SCRAM credential lookup of ``portal``'s checker for
    :class:`IScramVerified` credentials, or None (then do not offer SCRAM).
    """
    checker = getattr(portal, "checkers", {}).get(IScramVerified)
    if checker is not None and IScramCredentialSource.providedBy(checker):
        return checker.scram_credential  # type: ignore[no-any-return]
    return None


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

    credentials: IUsernamePassword | IScramVerified = attrs.field(repr=False)

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


@functools.cache
def _dummy_secret() -> bytes:
    # Per process: the salt of a user without a credential is derived from it,
    # so it is stable between attempts, as a real one would be.
    return os.urandom(32)


def _saslname(value: bytes) -> bytes:
    # RFC 5802 section 5.1: ',' and '=' travel as =2C and =3D; any other '='.
    if b"\x00" in value:
        raise MalformedResponse("user name must not contain NUL")
    out = value.replace(b"=2C", b",").replace(b"=3D", b"\x00")
    if b"=" in out:
        raise MalformedResponse("SCRAM user name has a bad '=' escape")
    return out.replace(b"\x00", b"=")


def _attributes(message: bytes, names: bytes) -> list[bytes]:
    # A SCRAM message is comma-separated "a=value" attributes in a fixed order.
    parts = message.split(b",")
    if len(parts) < len(names):
        raise MalformedResponse("SCRAM message is missing attributes")
    values = []
    for name, part in zip(names, parts, strict=False):
        if part[:2] != bytes([name]) + b"=":
            raise MalformedResponse("SCRAM message has unexpected attributes")
        values.append(part[2:])
    return values


def _random_nonce() -> bytes:
    # Printable, no ',' (RFC 5802 section 5.1).
    return base64.b64encode(os.urandom(SCRAM_NONCE_OCTETS))


class ScramExchange:
    """
    The server side of SCRAM-SHA-256 (RFC 5802 section 5, RFC 7677), without
    channel binding.  ``lookup`` gives the stored credential of a user name;
    ``nonce`` the server's printable nonce part (random; injectable for tests).
    """

    def __init__(self, lookup: ScramLookup, nonce: Callable[[], bytes] | None = None) -> None:
        self._lookup = lookup
        self._nonce = nonce or _random_nonce
        self._next: Callable[[bytes], Step] = self.client_first

    def client_first(self, data: bytes) -> Step:
        # gs2-header "n,," (no channel binding, no authzid other than the
        # user), then "n=user,r=nonce[,extensions]".
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedResponse("SCRAM message must be UTF-8") from None
        if data.startswith(b"p="):
            raise MalformedResponse("SCRAM channel binding is not supported")
        if data[:2] not in (b"n,", b"y,"):
            raise MalformedResponse("SCRAM message must start with the gs2 header n,,")
        cbind, _, rest = data.partition(b",")
        authzid, comma, bare = rest.partition(b",")
        if not comma:
            raise MalformedResponse("SCRAM gs2 header is incomplete")
        if authzid and not authzid.startswith(b"a="):
            raise MalformedResponse("SCRAM gs2 header is malformed")
        if bare.startswith(b"m="):
            raise MalformedResponse("SCRAM extensions are not supported")
        user, client_nonce = _attributes(bare, b"nr")
        user = _check_text(_saslname(user), "user name")
        if authzid and _saslname(authzid[2:]).lower() != user.lower():
            raise MalformedResponse("authorization identity must be empty or the user name")
        if not client_nonce or any(c < 0x21 or c > 0x7E or c == 0x2C for c in client_nonce):
            raise MalformedResponse("SCRAM nonce must be printable")
        self._gs2 = cbind + b"," + authzid + b","
        self._user = user
        self._client_first_bare = bare
        name = user.decode("utf-8").strip().lower()
        stored = self._lookup(name)
        parsed = parse_scram_credential(stored) if stored is not None else None
        if parsed is None:
            # No account, or none that may use SCRAM: answer like for one, with
            # a salt that is stable per name, and let the proof fail.
            salt = hmac.new(_dummy_secret(), b"salt:" + name.encode(), hashlib.sha256).digest()
            parsed = (SCRAM_ITERATIONS, salt[:SCRAM_SALT_OCTETS], b"", b"")
        iterations, salt, self._stored_key, self._server_key = parsed
        self._known = stored is not None and self._stored_key != b""
        self._nonce_full = client_nonce + self._nonce()
        self._server_first = (b"r=" + self._nonce_full + b",s=" + base64.b64encode(salt)
                              + b",i=" + str(iterations).encode())
        self._next = self.client_final
        return Challenge(self._server_first)

    def client_final(self, data: bytes) -> Step:
        # "c=base64(gs2 header),r=nonce[,extensions],p=proof"
        without_proof, comma, proof_attr = data.rpartition(b",")
        if not comma or not proof_attr.startswith(b"p="):
            raise MalformedResponse("SCRAM final message must end with the proof")
        channel, nonce = _attributes(without_proof, b"cr")
        try:
            proof = base64.b64decode(proof_attr[2:], validate=True)
            gs2 = base64.b64decode(channel, validate=True)
        except (binascii.Error, ValueError):
            raise MalformedResponse("SCRAM attribute is not valid base64") from None
        if gs2 != self._gs2:
            raise MalformedResponse("SCRAM channel binding does not match the gs2 header")
        if not hmac.compare_digest(nonce, self._nonce_full):
            raise MalformedResponse("SCRAM nonce does not match")
        auth_message = self._client_first_bare + b"," + self._server_first + b"," + without_proof
        verified = False
        if self._known and len(proof) == hashlib.sha256().digest_size:
            signature = hmac.new(self._stored_key, auth_message, hashlib.sha256).digest()
            client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
            verified = hmac.compare_digest(hashlib.sha256(client_key).digest(), self._stored_key)
        if not verified:
            return Done(ScramVerified(self._user, False))  # type: ignore[arg-type]
        server_signature = hmac.new(self._server_key, auth_message, hashlib.sha256).digest()
        self._next = self.client_empty
        return Challenge(b"v=" + base64.b64encode(server_signature))

    def client_empty(self, data: bytes) -> Step:
        # RFC 5802 section 5: the server-final message went as a challenge;
        # the client answers it with an empty response.
        if data:
            raise MalformedResponse("SCRAM expects an empty response after the server signature")
        return Done(ScramVerified(self._user, True))  # type: ignore[arg-type]

    def __call__(self, data: bytes) -> Step:
        return self._next(data)


class Exchange:
    """One SASL exchange on the server side; see the module docstring."""

    def __init__(self, mechanism: bytes, initial: bytes | None,
                 scram: ScramLookup | None = None,
                 nonce: Callable[[], bytes] | None = None) -> None:
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
        elif mechanism == SCRAM_SHA_256 and scram is not None:
            self._next = ScramExchange(scram, nonce)
            self.step = Challenge(b"") if initial is None else self.respond(initial)
        else:
            raise UnknownMechanism("unsupported authentication mechanism")

    def respond(self, line: bytes) -> Step:
        """
        Take the client's next response line (base64, ``*`` or ``=``).

        :raises SASLError: cancelled or malformed; the exchange is over.
        """
        return self.feed(decode(line))

    def feed(self, data: bytes) -> Step:
        """Like :meth:`respond` for a response the protocol has base64-decoded already."""
        self.step = self._next(data)
        return self.step

    def _login_username(self, data: bytes) -> Step:
        self._username = _check_text(data, "user name")
        self._next = self._login_password
        return Challenge(b"Password:")

    def _login_password(self, data: bytes) -> Step:
        if not data or len(data) > 255:
            raise MalformedResponse("password must be 1 to 255 octets")
        return Done(UsernamePassword(self._username, data))


def start(mechanism: bytes, initial: bytes | None = None,
          scram: ScramLookup | None = None,
          nonce: Callable[[], bytes] | None = None) -> Exchange:
    """
    Begin an exchange.  ``mechanism`` is compared case-insensitively;
    ``initial`` is the initial response as sent (base64, or ``=`` for empty),
    ``None`` when the client sent none.  ``scram`` is the credential lookup
    (:func:`scram_source`) that enables SCRAM-SHA-256; ``nonce`` replaces the
    random server nonce (tests only).

    :raises UnknownMechanism: not PLAIN, LOGIN or (with ``scram``) SCRAM-SHA-256.
    :raises SASLError: the initial response is malformed.
    """
    return Exchange(mechanism.upper(), initial, scram, nonce)
