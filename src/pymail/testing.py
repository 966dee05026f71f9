"""
Public fakes for plugin authors, embedders and pymail's own tests.

- :class:`MemoryDirectory`: an :class:`~pymail.interfaces.IDirectory` held
  in memory.
- :class:`ThreadlessReactor`: a ``Clock`` whose thread pool runs jobs at
  once, in the calling thread, so code that uses ``deferToThreadPool`` and
  ``callFromThread`` runs deterministically in a unit test.
- :class:`MailStoreContract`: the contract test mixin every storage
  backend runs (see docs/plugins.md).
- :func:`memory_portal`: a twisted.cred portal over plain-text test
  passwords, the same realm the server uses, and in-memory mail stores.
- :class:`CheckerContract`: the contract test mixin for password checkers
  (``auth = [...]`` plugins; see docs/plugins.md).
- :class:`ScramClient`: the client side of SCRAM-SHA-256, to drive a
  server's exchange in a test.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Iterable, Mapping
from datetime import UTC
from types import MappingProxyType
from typing import Any

import attrs
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import Portal
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted.internet.task import Clock

from pymail.auth.realm import MailRealm
from pymail.directory.passwords import scram_prepare
from pymail.interfaces import IDirectory, IMailboxListener, IMailStoreFactory
from pymail.storage.memory import MemoryStoreFactory


@implementer(IDirectory)
@attrs.define
class MemoryDirectory:
    """
    Domains, users and aliases in memory.

    :ivar users: canonical addresses of enabled accounts.
    :ivar aliases: alias address -> list of target addresses.
    """

    domains: set[str] = attrs.Factory(set)
    users: set[str] = attrs.Factory(set)
    aliases: dict[str, list[str]] = attrs.Factory(dict)

    def is_local_domain(self, domain: str) -> bool:
        return domain.lower() in self.domains

    def has_user(self, address: str) -> bool:
        return address.lower() in self.users

    def resolve(self, address: str) -> list[str] | None:
        local, _, domain = address.rpartition("@")
        domain = domain.lower()
        if domain not in self.domains:
            return None
        base = local.split("+", 1)[0].lower() + "@" + domain
        if base in self.users:
            return [base]
        if base in self.aliases:
            return list(self.aliases[base])
        return None

    def alias_table(self) -> Mapping[str, list[str]]:
        return MappingProxyType(self.aliases)


def memory_portal(
    users: Mapping[str, str],
    stores: IMailStoreFactory | None = None,
    domains: Iterable[str] | None = None,
) -> tuple[Portal, MemoryDirectory, IMailStoreFactory]:
    """
    A portal for tests: ``users`` maps ``local@domain`` to a clear-text
    password.  Returns the portal, the directory and the store factory.
    """
    directory = MemoryDirectory(
        domains=set(domains) if domains is not None else {u.split("@")[1] for u in users},
        users={u.lower() for u in users},
    )
    stores = stores if stores is not None else MemoryStoreFactory()
    checker = InMemoryUsernamePasswordDatabaseDontUse()
    for user, password in users.items():
        checker.addUser(user.lower().encode(), password.encode())
    portal = Portal(MailRealm(directory, stores, "/nonexistent"), [checker])
    return portal, directory, stores


class _ImmediatePool:
    def __init__(self, reactor: ThreadlessReactor) -> None:
        self._reactor = reactor

    def callInThreadWithCallback(self, onResult: Any, func: Any, *args: Any, **kw: Any) -> None:
        self._reactor._depth += 1
        try:
            try:
                result = func(*args, **kw)
            except BaseException:
                onResult(False, Failure())
            else:
                onResult(True, result)
        finally:
            self._reactor._depth -= 1
        self._reactor._flush()

    def callInThread(self, func: Any, *args: Any, **kw: Any) -> None:
        self.callInThreadWithCallback(lambda ok, result: None, func, *args, **kw)


class ThreadlessReactor(Clock):
    """
    A :class:`~twisted.internet.task.Clock` that also provides the thread
    API: work sent to "the thread pool" runs immediately, and calls made
    with ``callFromThread`` run, in order, right after that work returns,
    as they would in the reactor thread.
    """

    def __init__(self) -> None:
        super().__init__()
        self._pool = _ImmediatePool(self)
        self._from_threads: list[tuple[Any, tuple[Any, ...], dict[str, Any]]] = []
        self._depth = 0

    def getThreadPool(self) -> _ImmediatePool:
        return self._pool

    def callInThread(self, func: Any, *args: Any, **kw: Any) -> None:
        self._pool.callInThread(func, *args, **kw)

    def callFromThread(self, func: Any, *args: Any, **kw: Any) -> None:
        self._from_threads.append((func, args, kw))
        if self._depth == 0:
            self._flush()

    def _flush(self) -> None:
        if self._depth:
            return
        while self._from_threads:
            func, args, kw = self._from_threads.pop(0)
            func(*args, **kw)


class _HeldPool:
    def __init__(self, reactor: SteppedReactor) -> None:
        self._reactor = reactor

    def callInThreadWithCallback(self, onResult: Any, func: Any, *args: Any, **kw: Any) -> None:
        self._reactor.thread_work.append((onResult, func, args, kw))

    def callInThread(self, func: Any, *args: Any, **kw: Any) -> None:
        self.callInThreadWithCallback(lambda ok, result: None, func, *args, **kw)


class SteppedReactor(ThreadlessReactor):
    """
    A :class:`ThreadlessReactor` whose thread-pool work waits in
    :attr:`thread_work` until the test runs it: for what may happen between
    one job and the next (a read, another change, a crash).
    """

    def __init__(self) -> None:
        super().__init__()
        #: Queued jobs, oldest first: (onResult, func, args, kw).
        self.thread_work: list[tuple[Any, Any, tuple[Any, ...], dict[str, Any]]] = []
        self._held = _HeldPool(self)

    def getThreadPool(self) -> _HeldPool:  # type: ignore[override]
        return self._held

    def callInThread(self, func: Any, *args: Any, **kw: Any) -> None:
        self._held.callInThread(func, *args, **kw)

    def run_job(self, index: int = 0) -> None:
        """Run one queued job (by default the oldest) as the pool would."""
        onResult, func, args, kw = self.thread_work.pop(index)
        _ImmediatePool(self).callInThreadWithCallback(onResult, func, *args, **kw)

    def run_thread_work(self) -> None:
        """Run queued jobs, and the jobs they queue, until none is left."""
        while self.thread_work:
            self.run_job()


class MailStoreContract:
    """
    The behaviour every storage backend promises, as a test mixin.

    Mix it into a ``twisted.trial.unittest.SynchronousTestCase`` and define
    :meth:`make_store`, returning a fresh, empty :class:`IMailStore` for one
    account whose thread work runs on ``self.reactor`` (a
    :class:`ThreadlessReactor` made for each test)::

        class MyBackendTests(MailStoreContract, SynchronousTestCase):
            def make_store(self):
                return MyFactory(self.reactor).open_store("a@example.org", self.mktemp())
    """

    reactor: ThreadlessReactor

    #: Whether a new account comes with the SPECIAL_USE_FOLDERS.
    special_use_on_new_accounts = True

    #: Set to True when the factory says ``persistent_modseq = True``: the
    #: MODSEQ tests (RFC 7162: CONDSTORE and QRESYNC) then run; they skip
    #: otherwise.
    persistent_modseq = False

    def make_store(self) -> Any:
        raise NotImplementedError("define make_store() in the test case")

    def reopen_store(self) -> Any:
        """
        The same account as a fresh process would see it (a new factory over
        the same files).  Backends that keep nothing across processes leave
        this as it is: the same store.
        """
        return self.store

    def setUp(self) -> None:
        self.reactor = ThreadlessReactor()
        self.store = self.make_store()

    def _result(self, d: Any) -> Any:
        return self.successResultOf(d)  # type: ignore[attr-defined]

    def failureResultOf(self, d: Any, *types: type[BaseException]) -> Any:
        # Provided by the TestCase this is mixed into.
        return super().failureResultOf(d, *types)  # type: ignore[misc]

    def inbox(self) -> Any:
        return self._result(self.store.get_mailbox("INBOX"))

    def test_provides_interfaces(self) -> None:
        """The store and its INBOX provide IMailStore and IMailbox."""
        from zope.interface.verify import verifyObject

        from pymail.interfaces import IMailbox, IMailStore

        verifyObject(IMailStore, self.store)
        verifyObject(IMailbox, self.inbox())

    def test_append_read_byte_exact(self) -> None:
        """An appended message reads back byte for byte, with its wire size."""
        msg = b"From: a@example.org\r\nSubject: hi\r\n\r\nbody line\r\n.dot\r\n"
        box = self.inbox()
        uid = self._result(box.append(msg))
        assert box.read(uid) == msg
        assert box.info(uid).size == len(msg)
        assert [i.uid for i in box.messages()] == [uid]

    def test_uids_ascend_and_uidnext_moves(self) -> None:
        """Each append gets a UID above the previous, and UIDNEXT above all."""
        box = self.inbox()
        uids = [self._result(box.append(b"Subject: %d\r\n\r\nx\r\n" % n)) for n in range(5)]
        assert uids == sorted(uids) and len(set(uids)) == 5
        assert box.uidnext() > uids[-1]
        assert box.uidvalidity() > 0

    def test_append_with_flags_and_date(self) -> None:
        """Flags and INTERNALDATE given to append are kept."""
        from datetime import datetime

        box = self.inbox()
        when = datetime(2020, 2, 3, 4, 5, 6, tzinfo=UTC)
        uid = self._result(box.append(b"\r\nx\r\n", ["\\Seen", "\\flagged"], when))
        info = box.info(uid)
        assert info.flags == {"\\Seen", "\\Flagged"}
        assert info.internaldate == when

    def test_set_flags_modes(self) -> None:
        """add, remove and replace change flags and tell listeners."""
        box = self.inbox()
        uid = self._result(box.append(b"\r\nx\r\n"))
        changes: list[Any] = []

        @implementer(IMailboxListener)
        class L:
            def mailbox_changed(self, mailbox: Any, change: Any) -> None:
                changes.append(change)

        box.add_listener(L())
        assert self._result(box.set_flags([uid], ["\\Seen"], "add")) == {uid: {"\\Seen"}}
        assert self._result(box.set_flags([uid], ["\\Flagged"], "add"))[uid] == {
            "\\Seen", "\\Flagged"}
        assert self._result(box.set_flags([uid], ["\\Seen"], "remove"))[uid] == {"\\Flagged"}
        assert self._result(box.set_flags([uid], ["$Label1"], "replace"))[uid] == {"$Label1"}
        assert box.info(uid).flags == {"$Label1"}
        assert [c.kind for c in changes] == ["flags"] * 4

    def test_expunge_only_deleted(self) -> None:
        """Expunge removes exactly the \\Deleted messages (and only those asked for)."""
        box = self.inbox()
        a, b, c = (self._result(box.append(b"\r\n%d\r\n" % n)) for n in range(3))
        self._result(box.set_flags([a, b], ["\\Deleted"], "add"))
        assert self._result(box.expunge([b, c])) == [b]
        assert [i.uid for i in box.messages()] == [a, c]
        assert self._result(box.expunge()) == [a]
        assert [i.uid for i in box.messages()] == [c]
        from pymail.errors import NoSuchMessage

        try:
            box.read(a)
        except NoSuchMessage:
            pass
        else:
            raise AssertionError("reading an expunged message must raise NoSuchMessage")

    def test_listener_told_of_new_message(self) -> None:
        """A listener hears of an append after the view shows it."""
        box = self.inbox()
        seen: list[Any] = []

        @implementer(IMailboxListener)
        class L:
            def mailbox_changed(self, mailbox: Any, change: Any) -> None:
                seen.append((change.kind, change.uids, len(mailbox.messages())))

        box.add_listener(L())
        uid = self._result(box.append(b"\r\nx\r\n"))
        assert seen == [("added", (uid,), 1)]

    def test_folders(self) -> None:
        """Folders can be created and listed; INBOX is always there."""
        from pymail.errors import MailboxExists, NoSuchMailbox

        assert "INBOX" in self.store.list_mailboxes()
        self._result(self.store.create_mailbox("Work.Projects"))
        self._result(self.store.create_mailbox("Entwürfe"))
        names = self.store.list_mailboxes()
        assert "Work.Projects" in names and "Entwürfe" in names
        box = self._result(self.store.get_mailbox("Entwürfe"))
        assert box.name == "Entwürfe"
        self.failureResultOf(self.store.create_mailbox("Entwürfe"), MailboxExists)
        self.failureResultOf(self.store.get_mailbox("Nope"), NoSuchMailbox)
        assert self._result(self.store.get_mailbox("inbox")).name == "INBOX"

    def test_hostile_folder_names(self) -> None:
        """Names that could escape the account are refused with BadMailboxName."""
        from pymail.errors import BadMailboxName

        for name in ["../x", "a/b", "..", "a..b", "x\x00y", "tab\there", "", ".hidden", "a\\b"]:
            self.failureResultOf(self.store.create_mailbox(name), BadMailboxName)
            self.failureResultOf(self.store.get_mailbox(name), BadMailboxName)

    def _listener(self) -> tuple[list[Any], Any]:
        changes: list[Any] = []

        @implementer(IMailboxListener)
        class L:
            def mailbox_changed(self, mailbox: Any, change: Any) -> None:
                changes.append(change)

        return changes, L()

    def test_state_survives_reopen(self) -> None:
        """UIDs, UIDVALIDITY, UIDNEXT, flags, dates and content survive a new process."""
        from datetime import datetime

        box = self.inbox()
        when = datetime(2021, 5, 6, 7, 8, 9, tzinfo=UTC)
        uids = [self._result(box.append(b"Subject: %d\r\n\r\nx\r\n" % n, (), when))
                for n in range(3)]
        self._result(box.set_flags([uids[1]], ["\\Seen", "$Work"], "add"))
        self._result(box.set_flags([uids[0]], ["\\Deleted"], "add"))
        self._result(box.expunge())
        again = self._result(self.reopen_store().get_mailbox("INBOX"))
        assert [i.uid for i in again.messages()] == uids[1:]
        assert again.uidvalidity() == box.uidvalidity()
        assert again.uidnext() == uids[-1] + 1
        assert again.info(uids[1]).flags == {"\\Seen", "$Work"}
        assert again.info(uids[2]).internaldate == when
        assert again.read(uids[2]) == b"Subject: 2\r\n\r\nx\r\n"

    def _needs_persistent_modseq(self) -> None:
        if not self.persistent_modseq:
            from unittest import SkipTest

            raise SkipTest("the backend does not say persistent_modseq = True")

    def test_modseq_moves_on_flag_change_and_expunge(self) -> None:
        """A flag change gives the message a MODSEQ above the old top; an expunge raises the top."""
        self._needs_persistent_modseq()
        box = self.inbox()
        uids = [self._result(box.append(b"Subject: %d\r\n\r\nx\r\n" % n)) for n in range(3)]
        before = {i.uid: i.modseq for i in box.messages()}
        top = box.highestmodseq()
        assert top >= max(before.values()) >= 1
        self._result(box.set_flags([uids[1]], ["\\Seen"], "add"))
        assert box.info(uids[1]).modseq > top
        assert box.highestmodseq() == box.info(uids[1]).modseq
        assert box.info(uids[0]).modseq == before[uids[0]]
        top = box.highestmodseq()
        self._result(box.set_flags([uids[2]], ["\\Deleted"], "add"))
        self._result(box.expunge())
        assert box.highestmodseq() > box.info(uids[1]).modseq
        assert box.highestmodseq() > top

    def test_modseq_survives_reopen(self) -> None:
        """Every message's MODSEQ and the folder's HIGHESTMODSEQ are the same in a new process."""
        self._needs_persistent_modseq()
        box = self.inbox()
        uids = [self._result(box.append(b"Subject: %d\r\n\r\nx\r\n" % n)) for n in range(4)]
        self._result(box.set_flags(uids[1:3], ["\\Flagged", "$Work"], "add"))
        self._result(box.set_flags([uids[0]], ["\\Deleted"], "add"))
        self._result(box.expunge())
        expected = {i.uid: i.modseq for i in box.messages()}
        again = self._result(self.reopen_store().get_mailbox("INBOX"))
        assert {i.uid: i.modseq for i in again.messages()} == expected
        assert again.highestmodseq() == box.highestmodseq()
        self._result(again.set_flags([uids[3]], ["\\Seen"], "add"))
        assert again.info(uids[3]).modseq > box.highestmodseq()

    def test_change_by_another_process_moves_modseq(self) -> None:
        """A flag change made by another process is seen with a MODSEQ above the old top."""
        self._needs_persistent_modseq()
        box = self.inbox()
        uids = [self._result(box.append(b"Subject: %d\r\n\r\nx\r\n" % n)) for n in range(3)]
        top = box.highestmodseq()
        untouched = box.info(uids[0]).modseq
        other = self._result(self.reopen_store().get_mailbox("INBOX"))
        self._result(other.set_flags([uids[1]], ["\\Answered"], "add"))
        self._result(box.refresh())
        assert box.info(uids[1]).flags == {"\\Answered"}
        assert box.info(uids[1]).modseq > top
        assert box.info(uids[0]).modseq == untouched

    def test_delete_mailbox(self) -> None:
        """DELETE removes the folder and its mail, keeps folders below it, and tells listeners."""
        from pymail.errors import BadMailboxName, NoSuchMailbox

        self._result(self.store.create_mailbox("Old"))
        self._result(self.store.create_mailbox("Old.Child"))
        box = self._result(self.store.get_mailbox("Old"))
        uid = self._result(box.append(b"\r\nx\r\n"))
        changes, listener = self._listener()
        box.add_listener(listener)
        self._result(self.store.delete_mailbox("Old"))
        names = self.store.list_mailboxes()
        assert "Old" not in names and "Old.Child" in names
        assert [(c.kind, c.uids) for c in changes] == [("expunged", (uid,))]
        self.failureResultOf(self.store.get_mailbox("Old"), NoSuchMailbox)
        self.failureResultOf(self.store.delete_mailbox("Old"), NoSuchMailbox)
        self.failureResultOf(self.store.delete_mailbox("inbox"), BadMailboxName)
        self.failureResultOf(self.store.delete_mailbox("../x"), BadMailboxName)
        self._result(self.store.create_mailbox("Old"))
        again = self._result(self.store.get_mailbox("Old"))
        assert list(again.messages()) == []
        assert again.uidvalidity() != box.uidvalidity() or again.uidnext() > uid

    def test_rename_moves_hierarchy(self) -> None:
        """RENAME moves the folder and those below it, keeping UIDs, flags and content."""
        self._result(self.store.create_mailbox("Work"))
        self._result(self.store.create_mailbox("Work.Projects"))
        self._result(self.store.create_mailbox("Workshop"))
        box = self._result(self.store.get_mailbox("Work"))
        uid = self._result(box.append(b"Subject: w\r\n\r\nx\r\n", ["\\Flagged"]))
        validity = box.uidvalidity()
        child = self._result(self.store.get_mailbox("Work.Projects"))
        cuid = self._result(child.append(b"Subject: c\r\n\r\ny\r\n"))
        self._result(self.store.rename_mailbox("Work", "Job"))
        names = self.store.list_mailboxes()
        assert {"Job", "Job.Projects", "Workshop"} <= set(names)
        assert "Work" not in names and "Work.Projects" not in names
        moved = self._result(self.store.get_mailbox("Job"))
        assert moved.name == "Job"
        assert moved.uidvalidity() == validity
        assert [i.uid for i in moved.messages()] == [uid]
        assert moved.info(uid).flags == {"\\Flagged"}
        assert moved.read(uid) == b"Subject: w\r\n\r\nx\r\n"
        moved_child = self._result(self.store.get_mailbox("Job.Projects"))
        assert moved_child.read(cuid) == b"Subject: c\r\n\r\ny\r\n"
        reopened = self.reopen_store()
        assert "Job.Projects" in reopened.list_mailboxes()

    def test_rename_inbox_moves_messages(self) -> None:
        """RENAME INBOX moves its messages to the new folder and leaves INBOX empty."""
        inbox = self.inbox()
        a = self._result(inbox.append(b"Subject: a\r\n\r\n1\r\n", ["\\Seen"]))
        b = self._result(inbox.append(b"Subject: b\r\n\r\n2\r\n"))
        changes, listener = self._listener()
        inbox.add_listener(listener)
        self._result(self.store.rename_mailbox("INBOX", "Old Mail"))
        assert list(inbox.messages()) == []
        assert [(c.kind, c.uids) for c in changes] == [("expunged", (a, b))]
        old = self._result(self.store.get_mailbox("Old Mail"))
        infos = old.messages()
        assert len(infos) == 2
        assert old.read(infos[0].uid) == b"Subject: a\r\n\r\n1\r\n"
        assert old.info(infos[0].uid).flags == {"\\Seen"}
        assert old.read(infos[1].uid) == b"Subject: b\r\n\r\n2\r\n"
        c = self._result(inbox.append(b"Subject: c\r\n\r\n3\r\n"))
        assert [i.uid for i in self.inbox().messages()] == [c]
        again = self._result(self.reopen_store().get_mailbox("INBOX"))
        assert [i.uid for i in again.messages()] == [c]

    def test_rename_errors(self) -> None:
        """RENAME of a missing folder, onto an existing one, or below itself is refused."""
        from pymail.errors import BadMailboxName, MailboxExists, NoSuchMailbox

        self._result(self.store.create_mailbox("A"))
        self._result(self.store.create_mailbox("B"))
        self.failureResultOf(self.store.rename_mailbox("Nope", "C"), NoSuchMailbox)
        self.failureResultOf(self.store.rename_mailbox("A", "B"), MailboxExists)
        self.failureResultOf(self.store.rename_mailbox("A", "A.Sub"), BadMailboxName)
        self.failureResultOf(self.store.rename_mailbox("A", "INBOX"), BadMailboxName)
        self.failureResultOf(self.store.rename_mailbox("A", "../escape"), BadMailboxName)
        assert {"A", "B"} <= set(self.store.list_mailboxes())

    def test_subscriptions(self) -> None:
        """Subscriptions are kept (for folders that need not exist) and survive reopening."""
        from pymail.errors import BadMailboxName

        self._result(self.store.create_mailbox("Lists.Python"))
        self._result(self.store.subscribe("Lists.Python"))
        self._result(self.store.subscribe("Not Yet"))
        self._result(self.store.subscribe("Lists.Python"))
        subs = self.store.subscriptions()
        assert "Lists.Python" in subs and "Not Yet" in subs
        assert subs.count("Lists.Python") == 1
        self._result(self.store.unsubscribe("Not Yet"))
        self._result(self.store.unsubscribe("Never Subscribed"))
        again = self.reopen_store().subscriptions()
        assert "Lists.Python" in again and "Not Yet" not in again
        self.failureResultOf(self.store.subscribe("a/../b"), BadMailboxName)

    def test_special_use_roles(self) -> None:
        """A new account has the special-use folders; roles follow RENAME and leave with DELETE."""
        from pymail.interfaces import SPECIAL_USE_FOLDERS, SPECIAL_USE_ROLES

        roles = self.store.special_use()
        assert set(roles.values()) <= SPECIAL_USE_ROLES
        assert set(roles) <= set(self.store.list_mailboxes())
        if not self.special_use_on_new_accounts:
            return
        assert roles == dict(SPECIAL_USE_FOLDERS)
        self._result(self.store.rename_mailbox("Sent", "Sent Items"))
        self._result(self.store.delete_mailbox("Junk"))
        expected = dict(SPECIAL_USE_FOLDERS)
        expected["Sent Items"] = expected.pop("Sent")
        del expected["Junk"]
        assert self.store.special_use() == expected
        assert self.reopen_store().special_use() == expected

    def test_keywords_reported(self) -> None:
        """Keywords in use are listed, and a fresh folder accepts new ones."""
        box = self.inbox()
        assert box.accepts_new_keywords()
        uid = self._result(box.append(b"\r\nx\r\n", ["$Work", "\\Seen"]))
        assert "$Work" in box.keywords()
        assert "\\Seen" not in box.keywords()
        self._result(box.set_flags([uid], ["Later"], "add"))
        assert {"$Work", "Later"} <= box.keywords()

    def test_cached_values(self) -> None:
        """cached() computes once per message and name, from the wire-form message."""
        from pymail.errors import NoSuchMessage

        box = self.inbox()
        msg = b"Subject: c\r\n\r\nbody\r\n"
        uid = self._result(box.append(msg))
        calls: list[bytes] = []

        def compute(data: bytes) -> Any:
            calls.append(data)
            return (b"len", len(data), [None, "x", (b"y",)])

        first = box.cached(uid, "test.1", compute)
        second = box.cached(uid, "test.1", compute)
        assert calls == [msg]
        assert first == second
        assert first[0] == b"len" and first[1] == len(msg)
        assert list(first[2][:2]) == [None, "x"] and tuple(first[2][2]) == (b"y",)
        box.cached(uid, "other.1", compute)
        assert len(calls) == 2
        try:
            box.cached(uid + 100, "test.1", compute)
        except NoSuchMessage:
            pass
        else:
            raise AssertionError("cached() of an unknown UID must raise NoSuchMessage")

    def test_odd_messages_byte_exact(self) -> None:
        """Odd messages (no headers, broken MIME, 8-bit, "From " lines) read back exactly."""
        odd = [
            b"\r\nno headers at all\r\n",
            b"Subject: no body, no blank line\r\n",
            b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nbroken\r\n",
            b"Subject: \xff\xfe 8-bit \x00 NUL\r\n\r\n\xe9t\xe9\r\n",
            b"Subject: f\r\n\r\nFrom me\r\n>From you\r\n>>From them\r\n\r\nFrom \r\n",
            b"Subject: lone\rCR\r\n\r\nx\r\n",
        ]
        box = self.inbox()
        uids = [self._result(box.append(m)) for m in odd]
        for uid, m in zip(uids, odd, strict=True):
            assert box.read(uid) == m, (uid, box.read(uid), m)
            assert box.info(uid).size == len(m)
        again = self._result(self.reopen_store().get_mailbox("INBOX"))
        for uid, m in zip(uids, odd, strict=True):
            assert again.read(uid) == m
            assert again.info(uid).size == len(m)

    def test_open_message_streams_byte_exact(self) -> None:
        """
        open_message (or its BytesIO fallback) gives exactly read()'s bytes
        for a message spanning several stream chunks, with line ends and a
        bare CR at the chunk boundaries.
        """
        from pymail.storage.base import STREAM_CHUNK_SIZE, open_message
        from pymail.storage.fsutil import to_crlf

        chunk = STREAM_CHUNK_SIZE
        disk = bytearray(b"Subject: big\n\n")
        n = 0
        while len(disk) < 3 * chunk + 100:
            disk += b"x" * (n % 97) + b"\n"
            n += 1
        # In the LF (on-disk) form: a bare CR ending the first chunk, an LF
        # ending the second and one starting the third.
        disk[chunk - 1 : chunk + 1] = b"\ry"
        disk[2 * chunk - 1 : 2 * chunk + 1] = b"\n\n"
        wire = to_crlf(bytes(disk))
        box = self.inbox()
        uid = self._result(box.append(wire))
        assert box.read(uid) == wire
        with open_message(box, uid) as stream:
            pieces = []
            while piece := stream.read(chunk // 3 + 1):
                pieces.append(piece)
        assert b"".join(pieces) == wire
        small = b"Subject: s\r\n\r\n.dot\rbare\r\n"
        uid = self._result(box.append(small))
        with open_message(box, uid) as stream:
            assert stream.read() == small
            assert stream.read() == b""

    def test_hostile_names_in_every_operation(self) -> None:
        """DELETE, RENAME and SUBSCRIBE refuse names that could leave the account."""
        from pymail.errors import BadMailboxName

        before = sorted(self.store.list_mailboxes())
        for name in ["../../etc", "a/../../b", "x\x00", "\x1b[31m", "Work..", ".."]:
            self.failureResultOf(self.store.delete_mailbox(name), BadMailboxName)
            self.failureResultOf(self.store.rename_mailbox("INBOX", name), BadMailboxName)
            self.failureResultOf(self.store.rename_mailbox(name, "Safe"), BadMailboxName)
            self.failureResultOf(self.store.subscribe(name), BadMailboxName)
        assert sorted(self.store.list_mailboxes()) == before


class CheckerContract:
    """
    What pymail needs from a password checker (a ``twisted.cred``
    ``ICredentialsChecker``, e.g. an ``auth = [...]`` strcred plugin), as a
    test mixin for a ``SynchronousTestCase``.  Define :meth:`make_checker`::

        class MyCheckerTests(CheckerContract, SynchronousTestCase):
            def make_checker(self, users):
                # users: canonical address -> clear-text password
                return MyChecker(self.reactor, users_table_with(users))

    Thread-pool work (``deferToThreadPool``) runs at once on ``self.reactor``.
    """

    reactor: ThreadlessReactor

    #: The accounts every test sees: canonical address -> password.
    USERS = {"alice@example.org": "correct horse", "bob@example.org": "b0b pa55 wörd"}

    def make_checker(self, users: Mapping[str, str]) -> Any:
        raise NotImplementedError("define make_checker(users) in the test case")

    def setUp(self) -> None:
        self.reactor = ThreadlessReactor()
        self.checker = self.make_checker(dict(self.USERS))

    def _login(self, username: bytes, password: bytes) -> Any:
        from twisted.cred.credentials import UsernamePassword
        from twisted.internet.defer import maybeDeferred

        return maybeDeferred(self.checker.requestAvatarId, UsernamePassword(username, password))

    def _avatar_id(self, username: bytes, password: bytes) -> str:
        result = self.successResultOf(self._login(username, password))  # type: ignore[attr-defined]
        return result.decode("utf-8") if isinstance(result, bytes) else str(result)

    def _refused(self, username: bytes, password: bytes) -> None:
        from twisted.cred.error import UnauthorizedLogin

        self.failureResultOf(self._login(username, password), UnauthorizedLogin)  # type: ignore[attr-defined]

    def test_provides_icredentialschecker_for_passwords(self) -> None:
        """The checker provides ICredentialsChecker and takes IUsernamePassword."""
        from twisted.cred.checkers import ICredentialsChecker
        from twisted.cred.credentials import IUsernamePassword
        from zope.interface.verify import verifyObject

        assert verifyObject(ICredentialsChecker, self.checker)
        assert IUsernamePassword in self.checker.credentialInterfaces

    def test_right_password_gives_canonical_address(self) -> None:
        """The right password gives the account's canonical address as the avatar id."""
        for address, password in self.USERS.items():
            assert self._avatar_id(address.encode(), password.encode("utf-8")) == address

    def test_user_name_case_does_not_matter(self) -> None:
        """A user name in another case logs in as the canonical (lower-case) address."""
        assert self._avatar_id(b"Alice@Example.ORG", b"correct horse") == "alice@example.org"

    def test_wrong_password_unknown_user_and_empty_password_are_refused(self) -> None:
        """Wrong password, unknown account and empty password fail with UnauthorizedLogin."""
        self._refused(b"alice@example.org", b"correct horsE")
        self._refused(b"nobody@example.org", b"correct horse")
        self._refused(b"alice@example.org", b"")
        self._refused(b"alice@example.org", "b0b pa55 wörd".encode())

    def test_hostile_user_names_are_refused_cleanly(self) -> None:
        """NUL, CR/LF, path characters and invalid UTF-8 in a user name are a plain refusal."""
        for name in (b"alice@example.org\x00", b"alice@example.org\r\nx", b"../../etc/passwd",
                     b"\xff\xfe@example.org", b"", b"a" * 5000):
            self._refused(name, b"correct horse")


class ScramClient:
    """
    The client side of one SCRAM-SHA-256 exchange (RFC 5802 section 3),
    for tests of servers: call it with each decoded server challenge (None
    or ``b""`` first) and send back what it returns.  After the server's
    final message ``server_verified`` says whether its signature was right.
    ``nonce`` and ``gs2`` (``b"n,,"``, or ``b"n,a=user,"``) may be replaced
    to reproduce published exchanges.
    """

    def __init__(self, user: str, password: str, nonce: bytes | None = None,
                 gs2: bytes = b"n,,") -> None:
        self.user = user
        self.password = password
        self.nonce = nonce if nonce is not None else base64.b64encode(os.urandom(18))
        self.gs2 = gs2
        self.server_verified = False
        self.expected_server_final = b""
        self._state = 0

    def __call__(self, challenge: bytes | None = None) -> bytes:
        if self._state == 0:
            self._state = 1
            self.client_first_bare = b"n=" + self.user.encode() + b",r=" + self.nonce
            return self.gs2 + self.client_first_bare
        if self._state == 1:
            self._state = 2
            assert challenge is not None
            attributes = dict(a.split(b"=", 1) for a in challenge.split(b","))
            salted = hashlib.pbkdf2_hmac("sha256", scram_prepare(self.password).encode(),
                                         base64.b64decode(attributes[b"s"]),
                                         int(attributes[b"i"]))
            client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
            stored_key = hashlib.sha256(client_key).digest()
            without_proof = b"c=" + base64.b64encode(self.gs2) + b",r=" + attributes[b"r"]
            auth_message = self.client_first_bare + b"," + challenge + b"," + without_proof
            signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
            proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
            server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
            self.expected_server_final = b"v=" + base64.b64encode(
                hmac.new(server_key, auth_message, hashlib.sha256).digest())
            return without_proof + b",p=" + base64.b64encode(proof)
        self.server_verified = challenge == self.expected_server_final
        return b""
