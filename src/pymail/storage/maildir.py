"""
The Maildir backend: Maildir++ layout, UIDs in Dovecot's ``dovecot-uidlist``
format, keywords in ``dovecot-keywords``, so a mailbox moves between pymail
and Dovecot (and stays readable by mutt, procmail and Python's ``mailbox``).

Layout of one account (``<data_dir>/mail/<domain>/<local>/``)::

    cur/ new/ tmp/            INBOX
    .Sent/cur ...             the folder "Sent" (hierarchy: ".Work.Projects")
    dovecot-uidlist           UIDVALIDITY, next UID, and "uid :basename" lines
    dovecot-keywords          "index keyword" lines: keyword i is letter a+i
    pymail-uidlist.lock       fcntl lock taken while the uidlist changes

The folder itself (threads, group commit, the index) is
:mod:`pymail.storage.maildir_folder`.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, fail
from twisted.internet.interfaces import IReactorFromThreads, IReactorThreads
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

# Importing twisted.mail.imap4 registers the 'imap4-utf-7' codec (RFC 3501 5.1.3)
# that Dovecot uses for Maildir++ folder names.
import twisted.mail.imap4  # noqa: F401, E402

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
from pymail.storage import fsutil
from pymail.storage.fsutil import fsync_dir
from pymail.storage.maildir_files import (  # noqa: F401  (re-exported)
    KEYWORDS,
    LOCKFILE,
    UIDLIST,
    new_uidvalidity,
    split_name,
)
from pymail.storage.maildir_folder import MaildirMailbox

__all__ = ["MaildirMailbox", "MaildirStore", "MaildirStoreFactory", "new_uidvalidity",
           "split_name"]

log = Logger()

SUBSCRIPTIONS = "subscriptions"
ROLES = "pymail-special-use"
#: Prefix of a folder directory being deleted: two dots make an empty
#: hierarchy level, which neither Dovecot nor pymail lists as a folder.
TRASHED_PREFIX = "..pymail-deleted."


@implementer(IMailStore)
class MaildirStore(FileStoreMixin):
    """The folders of one account in one Maildir++ directory."""

    def __init__(self, root: str, factory: MaildirStoreFactory) -> None:
        self.root = root
        self._factory = factory
        self._files = AccountFiles(root, SUBSCRIPTIONS, ROLES,
                                   factory.registry.account_lock(root))

    def _folder_path(self, name: str) -> str:
        if name.upper() == "INBOX":
            return self.root
        check_mailbox_name(name)
        return os.path.join(self.root, "." + encode_folder_name(name))

    def list_mailboxes(self) -> list[str]:
        names = ["INBOX"]
        try:
            entries = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return names
        for entry in entries:
            if entry.startswith(".") and entry not in (".", "..") and os.path.isdir(
                os.path.join(self.root, entry, "cur")
            ):
                try:
                    names.append(check_mailbox_name(decode_folder_name(entry[1:])))
                except (UnicodeError, ValueError, StorageError):
                    log.warn("Maildir {root}: skipping folder with an unusable name {entry!r}",
                             root=self.root, entry=entry)
        return names

    def get_mailbox(self, name: str) -> Deferred[IMailbox]:
        try:
            path = self._folder_path(name)
        except StorageError as e:
            return fail(e)
        canonical = canonical_name(name)
        if canonical != "INBOX" and not os.path.isdir(os.path.join(path, "cur")):
            return fail(NoSuchMailbox(f"no mailbox named {name!r}"))
        return self._factory.mailbox_at(path, canonical)

    def create_mailbox(self, name: str) -> Deferred[None]:
        try:
            if name.upper() == "INBOX":
                raise MailboxExists("INBOX always exists")
            path = self._folder_path(name)
        except StorageError as e:
            return fail(e)
        if os.path.exists(path):
            return fail(MailboxExists(f"mailbox {name!r} exists already"))

        def create() -> None:
            os.makedirs(self.root, mode=0o700, exist_ok=True)
            try:
                self._make_folder_dirs(path)
            except FileExistsError:
                raise MailboxExists(f"mailbox {name!r} exists already") from None
            fsync_dir(self.root)

        return self._in_thread(create)

    @staticmethod
    def _make_folder_dirs(path: str, exist_ok: bool = False) -> None:
        """
        Make a folder directory with its cur/, new/ and tmp/.  ``exist_ok``:
        finish a folder someone else is making at the same moment (another
        pymail process setting up the same new account) instead of failing.
        """
        os.makedirs(path, 0o700, exist_ok=exist_ok)
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(path, sub), 0o700, exist_ok=exist_ok)
        open(os.path.join(path, "maildirfolder"), "ab").close()
        fsync_dir(path)

    def delete_mailbox(self, name: str) -> Deferred[None]:
        try:
            if name.upper() == "INBOX":
                raise BadMailboxName("INBOX cannot be deleted")
            path = self._folder_path(name)
        except StorageError as e:
            return fail(e)
        if not os.path.isdir(os.path.join(path, "cur")):
            return fail(NoSuchMailbox(f"no mailbox named {name!r}"))
        live = self._factory.registry.forget(path)

        def delete() -> None:
            # Rename first (atomic: the folder is gone for every reader at
            # once), then remove the files at leisure.
            doomed = os.path.join(self.root, TRASHED_PREFIX + os.urandom(6).hex())
            try:
                os.rename(path, doomed)
            except FileNotFoundError:
                raise NoSuchMailbox(f"no mailbox named {name!r}") from None
            fsync_dir(self.root)
            shutil.rmtree(doomed, ignore_errors=True)
            self._files.roles_moved([(name, None)])

        def tell(_: None) -> None:
            if live is not None:
                live._view.apply_expunged([i.uid for i in live.messages()])
                live.close_journal()

        return self._in_thread(delete).addCallback(tell)

    def rename_mailbox(self, old: str, new: str) -> Deferred[None]:
        try:
            plan = rename_plan(self.list_mailboxes(), old, new)
            paths = [(self._folder_path(a), self._folder_path(b)) for a, b in plan]
        except StorageError as e:
            return fail(e)
        if plan[0][0] != "INBOX" and not os.path.isdir(os.path.join(paths[0][0], "cur")):
            return fail(NoSuchMailbox(f"no mailbox named {old!r}"))
        for (_, target), (_, target_path) in zip(plan, paths, strict=True):
            if os.path.exists(target_path):
                return fail(MailboxExists(f"mailbox {target!r} exists already"))
        if plan[0][0] == "INBOX":
            def move(inbox: Any) -> Deferred[None]:
                return self._in_thread(inbox._move_all_to, paths[0][1])

            return self._factory.mailbox_at(self.root, "INBOX").addCallback(move)

        def rename() -> None:
            for source, target in paths:
                os.rename(source, target)
            fsync_dir(self.root)
            self._files.roles_moved(plan)

        def moved(result: None) -> None:
            for (_, target), (source_path, target_path) in zip(plan, paths, strict=True):
                box = self._factory.registry.moved(source_path, target_path)
                if box is not None:
                    box.path, box.name = target_path, target

        return self._in_thread(rename).addCallback(moved)

    def ensure_account(self) -> None:
        """Give a new account its INBOX and special-use folders (see AccountFiles.set_up)."""
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(self.root, sub), mode=0o700, exist_ok=True)

        def create(name: str) -> None:
            path = self._folder_path(name)
            if not os.path.isdir(os.path.join(path, "cur")):
                self._make_folder_dirs(path, exist_ok=True)

        self._files.set_up(create)


#: The values of ``MaildirStoreFactory(sync=...)`` (``maildir.sync``).
SYNC_MODES = ("journal", "fsync", "syncfs")


@implementer(IMailStoreFactory)
class MaildirStoreFactory:
    """
    Accounts in Maildir++ under ``<data_dir>/mail/<domain>/<local>/``.

    One factory per process: it keeps the registry of open folders, so all
    sessions and deliveries share each folder's view and listeners.
    """

    name = "maildir"
    description = "Maildir++ with Dovecot-compatible uidlist and keywords files."
    #: MODSEQs survive a restart (the folder index keeps them, and a rebuilt
    #: index starts above any earlier one), so IMAP may offer CONDSTORE and
    #: QRESYNC (RFC 7162) over these folders.
    persistent_modseq = True

    def __init__(self, reactor: IReactorThreads | IReactorFromThreads | None = None,
                 sync: str = "journal") -> None:
        """
        :param sync: how a group of deliveries is made durable (see
            docs/storage.md): ``"journal"`` (the default) appends the
            group to the folder's journal with one ``fdatasync`` (see
            :mod:`pymail.storage.maildir_journal`); ``"fsync"`` fsyncs each file,
            the directories it is renamed into and the uidlist;
            ``"syncfs"`` makes the group durable with two ``syncfs`` calls
            (Linux 5.8 and later), cheaper per message on a file system
            that holds only mail, but each call also waits for every other
            program's unwritten data on that file system.
        :raises ValueError: an unknown mode, or ``"syncfs"`` where the
            system has no ``syncfs`` that reports write-back errors.
        """
        if sync not in SYNC_MODES:
            raise ValueError(f"sync must be one of {', '.join(SYNC_MODES)}, not {sync!r}")
        if sync == "syncfs" and fsutil.syncfs is None:
            raise ValueError("sync = 'syncfs' needs Linux 5.8 or later (a syncfs that reports "
                             "write-back errors); use 'fsync'")
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor  # type: ignore[assignment]
        self.reactor: Any = reactor
        self.sync = sync
        ensure_thread_pool(reactor)
        self.registry = OpenMailboxes()

    @staticmethod
    def account_root(address: str, data_dir: str) -> str:
        local, _, domain = address.rpartition("@")
        if not local or not domain or "/" in address or "\0" in address or local in (".", ".."):
            raise StorageError(f"cannot store mail for the address {address!r}")
        return os.path.join(data_dir, "mail", domain, local)

    def open_store(self, address: str, data_dir: str) -> IMailStore:
        store = MaildirStore(self.account_root(address, data_dir), self)
        if store.root not in self.registry.ready:
            # Once per account and process: a stat, and for a new account a
            # few mkdirs and two small files.
            try:
                store.ensure_account()
            except OSError as e:
                raise StorageError(f"cannot set up the mail folders of {address}: {e}") from e
            self.registry.ready.add(store.root)
        return store

    def checkpoint_all(self) -> Deferred[None]:
        """
        Write every open folder's index changes still waiting for their
        batch (:meth:`MaildirMailbox.flush_index`) and checkpoint its
        delivery journal (see :meth:`MaildirMailbox.checkpoint`): the
        service does it when it stops, so the next start finds the indexes
        current and the journals empty, and its first opens have nothing to
        rescan or rewrite.  A failure is logged, not raised (the next open
        scans the folder or replays the journal).
        """
        def logged(failure: Failure, path: str, what: str) -> None:
            log.failure("Maildir {path}: {what} at stop failed (the next open repairs it)",
                        failure, path=path, what=what)

        boxes = self.registry.live()
        done = [b.flush_index().addErrback(logged, b.path, "index write") for b in boxes]
        done += [b.checkpoint().addErrback(logged, b.path, "checkpoint") for b in boxes
                 if getattr(b, "journaled", False)]
        return DeferredList(done).addCallback(lambda _: None)

    def mailbox_at(self, path: str, name: str) -> Deferred[IMailbox]:
        """The live mailbox for a folder directory, opened once per process."""
        return self.registry.get(path, name, lambda: self._new_mailbox(path, name).open())

    def _new_mailbox(self, path: str, name: str) -> MaildirMailbox:
        box = MaildirMailbox(path, name, self.reactor)
        if self.sync == "syncfs":
            box.syncfs = fsutil.syncfs
        box.journaled = self.sync == "journal"
        return box
