"""
The mbox backend: one mboxrd file per folder, readable and writable by
mutt, procmail and Python's ``mailbox`` at the same time as pymail.

Layout of one account::

    <inbox path>                 INBOX (e.g. /var/mail/alice; by default
                                 <data_dir>/mbox/<domain>/<local>/INBOX)
    <folders>/Work.Projects      the folder "Work.Projects" (modified UTF-7
                                 file names; '.' is the hierarchy delimiter)
    <folders>/.pymail-state/     per folder: "UIDVALIDITY UIDNEXT"
    <folders>/.subscriptions     Dovecot's subscriptions file
    <folders>/.pymail-special-use

Per message, pymail keeps its metadata in headers at the end of the header
block, the way mutt and UW-IMAP write them: ``Status: RO`` (R = \\Seen,
O = not new), ``X-Status: AFTD`` (\\Answered, \\Flagged, \\Draft,
\\Deleted), ``X-Keywords: a b`` and ``X-UID: n``.  These headers are not
part of the message: :meth:`MboxMailbox.read` leaves them out (so a message
that arrived with its own ``Status:`` header loses it, as with Dovecot).
UIDVALIDITY and UIDNEXT live in the state file, because mutt drops a
leading ``X-IMAPbase`` header when it deletes the first message.

Locking: every read of the file's structure and every write holds a
dotlock (``<file>.lock``, created with O_EXCL as procmail and mutt do;
one older than five minutes is stale) and an fcntl lock on the file.

Writes: appends add to the end of the file and fsync.  Flag changes,
expunges and the first UIDs given to messages another program delivered
rewrite the folder: a new file is written beside it, fsynced and renamed
over it, so a crash at any point leaves either the old or the new file,
never a half-written one.

Outside changes: the file's inode, size and mtime are compared before each
operation; a change means a rescan (messages matched by their ``X-UID``),
followed by listener notifications.
"""
from __future__ import annotations

import errno
import os
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger
from zope.interface import implementer

from pymail.errors import BadMailboxName, MailboxExists, NoSuchMailbox, StorageError
from pymail.interfaces import IMailbox, IMailStore, IMailStoreFactory
from pymail.storage.account import (
    AccountFiles,
    FileStoreMixin,
    OpenMailboxes,
    ensure_thread_pool,
)
from pymail.storage.base import (
    canonical_name,
    check_mailbox_name,
    decode_folder_name,
    encode_folder_name,
    rename_plan,
)
from pymail.storage.fsutil import fsync_dir
from pymail.storage.mbox_folder import MboxMailbox
from pymail.storage.mbox_format import _Locked
from pymail.storage.mbox_index import MboxIndex, index_path

__all__ = ["MboxMailbox", "MboxStore", "MboxStoreFactory", "_Locked"]

log = Logger()

STATE_DIR = ".pymail-state"
SUBSCRIPTIONS = ".subscriptions"
ROLES = ".pymail-special-use"


@implementer(IMailStore)
class MboxStore(FileStoreMixin):
    """The folders of one account: an INBOX file and a directory of folder files."""

    def __init__(self, inbox: str, folders: str, factory: MboxStoreFactory) -> None:
        self.inbox_path = inbox
        self.folders = folders
        self._factory = factory
        self._files = AccountFiles(folders, SUBSCRIPTIONS, ROLES,
                                   factory.registry.account_lock(folders))

    def _paths(self, name: str) -> tuple[str, str, str]:
        """(canonical name, mbox file, state file) of a folder."""
        canonical = canonical_name(name)
        if canonical == "INBOX":
            return canonical, self.inbox_path, os.path.join(self.folders, STATE_DIR, "INBOX")
        check_mailbox_name(canonical)
        encoded = encode_folder_name(canonical)
        if encoded.upper() == "INBOX":
            raise BadMailboxName(f"{name!r} would clash with INBOX")
        return (canonical, os.path.join(self.folders, encoded),
                os.path.join(self.folders, STATE_DIR, encoded))

    def list_mailboxes(self) -> list[str]:
        names = ["INBOX"]
        try:
            entries = sorted(os.listdir(self.folders))
        except FileNotFoundError:
            return names
        for entry in entries:
            if entry.startswith(".") or entry.endswith(".lock") or entry.upper() == "INBOX":
                continue
            if not os.path.isfile(os.path.join(self.folders, entry)):
                continue
            try:
                names.append(check_mailbox_name(decode_folder_name(entry)))
            except (UnicodeError, ValueError, StorageError):
                log.warn("mbox {dir}: skipping a file with an unusable folder name {entry!r}",
                         dir=self.folders, entry=entry)
        return names

    def get_mailbox(self, name: str) -> Deferred[IMailbox]:
        try:
            canonical, path, state = self._paths(name)
        except StorageError as e:
            return fail(e)
        if canonical != "INBOX" and not os.path.isfile(path):
            return fail(NoSuchMailbox(f"no mailbox named {name!r}"))
        return self._factory.mailbox_at(path, state, canonical)

    def create_mailbox(self, name: str) -> Deferred[None]:
        try:
            if name.upper() == "INBOX":
                raise MailboxExists("INBOX always exists")
            _, path, state = self._paths(name)
        except StorageError as e:
            return fail(e)

        def create() -> None:
            os.makedirs(self.folders, mode=0o700, exist_ok=True)
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except FileExistsError:
                raise MailboxExists(f"mailbox {name!r} exists already") from None
            _remove(state)
            _remove_index(state)
            fsync_dir(self.folders)

        return self._in_thread(create)

    def delete_mailbox(self, name: str) -> Deferred[None]:
        try:
            if name.upper() == "INBOX":
                raise BadMailboxName("INBOX cannot be deleted")
            canonical, path, state = self._paths(name)
        except StorageError as e:
            return fail(e)
        if not os.path.isfile(path):
            return fail(NoSuchMailbox(f"no mailbox named {name!r}"))
        live = self._factory.registry.forget(path)

        def delete() -> None:
            with _Locked(path):
                os.unlink(path)
            _remove(state)
            if live is not None:
                live._index.close()
            _remove_index(state)
            fsync_dir(self.folders)
            self._files.roles_moved([(canonical, None)])

        def tell(_: None) -> None:
            if live is not None:
                live._view.apply_expunged([i.uid for i in live.messages()])

        return self._in_thread(delete).addCallback(tell)

    def rename_mailbox(self, old: str, new: str) -> Deferred[None]:
        try:
            plan = rename_plan(self.list_mailboxes(), old, new)
            paths = [(self._paths(a), self._paths(b)) for a, b in plan]
        except StorageError as e:
            return fail(e)
        if plan[0][0] != "INBOX" and not os.path.isfile(paths[0][0][1]):
            return fail(NoSuchMailbox(f"no mailbox named {old!r}"))
        for (_, target), (_, (_, target_path, _)) in zip(plan, paths, strict=True):
            if os.path.exists(target_path):
                return fail(MailboxExists(f"mailbox {target!r} exists already"))
        if plan[0][0] == "INBOX":
            dest = paths[0][1]

            def move(inbox: Any) -> Deferred[None]:
                def work() -> None:
                    os.makedirs(self.folders, mode=0o700, exist_ok=True)
                    os.close(os.open(dest[1], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
                    inbox._move_all_to(MboxMailbox(dest[1], dest[2], dest[0],
                                                   self._factory.reactor))

                return self._in_thread(work)

            return self._factory.mailbox_at(self.inbox_path, paths[0][0][2], "INBOX"
                                            ).addCallback(move)

        def rename() -> None:
            for (_, source, source_state), (_, target, target_state) in paths:
                with _Locked(source):
                    os.rename(source, target)
                    if os.path.exists(source_state):
                        os.rename(source_state, target_state)
                    # The index is rebuilt under the new name at the next
                    # open or write (an open SQLite file is not moved).
                    _remove_index(source_state)
            fsync_dir(self.folders)
            self._files.roles_moved(plan)

        def moved(result: None) -> None:
            for (_, source, _), (name, target, target_state) in paths:
                box = self._factory.registry.moved(source, target)
                if box is not None:
                    box.path, box.state_path, box.name = target, target_state, name
                    box._index.close()
                    box._index, box._index_synced = MboxIndex(target_state), False

        return self._in_thread(rename).addCallback(moved)

    def ensure_account(self) -> None:
        """Give a new account its INBOX file and special-use folders, once."""
        os.makedirs(self.folders, mode=0o700, exist_ok=True)
        os.makedirs(os.path.dirname(self.inbox_path), mode=0o700, exist_ok=True)
        os.close(os.open(self.inbox_path, os.O_WRONLY | os.O_CREAT, 0o600))

        def create(name: str) -> None:
            os.close(os.open(self._paths(name)[1], os.O_WRONLY | os.O_CREAT, 0o600))

        self._files.set_up(create)


def _remove_index(state_path: str) -> None:
    path = index_path(state_path)
    for suffix in ("", "-wal", "-shm"):
        _remove(path + suffix)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        if e.errno != errno.EISDIR:
            raise


@implementer(IMailStoreFactory)
class MboxStoreFactory:
    """
    Accounts as mbox files.

    :param inbox_path: where INBOX lives, with ``{local}``, ``{domain}`` and
        ``{address}`` filled in (e.g. ``/var/mail/{local}``); by default
        ``<data_dir>/mbox/<domain>/<local>/INBOX``.
    :param folders_path: the directory of the other folders, same fields;
        by default ``<data_dir>/mbox/<domain>/<local>``.
    """

    name = "mbox"
    description = "mboxrd files (mutt/procmail compatible): INBOX spool file plus folder files."
    #: MODSEQs survive a restart (each folder's index keeps them, written
    #: before any session is told of a change; an untrusted index starts
    #: above any earlier one), so IMAP may offer CONDSTORE and QRESYNC.
    persistent_modseq = True

    def __init__(self, reactor: Any = None, inbox_path: str | None = None,
                 folders_path: str | None = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.reactor: Any = reactor
        ensure_thread_pool(reactor)
        self._inbox_path = inbox_path
        self._folders_path = folders_path
        self.registry = OpenMailboxes()

    def paths(self, address: str, data_dir: str) -> tuple[str, str]:
        """(INBOX file, folders directory) of an account."""
        local, _, domain = address.rpartition("@")
        if (not local or not domain or "/" in address or "\0" in address
                or local in (".", "..") or domain in (".", "..")):
            raise StorageError(f"cannot store mail for the address {address!r}")
        fields = {"local": local, "domain": domain, "address": address}
        default = os.path.join(data_dir, "mbox", domain, local)
        folders = self._folders_path.format(**fields) if self._folders_path else default
        inbox = (self._inbox_path.format(**fields) if self._inbox_path
                 else os.path.join(folders, "INBOX"))
        return inbox, folders

    def open_store(self, address: str, data_dir: str) -> IMailStore:
        inbox, folders = self.paths(address, data_dir)
        store = MboxStore(inbox, folders, self)
        if folders not in self.registry.ready:
            try:
                store.ensure_account()
            except OSError as e:
                raise StorageError(f"cannot set up the mail folders of {address}: {e}") from e
            self.registry.ready.add(folders)
        return store

    def mailbox_at(self, path: str, state: str, name: str) -> Deferred[IMailbox]:
        """The live mailbox for an mbox file, opened once per process."""
        return self.registry.get(path, name,
                                 lambda: MboxMailbox(path, state, name, self.reactor).open())
