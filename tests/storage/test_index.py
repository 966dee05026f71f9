"""The Maildir folder index: MODSEQ and cache persistence, rebuilding a lost or corrupt index."""

from __future__ import annotations

import mailbox
import os
import threading
from pathlib import Path
from typing import Any

from twisted.internet.threads import deferToThreadPool
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from pymail.storage.index import (
    INDEX_FILE,
    FolderIndex,
    IndexQueue,
    decode_value,
    encode_value,
)
from pymail.storage.base import LazyInfos, keywords_of
from pymail.storage.maildir import MaildirStoreFactory
from pymail.testing import ThreadlessReactor

from maildir_support import age_directories


def message(n: int) -> bytes:
    return b"From: a@example.org\r\nSubject: %d\r\n\r\nbody %d\r\n" % (n, n)


class InboxFixture(SynchronousTestCase):
    """Alice's Maildir INBOX, opened as a fresh process would."""

    def setUp(self) -> None:
        self.reactor = ThreadlessReactor()
        self.data = self.mktemp()
        self.root = os.path.join(self.data, "mail", "example.org", "alice")

    def open_inbox(self) -> Any:
        # As after a stop of the process that opened it before: that writes
        # the index changes still waiting for their batch.
        for factory in getattr(self, "factories", []):
            self.successResultOf(factory.checkpoint_all())
        factory = MaildirStoreFactory(self.reactor)
        self.factories = [*getattr(self, "factories", []), factory]
        store = factory.open_store("alice@example.org", self.data)
        return self.successResultOf(store.get_mailbox("INBOX"))


class IndexTests(InboxFixture):

    def snapshot(self, box: Any) -> list[tuple[int, frozenset[str], bytes, float]]:
        return [(i.uid, i.flags, box.read(i.uid), i.internaldate.timestamp())
                for i in box.messages()]

    def test_modseq_persists(self) -> None:
        """Per-message MODSEQ and HIGHESTMODSEQ are the same after reopening."""
        box = self.open_inbox()
        uids = [self.successResultOf(box.append(message(n))) for n in range(3)]
        self.successResultOf(box.set_flags([uids[1]], ["\\Seen"], "add"))
        before = {i.uid: i.modseq for i in box.messages()}
        assert before[uids[1]] == box.highestmodseq()
        again = self.open_inbox()
        assert {i.uid: i.modseq for i in again.messages()} == before
        assert again.highestmodseq() == box.highestmodseq()

    def test_cache_survives_reopen(self) -> None:
        """A cached value is computed once, even across processes."""
        box = self.open_inbox()
        uid = self.successResultOf(box.append(message(1)))
        calls: list[bytes] = []

        def compute(data: bytes) -> Any:
            calls.append(data)
            return (b"x", [1, None])

        assert box.cached(uid, "t.1", compute) == (b"x", (1, None))
        assert self.open_inbox().cached(uid, "t.1", compute) == (b"x", (1, None))
        assert calls == [message(1)]

    def test_value_encoding_round_trip(self) -> None:
        """Nested bytes (any octet), str, int and None survive the index's encoding."""
        value = (b"\x00\xff\r\n", ("\u00e9", 7, None, (b"",)), ())
        assert decode_value(encode_value(value)) == value

    def test_deleted_index_of_busy_folder_rebuilds(self) -> None:
        """With writers busy, deleting the index loses no message, flag or UID."""
        box = self.open_inbox()
        uids = [self.successResultOf(box.append(message(n))) for n in range(40)]
        self.successResultOf(box.set_flags(uids[::3], ["\\Seen", "$Work"], "add"))
        self.successResultOf(box.set_flags(uids[5:10], ["\\Deleted"], "add"))
        self.successResultOf(box.expunge())
        seen_modseq = box.highestmodseq()
        errors: list[BaseException] = []
        stop = threading.Event()

        def outside_writer() -> None:
            md = mailbox.Maildir(self.root, factory=None, create=False)
            try:
                for n in range(20):
                    md.add(b"Subject: outside %d\n\nx\n" % n)
            except BaseException as e:
                errors.append(e)
            finally:
                stop.set()

        writer = threading.Thread(target=outside_writer)
        writer.start()
        for suffix in ("", "-wal", "-shm"):
            try:
                os.unlink(os.path.join(self.root, INDEX_FILE + suffix))
            except FileNotFoundError:
                pass
        more = [self.successResultOf(box.append(message(100 + n))) for n in range(10)]
        writer.join(30)
        assert stop.is_set() and not errors
        self.successResultOf(box.refresh())
        expected = self.snapshot(box)
        assert len(expected) == 35 + 10 + 20
        assert set(uids[:5] + uids[10:] + more) <= {u for u, *_ in expected}
        again = self.open_inbox()
        assert not os.path.exists(os.path.join(self.root, INDEX_FILE + ".missing"))
        assert self.snapshot(again) == expected
        assert again.highestmodseq() > seen_modseq
        assert all(i.modseq > seen_modseq for i in again.messages())

    def test_corrupt_index_is_rebuilt_and_logged(self) -> None:
        """Garbage in the index file: every message and flag is kept, and a log line says so."""
        box = self.open_inbox()
        uids = [self.successResultOf(box.append(message(n), ["\\Flagged"])) for n in range(5)]
        expected = self.snapshot(box)
        Path(self.root, INDEX_FILE).write_bytes(b"this is not a database" * 100)
        for suffix in ("-wal", "-shm"):
            try:
                os.unlink(os.path.join(self.root, INDEX_FILE + suffix))
            except FileNotFoundError:
                pass
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        try:
            again = self.open_inbox()
        finally:
            globalLogPublisher.removeObserver(events.append)
        assert self.snapshot(again) == expected
        assert [i.uid for i in again.messages()] == uids
        assert any("rebuilding" in e.get("log_format", "") for e in events)


class TrustedOpenTests(InboxFixture):
    def filled_quiet_folder(self) -> list[tuple[int, str, frozenset[str], float, int, int]]:
        box = self.open_inbox()
        uids = [self.successResultOf(box.append(message(n))) for n in range(6)]
        self.successResultOf(box.set_flags(uids[::2], ["\\Seen", "$Work"], "add"))
        age_directories(self.root, 10)
        # A fresh process's open scans (the stamps moved) and records the sync.
        fresh = self.open_inbox()
        return [(i.uid, i.key, i.flags, i.internaldate.timestamp(), i.size, i.modseq)
                for i in fresh.messages()]

    def test_trusted_open_reads_the_index(self) -> None:
        """Once a quiet folder was scanned, a fresh open takes the messages from the index alone."""
        expected = self.filled_quiet_folder()
        # A file slipped in with the directory's mtime put back is invisible
        # to an open that trusts the index: it proves the listing was skipped.
        new = os.path.join(self.root, "new")
        stamp = os.stat(new)
        Path(new, "1.hidden.example").write_bytes(b"Subject: hidden\n\nx\n")
        os.utime(new, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
        again = self.open_inbox()
        assert [(i.uid, i.key, i.flags, i.internaldate.timestamp(), i.size, i.modseq)
                for i in again.messages()] == expected
        assert again.uidnext() == expected[-1][0] + 1
        assert again.read(expected[1][0]) == message(1)

    def test_trusted_open_makes_messages_on_demand(self) -> None:
        """A trusted open makes each message when asked; changes land as on a scanned folder."""
        expected = self.filled_quiet_folder()
        again = self.open_inbox()
        infos = again.messages()
        assert isinstance(infos, LazyInfos)
        assert infos.uids() == [e[0] for e in expected]
        assert list(infos.flag_sets()) == [e[2] for e in expected]
        assert keywords_of(infos) == {"$Work"}
        assert infos[-1].uid == expected[-1][0]
        assert [i.uid for i in infos[1:3]] == [e[0] for e in expected[1:3]]
        assert infos[2] is infos[2]
        # Change the folder while most messages are still rows.
        self.successResultOf(again.set_flags([expected[3][0]], ["\\Flagged"], "add"))
        added = self.successResultOf(again.append(message(9)))
        assert infos == list(infos) and [] != infos
        assert keywords_of(list(infos)) == {"$Work"}
        assert infos[-1].uid == added
        self.successResultOf(again.set_flags([expected[0][0]], ["\\Deleted"], "add"))
        self.successResultOf(again.expunge())
        now = [(i.uid, i.key, i.flags, i.size) for i in again.messages()]
        assert [u for u, *_ in now] == [e[0] for e in expected[1:]] + [added]
        assert now[2][2] == expected[3][2] | {"\\Flagged"}
        # A scan of the same folder (the index deleted) sees the same messages.
        os.unlink(os.path.join(self.root, INDEX_FILE))
        rescanned = self.open_inbox()
        assert [(i.uid, i.key, i.flags, i.size) for i in rescanned.messages()] == now

    def test_outside_changes_are_not_hidden_by_the_index(self) -> None:
        """Another program's delivery and flag change since the sync are seen by a fresh open."""
        expected = self.filled_quiet_folder()
        Path(self.root, "new", "2.outside.example").write_bytes(b"Subject: outside\n\nx\n")
        sub, name = next((sub, n) for sub in ("new", "cur")
                         for n in os.listdir(os.path.join(self.root, sub))
                         if n.startswith(expected[1][1]))
        os.rename(os.path.join(self.root, sub, name),
                  os.path.join(self.root, "cur", expected[1][1] + ":2,F"))
        again = self.open_inbox()
        infos = {i.uid: i for i in again.messages()}
        assert len(infos) == len(expected) + 1
        assert infos[expected[1][0]].flags == frozenset({"\\Flagged"})
        assert infos[expected[1][0]].modseq > max(e[5] for e in expected)
        assert again.read(max(infos)) == b"Subject: outside\r\n\r\nx\r\n"

    def test_uidlist_change_is_not_hidden_by_the_index(self) -> None:
        """Another program rewriting the uidlist (a new UIDVALIDITY) makes a fresh open rescan."""
        expected = self.filled_quiet_folder()
        path = os.path.join(self.root, "dovecot-uidlist")
        lines = Path(path).read_bytes().split(b"\n")
        lines[0] = b"3 V42 N%d G0123" % (expected[-1][0] + 1)
        Path(path + ".new").write_bytes(b"\n".join(lines))
        os.rename(path + ".new", path)
        again = self.open_inbox()
        assert again.uidvalidity() == 42
        assert [i.uid for i in again.messages()] == [e[0] for e in expected]


class FreshIndexCase(SynchronousTestCase):
    def setUp(self) -> None:
        folder = self.mktemp()
        os.makedirs(folder)
        self.index = FolderIndex(folder)
        self.index.open()
        self.addCleanup(self.index.close)


class IndexQueueTests(FreshIndexCase):
    """The ordered queue of index writes the reactor thread hands to the pool."""

    def setUp(self) -> None:
        super().setUp()
        self.jobs: list[Any] = []
        self.queue = IndexQueue(self.index, self.jobs.append)

    def drain(self) -> None:
        while self.jobs:
            self.jobs.pop(0)()

    def test_rename_after_upsert_in_one_batch_lands(self) -> None:
        """A flag change queued right after its message was added updates the new row."""
        self.queue.add(upsert=[(1, "new/a", 100, 10, 5), (2, "new/b", 200, 20, 6)],
                       highestmodseq=6)
        self.queue.add(renamed=[("cur/a:2,S", 7, 1)], highestmodseq=7)
        self.drain()
        assert self.index.rows() == {1: ("cur/a:2,S", 100, 10, 7), 2: ("new/b", 200, 20, 6)}
        assert self.index.meta("highestmodseq") == 7

    def test_rename_never_moves_modseq_back(self) -> None:
        """A rename below the row's MODSEQ (another process numbered it higher) still renames."""
        self.queue.add(upsert=[(1, "cur/a:2,F", 100, 10, 9)])
        self.queue.add(renamed=[("cur/a:2,S", 8, 1)])
        self.drain()
        assert self.index.rows() == {1: ("cur/a:2,S", 100, 10, 9)}

    def test_delete_then_upsert_keeps_queue_order(self) -> None:
        """Writes apply in the order queued: a row deleted and then added again stays."""
        self.queue.add(upsert=[(1, "cur/a", 100, 10, 1)])
        self.queue.add(delete=[1])
        self.queue.add(upsert=[(1, "cur/b", 100, 10, 3)], renamed=[("cur/b:2,S", 4, 1)])
        self.drain()
        assert self.index.rows() == {1: ("cur/b:2,S", 100, 10, 4)}


class DelayedIndexQueueTests(FreshIndexCase):
    """With a delay, the changes of a burst reach the index in one transaction."""

    def setUp(self) -> None:
        super().setUp()
        self.reactor = ThreadlessReactor()
        self.transactions: list[int] = []
        apply = self.index.apply

        def counted(ops: Any, *args: Any) -> None:
            self.transactions.append(len(ops))
            apply(ops, *args)

        self.index.apply = counted  # type: ignore[method-assign]
        reactor = self.reactor
        self.queue = IndexQueue(
            self.index, lambda f: deferToThreadPool(reactor, reactor.getThreadPool(), f),
            reactor.callLater, 0.05)

    def test_a_burst_is_one_transaction_after_the_delay(self) -> None:
        """Five groups queued within the delay: nothing before it, then one transaction."""
        for uid in range(1, 6):
            self.queue.add(upsert=[(uid, f"new/{uid}", 100, 10, uid)], highestmodseq=uid)
        self.reactor.advance(0.049)
        assert self.transactions == [] and self.index.rows() == {}
        self.reactor.advance(0.001)
        assert self.transactions == [5]
        assert sorted(self.index.rows()) == [1, 2, 3, 4, 5]
        assert self.index.meta("highestmodseq") == 5
        # The next change waits for a batch of its own.
        self.queue.add(delete=[1])
        assert self.transactions == [5]
        self.reactor.advance(0.05)
        assert self.transactions == [5, 1] and sorted(self.index.rows()) == [2, 3, 4, 5]

    def test_flush_writes_at_once(self) -> None:
        """flush() (the service's stop) writes what waits, and every later change at once."""
        self.queue.add(upsert=[(1, "new/1", 100, 10, 1)])
        done = self.queue.flush()
        self.successResultOf(done)
        assert self.transactions == [1] and list(self.index.rows()) == [1]
        assert self.reactor.getDelayedCalls() == []
        # Sessions still open while the service stops may change the
        # folder: those changes are written at once, not after a delay
        # that a stopping reactor would never reach.
        self.queue.add(upsert=[(2, "new/2", 100, 10, 2)])
        assert self.reactor.getDelayedCalls() == []
        assert self.transactions == [1, 1] and sorted(self.index.rows()) == [1, 2]


class StopWritesIndexTests(InboxFixture):
    def test_checkpoint_all_writes_the_waiting_index_changes(self) -> None:
        """The service's stop hook leaves the index with every delivered message's row."""
        box = self.open_inbox()
        uids = [self.successResultOf(box.append(message(n))) for n in range(3)]
        index = FolderIndex(self.root)
        index.open()
        self.addCleanup(index.close)
        assert index.rows() == {}  # waiting for the batch
        self.successResultOf(self.factories[-1].checkpoint_all())
        assert sorted(index.rows()) == uids
        assert {u: r[3] for u, r in index.rows().items()} == {
            i.uid: i.modseq for i in box.messages()}
