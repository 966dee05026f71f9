"""mbox specifics: the file format, outside writers (Python's mailbox, mutt), locking, repair."""

from __future__ import annotations

import mailbox
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from pymail.errors import StorageError
from pymail.storage.mbox import MboxStoreFactory, _Locked
from pymail.testing import ThreadlessReactor

MSG = b"From: a@example.org\r\nSubject: s\r\n\r\nhello\r\nFrom the start\r\n>From quoted\r\n"


class MboxTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = ThreadlessReactor()
        self.data = self.mktemp()
        self.spool = os.path.abspath(self.mktemp())
        os.makedirs(self.spool)

    def factory(self) -> MboxStoreFactory:
        return MboxStoreFactory(self.reactor, inbox_path=os.path.join(self.spool, "{local}"))

    def open_inbox(self) -> Any:
        store = self.factory().open_store("alice@example.org", self.data)
        return self.successResultOf(store.get_mailbox("INBOX"))

    @property
    def path(self) -> str:
        return os.path.join(self.spool, "alice")

    def test_inbox_at_spool_path_in_mboxrd(self) -> None:
        """INBOX is the spool file; body "From " lines are mboxrd-quoted and read back exactly."""
        box = self.open_inbox()
        uid = self.successResultOf(box.append(MSG, ["\\Seen", "\\Answered", "$Work"]))
        data = Path(self.path).read_bytes()
        assert data.startswith(b"From MAILER-DAEMON ")
        assert b"\n>From the start\n>>From quoted\n" in data
        assert b"\r" not in data
        assert b"Status: RO\nX-Status: A\nX-Keywords: $Work\nX-UID: 1\n" in data
        assert box.read(uid) == MSG

    def test_python_mailbox_reads_what_pymail_writes(self) -> None:
        """Python's mailbox.mbox sees the message, its flags and (after unquoting) its body."""
        box = self.open_inbox()
        self.successResultOf(box.append(MSG, ["\\Seen", "\\Flagged"]))
        self.successResultOf(box.append(b"Subject: two\r\n\r\nsecond\r\n"))
        md = mailbox.mbox(self.path, create=False)
        msgs = list(md)
        md.close()
        assert len(msgs) == 2
        assert msgs[0]["Subject"] == "s"
        assert set(msgs[0].get_flags()) == {"R", "O", "F"}
        assert msgs[1].get_payload() == "second\n"

    def test_outside_delivery_and_removal_seen(self) -> None:
        """Mail added by another program gets a UID (kept on reopen); a removal is an expunge."""
        box = self.open_inbox()
        first = self.successResultOf(box.append(MSG))
        md = mailbox.mbox(self.path, create=False)
        md.lock()
        md.add(b"From procmail@localhost Sat Jan  1 00:00:00 2022\nSubject: outside\n\nhi\n")
        md.flush()
        md.unlock()
        md.close()
        self.successResultOf(box.refresh())
        uids = [i.uid for i in box.messages()]
        assert uids == [first, first + 1]
        assert box.read(first + 1) == b"Subject: outside\r\n\r\nhi\r\n"
        assert box.info(first + 1).internaldate.year == 2022
        again = MboxStoreFactory(self.reactor, inbox_path=os.path.join(self.spool, "{local}"))
        reopened = self.successResultOf(
            again.open_store("alice@example.org", self.data).get_mailbox("INBOX"))
        assert [i.uid for i in reopened.messages()] == uids
        md = mailbox.mbox(self.path, create=False)
        md.lock()
        md.remove(md.keys()[0])
        md.flush()
        md.unlock()
        md.close()
        self.successResultOf(box.refresh())
        assert [i.uid for i in box.messages()] == [first + 1]

    def test_garbage_line_and_no_final_newline(self) -> None:
        """Garbage before the first message and a missing final newline lose nothing."""
        Path(self.path).write_bytes(
            b"garbage line\nFrom x Mon Jan  3 00:00:00 2022\nSubject: a\n\nbody a\n\n"
            b"From y Mon Jan  3 00:00:00 2022\nSubject: b\n\nno newline")
        box = self.open_inbox()
        bodies = [box.read(i.uid) for i in box.messages()]
        assert bodies == [b"garbage line\r\n", b"Subject: a\r\n\r\nbody a\r\n",
                          b"Subject: b\r\n\r\nno newline\r\n"]
        repaired = mailbox.mbox(self.path, create=False)
        assert len(list(repaired)) == 3
        repaired.close()

    def test_expunge_rewrite_is_atomic(self) -> None:
        """Expunge writes a new file and renames it; a leftover temp file is harmless."""
        box = self.open_inbox()
        a = self.successResultOf(box.append(MSG))
        b = self.successResultOf(box.append(b"Subject: keep\r\n\r\nk\r\n"))
        Path(self.spool, ".alice.pymail-rewrite").write_bytes(b"half-written junk")
        self.successResultOf(box.set_flags([a], ["\\Deleted"], "add"))
        before = Path(self.path).read_bytes()
        os.link(self.path, os.path.join(self.spool, "old-inode"))
        assert self.successResultOf(box.expunge()) == [a]
        # The old file was never written to: a crash at any point leaves it whole.
        assert Path(self.spool, "old-inode").read_bytes() == before
        assert not Path(self.spool, ".alice.pymail-rewrite").exists()
        assert box.read(b) == b"Subject: keep\r\n\r\nk\r\n"
        md = mailbox.mbox(self.path, create=False)
        assert len(list(md)) == 1
        md.close()

    def test_dotlock_is_respected(self) -> None:
        """A fresh dotlock held by another program makes pymail wait, then give up."""
        box = self.open_inbox()
        Path(self.path + ".lock").write_bytes(b"12345")
        locker = _Locked(self.path, timeout=0.2)
        box.lock_timeout = 0.2
        self.assertRaises(StorageError, locker.__enter__)
        self.failureResultOf(box.append(MSG), StorageError)
        old = os.path.getmtime(self.path + ".lock") - 600
        os.utime(self.path + ".lock", (old, old))
        self.successResultOf(box.append(MSG))
        assert not os.path.exists(self.path + ".lock")


class MuttInteropTests(SynchronousTestCase):
    def test_mutt_written_mbox_is_read(self) -> None:
        """A message mutt saves (fcc: Content-Length, unquoted From line) reads back exactly."""
        mutt = shutil.which("mutt")
        assert mutt, "mutt is not installed (apt-get install mutt)"
        work = os.path.abspath(self.mktemp())
        os.makedirs(work)
        spool = os.path.join(work, "alice")
        Path(work, "muttrc").write_text(
            f"set sendmail=/bin/true\nset copy=yes\nset record={spool}\nset mbox_type=mbox\n"
            "set from=bob@example.org\nset use_from=yes\n")
        Path(work, "draft").write_text(
            "From: bob@example.org\nTo: alice@example.org\nSubject: from mutt\n\n"
            "From here on\nbody\n")
        subprocess.run([mutt, "-n", "-F", os.path.join(work, "muttrc"), "-H",
                        os.path.join(work, "draft")], stdin=subprocess.DEVNULL, check=True,
                       timeout=30, env={**os.environ, "HOME": work})
        reactor = ThreadlessReactor()
        factory = MboxStoreFactory(reactor, inbox_path=os.path.join(work, "{local}"))
        box = self.successResultOf(
            factory.open_store("alice@example.org", work).get_mailbox("INBOX"))
        [info] = box.messages()
        body = box.read(info.uid)
        assert body.endswith(b"\r\n\r\nFrom here on\r\nbody\r\n")
        assert b"Subject: from mutt\r\n" in body
        assert b"Status:" not in body and b"Content-Length" not in body
        assert info.flags == {"\\Seen"}


class MboxIndexTests(SynchronousTestCase):
    """The mbox index: a fresh open that skips parsing, and the file staying the truth."""

    def setUp(self) -> None:
        self.reactor = ThreadlessReactor()
        self.data = self.mktemp()
        self.spool = os.path.abspath(self.mktemp())
        os.makedirs(self.spool)
        self.path = os.path.join(self.spool, "alice")

    def open_inbox(self) -> Any:
        factory = MboxStoreFactory(self.reactor, inbox_path=os.path.join(self.spool, "{local}"))
        store = factory.open_store("alice@example.org", self.data)
        return self.successResultOf(store.get_mailbox("INBOX"))

    def snapshot(self, box: Any) -> list[tuple[int, str, frozenset[str], float, int, bytes]]:
        return [(i.uid, i.key, i.flags, i.internaldate.timestamp(), i.size, box.read(i.uid))
                for i in box.messages()]

    def filled(self) -> list[tuple[int, str, frozenset[str], float, int, bytes]]:
        box = self.open_inbox()
        uids = [self.successResultOf(box.append(MSG + b"n %d\r\n" % n, ["\\Flagged"]))
                for n in range(5)]
        self.successResultOf(box.set_flags(uids[1:3], ["\\Seen", "$Work"], "add"))
        self.successResultOf(box.append(b"Subject: last\r\n\r\nx\r\n"))
        return self.snapshot(box)

    def test_fresh_open_takes_messages_from_the_index(self) -> None:
        """With the file as pymail left it, a fresh open reads the index, not the file's headers."""
        expected = self.filled()
        # An X-Status letter changed in place with the file's stamp put back
        # is invisible to an open that trusts the index: the parse was skipped.
        st = os.stat(self.path)
        data = Path(self.path).read_bytes()
        with open(self.path, "r+b") as f:
            f.seek(data.index(b"X-Status: F\n"))
            f.write(b"X-Status: A\n")
        os.utime(self.path, ns=(st.st_atime_ns, st.st_mtime_ns))
        again = self.open_inbox()
        assert [e[:5] for e in self.snapshot(again)] == [e[:5] for e in expected]
        assert again.uidnext() == expected[-1][0] + 1

    def test_outside_append_is_seen_after_the_index(self) -> None:
        """A message another program appended after pymail's last write is seen at the next open."""
        expected = self.filled()
        md = mailbox.mbox(self.path, create=False)
        md.lock()
        md.add(b"From: outside@example.org\nSubject: outside\n\nbody\n")
        md.flush()
        md.unlock()
        md.close()
        again = self.open_inbox()
        got = self.snapshot(again)
        assert got[:-1] == expected
        assert got[-1][0] == expected[-1][0] + 1
        assert got[-1][5].endswith(b"Subject: outside\r\n\r\nbody\r\n")

    def test_corrupt_index_is_rebuilt(self) -> None:
        """A garbage index file loses no message, flag or UID; the next open uses the new one."""
        expected = self.filled()
        state = os.path.join(self.data, "mbox", "example.org", "alice", ".pymail-state")
        index = next(os.path.join(state, n) for n in os.listdir(state) if n.endswith(".sqlite"))
        for suffix in ("-wal", "-shm"):
            if os.path.exists(index + suffix):
                os.unlink(index + suffix)
        Path(index).write_bytes(b"not a database" * 100)
        assert self.snapshot(self.open_inbox()) == expected
        assert self.snapshot(self.open_inbox()) == expected

    def test_modseq_never_goes_back_across_opens(self) -> None:
        """After a reopen, HIGHESTMODSEQ is what it was and the next change is above it."""
        box = self.open_inbox()
        uid = self.successResultOf(box.append(MSG))
        for _ in range(5):
            self.successResultOf(box.set_flags([uid], ["\\Seen"], "add"))
            self.successResultOf(box.set_flags([uid], ["\\Seen"], "remove"))
        seen = box.highestmodseq()
        again = self.open_inbox()
        assert again.highestmodseq() == seen
        assert again.info(uid).modseq == seen
        self.successResultOf(again.set_flags([uid], ["\\Seen"], "add"))
        assert again.info(uid).modseq == again.highestmodseq() > seen

    def test_many_appends_after_the_snapshot_are_loaded(self) -> None:
        """Messages appended after the index's last full snapshot come back from the index too."""
        box = self.open_inbox()
        self.successResultOf(box.set_flags([self.successResultOf(box.append(MSG))],
                                           ["\\Seen"], "add"))
        for n in range(30):
            self.successResultOf(box.append(b"Subject: %d\r\n\r\nx\r\n" % n, ["\\Draft"]))
        expected = self.snapshot(box)
        assert self.snapshot(self.open_inbox()) == expected

    def test_empty_folder_index(self) -> None:
        """An empty folder opens from its index with no message and the right UIDNEXT."""
        box = self.open_inbox()
        uid = self.successResultOf(box.append(MSG, ["\\Deleted"]))
        self.successResultOf(box.expunge())
        again = self.open_inbox()
        assert list(again.messages()) == []
        assert again.uidnext() == uid + 1

    def test_rewrites_keep_every_message_exact(self) -> None:
        """Flag changes and an expunge (which copy untouched messages as they are) lose nothing."""
        box = self.open_inbox()
        uids = [self.successResultOf(box.append(MSG + b"n %d\r\n" % n)) for n in range(8)]
        md = mailbox.mbox(self.path, create=False)
        md.lock()
        md.add(b"From: outside@example.org\nSubject: outside\n\nFrom here\n")
        md.flush()
        md.unlock()
        md.close()
        self.successResultOf(box.refresh())
        self.successResultOf(box.set_flags(uids[2:4], ["\\Seen", "$Work"], "add"))
        self.successResultOf(box.set_flags(uids[5:6], ["\\Deleted"], "add"))
        self.successResultOf(box.set_flags(uids[0:1], ["\\Flagged"], "add"))
        self.successResultOf(box.expunge())
        live = self.snapshot(box)
        assert len(live) == 8 and all(e[5] for e in live)
        state = os.path.join(self.data, "mbox", "example.org", "alice", ".pymail-state")
        for name in os.listdir(state):
            if ".index.sqlite" in name:
                os.unlink(os.path.join(state, name))
        assert self.snapshot(self.open_inbox()) == live
        md = mailbox.mbox(self.path, create=False)
        flags = [set(m.get_flags()) for m in md]
        md.close()
        assert flags[0] == {"O", "F"} and flags[2] == {"R", "O"} and len(flags) == 8

    def append_outside(self, *messages: bytes) -> None:
        """Messages appended to INBOX by another program, with Python's mailbox module."""
        md = mailbox.mbox(self.path, create=False)
        md.lock()
        for message in messages:
            md.add(message)
        md.flush()
        md.unlock()
        md.close()

    def test_outside_append_parses_only_the_new_tail(self) -> None:
        """When another program only appended, the known messages are not parsed again."""
        box = self.open_inbox()
        uids = [self.successResultOf(box.append(MSG + b"n %d\r\n" % n)) for n in range(3)]
        known = dict(box._disk.entries)
        self.append_outside(b"From: x@example.org\nSubject: one\n\nFrom here\n",
                            b"From: y@example.org\nSubject: two\nX-UID: 77\n\nbody\n")
        self.successResultOf(box.refresh())
        assert [box._disk.entries[u] is known[u] for u in uids] == [True, True, True]
        assert [i.uid for i in box.messages()] == uids + [77, 78]
        assert box.read(77).endswith(b"Subject: two\r\n\r\nbody\r\n")
        assert box.read(78).endswith(b"Subject: one\r\n\r\nFrom here\r\n")
        assert [box.read(u) for u in uids] == [MSG + b"n %d\r\n" % n for n in range(3)]
        assert [i.uid for i in self.open_inbox().messages()] == uids + [77, 78]
        md = mailbox.mbox(self.path, create=False)
        written = [m["X-UID"] for m in md]
        md.close()
        assert written == ["1", "2", "3", "78", "77"]

    def test_outside_append_reusing_an_old_uid_gets_a_new_one(self) -> None:
        """An appended message whose X-UID was given before (and expunged) gets a new UID."""
        box = self.open_inbox()
        first, second = (self.successResultOf(box.append(MSG)) for _ in range(2))
        self.successResultOf(box.set_flags([first], ["\\Deleted"], "add"))
        self.successResultOf(box.expunge())
        self.append_outside(b"From: x@example.org\nX-UID: %d\n\nold uid\n" % first)
        self.successResultOf(box.refresh())
        assert [i.uid for i in box.messages()] == [second, second + 1]
        assert box.read(second + 1).endswith(b"\r\n\r\nold uid\r\n")

    def test_change_in_the_middle_and_append_is_a_full_rescan(self) -> None:
        """A file that grew but whose last known message moved is parsed whole: nothing missed."""
        box = self.open_inbox()
        uids = [self.successResultOf(box.append(MSG + b"n %d\r\n" % n)) for n in range(3)]
        md = mailbox.mbox(self.path, create=False)
        md.lock()
        md.remove(md.keys()[0])
        message = md[md.keys()[0]]
        message.set_flags("RF")
        md[md.keys()[0]] = message
        md.add(b"From: x@example.org\nSubject: new\n\nnew\n")
        md.add(b"From: x@example.org\nSubject: newer\n\nnewer\n")
        md.flush()
        md.unlock()
        md.close()
        assert os.path.getsize(self.path) > box._disk.stamp[1]
        self.successResultOf(box.refresh())
        assert [i.uid for i in box.messages()] == uids[1:] + [4, 5]
        assert box.info(uids[1]).flags == {"\\Seen", "\\Flagged"}
        assert box.read(5).endswith(b"\r\n\r\nnewer\r\n")

    def test_fresh_open_after_an_outside_append_parses_only_the_tail(self) -> None:
        """A fresh open after another program appended takes the known messages from the index."""
        expected = self.filled()
        # An in-place change to the first message is not looked at (the
        # index's rows are kept) while the appended message is parsed.
        data = Path(self.path).read_bytes()
        with open(self.path, "r+b") as f:
            f.seek(data.index(b"X-Status: F\n"))
            f.write(b"X-Status: A\n")
        self.append_outside(b"From: x@example.org\nSubject: new\n\nnew\n")
        again = self.open_inbox()
        got = self.snapshot(again)
        assert [e[:5] for e in got[:-1]] == [e[:5] for e in expected]
        assert got[-1][0] == expected[-1][0] + 1
        assert got[-1][5].endswith(b"Subject: new\r\n\r\nnew\r\n")
        assert again.uidnext() == got[-1][0] + 1
        assert [i.uid for i in self.open_inbox().messages()] == [e[0] for e in got]

    def test_rewrites_after_an_open_from_the_index_keep_every_message_once(self) -> None:
        """Flag changes and an expunge after a fresh open from the index write each message once."""
        expected = self.filled()
        uids = [e[0] for e in expected]

        def written() -> list[int]:
            md = mailbox.mbox(self.path, create=False)
            found = [int(m["X-UID"]) for m in md]
            md.close()
            return found

        again = self.open_inbox()
        self.successResultOf(again.set_flags(uids[3:4], ["\\Draft"], "add"))
        assert written() == uids
        again = self.open_inbox()
        self.successResultOf(again.set_flags(uids[0:1], ["\\Deleted"], "add"))
        self.successResultOf(again.expunge())
        assert written() == uids[1:]
        live = self.snapshot(again)
        assert [e[0] for e in live] == uids[1:]
        assert [e[5] for e in live] == [e[5] for e in expected[1:]]
        assert self.snapshot(self.open_inbox()) == live
