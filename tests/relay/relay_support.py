"""
Helpers for the relay tests: a real pymail SMTP server as the remote
peer, connected to the relay client in memory (``twisted.test.iosim``),
and a fake SMTP client for the runner.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.test import iosim

from pymail.address import Address, Envelope, EnvelopeRecipient
from pymail.relay.client import AttemptResult, OutboundMessage, SMTPClient, SMTPClientProtocol
from pymail.smtp.delivery import LocalDelivery
from pymail.smtp.replies import Reply
from pymail.smtp.server import SMTPFactory
from pymail.testing import memory_portal

REMOTE_USERS = {"carol@remote.example": "x", "dave@remote.example": "y"}


@attrs.define
class Peer:
    """A remote pymail MX on the memory backend."""

    factory: SMTPFactory
    stores: Any
    clock: Clock

    def inbox(self, account: str) -> list[bytes]:
        mailbox = self.stores.open_store(account, "/data")._mailboxes["INBOX"]
        return [mailbox.read(i.uid) for i in mailbox.messages()]


def make_peer(**options: Any) -> Peer:
    portal, directory, stores = memory_portal(REMOTE_USERS)
    clock = Clock()
    clock.advance(1_800_000_000)
    factory = SMTPFactory("mx.remote.example", LocalDelivery(directory, stores, "/data"),
                          clock, **options)
    return Peer(factory, stores, clock)


def run_transaction(client: SMTPClient, peer: Peer, outbound: OutboundMessage
                    ) -> tuple[list[Any], iosim.IOPump]:
    """Run ``client.transaction`` against ``peer`` in memory; results in the list."""
    server = peer.factory.buildProtocol(IPv4Address("TCP", "192.0.2.1", 25))
    proto = SMTPClientProtocol(peer.clock)
    server_transport = iosim.FakeTransport(server, isServer=True,
                                           peerAddress=IPv4Address("TCP", "192.0.2.9", 4000))
    client_transport = iosim.FakeTransport(proto, isServer=False)
    pump = iosim.connect(server, server_transport, proto, client_transport, greet=False)
    out: list[Any] = []
    d = Deferred.fromCoroutine(client.transaction(proto, "mx.remote.example [192.0.2.1]",
                                                  "mx.remote.example", outbound))
    d.addBoth(out.append)
    pump.flush()
    for _ in range(50):
        if out:
            break
        pump.pump()
    return out, pump


@attrs.define
class FakeClient:
    """
    Stands in for :class:`SMTPClient` in runner tests: answers each
    ``send`` from :attr:`script` (a list of per-call outcomes: a tuple of
    replies, one per recipient, or an exception), records the calls.
    """

    script: list[Any] = attrs.Factory(list)
    calls: list[tuple[str, str, OutboundMessage]] = attrs.Factory(list)
    pending: list[Deferred[AttemptResult]] = attrs.Factory(list)

    def send(self, name: str, address: str, outbound: OutboundMessage,
             port: int | None = None) -> Deferred[AttemptResult]:
        self.calls.append((name, address, outbound))
        outcome = self.script.pop(0) if self.script else "hold"
        if outcome == "hold":
            d: Deferred[AttemptResult] = Deferred()
            self.pending.append(d)
            return d
        if isinstance(outcome, Exception):
            return fail(outcome)
        return succeed(AttemptResult(f"{name} [{address}]", tuple(outcome)))


def ok() -> Reply:
    return Reply(250, "2.0.0", "Ok: queued as X")


def envelope(queue_id: str, sender: str, *recipients: str, **kw: Any) -> Envelope:
    return Envelope(
        queue_id,
        Address.parse(f"<{sender}>", allow_null=True),
        tuple(EnvelopeRecipient(Address.parse(f"<{r}>"), (r,)) for r in recipients),
        **kw,
    )
