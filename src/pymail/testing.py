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
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC
from typing import Any

import attrs
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import Portal
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted.internet.task import Clock

from pymail.auth.realm import MailRealm
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

    def make_store(self) -> Any:
        raise NotImplementedError("define make_store() in the test case")

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
