"""
An in-memory cache, shared by every session of the process, of values
derived from messages: the rendered ENVELOPE, BODYSTRUCTURE and BODY, and
the decoded header fields SEARCH looks at.

The storage backend already keeps such values (``IMailbox.cached``, in the
Maildir folder's SQLite index), so they are computed once per message.
Asking the index costs a query and a decode per message, though, which is
most of the time of a ``FETCH 1:* (... ENVELOPE)`` over a big folder; this
cache keeps the wire-ready values in memory in front of it.

It also hands out one shared list of a folder's UIDs per folder state
(:meth:`DerivedCache.shared_uids`), so sessions that select the same big
folder do not each hold a copy.

Values never change for a given UID under one UIDVALIDITY (a message's
bytes are immutable), so entries are only ever dropped for memory: the
cache holds at most about ``budget`` bytes, evicting whole folders, least
recently used first.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from pymail.interfaces import IMailbox
from pymail.storage.base import uids_of

_T = TypeVar("_T")

#: Default memory budget of a :class:`DerivedCache`, in bytes.
DEFAULT_BUDGET = 64 * 1024 * 1024
#: What one entry costs beyond its value's length (dict slot, key, objects).
ENTRY_OVERHEAD = 120


def value_size(value: object) -> int:
    """A rough size in bytes of a cached value (bytes, str, nested tuples)."""
    if isinstance(value, (bytes, str)):
        return len(value) + 40
    if isinstance(value, (tuple, list)):
        return 56 + 8 * len(value) + sum(value_size(v) for v in value)
    return 32


class _FolderCache:
    __slots__ = ("uidvalidity", "values", "size", "used", "__weakref__")

    def __init__(self, uidvalidity: int) -> None:
        self.uidvalidity = uidvalidity
        self.values: dict[str, dict[int, Any]] = {}
        self.size = 0
        self.used = 0


class DerivedCache:
    """
    Values derived from messages, per folder, in memory; see the module
    docstring.

    :param budget: about how many bytes the cache may hold in all.
    """

    def __init__(self, budget: int = DEFAULT_BUDGET) -> None:
        self.budget = budget
        self._folders: weakref.WeakKeyDictionary[IMailbox, _FolderCache] = (
            weakref.WeakKeyDictionary()
        )
        self._size = 0
        self._clock = 0
        self._uid_lists: weakref.WeakKeyDictionary[
            IMailbox, tuple[tuple[int, int, int], list[int]]
        ] = weakref.WeakKeyDictionary()

    def table(self, mailbox: IMailbox, name: str) -> dict[int, Any]:
        """
        The dict ``uid -> value`` of derivation ``name`` in ``mailbox``, for
        fast lookups in a loop; fill misses through :meth:`get`.
        """
        folder = self._folder(mailbox)
        table = folder.values.get(name)
        if table is None:
            table = folder.values[name] = {}
        return table

    def get(
        self, mailbox: IMailbox, uid: int, name: str, compute: Callable[[bytes], _T],
        message: bytes | None = None,
    ) -> _T:
        """
        The value ``name`` of message ``uid``: from memory, else from the
        backend's ``cached()`` (which computes and stores it the first time,
        with ``message`` when the caller already has the bytes).

        :raises pymail.errors.NoSuchMessage: no such UID (any more).
        """
        folder = self._folder(mailbox)
        table = folder.values.get(name)
        if table is None:
            table = folder.values[name] = {}
        else:
            try:
                return table[uid]  # type: ignore[no-any-return]
            except KeyError:
                pass
        if message is None:
            value = mailbox.cached(uid, name, compute)
        else:
            known = message
            value = mailbox.cached(uid, name, lambda _: compute(known))
        table[uid] = value
        grown = value_size(value) + ENTRY_OVERHEAD
        folder.size += grown
        self._size += grown
        if self._size > self.budget:
            self._evict(folder)
        return value

    def put_many(self, mailbox: IMailbox, name: str, values: dict[int, Any]) -> None:
        """Keep values ``name`` of many messages, as :meth:`get` keeps one."""
        folder = self._folder(mailbox)
        table = folder.values.get(name)
        if table is None:
            table = folder.values[name] = {}
        grown = 0
        for uid, value in values.items():
            if uid not in table:
                table[uid] = value
                grown += value_size(value) + ENTRY_OVERHEAD
        folder.size += grown
        self._size += grown
        if self._size > self.budget:
            self._evict(folder)

    def _folder(self, mailbox: IMailbox) -> _FolderCache:
        self._clock += 1
        folder = self._folders.get(mailbox)
        uidvalidity = mailbox.uidvalidity()
        if folder is None or folder.uidvalidity != uidvalidity:
            if folder is not None:
                self._size -= folder.size
            folder = self._folders[mailbox] = _FolderCache(uidvalidity)
        folder.used = self._clock
        return folder

    def _evict(self, keep: _FolderCache) -> None:
        # Folders that went away took their entries with them.
        live = list(self._folders.items())
        self._size = sum(f.size for _, f in live)
        for mailbox, folder in sorted(live, key=lambda item: item[1].used):
            if self._size <= self.budget // 2:
                break
            if folder is keep and len(live) > 1:
                continue
            del self._folders[mailbox]
            self._size -= folder.size

    def shared_uids(self, mailbox: IMailbox) -> list[int]:
        """
        The UIDs of ``mailbox`` now, ascending, as one list shared by every
        session that sees the folder in this state (a big folder selected by
        many sessions is then held once).  Callers must never change it in
        place: replace it instead.

        Within one UIDVALIDITY, the number of messages and the highest UID
        together name the state: UIDs only grow, so an expunge can never be
        undone by a later append.
        """
        messages = mailbox.messages()
        key = (mailbox.uidvalidity(), len(messages), messages[-1].uid if messages else 0)
        known = self._uid_lists.get(mailbox)
        if known is not None and known[0] == key:
            return known[1]
        # A folder opened from its index gives the UIDs without making a
        # MessageInfo per message.
        uids = uids_of(messages)
        self._uid_lists[mailbox] = (key, uids)
        return uids

    @property
    def size(self) -> int:
        """About how many bytes the cache holds."""
        return self._size
