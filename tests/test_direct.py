"""Tests for pymail.direct: replies sent on the socket at once when nothing is queued."""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import tcp
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from pymail.auth.limits import ConnectionLimits, LimitedFactory, LimitedProtocol
from pymail.direct import MAX_PIECES, send_now
from pymail.pop3.mailbox import MaildropLocks
from pymail.pop3.server import POP3Factory, POP3Server
from pymail.testing import memory_portal


class WriteCountingWrapper(ProtocolWrapper):
    """A wrapper that does something with writes (counts them), like TLS would."""

    writes = 0

    def writeSequence(self, data: Any) -> None:
        self.writes += 1
        super().writeSequence(data)


class SendNowTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactor()
        ours, self.peer = socket.socketpair()
        ours.setblocking(False)
        self.peer.settimeout(5)
        self.addCleanup(self.peer.close)
        self.transport = tcp.Connection(ours, Protocol(), self.reactor)
        self.transport.connected = 1
        self.addCleanup(ours.close)

    def received(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            data += self.peer.recv(size - len(data))
        return data

    def test_idle_tcp_sends_at_once(self) -> None:
        """With nothing queued the pieces are on the socket before send_now returns."""
        send_now(self.transport, [b"+OK 5 octets\r\n", b"hello\r\n", b".\r\n"])
        self.assertEqual(self.received(24), b"+OK 5 octets\r\nhello\r\n.\r\n")
        self.assertEqual(self.transport._tempDataLen, 0)
        self.assertEqual(self.reactor.getWriters(), [])

    def test_queued_data_keeps_order(self) -> None:
        """When the transport holds unsent data, new pieces queue behind it."""
        self.transport.write(b"first\r\n")
        send_now(self.transport, [b"second\r\n"])
        self.assertEqual(self.transport._tempDataBuffer, [b"first\r\n", b"second\r\n"])
        self.transport.doWrite()
        self.assertEqual(self.received(15), b"first\r\nsecond\r\n")

    def test_what_the_socket_refuses_is_queued(self) -> None:
        """A reply bigger than the socket buffer: the rest is queued, in order, nothing lost."""
        self.peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        big = bytes(range(256)) * 4096
        send_now(self.transport, [b"+OK\r\n", big, b".\r\n"])
        queued = self.transport._tempDataLen
        self.assertGreater(queued, 0)
        expected = b"+OK\r\n" + big + b".\r\n"
        got = b""
        while len(got) < len(expected):
            self.transport.doWrite()
            got += self.peer.recv(1 << 20)
        self.assertEqual(got, expected)

    def test_many_pieces_are_joined(self) -> None:
        """More pieces than one sendmsg takes still arrive whole and in order."""
        pieces = [b"%d\r\n" % i for i in range(MAX_PIECES * 20)]
        send_now(self.transport, pieces)
        expected = b"".join(pieces)
        self.assertEqual(self.received(len(expected)), expected)

    def test_closing_transport_is_not_bypassed(self) -> None:
        """A transport that is closing gets the data through its own write."""
        self.transport.disconnecting = True
        send_now(self.transport, [b"bye\r\n"])
        self.assertEqual(self.transport._tempDataBuffer, [b"bye\r\n"])

    def test_tls_is_not_bypassed(self) -> None:
        """Over TLS the bytes must go through the TLS layer, never the raw socket."""
        self.transport.TLS = True
        tls_layer: Any = StringTransport()  # where TLS-mode writes go
        self.transport.protocol = tls_layer
        send_now(self.transport, [b"secret\r\n"])
        self.peer.setblocking(False)
        self.assertRaises(BlockingIOError, self.peer.recv, 100)

    def test_relaying_wrapper_is_looked_through(self) -> None:
        """A wrapper that only relays writes (connection limits) does not stop a direct send."""
        wrapper = ProtocolWrapper(WrappingFactory(None), Protocol())
        wrapper.transport = self.transport
        send_now(wrapper, [b"+OK\r\n"])
        self.assertEqual(self.received(5), b"+OK\r\n")
        self.assertEqual(self.transport._tempDataLen, 0)

    def test_wrapper_that_handles_writes_is_respected(self) -> None:
        """A wrapper with its own writeSequence gets the data, not the socket under it."""
        wrapper = WriteCountingWrapper(WrappingFactory(None), Protocol())
        wrapper.transport = self.transport
        send_now(wrapper, [b"+OK\r\n"])
        self.assertEqual(wrapper.writes, 1)
        self.assertEqual(self.transport._tempDataBuffer, [b"+OK\r\n"])

    def test_other_transports_get_write_sequence(self) -> None:
        """A transport that is not TCP (tests, TLS) gets the pieces as they are."""
        transport = StringTransport()
        send_now(transport, [b"a", b"b"])
        self.assertEqual(transport.value(), b"ab")


class DirectReadsTests(SynchronousTestCase):
    """POP3 under the connection limits, with the limits wrapper out of the data path."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.limits = ConnectionLimits(self.clock, max_per_ip=1)
        portal, _, _ = memory_portal({"alice@example.org": "pw"})
        self.factory = LimitedFactory(
            self.limits, POP3Factory(portal, self.clock, "h", locks=MaildropLocks()),
            label="[pop3]", refusal=b"-ERR busy\r\n",
        )

    def connect(self) -> tuple[LimitedProtocol, StringTransport]:
        address = IPv4Address("TCP", "127.0.0.1", 40000)
        wrapper = self.factory.buildProtocol(address)
        assert isinstance(wrapper, LimitedProtocol)
        transport = StringTransport(peerAddress=address)
        wrapper.makeConnection(transport)
        return wrapper, transport

    def test_pop3_reads_bypass_the_limits_wrapper(self) -> None:
        """Once counted, the wrapper's dataReceived is the POP3 server's own, and commands work."""
        wrapper, transport = self.connect()
        server = wrapper.wrappedProtocol
        self.assertIsInstance(server, POP3Server)
        self.assertEqual(wrapper.dataReceived, server.dataReceived)
        transport.clear()
        wrapper.dataReceived(b"CAPA\r\n")
        self.assertTrue(transport.value().startswith(b"+OK capability list follows\r\n"))

    def test_accounting_stays_on_connection_lost(self) -> None:
        """Closing a connection with direct reads still gives its slot back."""
        wrapper, _ = self.connect()
        self.assertEqual(self.limits.open_from("127.0.0.1"), 1)
        wrapper.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.limits.open_from("127.0.0.1"), 0)
        self.connect()
        self.assertEqual(self.limits.open_from("127.0.0.1"), 1)

    def test_refused_connection_keeps_the_wrapper(self) -> None:
        """A connection over the limit is not counted, so its reads stay with the wrapper."""
        self.connect()
        refused, transport = self.connect()
        self.assertTrue(transport.value().startswith(b"-ERR busy"))
        self.assertNotEqual(refused.dataReceived, refused.wrappedProtocol.dataReceived)
        refused.dataReceived(b"CAPA\r\n")  # dropped by the wrapper, nothing answered
        self.assertEqual(transport.value(), b"-ERR busy\r\n")
