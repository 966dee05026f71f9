"""Maildir specifics: persistence, outside writers, Dovecot-format files, repair."""

from __future__ import annotations

import mailbox
import os
import threading
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from pymail.storage.index import FolderIndex
from pymail.storage.maildir import MaildirStoreFactory
from pymail.testing import SteppedReactor, ThreadlessReactor

from maildir_support import SteppedMaildirCase

MSG = b"From: a@example.org\r\nSubject: s\r\n\r\nhello\r\n"


class MaildirTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = ThreadlessReactor()
        self.data = self.mktemp()
        self.root = os.path.join(self.data, "mail", "example.org", "alice")

    def open_inbox(self) -> Any:
        store = MaildirStoreFactory(self.reactor).open_store("alice@example.org", self.data)
        return self.successResultOf(store.get_mailbox("INBOX"))

    def test_account_set_up_finishes_folders_another_process_started(self) -> None:
        """Special-use folders half made by another process (no cur/ yet) are completed, not an error."""
        os.makedirs(os.path.join(self.root, ".Sent"))
        os.makedirs(os.path.join(self.root, ".Trash", "new"))
        box = self.open_inbox()
        assert self.successResultOf(box.append(MSG)) == 1
        for folder in (".Sent", ".Trash", ".Drafts"):
            for sub in ("cur", "new", "tmp"):
                assert os.path.isdir(os.path.join(self.root, folder, sub)), (folder, sub)
            assert os.path.isfile(os.path.join(self.root, folder, "maildirfolder"))

    def test_uids_survive_reopen(self) -> None:
        """A fresh process (new factory) sees the same UIDs, UIDVALIDITY and flags."""
        box = self.open_inbox()
        uids = [self.successResultOf(box.append(MSG)) for _ in range(3)]
        self.successResultOf(box.set_flags([uids[1]], ["\\Seen", "$Work"], "add"))
        again = self.open_inbox()
        assert again is not box
        assert [i.uid for i in again.messages()] == uids
        assert again.uidvalidity() == box.uidvalidity()
        assert again.info(uids[1]).flags == {"\\Seen", "$Work"}
        assert again.uidnext() == uids[-1] + 1

    def test_on_disk_layout_is_maildir(self) -> None:
        """Messages are LF files in new/ and cur/, readable by Python's mailbox module."""
        box = self.open_inbox()
        uid = self.successResultOf(box.append(MSG))
        self.successResultOf(box.set_flags([uid], ["\\Seen"], "add"))
        md = mailbox.Maildir(self.root, factory=None, create=False)
        [(key, msg)] = list(md.items())
        assert msg.get_flags() == "S"
        assert msg.as_bytes().endswith(b"hello\n")
        [name] = os.listdir(os.path.join(self.root, "cur"))
        assert b"\r" not in Path(self.root, "cur", name).read_bytes()

    def test_dovecot_uidlist_format(self) -> None:
        """The uidlist has Dovecot's version 3 header and 'uid :basename' lines."""
        box = self.open_inbox()
        uid = self.successResultOf(box.append(MSG))
        lines = Path(self.root, "dovecot-uidlist").read_text().splitlines()
        header = lines[0].split()
        assert header[0] == "3"
        assert header[1] == f"V{box.uidvalidity()}"
        assert lines[1] == f"{uid} :{box.info(uid).key}"

    def test_message_dropped_by_another_program(self) -> None:
        """A file another program delivers into new/ appears after refresh."""
        box = self.open_inbox()
        first = self.successResultOf(box.append(MSG))
        md = mailbox.Maildir(self.root, factory=None, create=False)
        md.add(b"Subject: outside\n\nfrom procmail\n")
        self.successResultOf(box.refresh())
        uids = [i.uid for i in box.messages()]
        assert uids == [first, first + 1]
        assert box.read(first + 1) == b"Subject: outside\r\n\r\nfrom procmail\r\n"
        assert box.info(first + 1).size == len(b"Subject: outside\r\n\r\nfrom procmail\r\n")

    def test_flag_change_and_removal_by_another_program(self) -> None:
        """mutt renaming a file (flags) or deleting it is seen at refresh."""
        box = self.open_inbox()
        a = self.successResultOf(box.append(MSG))
        b = self.successResultOf(box.append(MSG))
        md = mailbox.Maildir(self.root, factory=None, create=False)
        # The Maildir key is the file's base name (sorting the keys would not
        # give delivery order: the microseconds in the name are not padded).
        key_a, key_b = box.info(a).key, box.info(b).key
        assert sorted(md.keys()) == sorted([key_a, key_b])
        msg = md[key_a]
        msg.set_subdir("cur")
        msg.set_flags("FS")
        md[key_a] = msg
        md.remove(key_b)
        self.successResultOf(box.refresh())
        assert [i.uid for i in box.messages()] == [a]
        assert box.info(a).flags == {"\\Flagged", "\\Seen"}
        assert box.read(a).endswith(b"hello\r\n")

    def test_truncated_uidlist_is_repaired(self) -> None:
        """A uidlist cut in half loses no message; known UIDs are kept."""
        box = self.open_inbox()
        uids = [self.successResultOf(box.append(MSG)) for _ in range(4)]
        path = Path(self.root, "dovecot-uidlist")
        lines = path.read_bytes().split(b"\n")
        path.write_bytes(b"\n".join(lines[:3]) + b"\n" + lines[3][:4])
        again = self.open_inbox()
        got = [i.uid for i in again.messages()]
        assert len(got) == 4
        assert got[:2] == uids[:2]
        assert all(again.read(u) == MSG for u in got)

    def test_garbage_uidlist_starts_new_uidvalidity(self) -> None:
        """An unreadable uidlist gives a new UIDVALIDITY and keeps every message."""
        box = self.open_inbox()
        for _ in range(2):
            self.successResultOf(box.append(MSG))
        Path(self.root, "dovecot-uidlist").write_bytes(b"\x00garbage\n")
        again = self.open_inbox()
        assert len(again.messages()) == 2
        assert all(again.read(i.uid) == MSG for i in again.messages())

    def test_stray_files_ignored(self) -> None:
        """Dot files in cur/ (editor leftovers) are not messages."""
        box = self.open_inbox()
        self.successResultOf(box.append(MSG))
        Path(self.root, "cur", ".swp").write_bytes(b"junk")
        again = self.open_inbox()
        assert len(again.messages()) == 1

    def test_store_renames_only_messages_whose_flags_change(self) -> None:
        """A STORE over many messages renames and re-MODSEQs only those whose flags change."""
        box = self.open_inbox()
        uids = [self.successResultOf(box.append(MSG)) for _ in range(4)]
        self.successResultOf(box.set_flags(uids[:2], ["\\Seen"], "add"))
        before = {i.uid: i.modseq for i in box.messages()}
        names = set(os.listdir(os.path.join(self.root, "cur")))
        result = self.successResultOf(box.set_flags(uids, ["\\Seen"], "add"))
        assert result == {uid: frozenset({"\\Seen"}) for uid in uids}
        after = {i.uid: i.modseq for i in box.messages()}
        assert [after[u] == before[u] for u in uids] == [True, True, False, False]
        now = set(os.listdir(os.path.join(self.root, "cur")))
        assert names <= now and len(now) == 4
        assert os.listdir(os.path.join(self.root, "new")) == []

    def test_store_moves_new_files_to_cur(self) -> None:
        """A flag change on a message still in new/ moves it to cur/ with the flags, byte-exact."""
        box = self.open_inbox()
        uid = self.successResultOf(box.append(MSG))
        [name] = os.listdir(os.path.join(self.root, "new"))
        self.successResultOf(box.set_flags([uid], ["\\Flagged", "\\Answered"], "add"))
        assert os.listdir(os.path.join(self.root, "new")) == []
        assert os.listdir(os.path.join(self.root, "cur")) == [name + ":2,FR"]
        assert box.read(uid) == MSG
        assert self.open_inbox().info(uid).flags == {"\\Flagged", "\\Answered"}


class ThreadedAppendTests(SynchronousTestCase):
    """Group commit with real threads: concurrent appends all land with unique UIDs."""

    def test_concurrent_appends(self) -> None:
        """Twenty threads appending at once: twenty files, distinct UIDs, each in the view first."""
        from pymail.storage.maildir import MaildirMailbox

        calls: list[Any] = []

        class Reactor:
            def callFromThread(self, f: Any, *a: Any) -> None:
                calls.append((f, a))

            def getThreadPool(self) -> Any:
                return ThreadlessReactor().getThreadPool()

        data = self.mktemp()
        box = MaildirMailbox(os.path.join(data, "m"), "INBOX", Reactor())
        box._load()
        results: list[int] = []
        errors: list[BaseException] = []

        not_yet_in_view: list[int] = []

        def work() -> None:
            try:
                uid = box._append(MSG, frozenset(), None)
                results.append(uid)
                # The view update is queued before the append returns.
                if uid not in {i.uid for _, a in list(calls) for i in a[0]}:
                    not_yet_in_view.append(uid)
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=work) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert sorted(results) == list(range(1, 21))
        assert not_yet_in_view == []
        for f, a in calls:
            f(*a)
        assert [i.uid for i in box.messages()] == list(range(1, 21))
        assert len(os.listdir(os.path.join(data, "m", "new"))) == 20


class BadNamesOnDiskTests(SynchronousTestCase):
    def test_undecodable_and_dotted_directories_are_not_folders(self) -> None:
        """Directories with invalid modified UTF-7 or empty levels are not listed."""
        reactor = ThreadlessReactor()
        data = self.mktemp()
        store = MaildirStoreFactory(reactor).open_store("alice@example.org", data)
        root = os.path.join(data, "mail", "example.org", "alice")
        for bad in (".&Jjo!", "..hidden", ".a..b", ".trailing."):
            for sub in ("cur", "new", "tmp"):
                os.makedirs(os.path.join(root, bad, sub))
        names = store.list_mailboxes()
        assert names == ["INBOX", "Archive", "Drafts", "Junk", "Sent", "Trash"]


class FlagWriteBehindTests(SteppedMaildirCase):
    """
    STORE is answered once the new file names are recorded in the index;
    the renames follow as the next thread-pool job (SteppedReactor holds it).
    """

    def store_acknowledged(self, box: Any, uids: list[int], flags: list[str]) -> Any:
        """set_flags, running its first job only: answered, renames still queued."""
        d = box.set_flags(uids, flags, "add")
        self.reactor.run_job()
        result = self.successResultOf(d)
        assert any(f.__name__ == "_finish_renames" for _, f, _, _ in self.reactor.thread_work)
        return result

    def fill(self, count: int) -> tuple[Any, list[int]]:
        box = self.open_inbox()
        box.write_behind_min = 1
        uids = [self.settle(box.append(MSG.replace(b"hello", b"hello %d" % n)))
                for n in range(count)]
        return box, uids

    def test_flags_are_in_the_index_before_the_renames_and_in_the_names_after(self) -> None:
        """The answer comes with the renames recorded in the index; the next job does them."""
        box, uids = self.fill(3)
        before = self.names()
        result = self.store_acknowledged(box, uids, ["\\Seen", "$Work"])
        assert result == {u: {"\\Seen", "$Work"} for u in uids}
        assert self.names() == before
        # Committed: another connection to the index file sees them.
        other = FolderIndex(self.root)
        other.open()
        self.addCleanup(other.close)
        assert sorted(other.renames()) == sorted(
            "cur/" + n.split(":2,")[0] + ":2,Sa" for n in before)
        self.reactor.run_thread_work()
        assert all(n.endswith(":2,Sa") for n in self.names()), self.names()
        assert box._index.renames() == []

    def test_a_message_reads_the_same_before_and_after_its_rename(self) -> None:
        """A read while the rename is pending finds the file under its old name, byte for byte."""
        box, uids = self.fill(2)
        self.store_acknowledged(box, uids, ["\\Flagged"])
        wire = MSG.replace(b"hello", b"hello 1")
        assert box.read(uids[1]) == wire
        assert box.read_sized(uids[1], len(wire)) == wire
        self.reactor.run_thread_work()
        assert box.read(uids[1]) == wire

    def test_a_crash_before_the_renames_loses_no_flag_change(self) -> None:
        """A fresh open (the renames never ran) does them from the index and keeps the flags."""
        box, uids = self.fill(3)
        self.store_acknowledged(box, uids[:2], ["\\Answered"])
        self.reactor.thread_work.clear()  # the process dies here
        again = self.open_inbox(ThreadlessReactor())
        assert again is not box
        assert [again.info(u).flags for u in uids] == [{"\\Answered"}, {"\\Answered"}, set()]
        assert sum(n.endswith(":2,R") for n in self.names()) == 2
        assert len(self.names()) == 3
        assert again._index.renames() == []
        third = self.open_inbox(ThreadlessReactor())
        assert [third.info(u).flags for u in uids] == [{"\\Answered"}, {"\\Answered"}, set()]

    def test_a_refresh_before_the_renames_keeps_the_new_flags(self) -> None:
        """A refresh that runs before the queued renames does them first instead of reverting."""
        box, uids = self.fill(2)
        self.store_acknowledged(box, uids, ["\\Seen"])
        d = box.refresh()
        self.reactor.run_job(len(self.reactor.thread_work) - 1)  # the refresh, first
        self.successResultOf(d)
        assert [box.info(u).flags for u in uids] == [{"\\Seen"}, {"\\Seen"}]
        assert all(n.endswith(":2,S") for n in self.names())
        self.reactor.run_thread_work()
        assert [box.info(u).flags for u in uids] == [{"\\Seen"}, {"\\Seen"}]

    def test_a_second_store_before_the_renames_keeps_both_changes(self) -> None:
        """Flag changes queued back to back both reach the file name, in order."""
        box, uids = self.fill(1)
        self.store_acknowledged(box, uids, ["\\Seen"])
        d = box.set_flags(uids, ["\\Seen"], "remove")
        self.reactor.run_job(len(self.reactor.thread_work) - 1)
        self.successResultOf(d)
        d = box.set_flags(uids, ["\\Flagged"], "add")
        self.settle(d)
        assert box.info(uids[0]).flags == {"\\Flagged"}
        assert self.names()[0].endswith(":2,F")
        assert len(self.names()) == 1

    def test_expunge_before_the_renames_removes_the_file(self) -> None:
        """An expunge that runs before the queued renames finds and removes the message's file."""
        box, uids = self.fill(2)
        self.store_acknowledged(box, uids[:1], ["\\Deleted"])
        d = box.expunge()
        self.reactor.run_job(len(self.reactor.thread_work) - 1)
        assert self.successResultOf(d) == [uids[0]]
        self.reactor.run_thread_work()
        assert len(self.names()) == 1
        assert box._index.renames() == []

    def test_a_store_of_fewer_than_write_behind_min_renames_before_the_answer(self) -> None:
        """Below the threshold the files carry the new flags when the answer comes, index untouched."""
        box, uids = self.fill(3)
        box.write_behind_min = 3
        d = box.set_flags(uids[:2], ["\\Seen"], "add")
        self.reactor.run_job()
        assert self.successResultOf(d) == {u: {"\\Seen"} for u in uids[:2]}
        assert sum(n.endswith(":2,S") for n in self.names()) == 2
        assert box._index.renames() == []
        assert not any(f.__name__ == "_finish_renames" for _, f, _, _ in self.reactor.thread_work)

    def test_a_file_renamed_by_another_program_meanwhile_gets_the_new_flags(self) -> None:
        """The pending rename finds the file by its base name and gives it the stored flags."""
        box, uids = self.fill(1)
        self.store_acknowledged(box, uids, ["\\Flagged"])
        [old] = self.names()
        base = old.split(":2,")[0]
        os.rename(os.path.join(self.root, "new", old),
                  os.path.join(self.root, "cur", base + ":2,T"))
        self.reactor.run_thread_work()
        assert self.names() == [base + ":2,F"]
        assert box.read(uids[0]) == MSG.replace(b"hello", b"hello 0")


class CRLFMessageTests(SynchronousTestCase):
    def test_a_crlf_message_reaches_the_conversion_as_it_is(self) -> None:
        """Maildir and mbox appends keep a CRLFMessage (its one-pass LF form); stored as sent."""
        from pymail.storage import maildir_folder, mbox_folder
        from pymail.storage.fsutil import CRLFMessage
        from pymail.storage.mbox import MboxStoreFactory

        message = CRLFMessage(b"Subject: a\r\n\r\nline 1\r\n.line 2\r\n")
        for factory, module in ((MaildirStoreFactory, maildir_folder),
                                (MboxStoreFactory, mbox_folder)):
            seen: list[type] = []
            real = module.to_lf

            def recording(m: bytes, real: Any = real, seen: list[type] = seen) -> bytes:
                seen.append(type(m))
                return real(m)

            self.patch(module, "to_lf", recording)
            store = factory(ThreadlessReactor()).open_store("a@example.org", self.mktemp())
            box = self.successResultOf(store.get_mailbox("INBOX"))
            uid = self.successResultOf(box.append(message))
            assert seen == [CRLFMessage], (factory, seen)
            assert box.read(uid) == bytes(message)
