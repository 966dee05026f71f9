"""
The outbound SMTP client: hands one queued message to one remote host.

pymail's own client on :class:`~twisted.protocols.basic.LineReceiver`,
sharing :class:`~pymail.smtp.replies.Reply` with the server (twisted.mail's
``ESMTPSender`` gives one result for the whole transaction, not one per
recipient, and cannot send DSN parameters).  It says EHLO with the
configured host name (HELO if EHLO is refused), starts TLS when offered
(opportunistic, unverified, as for any MX) or when required (a smarthost,
verified), logs in with AUTH PLAIN for a smarthost, and uses PIPELINING,
SIZE, 8BITMIME, SMTPUTF8 and DSN when the peer offers them.  Every
recipient gets its own reply.

Timeouts are those of RFC 5321 section 4.5.3.2.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IDelayedCall, IReactorTime, ITCPTransport
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure

from pymail.address import xtext_encode
from pymail.smtp.replies import Reply

log = Logger()

#: RFC 5321 section 4.5.3.2: the minimum times a client waits.
GREETING_TIMEOUT = 300.0
COMMAND_TIMEOUT = 300.0
DATA_INIT_TIMEOUT = 120.0
DATA_BLOCK_TIMEOUT = 180.0
DATA_END_TIMEOUT = 600.0
CONNECT_TIMEOUT = 30.0

#: A reply line longer than this is a broken peer.
MAX_REPLY_LINE = 4096
MAX_REPLY_LINES = 100

_ENHANCED = re.compile(r"([245]\.\d{1,3}\.\d{1,3}) ")


class SMTPClientError(Exception):
    """
    A failure that applies to every recipient of the attempt: the
    connection failed or the peer refused the transaction.

    :ivar reply: the reply (a made-up ``4xx`` for connection failures).
    :ivar try_next_host: the next MX host may do better (the failure was
        about this host or this connection, not the message).
    """

    def __init__(self, reply: Reply, *, try_next_host: bool) -> None:
        super().__init__(str(reply))
        self.reply = reply
        self.try_next_host = try_next_host


def parse_reply(lines: Sequence[bytes]) -> Reply:
    """A reply from its wire lines (without CRLF)."""
    code = int(lines[-1][:3])
    texts = []
    enhanced: str | None = None
    for line in lines:
        text = line[4:].decode("utf-8", "replace")
        match = _ENHANCED.match(text + " ")
        if match and str(code)[0] == match.group(1)[0]:
            enhanced = match.group(1)
            text = text[match.end():] if len(text) >= match.end() else ""
        texts.append(text)
    return Reply(code, enhanced, "\n".join(texts))


def dot_stuff(message: bytes) -> bytes:
    """``message`` (wire form) as sent after DATA, ending in ``CRLF.CRLF``."""
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    if message.startswith(b"."):
        message = b"." + message
    return message.replace(b"\r\n.", b"\r\n..") + b".\r\n"


@attrs.frozen
class OutboundRecipient:
    """One recipient to send to, with its DSN parameters."""

    address: str
    notify: tuple[str, ...] | None = None
    orcpt: str | None = None


@attrs.frozen
class OutboundMessage:
    """What to send: the envelope and the message (wire form)."""

    sender: str
    recipients: tuple[OutboundRecipient, ...]
    message: bytes
    ret: str | None = None
    envid: str | None = None
    smtputf8: bool = False
    body: str | None = None


@attrs.frozen
class AttemptResult:
    """
    The outcome of one transaction: one reply per recipient, in order.

    :ivar host: the host talked to, ``name [address]``.
    :ivar tls: whether the message went over TLS.
    :ivar dsn: whether the peer took the DSN parameters (it will notify).
    """

    host: str
    replies: tuple[Reply, ...]
    tls: bool = False
    dsn: bool = False


class SMTPClientProtocol(LineReceiver):
    """Reads replies; :meth:`reply` waits for the next one."""

    delimiter = b"\r\n"
    MAX_LENGTH = MAX_REPLY_LINE

    def __init__(self, reactor: IReactorTime) -> None:
        self._reactor = reactor
        self._lines: list[bytes] = []
        self._replies: list[Reply] = []
        self._waiting: list[Deferred[Reply]] = []
        self._timeout: IDelayedCall | None = None
        self._lost: Failure | None = None
        self.closed: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        if ITCPTransport.providedBy(self.transport):
            self.transport.setTcpNoDelay(True)

    def lineReceived(self, line: bytes) -> None:
        if len(line) < 3 or not line[:3].isdigit() or line[3:4] not in (b" ", b"-", b""):
            self._broken(f"malformed reply line {line[:80]!r}")
            return
        self._lines.append(line)
        if len(self._lines) > MAX_REPLY_LINES:
            self._broken("reply too long")
            return
        if line[3:4] == b"-":
            return
        lines, self._lines = self._lines, []
        reply = parse_reply(lines)
        if self._waiting:
            self._cancel_timeout()
            self._waiting.pop(0).callback(reply)
        else:
            self._replies.append(reply)

    def lineLengthExceeded(self, line: bytes) -> None:
        self._broken("reply line too long")

    def _broken(self, why: str) -> None:
        self._fail_waiting(SMTPClientError(
            Reply(451, "4.4.2", f"Broken SMTP peer: {why}"), try_next_host=True))
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def _fail_waiting(self, error: Exception) -> None:
        self._cancel_timeout()
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.errback(error)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._lost = reason or Failure(ConnectionError("connection lost"))
        self._fail_waiting(SMTPClientError(
            Reply(451, "4.4.2", f"Connection lost: {self._lost.getErrorMessage()}"),
            try_next_host=True,
        ))
        if not self.closed.called:
            self.closed.callback(None)

    def _cancel_timeout(self) -> None:
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        self._timeout = None

    def _timed_out(self) -> None:
        self._timeout = None
        self._fail_waiting(SMTPClientError(
            Reply(451, "4.4.2", "Timeout waiting for the remote server"), try_next_host=True))
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def reply(self, timeout: float = COMMAND_TIMEOUT) -> Deferred[Reply]:
        """The next reply (already received or still to come)."""
        if self._replies:
            from twisted.internet.defer import succeed

            return succeed(self._replies.pop(0))
        d: Deferred[Reply] = Deferred()
        if self._lost is not None:
            d.errback(SMTPClientError(Reply(451, "4.4.2", "Connection lost"), try_next_host=True))
            return d
        self._waiting.append(d)
        if self._timeout is None:
            self._timeout = self._reactor.callLater(timeout, self._timed_out)
        return d

    def send(self, *lines: str | bytes) -> None:
        data = b"".join(
            (line.encode("utf-8") if isinstance(line, str) else line) + b"\r\n" for line in lines
        )
        assert self.transport is not None
        self.transport.write(data)


def _extensions(ehlo: Reply) -> dict[str, str]:
    out = {}
    for line in ehlo.text.split("\n")[1:]:
        keyword, _, value = line.strip().partition(" ")
        out[keyword.upper()] = value
    return out


@attrs.define
class SMTPClient:
    """
    Sends messages to remote hosts.

    :ivar reactor: connects and keeps time.
    :ivar hostname: said in EHLO.
    :ivar port: the TCP port of remote hosts.
    :ivar bind_address: the local address to connect from, or ``""``.
    :ivar client_tls: makes TLS client connections for a host name and a
        "verify" flag: ``client_tls(host, verify)``; ``None`` disables TLS.
    :ivar require_tls: refuse to send without TLS (a smarthost).
    :ivar username: AUTH PLAIN user (a smarthost), or ``""``.
    :ivar password: AUTH PLAIN password.
    """

    reactor: Any
    hostname: str
    port: int = 25
    bind_address: str = ""
    client_tls: Any = None
    require_tls: bool = False
    username: str = ""
    password: str = attrs.field(default="", repr=False)
    connect_timeout: float = CONNECT_TIMEOUT

    def send(self, name: str, address: str, outbound: OutboundMessage,
             port: int | None = None) -> Deferred[AttemptResult]:
        """
        One transaction with ``address`` (the host ``name``).

        :raises SMTPClientError: (in the Deferred) the whole attempt failed.
        """
        return Deferred.fromCoroutine(self._send(name, address, outbound, port or self.port))

    async def _connect(self, address: str, port: int) -> SMTPClientProtocol:
        bind = (self.bind_address, 0) if self.bind_address else None
        endpoint: Any
        if ":" in address:
            endpoint = TCP6ClientEndpoint(self.reactor, address, port,
                                          timeout=self.connect_timeout, bindAddress=bind)
        else:
            endpoint = TCP4ClientEndpoint(self.reactor, address, port,
                                          timeout=self.connect_timeout, bindAddress=bind)
        try:
            proto: SMTPClientProtocol = await connectProtocol(
                endpoint, SMTPClientProtocol(self.reactor))
        except Exception as e:
            raise SMTPClientError(
                Reply(451, "4.4.1", f"Cannot connect to {address} port {port}: {e}"),
                try_next_host=True,
            ) from None
        return proto

    async def _send(self, name: str, address: str, outbound: OutboundMessage,
                    port: int) -> AttemptResult:
        proto = await self._connect(address, port)
        try:
            return await self.transaction(proto, f"{name} [{address}]", name, outbound)
        finally:
            if proto.transport is not None and proto._lost is None:
                proto.transport.loseConnection()

    async def _ehlo(self, proto: SMTPClientProtocol) -> dict[str, str] | None:
        proto.send(f"EHLO {self.hostname}")
        reply = await proto.reply()
        if reply.code == 250:
            return _extensions(reply)
        proto.send(f"HELO {self.hostname}")
        reply = await proto.reply()
        if reply.code != 250:
            raise SMTPClientError(reply, try_next_host=True)
        return None

    async def transaction(self, proto: SMTPClientProtocol, where: str, name: str,
                          outbound: OutboundMessage) -> AttemptResult:
        """Run one mail transaction on a connected protocol."""
        greeting = await proto.reply(GREETING_TIMEOUT)
        if greeting.code != 220:
            raise SMTPClientError(greeting, try_next_host=True)
        ext = await self._ehlo(proto) or {}
        tls = False
        if "STARTTLS" in ext and self.client_tls is not None:
            proto.send("STARTTLS")
            reply = await proto.reply()
            if reply.code == 220:
                assert proto.transport is not None
                proto.transport.startTLS(  # type: ignore[attr-defined]
                    self.client_tls(name, self.require_tls))
                tls = True
                ext = await self._ehlo(proto) or {}
            elif self.require_tls:
                raise SMTPClientError(reply, try_next_host=True)
        if self.require_tls and not tls:
            raise SMTPClientError(
                Reply(451, "4.7.5", f"{where} does not offer STARTTLS, which is required"),
                try_next_host=True,
            )
        if self.username:
            token = base64.b64encode(
                f"\0{self.username}\0{self.password}".encode()).decode("ascii")
            proto.send(f"AUTH PLAIN {token}")
            reply = await proto.reply()
            if reply.code != 235:
                raise SMTPClientError(
                    Reply(451 if reply.code < 500 else 554, "4.7.0" if reply.code < 500
                          else "5.7.8", f"{where} refused our login: {reply}"),
                    try_next_host=False,
                )
        size = len(outbound.message)
        limit = ext.get("SIZE", "")
        if limit.isdigit() and int(limit) and size > int(limit):
            raise SMTPClientError(
                Reply(552, "5.3.4", f"{where} accepts at most {limit} octets; the message "
                      f"has {size}"), try_next_host=False)
        if outbound.smtputf8 and "SMTPUTF8" not in ext:
            raise SMTPClientError(
                Reply(553, "5.6.7", f"{where} does not support SMTPUTF8, which the message "
                      "needs"), try_next_host=False)
        dsn = "DSN" in ext
        mail = f"MAIL FROM:<{outbound.sender}>"
        if "SIZE" in ext:
            mail += f" SIZE={size}"
        if "8BITMIME" in ext and outbound.body == "8BITMIME":
            mail += " BODY=8BITMIME"
        if outbound.smtputf8:
            mail += " SMTPUTF8"
        if dsn:
            if outbound.ret:
                mail += f" RET={outbound.ret}"
            if outbound.envid:
                mail += f" ENVID={xtext_encode(outbound.envid)}"
        rcpts = []
        for r in outbound.recipients:
            line = f"RCPT TO:<{r.address}>"
            if dsn and r.notify:
                line += " NOTIFY=" + ",".join(r.notify)
            if dsn and r.orcpt:
                addr_type, _, value = r.orcpt.partition(";")
                line += f" ORCPT={addr_type};{xtext_encode(value)}"
            rcpts.append(line)
        pipelining = "PIPELINING" in ext
        if pipelining:
            proto.send(mail, *rcpts, "DATA")
        else:
            proto.send(mail)
        mail_reply = await proto.reply()
        if mail_reply.code != 250:
            if pipelining:
                # Read (and ignore) the RCPT and DATA replies that follow.
                for _ in range(len(rcpts) + 1):
                    await proto.reply()
            proto.send("QUIT")
            raise SMTPClientError(mail_reply, try_next_host=mail_reply.code == 421)
        results: list[Reply] = []
        for line in rcpts:
            if not pipelining:
                proto.send(line)
            results.append(await proto.reply())
        accepted = any(r.code in (250, 251) for r in results)
        if not pipelining:
            if not accepted:
                proto.send("QUIT")
                return AttemptResult(where, tuple(results), tls, dsn)
            proto.send("DATA")
        data_reply = await proto.reply(DATA_INIT_TIMEOUT)
        if data_reply.code != 354:
            proto.send("QUIT")
            if not accepted:
                return AttemptResult(where, tuple(results), tls, dsn)
            raise SMTPClientError(data_reply, try_next_host=False)
        if not accepted:
            # RFC 2920 section 3.1: a server that says 354 with no valid
            # recipient gets an empty message, which it must refuse.
            proto.send(b".")
            await proto.reply(DATA_END_TIMEOUT)
            proto.send("QUIT")
            return AttemptResult(where, tuple(results), tls, dsn)
        assert proto.transport is not None
        proto.transport.write(dot_stuff(outbound.message))
        final = await proto.reply(DATA_END_TIMEOUT)
        proto.send("QUIT")
        return AttemptResult(
            where,
            tuple(final if r.code in (250, 251) else r for r in results),
            tls,
            dsn,
        )
