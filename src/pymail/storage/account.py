"""
What the file backends share above the folder level: the per-process
registry of open folders, and an account's small files (subscriptions in
Dovecot's format, special-use roles).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure

from pymail.errors import StorageError
from pymail.interfaces import SPECIAL_USE_FOLDERS
from pymail.storage.base import (
    canonical_name,
    check_mailbox_name,
    decode_roles,
    decode_subscriptions,
    encode_roles,
    encode_subscriptions,
)
from pymail.storage.fsutil import write_file_durably


#: Thread-pool threads the file backends need: 10 concurrent durable writers
#: (each blocks in fsync and then waits for its group commit) plus index
#: writes and message reads beside them.  Twisted's default is 10.
STORAGE_THREADS = 24


def ensure_thread_pool(reactor: Any, threads: int = STORAGE_THREADS) -> None:
    """Raise the reactor's thread-pool size to at least ``threads`` (never lower it)."""
    get_pool = getattr(reactor, "getThreadPool", None)
    suggest = getattr(reactor, "suggestThreadPoolSize", None)
    if get_pool is None or suggest is None:
        return
    current = getattr(get_pool(), "max", None)
    if isinstance(current, int) and current < threads:
        suggest(threads)


class OpenMailboxes:
    """
    The live folder objects of one process, by path, so every session and
    every delivery share one view (and its listeners) per folder; plus one
    lock per account for the account's small files.
    """

    def __init__(self) -> None:
        self._open: dict[str, Any] = {}
        self._opening: dict[str, list[Deferred[Any]]] = {}
        self._account_locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self.ready: set[str] = set()

    def get(self, path: str, name: str, make: Callable[[], Deferred[Any]]) -> Deferred[Any]:
        """The live folder at ``path``; ``make()`` opens it the first time."""
        result: Deferred[Any] = Deferred()
        box = self._open.get(path)
        if box is not None:
            result.callback(box)
            return result
        waiters = self._opening.setdefault(path, [])
        waiters.append(result)
        if len(waiters) == 1:

            def done(outcome: Any) -> None:
                everyone = self._opening.pop(path, [])
                if isinstance(outcome, Failure):
                    if isinstance(outcome.value, OSError):
                        outcome = Failure(
                            StorageError(f"cannot open mailbox {name!r}: {outcome.value}"))
                    for waiter in everyone:
                        waiter.errback(outcome)
                    return
                self._open[path] = outcome
                for waiter in everyone:
                    waiter.callback(outcome)

            make().addBoth(done)
        return result

    def live(self) -> list[Any]:
        """The folders open now."""
        return list(self._open.values())

    def forget(self, path: str) -> Any:
        """Drop a deleted folder; returns its live object (or None)."""
        return self._open.pop(path, None)

    def moved(self, old: str, new: str) -> Any:
        """A folder's file or directory was renamed; returns its live object (or None)."""
        box = self._open.pop(old, None)
        if box is not None:
            self._open[new] = box
        return box

    def account_lock(self, key: str) -> threading.Lock:
        """The lock serialising changes to one account's small files."""
        with self._locks_lock:
            return self._account_locks.setdefault(key, threading.Lock())


class AccountFiles:
    """An account's subscriptions file and special-use file, in one directory."""

    def __init__(self, directory: str, subscriptions: str, roles: str,
                 lock: threading.Lock) -> None:
        self.directory = directory
        self._subscriptions = os.path.join(directory, subscriptions)
        self._roles = os.path.join(directory, roles)
        self._lock = lock

    def subscriptions(self) -> list[str]:
        try:
            with open(self._subscriptions, "rb") as f:
                return decode_subscriptions(f.read())
        except FileNotFoundError:
            return []

    def _write_subscriptions(self, names: Iterable[str]) -> None:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        write_file_durably(self._subscriptions, encode_subscriptions(names))

    def change_subscription(self, name: str, add: bool) -> None:
        """Subscribe or unsubscribe (blocking: run it in a thread)."""
        with self._lock:
            names = set(self.subscriptions())
            if (name in names) == add:
                return
            if add:
                names.add(name)
            else:
                names.discard(name)
            self._write_subscriptions(names)

    def roles(self) -> dict[str, str]:
        try:
            with open(self._roles, "rb") as f:
                return decode_roles(f.read())
        except FileNotFoundError:
            return {}

    def roles_moved(self, plan: Iterable[tuple[str, str | None]]) -> None:
        """Folders were renamed (``plan`` of (old, new)) or deleted (new None)."""
        with self._lock:
            roles = self.roles()
            changed = False
            for old, new in plan:
                if old in roles:
                    role = roles.pop(old)
                    if new is not None:
                        roles[new] = role
                    changed = True
            if changed:
                write_file_durably(self._roles, encode_roles(roles))

    def set_up(self, create_folder: Callable[[str], None]) -> None:
        """
        Give a new account its special-use folders (``create_folder(name)``
        makes one if missing), subscribed with INBOX.  Done once: the roles
        file marks an account as set up, and folders that exist already (mail
        from another server) are kept as they are.
        """
        if os.path.exists(self._roles):
            return
        with self._lock:
            if os.path.exists(self._roles):
                return
            roles = {}
            for name, role in SPECIAL_USE_FOLDERS:
                create_folder(name)
                roles[name] = role
            self._write_subscriptions(set(self.subscriptions()) | {"INBOX"} | set(roles))
            write_file_durably(self._roles, encode_roles(roles))


class FileStoreMixin:
    """
    The :class:`~pymail.interfaces.IMailStore` methods the file backends
    (Maildir, mbox) answer the same way: thread-pool work, subscriptions
    and special-use roles kept in an :class:`AccountFiles`.  A store using it
    sets ``_files`` and ``_factory`` (with a ``reactor``) and has
    ``list_mailboxes()``.
    """

    _files: AccountFiles
    _factory: Any

    def list_mailboxes(self) -> list[str]:
        raise NotImplementedError

    def _in_thread(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        reactor = self._factory.reactor
        return deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)

    def subscriptions(self) -> list[str]:
        return self._files.subscriptions()

    def _change_subscriptions(self, name: str, add: bool) -> Deferred[None]:
        try:
            name = check_mailbox_name(canonical_name(name))
        except StorageError as e:
            return fail(e)
        return self._in_thread(self._files.change_subscription, name, add)

    def subscribe(self, name: str) -> Deferred[None]:
        return self._change_subscriptions(name, True)

    def unsubscribe(self, name: str) -> Deferred[None]:
        return self._change_subscriptions(name, False)

    def special_use(self) -> dict[str, str]:
        existing = set(self.list_mailboxes())
        return {name: role for name, role in self._files.roles().items() if name in existing}
