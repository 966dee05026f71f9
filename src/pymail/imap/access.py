"""
Getting in: LOGIN (RFC 3501 section 6.2.3), AUTHENTICATE with the PLAIN
mechanism (RFC 4616), LOGIN or SCRAM-SHA-256 (RFC 7677; through
:mod:`pymail.auth.sasl`) and an initial response (SASL-IR, RFC 4959), and
STARTTLS (RFC 3501 section 6.2.1).

Plaintext passwords (LOGIN, PLAIN) are refused with ``LOGINDISABLED`` in
CAPABILITY until TLS is on, when the server has TLS to offer; a loopback
connection may be let off (``allow_plaintext_on_loopback``).  SCRAM-SHA-256
sends no password and is offered on every connection whose portal can look
up SCRAM credentials.
"""

from __future__ import annotations

import binascii
from typing import TYPE_CHECKING, Any

from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import LoginFailed, UnauthorizedLogin
from twisted.internet.interfaces import ISSLTransport
from twisted.logger import Logger

from pymail.auth import sasl
from pymail.imap.commands import Authenticate, Command, Login
from pymail.imap.dispatch import Reply, State
from pymail.imap.errors import bad, no
from pymail.interfaces import IAccount

if TYPE_CHECKING:
    from pymail.imap.server import IMAPServerProtocol

log = Logger()

#: SASL mechanisms offered (``AUTH=`` capabilities); LOGIN is the
#: obsolete user-then-password exchange some clients still prefer.
MECHANISMS = ("PLAIN", "LOGIN")
#: The mechanism that sends no password, offered without TLS too.
SCRAM = "SCRAM-SHA-256"
#: The longest SASL response accepted, base64 (a PLAIN response is small).
MAX_SASL_RESPONSE = 8 * 1024


def is_loopback(transport: Any) -> bool:
    """Whether the peer of ``transport`` is on 127.0.0.0/8 or ::1."""
    return sasl.is_loopback(getattr(transport.getPeer(), "host", None))


def is_tls(conn: IMAPServerProtocol) -> bool:
    """Whether the connection is encrypted (implicit TLS or after STARTTLS)."""
    return conn.tls_active or ISSLTransport.providedBy(conn.transport)


def plaintext_allowed(conn: IMAPServerProtocol) -> bool:
    """
    Whether a password may be sent in the clear on this connection.  Under
    the ``[security] cleartext_auth`` policy when one is given (``"tls"``,
    ``"loopback"``, ``"always"``); else always when the server has no TLS
    to offer, and otherwise only under TLS, or on loopback when allowed.
    """
    if is_tls(conn):
        return True
    if conn.cleartext_auth is not None:
        return sasl.cleartext_allowed(conn.cleartext_auth, False, is_loopback(conn.transport))
    if conn.tls is None:
        return True
    return conn.allow_plaintext_on_loopback and is_loopback(conn.transport)


def access_capabilities(conn: IMAPServerProtocol) -> list[str]:
    """The capabilities that depend on the connection: STARTTLS, LOGINDISABLED, AUTH=."""
    if conn.state is not State.NOT_AUTHENTICATED:
        return []
    caps = []
    if conn.tls is not None and not is_tls(conn):
        caps.append("STARTTLS")
    if sasl.scram_source(conn.portal) is not None:
        caps.append("AUTH=" + SCRAM)
    if plaintext_allowed(conn):
        caps.extend("AUTH=" + m for m in MECHANISMS)
    else:
        caps.append("LOGINDISABLED")
    return caps


def _refuse_plaintext() -> Exception:
    return no("plaintext authentication needs TLS first: use STARTTLS", "PRIVACYREQUIRED")


async def _log_in(conn: IMAPServerProtocol, user: bytes, password: bytes) -> Reply | None:
    return await _log_in_with(conn, UsernamePassword(user, password))


async def _log_in_with(conn: IMAPServerProtocol, credentials: Any) -> Reply | None:
    name = credentials.username.decode("utf-8", "replace")
    try:
        if conn.throttle is not None:
            # Repeated failures are slowed, then refused (pymail.auth.throttle).
            peer = getattr(conn.transport.getPeer(), "host", None)  # type: ignore[union-attr]
            _, avatar, logout = await conn.throttle.login(
                conn.portal, credentials, IAccount, peer=peer, service="imap"
            )
        else:
            _, avatar, logout = await conn.portal.login(credentials, None, IAccount)
    except (LoginFailed, UnauthorizedLogin):
        log.info("IMAP login failed for {user!r}", user=name)
        raise no("invalid user name or password", "AUTHENTICATIONFAILED") from None
    if conn.state is not State.NOT_AUTHENTICATED:
        # The connection went away while the portal was thinking.
        logout()
        return None
    conn.logged_in(avatar, logout)
    log.info("IMAP login for {user!r}", user=conn.account.address)
    return Reply("LOGIN completed", "CAPABILITY " + conn.capabilities())


async def handle_login(conn: IMAPServerProtocol, cmd: Command) -> Reply | None:
    args = cmd.args
    assert isinstance(args, Login)
    if not plaintext_allowed(conn):
        raise _refuse_plaintext()
    return await _log_in(conn, args.user, args.password)


def decode_plain(response: bytes) -> tuple[bytes, bytes]:
    """
    The user and password of a PLAIN response (RFC 4616):
    ``[authzid] NUL authcid NUL passwd``.

    :raises CommandFailed: malformed, or an authorisation identity other
        than the user (pymail has no proxy logins).
    """
    parts = response.split(b"\x00")
    if len(parts) != 3 or not parts[1]:
        raise bad("PLAIN response must be [authzid] NUL user NUL password")
    authzid, user, password = parts
    if authzid and authzid != user:
        raise no("logging in as another user is not supported", "AUTHORIZATIONFAILED")
    return user, password


def _b64(data: bytes) -> bytes:
    if data == b"=":
        return b""  # RFC 4959: an empty initial response
    try:
        return binascii.a2b_base64(data, strict_mode=True)
    except (binascii.Error, ValueError):
        raise bad("SASL response is not valid base64") from None


async def handle_authenticate(conn: IMAPServerProtocol, cmd: Command) -> Reply | None:
    args = cmd.args
    assert isinstance(args, Authenticate)
    scram = sasl.scram_source(conn.portal)
    if args.mechanism == SCRAM and scram is not None:
        return await _authenticate_sasl(conn, args.mechanism, args.initial, scram)
    if args.mechanism not in MECHANISMS:
        raise no(
            f"unsupported mechanism {args.mechanism!r} (offered: {' '.join(MECHANISMS)})",
            "CANNOT",
        )
    if not plaintext_allowed(conn):
        raise _refuse_plaintext()
    if args.mechanism == "LOGIN":
        return await _authenticate_sasl(conn, "LOGIN", args.initial)
    if args.initial is not None:
        raw = args.initial
    else:
        conn.send_raw(b"+ \r\n")
        raw = await conn.read_line()
        if raw == b"*":
            raise bad("AUTHENTICATE cancelled")
    if len(raw) > MAX_SASL_RESPONSE:
        raise bad(f"SASL response too long (max {MAX_SASL_RESPONSE} octets)")
    user, password = decode_plain(_b64(raw))
    reply = await _log_in(conn, user, password)
    if reply is None:
        return None
    return Reply("AUTHENTICATE completed", reply.code)


async def _authenticate_sasl(conn: IMAPServerProtocol, mechanism: str, initial: bytes | None,
                             scram: sasl.ScramLookup | None = None) -> Reply | None:
    """LOGIN (user name, then password) or SCRAM-SHA-256, run by :mod:`pymail.auth.sasl`."""
    try:
        exchange = sasl.start(mechanism.encode("ascii"), initial, scram=scram)
        step = exchange.step
        while isinstance(step, sasl.Challenge):
            conn.send_raw(b"+ " + step.encoded + b"\r\n")
            line = await conn.read_line()
            if len(line) > MAX_SASL_RESPONSE:
                raise bad(f"SASL response too long (max {MAX_SASL_RESPONSE} octets)")
            step = exchange.respond(line)
    except sasl.Cancelled:
        raise bad("AUTHENTICATE cancelled") from None
    except sasl.SASLError as e:
        raise bad(f"AUTHENTICATE: {e}") from None
    reply = await _log_in_with(conn, step.credentials)
    if reply is None:
        return None
    return Reply("AUTHENTICATE completed", reply.code)


async def handle_starttls(conn: IMAPServerProtocol, cmd: Command) -> Reply | None:
    if conn.tls is None:
        raise bad("STARTTLS is not offered: this server has no certificate configured")
    if is_tls(conn):
        raise bad("TLS is already active")
    tls = conn.tls

    def start() -> None:
        # RFC 3501 6.2.1 / RFC 2595 3.1: nothing sent before the handshake
        # counts; a man in the middle could have put it there.
        conn.discard_buffered_input()
        conn.tls_active = True
        conn.transport.startTLS(tls.creator)  # type: ignore[union-attr]

    conn.after_reply = start
    return Reply("Begin TLS negotiation now")
