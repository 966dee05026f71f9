"""Tests for pymail.imap.cache (derived values in memory) and FETCH back-pressure."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from imap_harness import SIMPLE, Client, Server
from twisted.internet.testing import StringTransport

from pymail.imap.cache import DerivedCache
from pymail.imap.selected import FETCH_BATCH_MESSAGES


class CountingMailbox:
    """Just enough of an IMailbox for the cache: counts calls to ``cached``."""

    def __init__(self, uidvalidity: int = 7) -> None:
        self.validity = uidvalidity
        self.calls = 0

    def uidvalidity(self) -> int:
        return self.validity

    def cached(self, uid: int, name: str, compute: Callable[[bytes], Any]) -> Any:
        self.calls += 1
        return compute(b"message %d" % uid)


def test_values_come_from_memory_after_the_first_time() -> None:
    """The backend's cached() is asked once per message and derivation, then memory answers."""
    cache = DerivedCache()
    box = CountingMailbox()
    for _ in range(3):
        assert cache.get(box, 5, "x.1", lambda m: m.upper()) == b"MESSAGE 5"  # type: ignore[arg-type]
    assert cache.get(box, 5, "y.1", len) == 9  # type: ignore[arg-type]
    assert box.calls == 2


def test_a_new_uidvalidity_forgets_the_folder() -> None:
    """When the folder's UIDVALIDITY changes, its old values are not served."""
    cache = DerivedCache()
    box = CountingMailbox()
    cache.get(box, 1, "x.1", bytes)  # type: ignore[arg-type]
    box.validity = 8
    cache.get(box, 1, "x.1", bytes)  # type: ignore[arg-type]
    assert box.calls == 2


def test_memory_stays_within_the_budget() -> None:
    """Past the budget, least recently used folders are dropped; the size stays bounded."""
    cache = DerivedCache(budget=20_000)
    boxes = [CountingMailbox() for _ in range(5)]
    for box in boxes:
        for uid in range(100):
            cache.get(box, uid, "x.1", lambda m: m * 10)  # type: ignore[arg-type]
        assert cache.size <= 20_000
    # The most recent folder is still there; the first was evicted.
    calls = boxes[-1].calls, boxes[0].calls
    cache.get(boxes[-1], 99, "x.1", bytes)  # type: ignore[arg-type]
    cache.get(boxes[0], 0, "x.1", bytes)  # type: ignore[arg-type]
    assert (boxes[-1].calls, boxes[0].calls) == (calls[0], calls[1] + 1)


class FullTransport(StringTransport):
    """A transport that says it is full (pauses its producer) after ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.paused_times = 0

    def write(self, data: bytes) -> None:
        super().write(data)
        if self.producer is not None and len(self.value()) > self.limit:
            self.paused_times += 1
            self.producer.pauseProducing()

    def writeSequence(self, seq: Any) -> None:
        self.write(b"".join(seq))


def test_fetch_of_bodies_waits_while_the_transport_is_full() -> None:
    """FETCH BODY[] stops after a batch while the transport is full and resumes when drained."""
    server = Server()
    count = 3 * FETCH_BATCH_MESSAGES
    for _ in range(count):
        server.deliver(SIMPLE)
    client = Client(server)
    transport = FullTransport(limit=1)
    client.transport = transport
    client.proto.makeConnection(transport)
    client.read()
    client.login()
    client.select()
    out = client.cmd("f FETCH 1:* (BODY.PEEK[])")
    written = 0
    resumed = 0
    while True:
        written += out.count(b" FETCH (BODY[] {")
        if b"f OK FETCH completed" in out:
            break
        assert transport.producer is not None, "waiting without a producer registered"
        # Nothing more is written until the transport drains.
        assert written % FETCH_BATCH_MESSAGES == 0 and written <= count
        assert client.read() == b""
        resumed += 1
        transport.producer.resumeProducing()
        out = client.read()
    assert written == count
    assert resumed == 3  # once after each batch
    assert transport.producer is None  # unregistered at the end
    assert client.cmd("n NOOP").endswith(b"n OK NOOP completed\r\n")


def test_sessions_in_the_same_state_share_one_uid_list() -> None:
    """Sessions selecting a folder share its UID list; after a change they share the new one."""
    server = Server()
    for _ in range(3):
        server.deliver(SIMPLE)
    first = server.connect().login()
    second = server.connect().login()
    first.select()
    second.select()
    assert first.proto.selected is not None and second.proto.selected is not None
    assert first.proto.selected.uids is second.proto.selected.uids
    old = first.proto.selected.uids
    server.deliver(SIMPLE)
    assert b"* 4 EXISTS" in first.cmd("a NOOP")
    assert old == [1, 2, 3]  # never changed in place
    assert b"* 4 EXISTS" in second.cmd("b NOOP")
    assert first.proto.selected.uids == [1, 2, 3, 4]
    assert first.proto.selected.uids is second.proto.selected.uids
    first.cmd("c STORE 2 +FLAGS.SILENT (\\Deleted)")
    first.cmd("d EXPUNGE")
    assert first.proto.selected.uids == [1, 3, 4]
    assert second.proto.selected.uids == [1, 2, 3, 4]  # not told yet
    assert b"* 2 EXPUNGE" in second.cmd("e NOOP")
    assert first.proto.selected.uids is second.proto.selected.uids


def test_idling_sessions_share_one_uid_list_after_each_push() -> None:
    """Sessions pushed an EXISTS or EXPUNGE while idling end up on the one shared UID list."""
    server = Server()
    for _ in range(5):
        server.deliver(SIMPLE)
    idlers = [server.connect().login() for _ in range(3)]
    for n, idler in enumerate(idlers):
        idler.select()
        assert idler.cmd(f"i{n} IDLE") == b"+ idling\r\n"
    server.deliver(SIMPLE)
    views = [idler.proto.selected for idler in idlers]
    # The first session to select the folder holds \Recent for every message.
    assert idlers[0].read() == b"* 6 EXISTS\r\n* 6 RECENT\r\n"
    assert all(idler.read() == b"* 6 EXISTS\r\n* 0 RECENT\r\n" for idler in idlers[1:])
    assert views[0] is not None and views[0].uids == [1, 2, 3, 4, 5, 6]
    assert all(v is not None and v.uids is views[0].uids for v in views)
    other = server.connect().login()
    other.select()
    other.cmd("s STORE 2,4 +FLAGS.SILENT (\\Deleted)")
    other.cmd("e EXPUNGE")
    for idler in idlers:
        # The \Deleted flags were pushed first (untagged FETCH), then the expunges.
        assert idler.read().endswith(b")\r\n* 4 EXPUNGE\r\n* 2 EXPUNGE\r\n")
    assert views[0].uids == [1, 3, 5, 6]
    assert all(v is not None and v.uids is views[0].uids for v in views)


class LimitedTransport(StringTransport):
    """A transport with a per-wakeup send limit, as Twisted's TCP transports have."""

    SEND_LIMIT = 128 * 1024


def test_streaming_a_download_raises_the_send_limit_of_that_connection() -> None:
    """FETCH BODY[] lets the TCP transport send up to STREAM_SEND_LIMIT per wakeup."""
    from pymail.imap.server import STREAM_SEND_LIMIT

    server = Server()
    server.deliver(SIMPLE)
    client = Client(server)
    transport = LimitedTransport()
    client.transport = transport
    client.proto.makeConnection(transport)
    client.read()
    client.login().select()
    client.cmd("f FETCH 1 (FLAGS)")
    assert transport.SEND_LIMIT == 128 * 1024  # short answers leave it alone
    assert client.cmd("g FETCH 1:* (BODY.PEEK[])").endswith(b"g OK FETCH completed\r\n")
    assert transport.SEND_LIMIT == STREAM_SEND_LIMIT > 128 * 1024
    assert LimitedTransport.SEND_LIMIT == 128 * 1024  # the class, shared by all, is untouched
