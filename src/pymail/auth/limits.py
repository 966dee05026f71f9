"""
Connection limits for every listener: connections open at once in total and
per client address, and the pre-authentication timeout.

:class:`ConnectionLimits` is one per process (shared by every listener);
:class:`LimitedFactory` wraps each listener's factory (outside any implicit
TLS wrapper, so a refused client costs no handshake)::

    limits = ConnectionLimits(reactor, max_total=10000, max_per_ip=100, preauth_timeout=120)
    factory = LimitedFactory(limits, POP3Factory(...), label="[pop3]",
                             refusal=b"-ERR [SYS/TEMP] too many connections\\r\\n")

The pre-authentication timeout applies to protocols that say whether they
are logged in: a protocol object with an ``authenticated`` attribute (see
:class:`IAuthenticatedSession`).  When the timer fires and the session (found
through any TLS wrappers) is not authenticated, the connection is closed.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.interfaces import IDelayedCall, IHalfCloseableProtocol, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface, alsoProvides

log = Logger(namespace="pymail.limits")


class IAuthenticatedSession(Interface):
    """A protocol that knows whether its client has logged in."""

    authenticated = Attribute("True once the client has logged in.")


@attrs.define
class ConnectionLimits:
    """The counters and the settings, shared by every listener of a process."""

    _reactor: IReactorTime
    max_total: int = 10000
    max_per_ip: int = 100
    preauth_timeout: float = 120.0
    total: int = attrs.field(default=0, init=False)
    _per_ip: dict[str, int] = attrs.field(factory=dict, init=False)

    @classmethod
    def from_config(cls, security: Any, reactor: IReactorTime) -> ConnectionLimits:
        """Built from a :class:`pymail.config.SecurityConfig`."""
        return cls(reactor, max_total=security.max_connections,
                   max_per_ip=security.max_connections_per_ip,
                   preauth_timeout=float(security.preauth_timeout))

    def admit(self, host: str) -> str | None:
        """Count a new connection from ``host``; or say why it is refused."""
        if self.total >= self.max_total:
            return "total"
        if self._per_ip.get(host, 0) >= self.max_per_ip:
            return "per-ip"
        self.total += 1
        self._per_ip[host] = self._per_ip.get(host, 0) + 1
        return None

    def release(self, host: str) -> None:
        """A counted connection from ``host`` closed."""
        self.total -= 1
        left = self._per_ip.get(host, 1) - 1
        if left:
            self._per_ip[host] = left
        else:
            self._per_ip.pop(host, None)

    def open_from(self, host: str) -> int:
        """Connections open from ``host`` now."""
        return self._per_ip.get(host, 0)


def _innermost(protocol: Any) -> Any:
    seen = 0
    while hasattr(protocol, "wrappedProtocol") and seen < 8:
        protocol = protocol.wrappedProtocol
        seen += 1
    return protocol


class LimitedProtocol(ProtocolWrapper):
    """One connection under the limits."""

    factory: LimitedFactory

    def __init__(self, factory: LimitedFactory, wrappedProtocol: Protocol) -> None:
        super().__init__(factory, wrappedProtocol)  # type: ignore[arg-type]
        self._host = ""
        self._counted = False
        self._timer: IDelayedCall | None = None

    def makeConnection(self, transport: Any) -> None:
        self._host = str(getattr(transport.getPeer(), "host", "") or "local")
        why = self.factory.limits.admit(self._host)
        if why is not None:
            # Not passed on: the protocol never sees this connection.
            self.connected = 1
            self.transport = transport
            log.info("{label} refused connection from {rhost}: too many connections ({why})",
                     label=self.factory.label, rhost=self._host, why=why)
            if self.factory.refusal:
                transport.write(self.factory.refusal)
            transport.loseConnection()
            return
        self._counted = True
        limits = self.factory.limits
        if self.factory.preauth and limits.preauth_timeout > 0:
            self._timer = limits._reactor.callLater(limits.preauth_timeout, self._preauth_expired)
        super().makeConnection(transport)
        if IHalfCloseableProtocol.providedBy(self.wrappedProtocol):
            # After makeConnection, which replaces what this instance provides.
            alsoProvides(self, IHalfCloseableProtocol)
        if self._counted:
            # Step out of the data path of a counted connection: the
            # transport's reads reach the wrapped protocol without this
            # wrapper's two frames; the accounting stays in connectionLost.
            self.dataReceived = self.wrappedProtocol.dataReceived  # type: ignore[method-assign]

    def readConnectionLost(self) -> None:
        """Passed on to a wrapped protocol that answers after the client's EOF (SMTP)."""
        self.wrappedProtocol.readConnectionLost()  # type: ignore[attr-defined]

    def writeConnectionLost(self) -> None:
        self.wrappedProtocol.writeConnectionLost()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        if self._counted:
            super().dataReceived(data)

    def _preauth_expired(self) -> None:
        self._timer = None
        session = _innermost(self.wrappedProtocol)
        if getattr(session, "authenticated", True):
            return
        log.info("{label} closed connection from {rhost}: no login within {seconds}s",
                 label=self.factory.label, rhost=self._host,
                 seconds=int(self.factory.limits.preauth_timeout))
        # Through the session's own transport: inside TLS when there is TLS.
        channel: Any = getattr(session, "transport", None) or self.transport
        channel.write(self.factory.refusal_timeout)
        channel.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._counted:
            self._counted = False
            self.factory.limits.release(self._host)
            super().connectionLost(reason)
        # A refused connection was never registered nor passed on.


class LimitedFactory(WrappingFactory):
    """
    Wraps a listener's factory with :class:`ConnectionLimits`.

    :param refusal: written before closing a refused connection, in the
        protocol's words (``421 ...`` for SMTP, ``* BYE ...`` for IMAP,
        ``-ERR ...`` for POP3); ``b""`` on implicit-TLS listeners, where
        there is no TLS session yet to say it in.
    :param preauth: apply the pre-authentication timeout (not for the MX
        service, where nobody logs in).
    """

    protocol = LimitedProtocol  # type: ignore[assignment]
    noisy = False

    def __init__(self, limits: ConnectionLimits, wrappedFactory: Any, *, label: str,
                 refusal: bytes, refusal_timeout: bytes | None = None,
                 preauth: bool = True) -> None:
        super().__init__(wrappedFactory)
        self.limits = limits
        self.label = label
        self.refusal = refusal
        self.refusal_timeout = refusal_timeout if refusal_timeout is not None else refusal
        self.preauth = preauth


#: What a refused client is told, per service.
REFUSALS: dict[str, tuple[bytes, bytes]] = {
    "smtp": (b"421 4.7.0 Too many connections, try again later\r\n",
             b"421 4.4.2 Timeout waiting for authentication\r\n"),
    "submission": (b"421 4.7.0 Too many connections, try again later\r\n",
                   b"421 4.4.2 Timeout waiting for authentication\r\n"),
    "imap": (b"* BYE [UNAVAILABLE] Too many connections, try again later\r\n",
             b"* BYE Autologout; no login in time\r\n"),
    "pop3": (b"-ERR [SYS/TEMP] too many connections, try again later\r\n",
             b"-ERR [SYS/TEMP] no login in time, closing\r\n"),
}
