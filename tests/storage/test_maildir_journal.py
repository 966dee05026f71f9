"""
The Maildir delivery journal (``maildir.sync = "journal"``, the default):
group commit through one file, checkpoints, and the replay that brings
back, byte for byte and under the same UID, what a power loss took from
files that were acknowledged but not yet written back.

A power loss is simulated by doing to the folder what it can do to data
that was never fsynced: a file gone, a file left empty, uidlist lines gone.
"""

from __future__ import annotations

import os
from typing import Any

import attrs
from twisted.trial.unittest import SynchronousTestCase

from pymail.errors import StorageError
from pymail.storage import maildir_journal
from pymail.storage.maildir_files import UIDLIST
from pymail.storage.maildir_journal import JOURNAL, Record
from pymail.testing import ThreadlessReactor

from maildir_support import SteppedMaildirCase

MSG = b"From: a@example.org\r\nSubject: s\r\n\r\nhello\r\n.dot line\r\n"


def message(n: int) -> bytes:
    return MSG.replace(b"hello", b"hello %d" % n)


class JournalCase(SteppedMaildirCase):
    def journal(self) -> str:
        return os.path.join(self.root, JOURNAL)

    def records(self) -> list[Record]:
        return maildir_journal.read(self.journal())[0]

    def append_all(self, box: Any, count: int) -> list[int]:
        """``count`` appends queued in one reactor turn, then the pool's work run."""
        ds = [box.append(message(n)) for n in range(count)]
        self.reactor.run_thread_work()
        return [self.successResultOf(d) for d in ds]

    def reopen(self) -> Any:
        """INBOX as a new process finds it (a fresh factory: replay at open)."""
        return self.successResultOf(self.store(ThreadlessReactor()).get_mailbox("INBOX"))

    def file_of(self, box: Any, uid: int) -> str:
        return os.path.join(self.root, box._disk.files[uid])

    def as_if_rebooted(self) -> None:
        """Mark every record as written before the machine last started (a power loss)."""
        rebooted = [attrs.evolve(r, boot="an-earlier-boot") for r in self.records()]
        with open(self.journal(), "wb") as f:
            f.write(maildir_journal.encode(rebooted))

    def uidlist_lines(self) -> list[str]:
        with open(os.path.join(self.root, UIDLIST)) as f:
            return f.read().splitlines()[1:]


class GroupCommitTests(JournalCase):
    def test_appends_queued_together_are_committed_as_one_group(self) -> None:
        """Five appends of one turn: one committer job, five records, files byte-exact."""
        box = self.open_inbox()
        ds = [box.append(message(n)) for n in range(5)]
        assert len(self.reactor.thread_work) == 1  # one committer, started once
        self.reactor.run_thread_work()
        uids = [self.successResultOf(d) for d in ds]
        assert uids == [1, 2, 3, 4, 5]
        records = self.records()
        assert [r.uid for r in records] == uids
        for uid, record in zip(uids, records, strict=True):
            with open(self.file_of(box, uid), "rb") as f:
                assert f.read() == record.data
            assert box.read(uid) == message(uid - 1)
            assert box._disk.files[uid] == record.relpath
        assert self.uidlist_lines() == [f"{u} :{r.base}" for u, r in zip(uids, records)]
        assert os.listdir(os.path.join(self.root, "tmp")) == []

    def test_a_refused_keyword_fails_only_its_own_append(self) -> None:
        """In a group, the append with a 27th keyword fails; the others are stored."""
        box = self.open_inbox()
        [first] = self.append_all(box, 1)
        self.settle(box.set_flags([first], [f"kw{n}" for n in range(26)], "add"))
        good = box.append(message(1))
        bad = box.append(message(2), ["kw26"])
        self.reactor.run_thread_work()
        uid = self.successResultOf(good)
        self.failureResultOf(bad)
        assert box.read(uid) == message(1)
        assert [r.uid for r in self.records()] == [first, uid]
        assert os.listdir(os.path.join(self.root, "tmp")) == []

    def test_a_failed_commit_takes_back_its_files_and_records(self) -> None:
        """A group failed after its journal write leaves no file and no record behind."""
        box = self.open_inbox()
        [kept] = self.append_all(box, 1)

        def uidlist_fails(*args: Any, **kw: Any) -> None:
            raise OSError(5, "Input/output error")

        box._append_uidlist_locked = uidlist_fails
        d = box.append(message(9))
        self.reactor.run_thread_work()
        self.failureResultOf(d)
        assert [r.uid for r in self.records()] == [kept]
        assert len(self.names()) == 1
        fresh = self.reopen()
        assert [i.uid for i in fresh.messages()] == [kept]


class ReplayTests(JournalCase):
    def test_a_lost_file_and_its_uidlist_line_come_back_with_the_same_uid(self) -> None:
        """A file and uidlist line lost to a power loss are rewritten from the journal."""
        box = self.open_inbox()
        uids = self.append_all(box, 3)
        lost = self.file_of(box, uids[2])
        stamp = os.stat(lost).st_mtime
        os.unlink(lost)
        path = os.path.join(self.root, UIDLIST)
        with open(path) as f:
            lines = f.read().splitlines(keepends=True)
        with open(path, "w") as f:
            f.writelines(lines[:-1])
        self.as_if_rebooted()
        fresh = self.reopen()
        assert [i.uid for i in fresh.messages()] == uids
        assert [fresh.read(u) for u in uids] == [message(n) for n in range(3)]
        assert os.stat(self.file_of(fresh, uids[2])).st_mtime == stamp
        assert fresh.info(uids[2]).internaldate == box.info(uids[2]).internaldate
        assert os.path.getsize(self.journal()) == 0

    def test_a_file_left_empty_gets_its_octets_back_under_its_flagged_name(self) -> None:
        """A flag-renamed file left empty (data never written back) is refilled where it is."""
        box = self.open_inbox()
        uids = self.append_all(box, 2)
        self.settle(box.set_flags([uids[0]], ["\\Seen"], "add"))
        flagged = self.file_of(box, uids[0])
        assert flagged.endswith(":2,S")
        os.truncate(flagged, 0)
        self.as_if_rebooted()
        fresh = self.reopen()
        assert fresh.read(uids[0]) == message(0)
        assert fresh.info(uids[0]).flags == {"\\Seen"}
        assert self.file_of(fresh, uids[0]) == flagged

    def test_a_torn_last_record_is_dropped(self) -> None:
        """Half a record (a crash during the write, never acknowledged) is ignored."""
        box = self.open_inbox()
        uids = self.append_all(box, 2)
        whole = maildir_journal.encode([Record(99, 0, "new/torn.base", b"x" * 100)])
        with open(self.journal(), "ab") as f:
            f.write(whole[:60])
        fresh = self.reopen()
        assert [i.uid for i in fresh.messages()] == uids
        assert os.path.getsize(self.journal()) == 0
        assert not any("torn" in n for n in self.names())

    def test_an_intact_folder_is_only_checkpointed(self) -> None:
        """After a kill -9 (files intact) the open changes nothing and empties the journal."""
        box = self.open_inbox()
        uids = self.append_all(box, 4)
        before = {n: os.stat(os.path.join(self.root, "new", n)).st_ino
                  for n in os.listdir(os.path.join(self.root, "new"))}
        fresh = self.reopen()
        after = {n: os.stat(os.path.join(self.root, "new", n)).st_ino
                 for n in os.listdir(os.path.join(self.root, "new"))}
        assert before == after
        assert [i.uid for i in fresh.messages()] == uids
        assert os.path.getsize(self.journal()) == 0


class CheckpointTests(JournalCase):
    def test_the_journal_is_emptied_past_its_threshold(self) -> None:
        """With checkpoint_records = 3 the third record's group empties the journal."""
        box = self.open_inbox()
        box.checkpoint_records = 3
        self.append_all(box, 2)
        assert len(self.records()) == 2
        self.append_all(box, 1)
        assert os.path.getsize(self.journal()) == 0
        self.append_all(box, 1)
        assert len(self.records()) == 1

    def test_an_expunge_empties_the_journal_before_removing_files(self) -> None:
        """An expunged message can never come back from the journal."""
        box = self.open_inbox()
        uids = self.append_all(box, 2)
        self.settle(box.set_flags([uids[0]], ["\\Deleted"], "add"))
        self.settle(box.expunge())
        assert os.path.getsize(self.journal()) == 0
        fresh = self.reopen()
        assert [i.uid for i in fresh.messages()] == [uids[1]]

    def test_a_checkpoint_covers_another_process_records(self) -> None:
        """Records of two processes: a checkpoint by either one empties the journal."""
        box = self.open_inbox()
        other = self.open_inbox(ThreadlessReactor())
        mine = self.append_all(box, 2)
        theirs = self.successResultOf(other.append(message(7)))
        assert [r.uid for r in self.records()] == mine + [theirs]
        d = box.checkpoint()
        self.reactor.run_thread_work()
        self.successResultOf(d)
        assert os.path.getsize(self.journal()) == 0
        fresh = self.reopen()
        assert [fresh.read(u) for u in mine + [theirs]] == [message(0), message(1), message(7)]


class JournalFormatTests(SynchronousTestCase):
    def test_records_read_back_exactly(self) -> None:
        """encode then decode gives the same records, with any octets in the message."""
        records = [Record(1, 1700000000, "new/a.b,S=3", b"a\nb"),
                   Record(2, 5, "cur/c.d,S=0:2,FS", b""),
                   Record(3, 7, "new/\udcff.x", bytes(range(256)) * 4)]
        data = maildir_journal.encode(records)
        assert maildir_journal.decode(data) == (records, len(data))

    def test_reading_stops_at_the_first_damaged_record(self) -> None:
        """A changed octet (CRC), a bad path, UID or base name, or a missing end: that record and
        everything after it are left out."""
        good = maildir_journal.encode([Record(1, 0, "new/a", b"first")])
        later = maildir_journal.encode([Record(3, 0, "new/c", b"third")])
        whole = maildir_journal.encode([Record(2, 0, "new/b", b"second")])
        for bad in (whole.replace(b"second", b"sec0nd"),
                    whole.replace(b" 2 0 6 ", b" 3 0 6 "),  # a header field changed
                    maildir_journal.encode([Record(2, 0, "tmp/b", b"second")]),
                    maildir_journal.encode([Record(2, 0, "new/../b", b"second")]),
                    maildir_journal.encode([Record(2, 0, "new/..", b"second")]),
                    maildir_journal.encode([Record(2**32, 0, "new/b", b"second")]),
                    whole[:-1],
                    whole[:30],
                    b"PJ1 x y 0 1 0 new/b\nz\n"):
            records, length = maildir_journal.decode(good + bad + later)
            assert [r.data for r in records] == [b"first"], bad
            assert length == len(good)

    def test_a_record_inside_a_message_is_never_read_as_one(self) -> None:
        """A message carrying the text of a whole record, its own record torn: nothing of it counts."""
        forged = maildir_journal.encode([Record(7, 0, "new/forged", b"owned\n", "x")])
        carrier = maildir_journal.encode([Record(2, 0, "new/b", b"hi\n" + forged + b"pad\n")])
        good = maildir_journal.encode([Record(1, 0, "new/a", b"first")])
        torn = carrier[:carrier.index(forged) + len(forged) + 2]
        records, length = maildir_journal.decode(good + torn)
        assert [r.relpath for r in records] == ["new/a"] and length == len(good)


class ReviewTests(JournalCase):
    """What an adversarial review of the journal found, each failing before its fix."""

    def test_a_message_another_program_deleted_stays_deleted_after_a_restart(self) -> None:
        """Same boot (no power loss): a file a mail client removed is not brought back."""
        box = self.open_inbox()
        uids = self.append_all(box, 2)
        os.unlink(self.file_of(box, uids[0]))
        fresh = self.reopen()
        assert [i.uid for i in fresh.messages()] == [uids[1]]
        assert os.path.getsize(self.journal()) == 0

    def test_a_checkpoint_after_a_failed_one_does_not_trust_syncfs(self) -> None:
        """syncfs reports a write-back error once: the retry rewrites the files instead."""
        box = self.open_inbox()
        calls: list[int] = []

        def once_failing_syncfs(fd: int) -> None:
            calls.append(fd)
            if len(calls) == 1:
                raise OSError(5, "syncfs: Input/output error")

        box.journal_syncfs = once_failing_syncfs
        [uid] = self.append_all(box, 1)
        d = box.checkpoint()
        self.reactor.run_thread_work()
        self.failureResultOf(d)
        assert os.path.getsize(self.journal()) > 0
        rewritten: list[str] = []
        real = box._rewrite_journaled_locked

        def recording(records: list[Record]) -> None:
            rewritten.extend(r.base for r in records)
            real(records)

        box._rewrite_journaled_locked = recording
        self.settle(box.checkpoint())
        assert len(calls) == 1 and rewritten == [box.info(uid).key]
        assert os.path.getsize(self.journal()) == 0
        assert box.read(uid) == message(0)
        # Trusted again once the journal was emptied.
        self.append_all(box, 1)
        self.settle(box.checkpoint())
        assert len(calls) == 2

    def test_records_after_a_torn_one_are_replayed(self) -> None:
        """Another process killed in mid-write: the groups appended after its torn record count."""
        box = self.open_inbox()
        self.append_all(box, 1)
        torn = maildir_journal.encode([Record(99, 0, "new/p2.base", b"x" * 10000)])[:5000]
        with open(self.journal(), "ab") as f:
            f.write(torn)
        uids = [self.append_all(box, 1)[0] for _ in range(2)]
        for u in uids:
            os.truncate(self.file_of(box, u), 0)
        self.as_if_rebooted()
        fresh = self.reopen()
        assert [fresh.read(u) for u in uids] == [message(0), message(0)]

    def test_a_folder_replaced_by_another_process_gets_no_record_in_the_old_journal(
            self) -> None:
        """Deleted and made again elsewhere: the group fails, the next one uses the new journal."""
        store = self.store()
        self.settle(store.create_mailbox("Work"))
        box = self.settle(store.get_mailbox("Work"))
        self.append_all(box, 1)
        other = self.store(ThreadlessReactor())
        self.successResultOf(other.delete_mailbox("Work"))
        self.successResultOf(other.create_mailbox("Work"))
        d = box.append(message(5))
        self.reactor.run_thread_work()
        self.failureResultOf(d).trap(StorageError)
        assert box._journal_fd == -1
        assert maildir_journal.read(os.path.join(box.path, JOURNAL))[0] == []

    def test_close_journal_during_a_commit_fails_the_group(self) -> None:
        """A DELETE closing the journal while the committer writes its files: no write to a
        descriptor that may now be another file's."""
        store = self.store()
        self.settle(store.create_mailbox("Work"))
        box = self.settle(store.get_mailbox("Work"))
        self.append_all(box, 1)
        stage = box._stage

        def stage_then_delete(q: Any) -> Any:
            staged = stage(q)
            box.close_journal()
            return staged

        box._stage = stage_then_delete
        d = box.append(message(3))
        self.reactor.run_thread_work()
        self.failureResultOf(d)
        assert [r.uid for r in maildir_journal.read(os.path.join(box.path, JOURNAL))[0]] == [1]
