"""
A storage backend that keeps everything in memory: for tests and for
embedding pymail where nothing needs to survive the process.
"""

from __future__ import annotations

import io
import itertools
import time
from collections.abc import Iterable
from datetime import datetime, UTC
from typing import Any, BinaryIO, TypeVar

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from pymail.errors import BadMailboxName, MailboxExists, NoSuchMailbox, NoSuchMessage
from pymail.interfaces import (
    SPECIAL_USE_FOLDERS,
    IMailbox,
    IMailStore,
    IMailStoreFactory,
    IMessageStream,
    MessageInfo,
)
from pymail.storage.base import (
    MailboxView,
    ViewBacked,
    apply_flag_mode,
    canonical_name,
    check_mailbox_name,
    normalise_flags,
    rename_plan,
)
from pymail.storage.fsutil import as_bytes

_T = TypeVar("_T")
_keys = itertools.count(1)
_uidvalidities = itertools.count(int(time.time()))


@implementer(IMailbox, IMessageStream)
class MemoryMailbox(ViewBacked):
    """One folder held in memory."""

    def __init__(self, name: str, uidvalidity: int | None = None) -> None:
        self.name = name
        self._uidvalidity = uidvalidity or next(_uidvalidities)
        self._next_uid = 1
        self._bodies: dict[int, bytes] = {}
        self._cache: dict[tuple[int, str], Any] = {}
        self._view = MailboxView(self)

    def uidvalidity(self) -> int:
        return self._uidvalidity

    def uidnext(self) -> int:
        return self._next_uid

    def read(self, uid: int) -> bytes:
        try:
            return self._bodies[uid]
        except KeyError:
            raise NoSuchMessage(f"no message with UID {uid}") from None

    def open_message(self, uid: int) -> BinaryIO:
        return io.BytesIO(self.read(uid))

    def append(
        self,
        message: bytes,
        flags: Iterable[str] = (),
        internaldate: datetime | None = None,
    ) -> Deferred[int]:
        try:
            flagset = normalise_flags(flags)
        except ValueError as e:
            return fail(e)
        return succeed(self._add(as_bytes(message), flagset, internaldate or datetime.now(UTC)))

    def _add(self, message: bytes, flags: frozenset[str], when: datetime,
             uid: int | None = None) -> int:
        if uid is None:
            uid = self._next_uid
        self._next_uid = max(self._next_uid, uid + 1)
        self._bodies[uid] = message
        self._view.apply_added([MessageInfo(uid, f"mem{next(_keys)}", flags, when, len(message))])
        return uid

    def set_flags(
        self, uids: Iterable[int], flags: Iterable[str], mode: str
    ) -> Deferred[dict[int, frozenset[str]]]:
        try:
            flagset = normalise_flags(flags)
            new = {
                uid: apply_flag_mode(self._view.info(uid).flags, flagset, mode)
                for uid in uids
                if uid in self._view
            }
        except ValueError as e:
            return fail(e)
        return succeed(self._view.apply_flags(new))

    def expunge(self, uids: Iterable[int] | None = None) -> Deferred[list[int]]:
        allowed = None if uids is None else set(uids)
        doomed = [
            i.uid
            for i in self._view.messages()
            if "\\Deleted" in i.flags and (allowed is None or i.uid in allowed)
        ]
        return succeed(self._remove(doomed))

    def _remove(self, uids: list[int]) -> list[int]:
        for uid in uids:
            self._bodies.pop(uid, None)
        self._cache = {k: v for k, v in self._cache.items() if k[0] in self._bodies}
        return self._view.apply_expunged(uids)

    def refresh(self) -> Deferred[None]:
        return succeed(None)



@implementer(IMailStore)
@attrs.define
class MemoryMailStore:
    """The folders of one account, in memory."""

    _mailboxes: dict[str, MemoryMailbox] = attrs.Factory(
        lambda: {"INBOX": MemoryMailbox("INBOX")}
    )
    _subscriptions: set[str] = attrs.Factory(set)
    _roles: dict[str, str] = attrs.Factory(dict)

    @classmethod
    def with_special_use(cls) -> MemoryMailStore:
        """A new account with the folders of SPECIAL_USE_FOLDERS, subscribed."""
        store = cls()
        for name, role in SPECIAL_USE_FOLDERS:
            store._mailboxes[name] = MemoryMailbox(name)
            store._roles[name] = role
            store._subscriptions.add(name)
        store._subscriptions.add("INBOX")
        return store

    def list_mailboxes(self) -> list[str]:
        return sorted(self._mailboxes, key=lambda n: (n != "INBOX", n))

    def get_mailbox(self, name: str) -> Deferred[IMailbox]:
        try:
            return succeed(self._mailboxes[check_mailbox_name(canonical_name(name))])
        except BadMailboxName as e:
            return fail(e)
        except KeyError:
            return fail(NoSuchMailbox(f"no mailbox named {name!r}"))

    def create_mailbox(self, name: str) -> Deferred[None]:
        try:
            name = check_mailbox_name(canonical_name(name))
        except BadMailboxName as e:
            return fail(e)
        if name in self._mailboxes:
            return fail(MailboxExists(f"mailbox {name!r} exists already"))
        self._mailboxes[name] = MemoryMailbox(name)
        return succeed(None)

    def delete_mailbox(self, name: str) -> Deferred[None]:
        try:
            name = check_mailbox_name(canonical_name(name))
            if name == "INBOX":
                raise BadMailboxName("INBOX cannot be deleted")
        except BadMailboxName as e:
            return fail(e)
        box = self._mailboxes.pop(name, None)
        if box is None:
            return fail(NoSuchMailbox(f"no mailbox named {name!r}"))
        self._roles.pop(name, None)
        box._remove([i.uid for i in box.messages()])
        return succeed(None)

    def rename_mailbox(self, old: str, new: str) -> Deferred[None]:
        try:
            plan = rename_plan(self._mailboxes, old, new)
        except BadMailboxName as e:
            return fail(e)
        if plan[0][0] not in self._mailboxes:
            return fail(NoSuchMailbox(f"no mailbox named {old!r}"))
        for _, target in plan:
            if target in self._mailboxes:
                return fail(MailboxExists(f"mailbox {target!r} exists already"))
        if plan[0][0] == "INBOX":
            inbox = self._mailboxes["INBOX"]
            moved = MemoryMailbox(plan[0][1])
            infos = list(inbox.messages())
            for info in infos:
                moved._add(inbox._bodies[info.uid], info.flags, info.internaldate, info.uid)
            self._mailboxes[moved.name] = moved
            inbox._remove([i.uid for i in infos])
            return succeed(None)
        for source, target in plan:
            box = self._mailboxes.pop(source)
            box.name = target
            self._mailboxes[target] = box
            if source in self._roles:
                self._roles[target] = self._roles.pop(source)
        return succeed(None)

    def subscriptions(self) -> list[str]:
        return sorted(self._subscriptions)

    def subscribe(self, name: str) -> Deferred[None]:
        try:
            self._subscriptions.add(check_mailbox_name(canonical_name(name)))
        except BadMailboxName as e:
            return fail(e)
        return succeed(None)

    def unsubscribe(self, name: str) -> Deferred[None]:
        self._subscriptions.discard(canonical_name(name))
        return succeed(None)

    def special_use(self) -> dict[str, str]:
        return dict(self._roles)


@implementer(IMailStoreFactory)
@attrs.define
class MemoryStoreFactory:
    """
    Hands out one in-memory store per account for the life of the process.

    :ivar special_use_folders: give each new account the folders of
        :data:`~pymail.interfaces.SPECIAL_USE_FOLDERS` (off by default, so
        tests start from a store holding only INBOX).
    """

    name: str = "memory"
    description: str = "Keeps mail in memory only (tests, embedding); nothing survives a restart."
    special_use_folders: bool = False
    _stores: dict[str, MemoryMailStore] = attrs.Factory(dict)

    def open_store(self, address: str, data_dir: str) -> IMailStore:
        store = self._stores.get(address)
        if store is None:
            store = MemoryMailStore.with_special_use() if self.special_use_folders else (
                MemoryMailStore())
            self._stores[address] = store
        return store
