"""Tests for pymail.imap.derive: derived values filled a batch at a time."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from typing import Any, BinaryIO

import pytest
from imap_harness import CORPUS, SIMPLE, Server, corpus
from twisted.internet.defer import Deferred, maybeDeferred
from zope.interface import implementer
from zope.interface.verify import verifyObject

from pymail.errors import NoSuchMessage
from pymail.imap import derive
from pymail.imap.cache import DerivedCache
from pymail.imap.search import SEARCH_FIELDS
from pymail.interfaces import ICachedMany, IMessageStream
from pymail.storage.memory import MemoryMailbox


class ChunkedStream(io.RawIOBase):
    """A stream that hands out at most ``chunk`` bytes per read, as files do."""

    def __init__(self, data: bytes, chunk: int) -> None:
        super().__init__()
        self._data = io.BytesIO(data)
        self._chunk = chunk

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return self._data.read()
        return self._data.read(min(size, self._chunk))


@implementer(ICachedMany, IMessageStream)
class BatchMailbox:
    """A MemoryMailbox with ICachedMany over a dict, counting index round trips."""

    threadsafe_read = True

    def __init__(self, mailbox: MemoryMailbox, chunk: int = 1 << 20) -> None:
        self._mailbox = mailbox
        self._chunk = chunk
        self.kept: dict[tuple[int, str], Any] = {}
        self.queries = 0
        self.transactions = 0
        self.whole_reads = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._mailbox, name)

    def read(self, uid: int) -> bytes:
        self.whole_reads += 1
        return self._mailbox.read(uid)

    def open_message(self, uid: int) -> BinaryIO:
        return ChunkedStream(self._mailbox.read(uid), self._chunk)  # type: ignore[return-value]

    def cached(self, uid: int, name: str, compute: Callable[[bytes], Any]) -> Any:
        if (uid, name) not in self.kept:
            self.kept[uid, name] = compute(self._mailbox.read(uid))
        return self.kept[uid, name]

    def cached_many(self, uids: Iterable[int], name: str) -> dict[int, Any]:
        self.queries += 1
        return {u: self.kept[u, name] for u in uids if (u, name) in self.kept}

    def store_cached(self, name: str, values: dict[int, Any]) -> None:
        self.transactions += 1
        for uid, value in values.items():
            self.kept[uid, name] = value


def in_thread(f: Callable[..., Any], *args: Any) -> Deferred[Any]:
    return maybeDeferred(f, *args)


def filled_mailbox(count: int, chunk: int = 1 << 20) -> tuple[BatchMailbox, list[int], list[bytes]]:
    server = Server()
    messages = [corpus(p.name) for p in sorted(CORPUS.glob("*.txt"))[:count]]
    uids = [server.deliver(m) for m in messages]
    return BatchMailbox(server.mailbox(), chunk), uids, messages


def test_batch_mailbox_provides_icachedmany() -> None:
    """The test's batch mailbox really provides the interface it stands in for."""
    box, _, _ = filled_mailbox(1)
    verifyObject(ICachedMany, box)


@pytest.mark.parametrize("chunk", [1, 7, 16 * 1024])
def test_read_header_gives_the_value_of_the_whole_message(chunk: int) -> None:
    """ENVELOPE and the SEARCH fields from read_header equal those from the whole message."""
    box, uids, messages = filled_mailbox(60, chunk)
    for uid, message in zip(uids, messages, strict=True):
        head = derive.read_header(box, uid)  # type: ignore[arg-type]
        assert message.startswith(head)
        for d in (derive.ENVELOPE, SEARCH_FIELDS):
            assert d.compute(head) == d.compute(message)


@pytest.mark.parametrize("message", [
    b"\r\nbody only\r\n",
    b"Subject: no body and no empty line\r\n",
    b"Subject: x\r\n\r",
    b"Subject: " + b"y" * (derive.HEADER_READ_LIMIT + 5) + b"\r\n\r\nbody\r\n",
])
def test_read_header_of_odd_messages(message: bytes) -> None:
    """An empty header, no empty line and an over-long header all give the right ENVELOPE."""
    server = Server()
    uid = server.deliver(message)
    box = BatchMailbox(server.mailbox(), 5)
    head = derive.read_header(box, uid)  # type: ignore[arg-type]
    assert derive.ENVELOPE.compute(head) == derive.ENVELOPE.compute(message)


def test_fill_computes_each_value_once_per_batch_transaction() -> None:
    """Missing values are computed from headers, kept one transaction per batch, in order."""
    box, uids, messages = filled_mailbox(45)
    assert len(uids) == 45
    cache = DerivedCache()
    batches = [uids[:20], uids[20:40], uids[40:]]
    ready: list[int] = []
    done = derive.fill_in_batches(in_thread, cache, box,  # type: ignore[arg-type]
                                  batches, [derive.ENVELOPE], ready.append)
    Deferred.fromCoroutine(done)
    assert ready == [0, 1, 2]
    assert box.whole_reads == 0
    # The last batch has fewer misses than FILL_MIN_MISSING: left to the renderer.
    assert box.transactions == 2
    table = cache.table(box, derive.ENVELOPE.name)  # type: ignore[arg-type]
    for uid, message in zip(uids[:40], messages[:40], strict=True):
        assert table[uid] == derive.ENVELOPE.compute(message)
        assert box.kept[uid, derive.ENVELOPE.name] == table[uid]


def test_fill_reads_kept_values_without_computing() -> None:
    """Values the storage already keeps are read in one query per batch, not recomputed."""
    box, uids, messages = filled_mailbox(40)
    for uid in uids:
        box.kept[uid, derive.ENVELOPE.name] = b"(kept)"
    cache = DerivedCache()
    Deferred.fromCoroutine(derive.fill_in_batches(
        in_thread, cache, box, [uids], [derive.ENVELOPE], lambda i: None))  # type: ignore[arg-type]
    assert box.queries == 1 and box.transactions == 0
    assert set(cache.table(box, derive.ENVELOPE.name).values()) == {b"(kept)"}  # type: ignore[arg-type]


def test_fill_needing_the_body_reads_whole_messages() -> None:
    """BODYSTRUCTURE is computed from the whole message, never from the header alone."""
    box, uids, messages = filled_mailbox(20)
    cache = DerivedCache()
    Deferred.fromCoroutine(derive.fill_in_batches(
        in_thread, cache, box, [uids], [derive.ENVELOPE, derive.BODYSTRUCTURE],  # type: ignore[arg-type]
        lambda i: None))
    assert box.whole_reads == len(uids)
    table = cache.table(box, derive.BODYSTRUCTURE.name)  # type: ignore[arg-type]
    assert [table[u] for u in uids] == [derive.BODYSTRUCTURE.compute(m) for m in messages]


def test_fill_skips_messages_that_are_gone() -> None:
    """A message expunged before its batch ran is left out, not an error."""
    box, uids, _ = filled_mailbox(20)

    def gone_read(uid: int) -> bytes:
        raise NoSuchMessage(uid)

    box._mailbox.read = gone_read  # type: ignore[method-assign]
    cache = DerivedCache()
    Deferred.fromCoroutine(derive.fill_in_batches(
        in_thread, cache, box, [uids], [derive.ENVELOPE], lambda i: None))  # type: ignore[arg-type]
    assert cache.table(box, derive.ENVELOPE.name) == {}  # type: ignore[arg-type]


def test_fetch_envelope_of_a_memory_folder_needs_no_batches() -> None:
    """A mailbox without ICachedMany still answers FETCH ENVELOPE, one value at a time."""
    server = Server()
    for _ in range(derive.FILL_MIN_MISSING + 2):
        server.deliver(SIMPLE)
    assert not derive.can_fill(server.mailbox())
    client = server.connect()
    client.login().select()
    out = client.cmd("f FETCH 1:* (ENVELOPE)")
    assert out.count(b'ENVELOPE ("Fri, 20 Apr 2001') == derive.FILL_MIN_MISSING + 2


def test_maildir_folders_provide_icachedmany() -> None:
    """Maildir folders offer the batch accessor, so their first FETCH is filled in batches."""
    from zope.interface.verify import verifyClass

    from pymail.storage.maildir_folder import MaildirMailbox

    verifyClass(ICachedMany, MaildirMailbox)
    assert MaildirMailbox.threadsafe_read


def test_infos_in_view_follow_the_session_not_the_folder() -> None:
    """A session's UIDs get their infos, None for expunged ones, nothing for unseen additions."""
    from pymail.imap.selected import infos_in_view

    server = Server()
    uids = [server.deliver(SIMPLE) for _ in range(5)]
    mailbox = server.mailbox()
    assert list(infos_in_view(mailbox, uids)) == list(mailbox.messages())
    Deferred.fromCoroutine(_expunge(mailbox, uids[1]))
    server.deliver(SIMPLE)
    infos = infos_in_view(mailbox, uids)
    assert [i.uid if i else None for i in infos] == [uids[0], None, *uids[2:]]


async def _expunge(mailbox: MemoryMailbox, uid: int) -> None:
    await mailbox.set_flags([uid], ["\\Deleted"], "add")
    await mailbox.expunge()


def test_fill_computes_search_fields_alongside_only_where_it_reads() -> None:
    """Headers read for ENVELOPE also fill the SEARCH fields; kept ENVELOPEs cause no reads."""
    box, uids, messages = filled_mailbox(40)
    for uid in uids[:20]:
        box.kept[uid, derive.ENVELOPE.name] = b"(kept)"
    cache = DerivedCache()
    Deferred.fromCoroutine(derive.fill_in_batches(
        in_thread, cache, box, [uids[:20], uids[20:]], [derive.ENVELOPE],  # type: ignore[arg-type]
        lambda i: None, alongside=[SEARCH_FIELDS]))
    fields = cache.table(box, SEARCH_FIELDS.name)  # type: ignore[arg-type]
    assert sorted(fields) == uids[20:]
    for uid, message in zip(uids[20:], messages[20:], strict=True):
        assert fields[uid] == SEARCH_FIELDS.compute(message)
        assert box.kept[uid, SEARCH_FIELDS.name] == fields[uid]
    assert all((uid, SEARCH_FIELDS.name) not in box.kept for uid in uids[:20])
