"""
Helpers for the SMTP tests: a server protocol on a ``StringTransport``
with a ``Clock``, the memory directory, stores and portal, and fakes for
asynchronous policy answers and slow or failing mailboxes.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import attrs
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from pymail.address import Address
from pymail.smtp.delivery import LocalDelivery, QueuedCopy, StoredCopy
from pymail.smtp.server import SMTPFactory, SMTPServer
from pymail.testing import memory_portal

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "corpus" / "cpython-email"

USERS = {"alice@example.com": "alice-secret", "bob@example.com": "bob-secret"}


def corpus_message(name: str) -> bytes:
    """A corpus file in wire form: CRLF line endings, ending in CRLF."""
    raw = (CORPUS / name).read_bytes().replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    wire = raw.replace(b"\n", b"\r\n")
    return wire if wire.endswith(b"\r\n") else wire + b"\r\n"


def dot_stuff(message: bytes) -> bytes:
    """What a client sends after DATA for ``message`` (CRLF . CRLF included)."""
    stuffed = b"\r\n".join(
        b"." + line if line.startswith(b".") else line for line in message.split(b"\r\n")
    )
    return stuffed + b".\r\n"


def strip_trace_headers(stored: bytes, count: int = 2) -> bytes:
    """Drop the first ``count`` header fields (with their folded lines)."""
    lines = stored.split(b"\r\n")
    fields = 0
    i = 0
    while i < len(lines):
        if lines[i][:1] not in (b" ", b"\t"):
            if fields == count:
                break
            fields += 1
        i += 1
    return b"\r\n".join(lines[i:])


@attrs.define
class Harness:
    """One connected server protocol and everything behind it."""

    protocol: SMTPServer
    transport: StringTransport
    clock: Clock
    factory: SMTPFactory
    stores: Any
    directory: Any

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def replies(self) -> list[str]:
        """The reply lines written since the last call."""
        out = self.transport.value().decode("utf-8")
        self.transport.clear()
        return [line for line in out.split("\r\n") if line]

    def codes(self) -> list[str]:
        """The final lines' ``code enhanced`` of the replies since the last call."""
        out = []
        for line in self.replies():
            if len(line) > 3 and line[3] == " ":
                code, _, rest = line.partition(" ")
                enhanced = rest.split(" ", 1)[0]
                is_enhanced = enhanced[:1].isdigit() and enhanced.count(".") == 2
                out.append(f"{code} {enhanced}" if is_enhanced else code)
        return out

    def inbox(self, account: str) -> list[bytes]:
        store = self.stores.open_store(account, "/data")
        mailbox = store._mailboxes["INBOX"]
        return [mailbox.read(info.uid) for info in mailbox.messages()]

    def ehlo(self) -> None:
        self.send(b"EHLO client.example.org\r\n")
        self.replies()

    def login(self, user: str = "alice@example.com", password: str = "alice-secret") -> None:
        import base64

        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        self.send(f"AUTH PLAIN {token}\r\n".encode())
        assert self.codes() == ["235 2.7.0"]


def make_server(
    *,
    mode: str = "mx",
    delivery: Any = None,
    peer: str = "192.0.2.7",
    **options: Any,
) -> Harness:
    """A connected server on the memory backend for ``USERS`` in example.com."""
    portal, directory, stores = memory_portal(USERS)
    directory.aliases["team@example.com"] = ["alice@example.com", "bob@example.com"]
    clock = Clock()
    clock.advance(1_800_000_000)
    if delivery is None:
        delivery = LocalDelivery(directory, stores, "/data")
    factory = SMTPFactory(
        "mx.example.com",
        delivery,
        clock,
        mode=mode,
        portal=portal if mode == "submission" else None,
        **options,
    )
    protocol = factory.buildProtocol(IPv4Address("TCP", peer, 40000))
    transport = StringTransport(peerAddress=IPv4Address("TCP", peer, 40000))
    protocol.makeConnection(transport)
    return Harness(protocol, transport, clock, factory, stores, directory)


@attrs.define
class AsyncDelivery:
    """
    A policy whose recipient checks answer later: each check waits for the
    test to fire it from :attr:`pending`.  Delivery goes to ``inner``.
    """

    inner: LocalDelivery
    pending: list[tuple[Address, Deferred[list[str]]]] = attrs.Factory(list)

    def check_sender(self, sender: Address, *, authenticated_as: str | None = None) -> None:
        self.inner.check_sender(sender, authenticated_as=authenticated_as)

    def check_recipient(
        self, address: Address | str, *, authenticated_as: str | None = None
    ) -> Deferred[list[str]]:
        d: Deferred[list[str]] = Deferred()
        assert isinstance(address, Address)
        self.pending.append((address, d))
        return d

    def answer(self) -> None:
        """Answer the oldest pending check as the real policy would."""
        address, d = self.pending.pop(0)
        try:
            d.callback(self.inner.check_recipient(address))
        except Exception as e:
            d.errback(e)

    def deliver(
        self, accounts: Iterable[str], message: bytes, *, internaldate: datetime | None = None,
        envelope: Any = None,
    ) -> Deferred[list[StoredCopy | QueuedCopy]]:
        return self.inner.deliver(accounts, message, internaldate=internaldate, envelope=envelope)


class SlowMailbox:
    """A mailbox whose appends wait until the test fires or fails them."""

    name = "INBOX"

    def __init__(self) -> None:
        self.appends: list[tuple[bytes, Deferred[int]]] = []

    def append(
        self, message: bytes, flags: Iterable[str] = (), internaldate: datetime | None = None
    ) -> Deferred[int]:
        d: Deferred[int] = Deferred()
        self.appends.append((message, d))
        return d


@attrs.define
class SlowStoreFactory:
    """Hands every account the same :class:`SlowMailbox` as its INBOX."""

    mailbox: SlowMailbox = attrs.Factory(SlowMailbox)
    name: str = "slow"
    description: str = "appends wait for the test"

    def open_store(self, address: str, data_dir: str) -> SlowStoreFactory:
        return self

    def get_mailbox(self, name: str) -> Deferred[SlowMailbox]:
        from twisted.internet.defer import succeed

        return succeed(self.mailbox)
