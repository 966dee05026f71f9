"""
Tests for streaming RETR and TOP (pymail.pop3.server, pymail.pop3.framing)
and the storage stream under them (pymail.storage.base.CRLFStream): large
messages leave in chunks with bounded memory, byte-exact.
"""

from __future__ import annotations

import io
import tracemalloc
from typing import Any

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import Portal
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from pymail.auth.realm import MailRealm
from pymail.pop3.framing import Stuffer, TopCutter, message_top, multiline
from pymail.pop3.mailbox import MaildropLocks
from pymail.pop3.server import POP3Factory, POP3Server
from pymail.storage.base import CRLFStream
from pymail.storage.fsutil import to_crlf
from pymail.storage.maildir import MaildirStoreFactory
from pymail.testing import ThreadlessReactor, memory_portal

ALICE = "alice@example.org"
PASSWORD = "s3cret-Pa55"
#: Like a TCP transport: past this many unsent octets the producer is paused.
TRANSPORT_BUFFER = 64 * 1024
BIG = 20 * 1024 * 1024


class PausingTransport(StringTransport):
    """
    A StringTransport that pauses its streaming producer when more than
    :data:`TRANSPORT_BUFFER` octets wait, as Twisted's TCP transport does,
    and records the most it ever held and how many writes it got.
    """

    peak = 0
    writes = 0

    def _written(self) -> None:
        self.writes += 1
        held = len(self.io.getvalue())
        self.peak = max(self.peak, held)
        if held > TRANSPORT_BUFFER and self.producer is not None and self.streaming:
            self.producer.pauseProducing()

    def write(self, data: bytes) -> None:
        super().write(data)
        self._written()

    def writeSequence(self, data: Any) -> None:
        super().writeSequence(data)
        self._written()


def big_message(size: int) -> bytes:
    """A wire-form message of about ``size`` octets, full of lines starting with dots."""
    lines = [b"Subject: big\r\n\r\n"]
    total, n = 0, 0
    while total < size:
        line = (b"." * (n % 3)) + b"x" * (n % 251) + b"\r\n"
        lines.append(line)
        total += len(line)
        n += 1
    return b"".join(lines)


class StreamingTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = ThreadlessReactor()
        stores = MaildirStoreFactory(self.reactor)
        data_dir = self.mktemp()
        _, directory, _ = memory_portal({ALICE: PASSWORD})
        checker = InMemoryUsernamePasswordDatabaseDontUse()
        checker.addUser(ALICE.encode(), PASSWORD.encode())
        portal = Portal(MailRealm(directory, stores, data_dir), [checker])
        self.inbox = self.successResultOf(
            stores.open_store(ALICE, data_dir).get_mailbox("INBOX")
        )
        self.factory = POP3Factory(portal, self.reactor, "h", locks=MaildropLocks())

    def connect(self) -> tuple[POP3Server, PausingTransport]:
        server = self.factory.buildProtocol(None)
        transport = PausingTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        server.makeConnection(transport)
        transport.clear()
        return server, transport

    def login(self) -> tuple[POP3Server, PausingTransport]:
        server, transport = self.connect()
        server.dataReceived(f"USER {ALICE}\r\nPASS {PASSWORD}\r\n".encode())
        self.reactor.advance(0)
        reply = transport.value()
        assert reply.startswith(b"+OK") and reply.count(b"\r\n") == 2, reply
        transport.clear()
        return server, transport

    def drain(self, server: POP3Server, transport: PausingTransport, expected: bytes) -> int:
        """
        Read the connection like a client until ``expected`` has arrived,
        checking each piece against it as it comes; returns the pieces' count.
        """
        view = memoryview(expected)
        offset = pieces = 0
        while offset < len(expected):
            piece = transport.value()
            transport.clear()
            assert view[offset : offset + len(piece)] == piece, offset
            offset += len(piece)
            pieces += 1
            if offset < len(expected):
                assert piece or server._write_paused or self.reactor.getDelayedCalls(), offset
                server.resumeProducing()
                self.reactor.advance(0)
        assert transport.value() == b""
        return pieces

    def test_retr_20mb_byte_exact_with_bounded_memory(self) -> None:
        """
        A 20 MB message is RETR'd byte-exact, dot-stuffed, while neither the
        transport nor the server ever holds more than a few chunks of it.
        """
        message = big_message(BIG)
        self.successResultOf(self.inbox.append(message))
        expected = b"".join(multiline(b"+OK %d octets\r\n" % len(message), message))
        server, transport = self.login()
        del message
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            server.dataReceived(b"RETR 1\r\n")
            pieces = self.drain(server, transport, expected)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        bound = TRANSPORT_BUFFER + 8 * POP3Server.CHUNK_SIZE
        assert transport.peak <= bound, transport.peak
        assert peak <= 2 * bound, peak
        # One write per chunk: about size / chunk writes, not per line.
        assert transport.writes <= len(expected) // POP3Server.CHUNK_SIZE + 2, transport.writes
        assert pieces > 100

    def test_commands_pipelined_after_a_streamed_retr_are_answered_in_order(self) -> None:
        """Commands sent together with a long RETR are answered after its last chunk, in order."""
        message = big_message(POP3Server.WHOLE_MAX + POP3Server.CHUNK_SIZE * 5)
        self.successResultOf(self.inbox.append(message))
        small = b"Subject: small\r\n\r\n.hi\r\n"
        self.successResultOf(self.inbox.append(small))
        server, transport = self.login()
        server.dataReceived(b"RETR 1\r\nTOP 2 0\r\nNOOP\r\nSTAT\r\n")
        expected = b"".join(
            multiline(b"+OK %d octets\r\n" % len(message), message)
            + multiline(b"+OK top of message follows\r\n", b"Subject: small\r\n\r\n")
        ) + b"+OK\r\n+OK 2 %d\r\n" % (len(message) + len(small))
        self.drain(server, transport, expected)

    def test_retr_up_to_whole_max_is_read_whole(self) -> None:
        """A RETR of a message over a chunk but within WHOLE_MAX is byte-exact, in one write."""
        message = big_message(POP3Server.CHUNK_SIZE * 3)
        self.successResultOf(self.inbox.append(message))
        server, transport = self.login()
        transport.writes = 0
        server.dataReceived(b"RETR 1\r\nNOOP\r\n")
        assert server._stream is None
        status = b"+OK %d octets\r\n" % len(message)
        assert transport.value() == b"".join(multiline(status, message))
        assert transport.writes == 1, transport.writes
        # The full transport paused the server; the NOOP is answered once it drains.
        transport.clear()
        server.resumeProducing()
        assert transport.value() == b"+OK\r\n"

    def test_connection_lost_mid_stream_deletes_nothing(self) -> None:
        """
        A client that goes away in the middle of a RETR, with DELE and QUIT
        pipelined, gets nothing deleted, and the maildrop is free again.
        """
        message = big_message(POP3Server.WHOLE_MAX + POP3Server.CHUNK_SIZE * 5)
        first = self.successResultOf(self.inbox.append(message))
        second = self.successResultOf(self.inbox.append(b"Subject: s\r\n\r\nx\r\n"))
        server, transport = self.login()
        server.dataReceived(b"DELE 2\r\nRETR 1\r\nQUIT\r\n")
        assert server._write_paused and server._stream is not None
        server.connectionLost()
        self.reactor.advance(0)
        assert [m.uid for m in self.inbox.messages()] == [first, second]
        self.login()

    def test_top_streams_only_the_top(self) -> None:
        """TOP of a large message sends the header and the asked lines, byte-exact."""
        message = big_message(POP3Server.CHUNK_SIZE * 5)
        self.successResultOf(self.inbox.append(message))
        server, transport = self.login()
        server.dataReceived(b"TOP 1 3\r\nTOP 1 100000\r\n")
        status = b"+OK top of message follows\r\n"
        expected = b"".join(
            multiline(status, message_top(message, 3))
            + multiline(status, message_top(message, 100000))
        )
        self.drain(server, transport, expected)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


class FramingTests(SynchronousTestCase):
    def test_stuffing_at_every_chunk_boundary(self) -> None:
        """Chunked stuffing equals whole-body stuffing wherever the body is cut."""
        body = b".a\r\n..\r\n.\r\nb.\r\n.\n.c\r\nend"
        whole = b"".join(multiline(b"", body))
        for cut in range(len(body) + 1):
            for second in range(cut, len(body) + 1):
                stuffer = Stuffer()
                out = b"".join(stuffer.feed(c) for c in chunked(body, [cut, second]))
                assert out + stuffer.end() == whole, (cut, second)

    def test_top_cut_at_every_chunk_boundary(self) -> None:
        """The chunked TOP cut equals message_top wherever the message is cut."""
        for message in [b"A: 1\r\nB: 2\r\n\r\none\r\ntwo\r\nthree\r\n",
                        b"\r\nbody only\r\n", b"A: no body\r\n", b"A: 1\n\nlf\nbody\n"]:
            for lines in range(4):
                for cut in range(len(message) + 1):
                    cutter = TopCutter(lines)
                    out = b""
                    for c in chunked(message, [cut]):
                        out += cutter.feed(c)
                    assert out == message_top(message, lines), (message, lines, cut)


class CRLFStreamTests(SynchronousTestCase):
    def test_crlf_split_across_chunks_is_kept(self) -> None:
        """A CRLF already in the file, split by a chunk boundary, stays one CRLF."""
        disk = b"a\r\nbc\r\nd\n\re\r"
        for size in range(1, len(disk) + 1):
            stream = CRLFStream(io.BytesIO(disk), chunk_size=size)
            out = b""
            while piece := stream.read(3):
                out += piece
            assert out == to_crlf(disk), size
            assert CRLFStream(io.BytesIO(disk), chunk_size=size).read() == to_crlf(disk)
