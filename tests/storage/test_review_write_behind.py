"""
Review of the Maildir flag write-behind and the syncfs group commit: the
interleavings that lost or reverted an acknowledged change, or left files
behind, each reproduced before it was fixed.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from pymail.errors import StorageError
from pymail.storage import fsutil
from pymail.storage.index import FolderIndex
from pymail.storage.maildir import MaildirStoreFactory
from pymail.storage.maildir_files import UIDLIST
from pymail.testing import SteppedReactor, ThreadlessReactor

from maildir_support import ADDRESS, SteppedMaildirCase, age_directories

MSG = b"From: a@example.org\r\nSubject: s\r\n\r\nhello\r\n"


class ReviewCase(SteppedMaildirCase):
    def fill(self, box: Any, count: int) -> list[int]:
        return [self.settle(box.append(MSG.replace(b"hello", b"hello %d" % n)))
                for n in range(count)]

    def store_acknowledged(self, box: Any, uids: list[int], flags: list[str],
                           reactor: SteppedReactor | None = None) -> Any:
        """set_flags, running its first job only: answered, renames still queued."""
        reactor = reactor or self.reactor
        d = box.set_flags(uids, flags, "add")
        reactor.run_job(len(reactor.thread_work) - 1)
        result = self.successResultOf(d)
        assert any(f.__name__ == "_finish_renames" for _, f, _, _ in reactor.thread_work)
        return result


class RenamedFolderTests(ReviewCase):
    def test_a_write_behind_store_works_in_a_renamed_folder(self) -> None:
        """After RENAME the live folder records its renames in the index at the new place."""
        store = self.store()
        self.settle(store.create_mailbox("Work"))
        box = self.settle(store.get_mailbox("Work"))
        box.write_behind_min = 1
        uids = self.fill(box, 3)
        self.settle(store.rename_mailbox("Work", "Play"))
        moved = self.settle(store.get_mailbox("Play"))
        assert moved is box
        result = self.settle(moved.set_flags(uids, ["\\Seen"], "add"))
        assert result == {u: {"\\Seen"} for u in uids}
        play = os.path.join(self.root, ".Play")
        assert all(n.endswith(":2,S") for n in self.names(play)), self.names(play)
        assert [moved.read(u) for u in uids] == [
            MSG.replace(b"hello", b"hello %d" % n) for n in range(3)]


class AppendErrorTests(ReviewCase):
    def test_an_append_refused_for_its_keyword_leaves_nothing_in_tmp(self) -> None:
        """An append whose 27th keyword is refused removes the file it wrote to tmp/."""
        box = self.open_inbox()
        [uid] = self.fill(box, 1)
        self.settle(box.set_flags([uid], [f"kw{n}" for n in range(26)], "add"))
        for sync in (fsutil.syncfs, None):
            box.syncfs = sync
            failure = self.failureResultOf(self.settle_failure(box.append(MSG, ["kw26"])))
            failure.trap(StorageError)
            assert os.listdir(os.path.join(self.root, "tmp")) == []
        assert len(self.names()) == 1

    def settle_failure(self, d: Any) -> Any:
        self.reactor.run_thread_work()
        return d


class TwoProcessTests(ReviewCase):
    """Two pymail processes on one folder (two factories, each its own reactor)."""

    def test_another_process_finishing_its_renames_keeps_this_ones_recorded(self) -> None:
        """A second process that finishes its own write-behind does not forget this one's."""
        box = self.open_inbox()
        box.write_behind_min = 1
        uids = self.fill(box, 2)
        other_reactor = SteppedReactor()
        other = MaildirStoreFactory(other_reactor).open_store(ADDRESS, self.data)
        d = other.get_mailbox("INBOX")
        other_reactor.run_thread_work()
        other_box = self.successResultOf(d)
        other_box.write_behind_min = 1
        self.store_acknowledged(box, uids[:1], ["\\Answered"])
        self.store_acknowledged(other_box, uids[1:], ["\\Flagged"], other_reactor)
        other_reactor.run_thread_work()  # the other process's renames, all done
        self.reactor.thread_work.clear()  # this process dies before its renames
        again = self.open_inbox(ThreadlessReactor())
        assert [again.info(u).flags for u in uids] == [{"\\Answered"}, {"\\Flagged"}]


class CommitWindowTests(ReviewCase):
    """Another pymail process scans between an append's rename and its commit."""

    def append_with_a_scan_before_the_lock(self, sync: str) -> None:
        data = self.mktemp()
        box = self.successResultOf(MaildirStoreFactory(ThreadlessReactor(), sync=sync)
                                   .open_store(ADDRESS, data).get_mailbox("INBOX"))
        other = self.successResultOf(MaildirStoreFactory(ThreadlessReactor())
                                     .open_store(ADDRESS, data).get_mailbox("INBOX"))
        flock = box._flock
        scanned: list[bool] = []

        def scan_then_lock() -> Any:
            if not scanned:
                # The other process's NOOP, after this append's rename.
                scanned.append(True)
                self.successResultOf(other.refresh())
            return flock()

        box._flock = scan_then_lock
        uid = self.successResultOf(box.append(MSG))
        assert scanned
        seen = [i.uid for i in other.messages()]
        assert seen == [uid], (sync, seen, uid)
        root = os.path.join(data, "mail", "example.org", "alice")
        with open(os.path.join(root, UIDLIST), "rb") as f:
            lines = f.read().splitlines()[1:]
        assert len(lines) == 1, (sync, lines)
        fresh = self.successResultOf(MaildirStoreFactory(ThreadlessReactor())
                                     .open_store(ADDRESS, data).get_mailbox("INBOX"))
        assert [i.uid for i in fresh.messages()] == [uid]
        assert fresh.read(uid) == MSG

    def test_a_message_numbered_by_another_process_keeps_its_uid_syncfs(self) -> None:
        """A syncfs group append keeps the UID another process's scan gave its file."""
        self.append_with_a_scan_before_the_lock("syncfs")

    def test_a_message_numbered_by_another_process_keeps_its_uid_fsync(self) -> None:
        """An fsync-mode append keeps the UID another process's scan gave its file."""
        self.append_with_a_scan_before_the_lock("fsync")


class IndexReplacedTests(ReviewCase):
    def test_recorded_renames_survive_an_index_of_another_schema_version(self) -> None:
        """An index replaced at open (another schema version) hands over its pending renames."""
        box = self.open_inbox()
        box.write_behind_min = 1
        uids = self.fill(box, 2)
        self.store_acknowledged(box, uids, ["\\Seen"])
        self.reactor.thread_work.clear()  # the process dies before its renames
        db = sqlite3.connect(os.path.join(self.root, "pymail-index.sqlite"))
        db.execute("UPDATE meta SET value=1 WHERE key='version'")
        db.commit()
        db.close()
        again = self.open_inbox(ThreadlessReactor())
        assert [again.info(u).flags for u in uids] == [{"\\Seen"}, {"\\Seen"}]
        assert all(n.endswith(":2,S") for n in self.names()), self.names()
        index = FolderIndex(self.root)
        index.open()
        self.addCleanup(index.close)
        assert index.renames() == []


class ModseqAfterKillTests(ReviewCase):
    def test_no_modseq_goes_back_when_the_index_writes_die_with_the_process(self) -> None:
        """A kill -9 before the index got the answered MODSEQs leaves the next open above them."""
        box = self.open_inbox()
        [uid] = self.fill(box, 1)
        seen = []
        for flag in ("\\Seen", "\\Flagged", "\\Answered"):
            d = box.set_flags([uid], [flag], "add")
            # The STORE's own job only; the index writes stay queued.
            job = next(i for i, (_, f, _, _) in enumerate(self.reactor.thread_work)
                       if f.__name__ == "_set_flags")
            self.reactor.run_job(job)
            self.successResultOf(d)
            seen.append(box.highestmodseq())
        # The index writes wait for their batch (IndexQueue's delay) or in
        # the pool; a kill -9 loses both.
        waiting = self.reactor.getDelayedCalls()
        assert waiting or any(f.__name__ == "_drain" for _, f, _, _ in self.reactor.thread_work)
        for call in waiting:
            call.cancel()
        self.reactor.thread_work.clear()  # kill -9
        again = self.open_inbox(ThreadlessReactor())
        assert again.info(uid).flags == {"\\Seen", "\\Flagged", "\\Answered"}
        assert again.highestmodseq() >= max(seen)
        assert again.info(uid).modseq > max(seen) - 1
        self.successResultOf(again.set_flags([uid], ["\\Seen"], "remove"))
        assert again.info(uid).modseq > max(seen)


class SyncfsDescriptorTests(ReviewCase):
    def test_the_first_syncfs_is_asked_on_a_descriptor_opened_before_the_write(self) -> None:
        """The group's first syncfs goes to its message's own file, open since before the write.

        Linux reports a write-back error to syncfs only when it happened
        after the descriptor was opened: a descriptor opened at commit time
        would miss a failed write-back of the file in between.
        """
        data = self.mktemp()
        box = self.successResultOf(MaildirStoreFactory(ThreadlessReactor(), sync="fsync")
                                   .open_store(ADDRESS, data).get_mailbox("INBOX"))
        root = os.path.join(data, "mail", "example.org", "alice")
        synced: list[tuple[bool, bool]] = []
        real = fsutil.syncfs

        def recording(fd: int) -> None:
            st = os.fstat(fd)
            in_tmp = [os.stat(os.path.join(root, "tmp", n)) for n in
                      os.listdir(os.path.join(root, "tmp"))]
            synced.append((any(os.path.samestat(st, t) for t in in_tmp), st.st_size > 0))
            if real is not None:
                real(fd)

        box.syncfs = recording
        uid = self.successResultOf(box.append(MSG))
        assert box.read(uid) == MSG
        assert synced[0] == (True, True), synced
        assert len(synced) == 2


class FailedCommitTests(ReviewCase):
    """An append whose commit fails after its file was renamed into new/."""

    def fail_and_look(self, sync: str) -> None:
        data = self.mktemp()
        box = self.successResultOf(MaildirStoreFactory(ThreadlessReactor(), sync=sync)
                                   .open_store(ADDRESS, data).get_mailbox("INBOX"))
        root = os.path.join(data, "mail", "example.org", "alice")
        calls: list[int] = []

        def second_syncfs_fails(fd: int) -> None:
            calls.append(fd)
            if len(calls) == 2:
                raise OSError(5, "Input/output error")

        def uidlist_fails(*args: Any, **kw: Any) -> None:
            raise OSError(5, "Input/output error")

        if sync == "syncfs":
            box.syncfs = second_syncfs_fails
        else:
            box._append_uidlist_locked = uidlist_fails
        self.failureResultOf(box.append(MSG))
        assert box.messages() == []
        self.successResultOf(box.refresh())
        assert box.messages() == []
        assert self.names(root) == [] and os.listdir(os.path.join(root, "tmp")) == []
        fresh = self.successResultOf(MaildirStoreFactory(ThreadlessReactor())
                                     .open_store(ADDRESS, data).get_mailbox("INBOX"))
        assert fresh.messages() == []

    def test_a_failed_second_syncfs_leaves_no_message_to_appear_later(self) -> None:
        """An append failed by its group's second syncfs takes its renamed file back."""
        self.fail_and_look("syncfs")

    def test_a_failed_uidlist_write_leaves_no_message_to_appear_later(self) -> None:
        """An fsync-mode append failed by its uidlist write takes its renamed file back."""
        self.fail_and_look("fsync")


class RecoveryRaceTests(ReviewCase):
    def test_an_open_recovering_renames_never_reverts_a_later_change_of_the_live_process(
            self) -> None:
        """A second process's open redoes only renames still recorded once it holds the lock."""
        box = self.open_inbox()
        box.write_behind_min = 1
        [uid] = self.fill(box, 1)
        self.store_acknowledged(box, [uid], ["\\Seen"])
        other = MaildirStoreFactory(ThreadlessReactor()).open_store(ADDRESS, self.data)
        # While the other process opens the folder, this one finishes its
        # renames and answers a STORE -\Seen (renamed before its answer).
        from pymail.storage.maildir_folder import MaildirMailbox

        real_new_mailbox = other._factory._new_mailbox

        def new_mailbox(path: str, name: str) -> MaildirMailbox:
            opening = real_new_mailbox(path, name)
            flock = opening._flock

            def meanwhile_then_lock() -> Any:
                if box.write_behind_min == 1:
                    self.reactor.run_thread_work()
                    box.write_behind_min = 10
                    self.settle(box.set_flags([uid], ["\\Seen"], "remove"))
                return flock()

            opening._flock = meanwhile_then_lock
            return opening

        other._factory._new_mailbox = new_mailbox
        opened = self.successResultOf(other.get_mailbox("INBOX"))
        assert box.info(uid).flags == set()
        assert opened.info(uid).flags == set()
        assert [n.partition(":2,")[2] for n in self.names()] == [""]


class SecondProcessInTheBatchWindowTests(SynchronousTestCase):
    """Found by the review of the 50 ms index batches (session 5 of 27 Nov 2026)."""

    def open(self, data: str) -> tuple[Any, Any]:
        factory = MaildirStoreFactory(ThreadlessReactor())
        box = self.successResultOf(factory.open_store(ADDRESS, data).get_mailbox("INBOX"))
        return factory, box

    def test_a_flag_change_after_another_process_renumbered_the_rows_reaches_the_index(
            self) -> None:
        """Rows another process numbered higher still take this process's later file name."""
        data = self.mktemp()
        root = os.path.join(data, "mail", "example.org", "alice")
        first_factory, first = self.open(data)
        message = b"Subject: x\r\n\r\nbody\r\n"
        self.successResultOf(first.append(message))
        first._reactor.advance(1)  # the first batch of rows lands
        uids = [self.successResultOf(first.append(message)) for _ in range(3)]
        uid = uids[-1]
        # Another process opens the folder while that row waits for its
        # batch: it does not trust the rows and numbers the message higher.
        other_factory, other = self.open(data)
        seen_there = other.info(uid).modseq
        # (The flag change below gets a MODSEQ under that number.)
        assert seen_there > first.highestmodseq() + 1
        self.successResultOf(other_factory.checkpoint_all())
        first._reactor.advance(1)
        self.successResultOf(first.set_flags([uid], ["\\Seen"], "add"))
        first._reactor.advance(1)
        # A quiet refresh records the folder as in sync with the rows; a
        # clean stop; the next start opens from the index alone.
        age_directories(root, 10)
        self.successResultOf(first.refresh())
        first._reactor.advance(1)
        self.successResultOf(first_factory.checkpoint_all())
        _, again = self.open(data)
        assert again.info(uid).flags == {"\\Seen"}
        assert again.info(uid).modseq >= seen_there
        self.successResultOf(again.set_flags([uid], ["\\Flagged"], "add"))
        assert [n.rpartition(":2,")[2] for n in os.listdir(os.path.join(root, "cur"))] == ["FS"]
