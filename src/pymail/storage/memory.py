"""
A storage backend that keeps everything in memory: for tests and for
embedding pymail where nothing needs to survive the process.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, UTC

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from pymail.errors import BadMailboxName, MailboxExists, NoSuchMailbox, NoSuchMessage
from pymail.interfaces import (
    IMailbox,
    IMailboxListener,
    IMailStore,
    IMailStoreFactory,
    MessageInfo,
)
from pymail.storage.base import MailboxView, apply_flag_mode, check_mailbox_name, normalise_flags

_keys = itertools.count(1)


@implementer(IMailbox)
class MemoryMailbox:
    """One folder held in memory."""

    def __init__(self, name: str, uidvalidity: int | None = None) -> None:
        self.name = name
        self._uidvalidity = uidvalidity or int(time.time())
        self._next_uid = 1
        self._bodies: dict[int, bytes] = {}
        self._view = MailboxView(self)

    def uidvalidity(self) -> int:
        return self._uidvalidity

    def uidnext(self) -> int:
        return self._next_uid

    def highestmodseq(self) -> int:
        return self._view.highestmodseq

    def messages(self) -> Sequence[MessageInfo]:
        return self._view.messages()

    def info(self, uid: int) -> MessageInfo:
        return self._view.info(uid)

    def read(self, uid: int) -> bytes:
        try:
            return self._bodies[uid]
        except KeyError:
            raise NoSuchMessage(f"no message with UID {uid}") from None

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
        uid = self._next_uid
        self._next_uid += 1
        self._bodies[uid] = bytes(message)
        when = internaldate or datetime.now(UTC)
        self._view.apply_added(
            [MessageInfo(uid, f"mem{next(_keys)}", flagset, when, len(message))]
        )
        return succeed(uid)

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
        for uid in doomed:
            del self._bodies[uid]
        return succeed(self._view.apply_expunged(doomed))

    def refresh(self) -> Deferred[None]:
        return succeed(None)

    def add_listener(self, listener: IMailboxListener) -> None:
        self._view.add_listener(listener)

    def remove_listener(self, listener: IMailboxListener) -> None:
        self._view.remove_listener(listener)


@implementer(IMailStore)
@attrs.define
class MemoryMailStore:
    """The folders of one account, in memory."""

    _mailboxes: dict[str, MemoryMailbox] = attrs.Factory(
        lambda: {"INBOX": MemoryMailbox("INBOX")}
    )

    def list_mailboxes(self) -> list[str]:
        return sorted(self._mailboxes, key=lambda n: (n != "INBOX", n))

    def _canonical(self, name: str) -> str:
        return "INBOX" if name.upper() == "INBOX" else name

    def get_mailbox(self, name: str) -> Deferred[IMailbox]:
        try:
            return succeed(self._mailboxes[check_mailbox_name(self._canonical(name))])
        except BadMailboxName as e:
            return fail(e)
        except KeyError:
            return fail(NoSuchMailbox(f"no mailbox named {name!r}"))

    def create_mailbox(self, name: str) -> Deferred[None]:
        try:
            name = check_mailbox_name(self._canonical(name))
        except BadMailboxName as e:
            return fail(e)
        if name in self._mailboxes:
            return fail(MailboxExists(f"mailbox {name!r} exists already"))
        self._mailboxes[name] = MemoryMailbox(name)
        return succeed(None)


@implementer(IMailStoreFactory)
@attrs.define
class MemoryStoreFactory:
    """Hands out one in-memory store per account for the life of the process."""

    name: str = "memory"
    description: str = "Keeps mail in memory only (tests, embedding); nothing survives a restart."
    _stores: dict[str, MemoryMailStore] = attrs.Factory(dict)

    def open_store(self, address: str, data_dir: str) -> IMailStore:
        store = self._stores.get(address)
        if store is None:
            store = self._stores[address] = MemoryMailStore()
        return store
