"""
MODSEQ over the mbox backend (RFC 7162): kept per message in the folder's
index, moved by every change (pymail's own and another program's), and the
same after a reopen; a lost index starts above anything a client saw.
"""

from __future__ import annotations

import mailbox
import os
import sqlite3
from collections.abc import Callable
from typing import Any

from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from pymail.interfaces import IMailboxListener
from pymail.storage.index import rebuild_modseq
from pymail.storage.mbox import MboxStoreFactory
from pymail.storage.mbox_entries import PACKED_FIELDS
from pymail.storage.mbox_index import MboxIndex, index_path
from pymail.testing import ThreadlessReactor


def message(n: int) -> bytes:
    return b"From: a@example.org\r\nSubject: m%d\r\n\r\nbody %d\r\n" % (n, n)


def outside(path: str, edit: Callable[[mailbox.mbox], object]) -> None:
    """Another program (Python's mailbox, dotlocked) edits the folder file and writes it back."""
    md = mailbox.mbox(path, create=False)
    md.lock()
    try:
        edit(md)
        md.flush()
    finally:
        md.unlock()
        md.close()


def add_flag(md: mailbox.mbox, position: int, flag: str) -> None:
    """Give the message at ``position`` an mbox flag letter (F, A, R...)."""
    key = list(md.keys())[position]
    changed = md[key]
    changed.add_flag(flag)
    md[key] = changed


class MboxModseqTests(SynchronousTestCase):
    """Alice's mbox INBOX, opened as a fresh process would each time."""

    def setUp(self) -> None:
        self.reactor = ThreadlessReactor()
        self.data = self.mktemp()
        self.path = os.path.join(self.data, "mbox", "example.org", "alice", "INBOX")
        self.state = os.path.join(os.path.dirname(self.path), ".pymail-state", "INBOX")

    def open_inbox(self) -> Any:
        store = MboxStoreFactory(self.reactor).open_store("alice@example.org", self.data)
        return self.successResultOf(store.get_mailbox("INBOX"))

    def filled(self, count: int = 6) -> tuple[Any, list[int]]:
        box = self.open_inbox()
        uids = [self.successResultOf(box.append(message(n))) for n in range(count)]
        return box, uids

    def modseqs(self, box: Any) -> dict[int, int]:
        return {i.uid: i.modseq for i in box.messages()}

    def flags(self, box: Any) -> dict[int, frozenset[str]]:
        return {i.uid: i.flags for i in box.messages()}

    def test_flag_change_and_expunge_move_modseq(self) -> None:
        """A flag change gives the changed messages new MODSEQs; an expunge raises HIGHESTMODSEQ."""
        box, uids = self.filled(4)
        before = self.modseqs(box)
        top = box.highestmodseq()
        assert top == max(before.values())
        self.successResultOf(box.set_flags(uids[1:3], ["\\Seen"], "add"))
        after = self.modseqs(box)
        assert after[uids[0]] == before[uids[0]] and after[uids[3]] == before[uids[3]]
        assert sorted([after[uids[1]], after[uids[2]]]) == [top + 1, top + 2]
        assert box.highestmodseq() == top + 2
        # A STORE that changes nothing moves nothing.
        self.successResultOf(box.set_flags(uids[1:3], ["\\Seen"], "add"))
        assert self.modseqs(box) == after
        self.successResultOf(box.set_flags([uids[0]], ["\\Deleted"], "add"))
        self.successResultOf(box.expunge())
        assert box.highestmodseq() == top + 4
        assert uids[0] not in self.modseqs(box)

    def test_every_modseq_survives_a_reopen(self) -> None:
        """Each message's MODSEQ and the folder's HIGHESTMODSEQ are the same in a new process."""
        box, uids = self.filled(6)
        self.successResultOf(box.set_flags(uids[::2], ["\\Flagged", "$Work"], "add"))
        self.successResultOf(box.set_flags([uids[3]], ["\\Deleted"], "add"))
        self.successResultOf(box.expunge())
        self.successResultOf(box.append(message(99), ["\\Seen"]))
        expected = self.modseqs(box)
        again = self.open_inbox()
        assert self.modseqs(again) == expected
        assert again.highestmodseq() == box.highestmodseq()
        assert self.flags(again) == self.flags(box)

    def test_modseqs_are_in_the_index_before_sessions_are_told(self) -> None:
        """When a listener hears of a change, the index already holds its MODSEQs."""
        box, uids = self.filled(3)
        heard: list[tuple[dict[int, int], dict[int, int]]] = []

        @implementer(IMailboxListener)
        class Listener:
            def mailbox_changed(self, mailbox: Any, change: Any) -> None:
                index = MboxIndex(box.state_path)
                index.open()
                meta_top = index.meta("highestmodseq")
                loaded = index.load(box.uidvalidity(), box._stamp())
                index.close()
                assert loaded is not None and meta_top == box.highestmodseq()
                ints = loaded[0]
                stored = dict(zip(ints[0::PACKED_FIELDS], ints[7::PACKED_FIELDS], strict=True))
                heard.append(({u: m for u, m in stored.items() if u in change.uids},
                              {i.uid: i.modseq for i in box._view.lookup(change.uids)}))

        box.add_listener(Listener())
        self.successResultOf(box.set_flags(uids[:2], ["\\Answered"], "add"))
        self.successResultOf(box.append(message(7)))
        assert len(heard) == 2
        for stored, seen in heard:
            assert stored == seen and stored

    def test_outside_rewrite_while_open_moves_only_touched_messages(self) -> None:
        """Another program's flag change and removal give only those a MODSEQ above the old top."""
        box, uids = self.filled(5)
        before = self.modseqs(box)
        top = box.highestmodseq()
        def edit(md: mailbox.mbox) -> None:
            add_flag(md, 1, "F")
            md.remove(list(md.keys())[3])

        outside(self.path, edit)
        self.successResultOf(box.refresh())
        after = self.modseqs(box)
        assert uids[3] not in after
        assert "\\Flagged" in box.info(uids[1]).flags
        assert after[uids[1]] > top and box.highestmodseq() > top
        assert {u: after[u] for u in (uids[0], uids[2], uids[4])} == {
            u: before[u] for u in (uids[0], uids[2], uids[4])}
        # And so after a restart.
        assert self.modseqs(self.open_inbox()) == after

    def test_outside_append_gets_modseqs_above_the_old_top(self) -> None:
        """Messages another program appended get new MODSEQs; the others keep theirs."""
        box, uids = self.filled(3)
        before = self.modseqs(box)
        top = box.highestmodseq()
        outside(self.path, lambda md: md.add(b"From: x@example.org\nSubject: outside\n\nbody\n"))
        # A fresh process sees the new tail (the index still describes the rest)...
        fresh = self.modseqs(self.open_inbox())
        new = [u for u in fresh if u not in before]
        assert len(new) == 1 and fresh[new[0]] > top
        assert {u: fresh[u] for u in before} == before
        # ... and so does the open folder.
        self.successResultOf(box.refresh())
        assert {u: m for u, m in self.modseqs(box).items() if u in before} == before
        assert self.modseqs(box)[new[0]] > top

    def test_outside_rewrite_while_closed_renumbers_above_the_old_top(self) -> None:
        """A file changed while pymail was not running: every message is above the old top."""
        box, uids = self.filled(4)
        top = box.highestmodseq()
        outside(self.path, lambda md: add_flag(md, 2, "A"))
        again = self.open_inbox()
        assert [i.uid for i in again.messages()] == uids
        assert "\\Answered" in again.info(uids[2]).flags
        assert all(m > top for m in self.modseqs(again).values())
        assert again.highestmodseq() >= max(self.modseqs(again).values())

    def test_lost_index_starts_above_anything_seen(self) -> None:
        """A deleted index loses no message, flag or UID, and every MODSEQ is above the old top."""
        box, uids = self.filled(5)
        self.successResultOf(box.set_flags(uids[1:4], ["\\Seen"], "add"))
        flags = self.flags(box)
        top = box.highestmodseq()
        for suffix in ("", "-wal", "-shm"):
            try:
                os.unlink(index_path(self.state) + suffix)
            except FileNotFoundError:
                pass
        again = self.open_inbox()
        assert self.flags(again) == flags
        assert all(m > top for m in self.modseqs(again).values())
        assert again.highestmodseq() > top
        # The rebuilt index holds them: the next process sees the same.
        assert self.modseqs(self.open_inbox()) == self.modseqs(again)

    def test_index_of_an_older_version_is_rebuilt_above_anything_seen(self) -> None:
        """An index written by an older pymail (no MODSEQ column) is rebuilt above the old top."""
        box, uids = self.filled(3)
        self.successResultOf(box.set_flags(uids[:1], ["\\Seen"], "add"))
        top = box.highestmodseq()
        db = sqlite3.connect(index_path(self.state))
        db.execute("UPDATE meta SET value = 2 WHERE key = 'version'")
        db.commit()
        db.close()
        floor = rebuild_modseq()
        again = self.open_inbox()
        assert self.flags(again) == self.flags(box)
        assert all(floor < m for m in self.modseqs(again).values())
        assert again.highestmodseq() > top

    def test_new_empty_folder_starts_low(self) -> None:
        """A new folder starts HIGHESTMODSEQ at 1 (no jump to the rebuild floor)."""
        box = self.open_inbox()
        assert box.highestmodseq() == 1
        uid = self.successResultOf(box.append(message(1)))
        assert box.info(uid).modseq == 2 == box.highestmodseq()


class RoutingTests(SynchronousTestCase):
    def test_routing_persists_modseq_only_when_every_backend_does(self) -> None:
        """Per-domain routing offers CONDSTORE only if the default and every routed backend do."""
        from pymail.storage.plugins import make_store_factory

        reactor = ThreadlessReactor()
        both = make_store_factory("maildir", {"example.org": "mbox"}, {}, reactor)
        assert both.persistent_modseq is True  # type: ignore[attr-defined]
        with_memory = make_store_factory("mbox", {"example.org": "memory"}, {}, reactor)
        assert with_memory.persistent_modseq is False  # type: ignore[attr-defined]
        assert MboxStoreFactory(reactor).persistent_modseq is True


class TwoProcessTests(SynchronousTestCase):
    def test_changes_seen_from_another_process_are_numbered_above_its_modseqs(self) -> None:
        """A process that rescans after another one's changes numbers above every MODSEQ it gave."""
        reactor = ThreadlessReactor()
        data = self.mktemp()

        def open_inbox() -> Any:
            store = MboxStoreFactory(reactor).open_store("alice@example.org", data)
            return self.successResultOf(store.get_mailbox("INBOX"))

        first = open_inbox()
        uids = [self.successResultOf(first.append(message(n))) for n in range(3)]
        second = open_inbox()
        for _ in range(5):  # the first process moves well ahead of the second
            self.successResultOf(first.set_flags([uids[0]], ["\\Seen"], "add"))
            self.successResultOf(first.set_flags([uids[0]], ["\\Seen"], "remove"))
        self.successResultOf(first.set_flags([uids[1]], ["\\Flagged"], "add"))
        ahead = first.highestmodseq()
        self.successResultOf(second.set_flags([uids[2]], ["\\Answered"], "add"))
        assert second.info(uids[1]).flags == {"\\Flagged"}
        assert second.info(uids[1]).modseq > ahead
        assert second.info(uids[2]).modseq > ahead
        self.successResultOf(first.refresh())
        assert first.info(uids[2]).modseq > ahead
        assert open_inbox().highestmodseq() >= second.highestmodseq()
