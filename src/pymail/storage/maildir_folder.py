"""
One Maildir folder, :class:`MaildirMailbox` (the account's layout is in
:mod:`pymail.storage.maildir`; the uidlist and keywords files in
:mod:`pymail.storage.maildir_files`).

Threads and the reactor: every file operation runs in the reactor's thread
pool.  The *disk state* (which file has which UID) belongs to the threads
and is guarded by one lock per folder; the *view* (what sessions see)
belongs to the reactor thread.  Every change to the disk state is handed to
the reactor with ``callFromThread`` while the lock is still held, so the
view applies changes in exactly the order they happened on disk.

Durability and group commit, by default (``journaled``, ``sync="journal"``):
appends queue for the folder's committer, one pool thread that takes every
append queued meanwhile as a group, writes the files in ``tmp/``, appends
them to the folder's journal (:mod:`pymail.storage.maildir_journal`) with one
``fdatasync``, renames them into ``new/`` (``cur/`` with flags), writes their
uidlist lines and answers the group with one call into the reactor
(:meth:`MaildirMailbox._commit_journaled`); checkpoints and the replay after
a crash are described at :meth:`MaildirMailbox._checkpoint_locked` and
:meth:`MaildirMailbox._replay_journal_locked`.  With ``sync="fsync"`` or
``"syncfs"`` an append writes its ``tmp/`` file in its own thread, in
parallel with other appends, then queues itself; the first append that finds
no commit running commits every queued one at once
(:meth:`MaildirMailbox._commit_locked`): with ``syncfs`` (Linux 5.8+) one
``syncfs`` for the group's files, their renames, the uidlist lines, a second
``syncfs``; with ``fsync`` each append fsyncs its file and renames it itself,
and the commit writes the uidlist lines and fsyncs the directories and the
uidlist.  In every mode an append's Deferred fires only after its group's
commit, and a commit that fails after the renames takes the files back.

Opening: a folder whose index holds a sync record that still matches the
directories and the uidlist is loaded from the index in one query (see
:mod:`pymail.storage.index`); otherwise new/ and cur/ are listed and
compared with the uidlist and the index.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any, BinaryIO, TypeVar, cast

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from zope.interface import implementer

from pymail.errors import NoSuchMessage, StorageError
from pymail.interfaces import (
    ICachedMany,
    IMailbox,
    IMailboxListener,
    IMailboxRestore,
    IMessageStream,
    ISizedRead,
    MessageInfo,
)
from pymail.storage.base import (
    CRLFStream,
    LazyInfos,
    MailboxView,
    ViewBacked,
    apply_flag_mode,
    keywords_of,
    normalise_flags,
    paused_gc,
)
from pymail.storage import fsutil, maildir_journal
from pymail.storage.fsutil import (
    as_bytes,
    fsync_dir,
    to_crlf,
    to_lf,
    wire_size,
    write_file_durably,
)
from pymail.storage.index import (
    DELETE,
    INDEX_FILE,
    UPSERT,
    FolderIndex,
    IndexQueue,
    decode_value,
    encode_value,
    rebuild_modseq,
)
from pymail.storage.maildir_journal import JOURNAL
from pymail.storage.maildir_files import (
    _MAX_KEYWORDS,
    KEYWORDS,
    LOCKFILE,
    TIMESTAMP_GRANULARITY_NS,
    UIDLIST,
    DiskState,
    MaildirFilesMixin,
    base_size_fields,
    new_uidvalidity,
    parse_uidlist_header,
    split_name,
    unique_name,
)

log = Logger()

_T = TypeVar("_T")

_EPOCH = datetime.fromtimestamp(0, UTC)

#: What opening a folder gives the view: the messages, HIGHESTMODSEQ, and
#: their UIDs when they are known to be ascending (a trusted load).
_Loaded = tuple[list[MessageInfo] | LazyInfos, int, list[int] | None]


@attrs.define
class _Pending:
    relpath: str
    base: str
    info: MessageInfo
    #: Where the file waits in tmp/ until its group's first syncfs (None:
    #: fsynced and renamed by its own append already).
    tmp: str | None = None
    uid: int = 0
    done: bool = False
    error: BaseException | None = None
    #: The tmp/ file's descriptor, open from before its write until its
    #: group's first syncfs (-1: none), and when it was opened among the
    #: folder's appends (see _publish_locked).
    fd: int = -1
    opened: int = 0


@attrs.define
class _Queued:
    """An append waiting for the journal committer (see MaildirMailbox.journaled)."""

    message: bytes
    flags: frozenset[str]
    internaldate: datetime | None
    answer: Deferred[int]


@attrs.define
class _Staged:
    """An append whose file the committer has written in tmp/."""

    queued: _Queued
    data: bytes
    base: str
    tmp: str
    stamp: int
    relpath: str = ""
    uid: int = 0


def _no_sync(fd: int) -> None:
    """The uidlist of a journaled group is made durable by the journal, not by itself."""


@implementer(IMailboxListener)
class _IndexWriter:
    """Writes each change the view applied (with its MODSEQ) to the folder's index."""

    def __init__(self, mailbox: MaildirMailbox) -> None:
        self._mailbox = mailbox

    def mailbox_changed(self, mailbox: IMailbox, change: Any) -> None:
        box = self._mailbox
        view = box._view
        highest = view.highestmodseq
        if change.kind == "expunged":
            box._index_queue.add(delete=change.uids, highestmodseq=highest)
            return
        files = box._disk.files
        if change.kind == "flags":
            # A flag change renames the file and moves the MODSEQ; date and
            # size stay (a STORE 1:* writes 10,000 of these).
            get = files.get
            renamed = [(rel, info.modseq, info.uid) for info in view.lookup(change.uids)
                       if (rel := get(info.uid)) is not None]
            box._index_queue.add(renamed=renamed, highestmodseq=highest)
            return
        rows = []
        for info in view.lookup(change.uids):
            rel = files.get(info.uid)
            if rel is not None:
                rows.append((info.uid, rel, int(info.internaldate.timestamp()), info.size,
                             info.modseq))
        box._index_queue.add(upsert=rows, highestmodseq=highest)


@implementer(IMailbox, IMailboxRestore, IMessageStream, ICachedMany, ISizedRead)
class MaildirMailbox(ViewBacked, MaildirFilesMixin):
    """One Maildir folder."""

    #: How a group of appends is made durable: ``None`` (the default) fsyncs
    #: every file, its directory and the uidlist; a ``syncfs`` function
    #: (``MaildirStoreFactory(sync="syncfs")`` sets :data:`fsutil.syncfs`)
    #: makes the group durable with two calls (the files, then their names
    #: and UIDs: see _publish_locked).  Set per folder.
    syncfs: Callable[[int], None] | None = None

    #: Deliveries are made durable through the folder's journal
    #: (:mod:`pymail.storage.maildir_journal`; ``maildir.sync = "journal"``,
    #: the default of :class:`~pymail.storage.maildir.MaildirStoreFactory`):
    #: one committer thread takes every append queued meanwhile, writes
    #: their files, appends them to the journal with one ``fdatasync``,
    #: renames them into place and answers them all with one call into the
    #: reactor.  ``syncfs`` is then unused.  Set per folder.
    journaled: bool = False

    #: A journaled folder is checkpointed once this process appended this
    #: many octets or records to its journal (set per folder or on the class).
    checkpoint_bytes: int = maildir_journal.CHECKPOINT_BYTES
    checkpoint_records: int = maildir_journal.CHECKPOINT_RECORDS

    #: How long (seconds) a change waits for others before the index is
    #: written (one transaction for all of them; see :class:`IndexQueue`).
    #: Read when the folder object is made; 0 writes at once.
    index_write_delay: float = 0.05

    #: A flag change that renames at least this many files is answered once
    #: the new names are in the index, and renamed right after (see
    #: _set_flags); fewer are renamed before the answer (one fsync of cur/
    #: instead of the index's two and cur/'s: a one-message STORE takes
    #: 0.28 ms so, 0.7 ms written behind, in-process, median of 100; 256
    #: renames take about 3 ms).  Set per folder or on the class.
    write_behind_min: int = 256

    #: ``read()`` may be called from the thread pool (it only looks up the
    #: file name and reads the file); IMAP FETCH reads bodies there.
    threadsafe_read = True

    def __init__(self, path: str, name: str, reactor: Any) -> None:
        self.name = name
        self._path = path
        self._reactor = reactor
        self._lock = threading.Lock()
        self._disk = DiskState()
        self._pending: list[_Pending] = []
        self._pending_lock = threading.Lock()
        #: Signalled (under _pending_lock) when a group commit ends.
        self._committed = threading.Condition(self._pending_lock)
        #: Whether a thread is committing a group now (under _pending_lock).
        self._committing = False
        #: Base names of appends renamed into new/ or cur/ but not yet
        #: committed (under _pending_lock): a scan leaves them to their append.
        self._in_flight: set[str] = set()
        #: Numbers the tmp/ files' opens in the order they happen.
        self._opens = itertools.count(1)
        self._opens_lock = threading.Lock()
        #: Journaled appends waiting for the committer, and whether one runs
        #: (both under _queue_lock).
        self._queue: list[_Queued] = []
        self._queue_lock = threading.Lock()
        self._committer_running = False
        #: The journal, open from before the first file it covers was
        #: written (-1: not yet), the octets and records this process
        #: appended to it since it was last emptied (under _lock).
        self._journal_fd = -1
        self._journal_id: tuple[int, int] = (0, 0)
        #: Where this process's last write or cut left the journal's end
        #: (-1: unknown); another size means another process wrote since.
        self._journal_end = -1
        self._journal_own = 0
        self._journal_records = 0
        #: False once a checkpoint failed or the descriptor was replaced:
        #: the next checkpoint rewrites the files instead of a syncfs.
        self._journal_trusted = True
        #: How a checkpoint makes this process's journaled files durable at
        #: once (``syncfs`` where Linux reports write-back errors to it;
        #: None: file by file).
        self.journal_syncfs: Callable[[int], None] | None = fsutil.syncfs
        self._cache: dict[tuple[int, str], Any] = {}
        #: Flag renames acknowledged but not done yet: uid -> the old
        #: relative path (``_disk.files`` has the new one); under _lock.
        self._renames: dict[int, str] = {}
        #: The index's batches that list them (see write_behind_min).
        self._renames_batches: list[int] = []
        self._flag_sets: dict[tuple[str, tuple[str, ...]], frozenset[str]] = {}
        #: At least every MODSEQ the view may have handed out (under _lock;
        #: see _reserve_modseqs_locked).
        self._modseq_upper = 0
        self._index = FolderIndex(path)
        self._index_queue = IndexQueue(self._index, self._in_thread,
                                       getattr(self._reactor, "callLater", None),
                                       self.index_write_delay)
        self._view = MailboxView(self)
        self._view.add_listener(_IndexWriter(self))

    @property
    def path(self) -> str:
        """The folder directory."""
        return self._path

    @path.setter
    def path(self, value: str) -> None:
        # A RENAME moves the live folder: its index file moved with it, and
        # the index must fsync the new directory (a write-behind STORE's
        # record failed with the old one gone).
        self._path = value
        self._index.path = os.path.join(value, INDEX_FILE)

    # -- the view (reactor thread) ---------------------------------------

    def uidvalidity(self) -> int:
        return self._disk.uidvalidity

    def uidnext(self) -> int:
        return self._disk.next_uid

    def keywords(self) -> frozenset[str]:
        return frozenset(k for k in self._disk.keywords if k) | keywords_of(self._view.messages())

    def accepts_new_keywords(self) -> bool:
        return len([k for k in self._disk.keywords if k]) < _MAX_KEYWORDS

    def cached(self, uid: int, name: str, compute: Callable[[bytes], _T]) -> _T:
        if uid not in self._view:
            raise NoSuchMessage(f"no message with UID {uid} in {self.name}")
        try:
            return self._index.get_cached(uid, name)  # type: ignore[no-any-return]
        except KeyError:
            # Stored and returned in one shape (lists become tuples), so a
            # value looks the same whether computed now or read back later.
            value = decode_value(encode_value(compute(self.read(uid))))
            self._index.put_cached(uid, name, value)
            return value  # type: ignore[no-any-return]

    def cached_many(self, uids: Iterable[int], name: str) -> dict[int, Any]:
        """
        :meth:`cached` values ``name`` the index already holds for ``uids``
        (any thread; :class:`~pymail.interfaces.ICachedMany`).
        """
        return self._index.get_cached_many(uids, name)

    def store_cached(self, name: str, values: dict[int, Any]) -> None:
        """Keep computed values ``name`` in the index, in one transaction (any thread)."""
        self._index.put_cached_many(name, values)

    def _open_file(self, uid: int) -> BinaryIO:
        """
        The message's file, opened (so a later rename or unlink by another
        program cannot cut a read short).  A file renamed by another program
        (a flag change) is found again by its base name.
        """
        return open(self._open_fd(uid), "rb")  # noqa: SIM115

    def _open_fd(self, uid: int) -> int:
        """:meth:`_open_file` as a bare file descriptor, for one ``os.read``."""
        if uid not in self._view:
            raise NoSuchMessage(f"no message with UID {uid} in {self.name}")
        relpath = self._disk.files.get(uid)
        if relpath is not None:
            try:
                return os.open(os.path.join(self.path, relpath), os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                pass
            # A flag rename not done yet has the file under its old name
            # (and it may be done between the two opens: then the new name).
            old = self._renames.get(uid)
            if old is not None:
                for rel in (old, relpath):
                    try:
                        return os.open(os.path.join(self.path, rel), os.O_RDONLY | os.O_CLOEXEC)
                    except FileNotFoundError:
                        pass
        relpath = self._find_by_uid(uid)
        if relpath is not None:
            try:
                return os.open(os.path.join(self.path, relpath), os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                pass
        raise NoSuchMessage(f"message UID {uid} in {self.name} was removed by another program")

    def read(self, uid: int) -> bytes:
        with self._open_file(uid) as f:
            return to_crlf(f.read())

    def read_sized(self, uid: int, size: int) -> bytes:
        """
        :meth:`read` with one ``os.read`` (:class:`~pymail.interfaces.ISizedRead`):
        the stored LF form is never longer than the wire form, so a read of
        ``size + 1`` octets that comes back shorter holds the whole file.
        """
        fd = self._open_fd(uid)
        try:
            data = os.read(fd, size + 1)
            if len(data) > size:
                # Not the size the index knows (changed on disk): read it all.
                pieces = [data]
                while chunk := os.read(fd, 1 << 16):
                    pieces.append(chunk)
                data = b"".join(pieces)
        finally:
            os.close(fd)
        return to_crlf(data)

    def open_message(self, uid: int) -> BinaryIO:
        """The message file, converted to wire form chunk by chunk (see :meth:`read`)."""
        return cast(BinaryIO, CRLFStream(self._open_file(uid)))

    def _find_by_uid(self, uid: int) -> str | None:
        old = self._disk.files.get(uid)
        if old is None:
            return None
        base = split_name(old.split("/", 1)[1])[0]
        for sub in ("cur", "new"):
            try:
                names = os.listdir(os.path.join(self.path, sub))
            except FileNotFoundError:
                continue
            for n in names:
                if n == base or n.startswith(base + ":"):
                    return f"{sub}/{n}"
        return None

    # -- threads ----------------------------------------------------------

    def _in_thread(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        return deferToThreadPool(self._reactor, self._reactor.getThreadPool(), f, *args)

    def _to_reactor(self, f: Callable[..., Any], *args: Any) -> None:
        self._reactor.callFromThread(f, *args)

    def _flock(self) -> Any:
        fd = os.open(os.path.join(self.path, LOCKFILE), os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

    def _unflock(self, fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def open(self) -> Deferred[MaildirMailbox]:
        """Load the folder (create its directories if needed); fires with self."""
        def loaded(result: _Loaded) -> MaildirMailbox:
            infos, highest, uids = result
            # A trusted load comes by ascending UID with every MODSEQ at most
            # the index's HIGHESTMODSEQ: the view takes it as it is.
            self._view.load(infos, uids, highest)
            return self

        return self._in_thread(self._load).addCallback(loaded)

    def _load(self) -> _Loaded:
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(self.path, sub), mode=0o700, exist_ok=True)
        with self._lock, paused_gc():
            self._index.open()
            self._replay_journal_locked()
            self._recover_renames_locked()
            trusted = self._load_trusted_locked()
            if trusted is not None:
                return trusted
            fd = self._flock()
            try:
                self._read_uidlist_locked(force=True)
                self._read_keywords_locked()
                self._scan_locked()
            finally:
                self._unflock(fd)
            infos, highest = self._load_index_locked()
            self._modseq_upper = highest
            self._index.set_sync(self._sync_record_locked())
            return infos, highest, None

    def _reserve_modseqs_locked(self, count: int) -> None:
        """
        Before the view is told of a change that numbers at most ``count``
        messages: record in the index that MODSEQs up to the new bound may
        be handed out.  The index's rows and HIGHESTMODSEQ are written
        behind the answers that show them (see :class:`IndexQueue`), so a
        ``kill -9`` right after an answer could leave the index below a
        MODSEQ a client saw; an open that does not trust the rows numbers
        above the bound instead (RFC 7162: a MODSEQ never goes back).  A
        failure is logged, not raised (the change is done or about to be).
        """
        if not count:
            return
        self._modseq_upper += count
        try:
            self._index.raise_modseq_upper(self._modseq_upper)
        except Exception:
            log.failure("Maildir {path}: could not record the MODSEQ bound", path=self.path)

    def _recover_renames_locked(self) -> None:
        """
        Finish the flag renames a crash (or a stop) left undone: the index
        lists the new name of each acknowledged one until the renames were
        fsynced.  The file of the same base name is renamed to it wherever
        it is (under its old name, or another program renamed it since); a
        file found nowhere was deleted by another program.

        The rows are read again, and the renames done, under the folder's
        file lock, which a live pymail process also holds while it does and
        forgets its renames: read before it, a batch the other process has
        since done could be redone after that process renamed the same
        files again for a later change, reverting it.
        """
        if not self._index.renames_by_batch():
            return
        fd = self._flock()
        try:
            batches = self._index.renames_by_batch()
            pending = [new for names in batches.values() for new in names]
            if pending:
                on_disk = self._names_by_base()
                for new in pending:
                    self._rename_found(on_disk, new, new)
                fsync_dir(os.path.join(self.path, "cur"))
            self._index.renames_done(batches)
        finally:
            self._unflock(fd)
        if pending:
            log.info("Maildir {path}: finished {count} flag rename(s) left by a stop or crash",
                     path=self.path, count=len(pending))

    def _stamps(self) -> dict[str, int]:
        """What a sync record compares: directory mtimes, the uidlist's inode and size."""
        new, cur = self._dir_stamp()
        st = os.stat(os.path.join(self.path, UIDLIST))
        return {"new_mtime_ns": new, "cur_mtime_ns": cur,
                "uidlist_ino": st.st_ino, "uidlist_size": st.st_size}

    def _sync_record_locked(self) -> dict[str, int] | None:
        """
        The sync record for the scan just made, or None when the scan may
        have missed a change: the directories changed within the timestamp
        granularity before it, or an append of this process was between
        its rename and its commit.
        """
        d = self._disk
        if d.scanned_ns - max(d.dir_stamp) <= TIMESTAMP_GRANULARITY_NS:
            return None
        with self._pending_lock:
            if self._in_flight:
                return None
        new, cur = d.dir_stamp
        return {"new_mtime_ns": new, "cur_mtime_ns": cur, "uidlist_ino": d.uidlist_stamp[0],
                "uidlist_size": d.uidlist_stamp[1], "scanned_ns": d.scanned_ns}

    def _load_trusted_locked(self) -> _Loaded | None:
        """
        Open from the index alone when its sync record still matches the
        folder (nothing changed since a complete scan): one query, no
        directory listing, no uidlist parse.  None when it cannot be trusted.
        """
        index = self._index
        if index.rebuilt:
            return None
        record = index.sync_record()
        if not record:
            return None
        try:
            stamps = self._stamps()
            with open(os.path.join(self.path, UIDLIST), "rb") as f:
                header = parse_uidlist_header(f.readline())
        except FileNotFoundError:
            return None
        if any(record.get(key) != value for key, value in stamps.items()):
            return None
        if record.get("scanned_ns", 0) - max(stamps["new_mtime_ns"], stamps["cur_mtime_ns"]) \
                <= TIMESTAMP_GRANULARITY_NS:
            return None
        uidvalidity, next_uid, guid = header
        if not uidvalidity or uidvalidity != index.meta("uidvalidity"):
            return None
        self._read_keywords_locked()
        rows = index.ordered_rows()
        d = self._disk
        d.uidvalidity, d.guid = uidvalidity, guid or d.guid
        d.next_uid = max(next_uid, rows[-1][0] + 1 if rows else 1)
        d.uidlist_stamp = (stamps["uidlist_ino"], stamps["uidlist_size"])
        d.dir_stamp = (stamps["new_mtime_ns"], stamps["cur_mtime_ns"])
        d.scanned_ns = record["scanned_ns"]
        d.uid_by_base = None
        # The hot path of SELECT in a fresh process: no MessageInfo is made
        # here (LazyInfos makes each when first asked for).
        files = {row[0]: row[1] for row in rows}
        uids = list(files)
        top = max([row[4] for row in rows], default=0)
        infos = LazyInfos(rows, self._info_of_row, itemgetter(0), self._flags_of_row)
        d.files = files
        highest = index.meta("highestmodseq") or 1
        self._modseq_upper = max(top, highest)
        return infos, highest, (uids if top <= highest else None)

    def _flags_of_row(self, row: tuple[int, str, int, int, int]) -> frozenset[str]:
        """The flags of an index row ``(uid, relpath, date, size, modseq)``."""
        return self._flags_of(row[1].partition(":2,")[2])

    def _info_of_row(self, row: tuple[int, str, int, int, int]) -> MessageInfo:
        """The MessageInfo of an index row ``(uid, relpath, date, size, modseq)``."""
        uid, rel, date, size, modseq = row
        base, _, letters = rel[4:].partition(":2,")
        return MessageInfo(uid, base, self._flags_of(letters), _EPOCH + timedelta(0, date),
                           size, modseq)

    def _load_index_locked(self) -> tuple[list[MessageInfo], int]:
        """
        The folder's messages, taking INTERNALDATE, size and MODSEQ from the
        index where it knows the file (no stat), and bringing the index up
        to date with the files (rebuilding it if it was lost).
        """
        index = self._index
        files = self._disk.files
        # Not trusted: the last process may have handed out MODSEQs the rows
        # never got (written behind); the recorded bound is above them all.
        highest = max(index.meta("highestmodseq") or 1, index.modseq_upper())
        if index.meta("uidvalidity") != self._disk.uidvalidity:
            if index.rebuilt and (files or self._disk.next_uid > 1):
                highest = rebuild_modseq()
                log.info("Maildir {path}: building the index of {n} message(s)",
                         path=self.path, n=len(files))
            index.reset(self._disk.uidvalidity, highest)
        rows = index.rows()
        infos = []
        upsert = []
        for uid in sorted(files):
            rel = files[uid]
            row = rows.get(uid)
            base, letters = split_name(rel.split("/", 1)[1])
            if row is not None and split_name(row[0].split("/", 1)[-1])[0] == base:
                modseq = row[3]
                if row[0] != rel:  # flags changed while nobody watched
                    highest += 1
                    modseq = highest
                    upsert.append((uid, rel, row[1], row[2], modseq))
                infos.append(MessageInfo(uid, base, self._flags_of(letters),
                                         datetime.fromtimestamp(row[1], UTC), row[2], modseq))
            else:
                highest += 1
                info = attrs.evolve(self._info_for(uid, rel), modseq=highest)
                upsert.append((uid, rel, int(info.internaldate.timestamp()), info.size, highest))
                infos.append(info)
        stale = [uid for uid in rows if uid not in files]
        if upsert or stale:
            index.apply([(UPSERT, upsert), (DELETE, stale)], highest)
        return infos, highest
    # -- scanning ----------------------------------------------------------

    def _info_for(self, uid: int, relpath: str) -> MessageInfo:
        name = relpath.split("/", 1)[1]
        base, letters = split_name(name)
        full = os.path.join(self.path, relpath)
        try:
            st = os.stat(full)
            mtime = st.st_mtime
        except FileNotFoundError:
            mtime = time.time()
        fields = base_size_fields(base)
        size = fields.get("W")
        if size is None:
            try:
                with open(full, "rb") as f:
                    size = wire_size(f.read())
            except FileNotFoundError:
                size = 0
        return MessageInfo(
            uid=uid,
            key=base,
            flags=self._flags_of(letters),
            internaldate=datetime.fromtimestamp(mtime, UTC),
            size=size,
        )

    def _dir_stamp(self) -> tuple[int, int]:
        return (
            os.stat(os.path.join(self.path, "new")).st_mtime_ns,
            os.stat(os.path.join(self.path, "cur")).st_mtime_ns,
        )

    def _scan_locked(self) -> tuple[list[int], dict[int, str], list[int]]:
        """
        Compare new/ and cur/ with the disk state: returns the UIDs of files
        that appeared (UIDs assigned and written to the uidlist), the UIDs
        whose file name (flags) changed, and the UIDs whose file is gone.
        """
        self._finish_renames_locked(flocked=True)
        self._disk.dir_stamp = self._dir_stamp()
        self._disk.scanned_ns = time.time_ns()
        # Whole relative paths are compared as sets first: a folder where
        # nothing changed (or only this process renamed files: ``files``
        # has their new names) costs two listings and two set operations;
        # base names are parsed only for the paths that differ.
        on_disk: set[str] = set()
        for sub in ("new", "cur"):
            prefix = sub + "/"
            on_disk.update([prefix + n for n in os.listdir(os.path.join(self.path, sub))
                            if n[:1] != "."])
        files = self._disk.files
        known = set(files.values())
        vanished = known - on_disk
        found: dict[str, str] = {}
        # new/ first, so a base in both directories is taken from cur/.
        for rel in sorted(on_disk - known, key=lambda r: r[0] == "c"):
            found[split_name(rel[4:])[0]] = rel
        with self._pending_lock:
            # This process's appends between rename and commit: their
            # commit gives them their UID.
            for base in self._in_flight:
                found.pop(base, None)
        by_base = ({split_name(r[4:])[0]: u for u, r in files.items()}
                   if found or vanished else {})
        gone = [u for u, r in files.items()
                if r in vanished and split_name(r[4:])[0] not in found] if vanished else []
        changed: dict[int, str] = {}
        for base, rel in found.items():
            uid = by_base.get(base)
            if uid is not None and files[uid] != rel:
                changed[uid] = rel
        new_bases = [b for b in found if b not in by_base]
        added: list[int] = []
        entries: list[tuple[int, str]] = []
        given = self._disk.uid_by_base
        if new_bases and given is None:
            self._read_uidlist_locked(force=True)
            given = self._disk.uid_by_base
        given = given or {}
        # Files another process gave UIDs to keep them; others get new ones,
        # in order of arrival (the time prefix of the base name).
        for base in sorted(new_bases, key=lambda b: (given.get(b, 1 << 62), b)):
            uid = given.get(base)
            if uid is None or uid in self._disk.files:
                uid = self._disk.next_uid
                entries.append((uid, base))
            self._disk.next_uid = max(self._disk.next_uid, uid + 1)
            self._disk.files[uid] = found[base]
            added.append(uid)
        if self._disk.uid_by_base:
            # Keep only what a later scan may need: UIDs of files not seen yet.
            files = self._disk.files
            self._disk.uid_by_base = {b: u for b, u in self._disk.uid_by_base.items()
                                      if u not in files}
        for uid in gone:
            del self._disk.files[uid]
        for uid, rel in changed.items():
            self._disk.files[uid] = rel
        if gone:
            self._write_uidlist_locked()
        elif entries:
            self._append_uidlist_locked(entries)
        return added, changed, gone

    def refresh(self) -> Deferred[None]:
        return self._in_thread(self._refresh)

    def _refresh(self) -> None:
        with self._lock:
            # The file names must be what ``files`` says before a scan.
            self._finish_renames_locked()
            stamp = self._dir_stamp()
            # A change within the file system's timestamp granularity of the
            # last change could leave the mtime unchanged: rescan until one
            # scan ran after that window.
            if (stamp == self._disk.dir_stamp
                    and self._disk.scanned_ns - max(stamp) > TIMESTAMP_GRANULARITY_NS):
                return
            fd = self._flock()
            try:
                self._read_uidlist_locked()
                self._read_keywords_locked()
                added, changed, gone = self._scan_locked()
            finally:
                self._unflock(fd)
            record = self._sync_record_locked()
            self._reserve_modseqs_locked((1 if gone else 0) + len(changed) + len(added))
            if gone:
                self._to_reactor(self._view.apply_expunged, gone)
            if changed:
                flags = {
                    u: self._flags_of(split_name(r.split("/", 1)[1])[1])
                    for u, r in changed.items()
                }
                self._to_reactor(self._view.apply_flags, flags)
            if added:
                infos = [self._info_for(u, self._disk.files[u]) for u in added]
                self._to_reactor(self._view.apply_added, infos)
            if record is not None:
                # After the changes above reach the index (same queue, in order).
                self._to_reactor(self._index_queue.add, (), (), None, record)

    # -- append with group commit -----------------------------------------

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
        if self.journaled:
            return self._append_journaled(as_bytes(message), flagset, internaldate)
        return self._in_thread(self._append, as_bytes(message), flagset, internaldate)

    def _append(
        self, message: bytes, flags: frozenset[str], internaldate: datetime | None
    ) -> int:
        data, base, tmp, stamp = self._new_file(message, internaldate)
        syncfs = self.syncfs
        # The name first: a keyword refused (27 per folder) or a keywords
        # file that cannot be written fails the append before tmp/ holds a
        # file that nothing would remove.
        if flags:
            with self._lock:
                letters = self._letters_locked(flags)
            relpath = f"cur/{base}:2,{letters}"
        else:
            relpath = f"new/{base}"
        with self._opens_lock:
            opened = next(self._opens)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._fill(fd, tmp, data, stamp, sync=syncfs is None)
        if syncfs is None:
            os.close(fd)
            fd = -1
        when = datetime.fromtimestamp(stamp, UTC)
        entry = _Pending(relpath, base, MessageInfo(0, base, flags, when, len(message)), tmp,
                         fd=fd, opened=opened)
        try:
            return self._commit_grouped(entry, syncfs)
        finally:
            # Kept open for the group's syncfs (see _publish_locked) until
            # this append's group is done.
            if fd >= 0:
                os.close(fd)

    def _commit_grouped(self, entry: _Pending, syncfs: Callable[[int], None] | None) -> int:
        """The rest of :meth:`_append`: wait for or lead the group commit."""
        tmp, base, relpath = entry.tmp, entry.base, entry.relpath
        assert tmp is not None
        with self._pending_lock:
            self._in_flight.add(base)
        if syncfs is None:
            try:
                # The directory is fsynced by the group commit below, once
                # for every message renamed meanwhile.
                os.rename(tmp, os.path.join(self.path, relpath))
            except BaseException:
                with self._pending_lock:
                    self._in_flight.discard(base)
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            entry.tmp = None
        # Group commit, leader and followers: an append that finds no commit
        # running commits every queued append (its own included); appends
        # that queue meanwhile sleep until a commit has taken them, and the
        # first of them still waiting when it ends leads the next group.
        with self._pending_lock:
            self._pending.append(entry)
            while not entry.done and self._committing:
                self._committed.wait()
            if entry.done:
                batch = []
            else:
                batch, self._pending = self._pending, []
                self._committing = True
        if batch:
            try:
                with self._lock:
                    self._commit_locked(batch)
            except BaseException:
                if entry.error is None:
                    raise
            finally:
                with self._pending_lock:
                    self._in_flight.difference_update(p.base for p in batch)
                    for p in batch:
                        p.done = True
                    self._committing = False
                    self._committed.notify_all()
        if entry.error is not None:
            raise StorageError(f"could not commit message to {self.name}: {entry.error}")
        return entry.uid

    def _publish_locked(self, batch: list[_Pending],
                        syncfs: Callable[[int], None]) -> list[_Pending]:
        """
        The first half of a syncfs group commit: one ``syncfs`` makes every
        file of the group durable in tmp/ (as an fsync of each would), then
        each is renamed to its place.  A file that cannot be renamed fails
        its own append only.  The group's second ``syncfs`` (after the
        uidlist lines are written) makes the new names and UIDs durable.
        """
        # The call is made on the group's file opened first: Linux reports
        # a write-back error to syncfs only if it happened after the
        # descriptor was opened, and that one was opened before any file of
        # the group was written (a descriptor opened now would miss the
        # error of a file written back, and failed, meanwhile).
        first = min((p for p in batch if p.fd >= 0), key=lambda p: p.opened, default=None)
        try:
            if first is not None:
                syncfs(first.fd)
            else:
                fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    syncfs(fd)
                finally:
                    os.close(fd)
        except BaseException:
            for p in batch:
                with contextlib.suppress(OSError):
                    os.unlink(p.tmp)  # type: ignore[arg-type]
            raise
        published = []
        for p in batch:
            assert p.tmp is not None
            try:
                os.rename(p.tmp, os.path.join(self.path, p.relpath))
            except OSError as e:
                p.error = e
                with contextlib.suppress(OSError):
                    os.unlink(p.tmp)
            else:
                p.tmp = None
                published.append(p)
        return published

    def _commit_locked(self, batch: list[_Pending]) -> None:
        try:
            syncfs = self.syncfs
            if syncfs is not None and any(p.tmp is not None for p in batch):
                batch = self._publish_locked(batch, syncfs)
                if not batch:
                    return
            else:
                syncfs = None
            fd = self._flock()
            try:
                self._read_uidlist_locked()
                # Another pymail process's scan may have found a file of the
                # group between its rename and this lock, and given it a UID
                # (uidlist line written): the message keeps that UID, or it
                # would have two (our APPENDUID's one lost at the next open).
                given = self._disk.uid_by_base or {}
                files = self._disk.files
                entries = []
                for p in batch:
                    uid = given.get(p.base)
                    if uid is None or uid in files:
                        uid = self._disk.next_uid
                        self._disk.next_uid += 1
                        entries.append((uid, p.base))
                    p.uid = uid
                    files[uid] = p.relpath
                self._reserve_modseqs_locked(len(batch))

                def fsync_dirs() -> None:
                    for sub in sorted({p.relpath[:3] for p in batch}):
                        fsync_dir(os.path.join(self.path, sub))

                # Every file of the group was fsynced before its rename; now
                # the directories that hold the new names are fsynced, then
                # the uidlist that gives them UIDs (written before the
                # directory fsyncs: see _append_uidlist_locked).
                if syncfs is None:
                    self._append_uidlist_locked(entries, fsync_dirs)
                else:
                    # One syncfs: the renames and the uidlist lines at once.
                    self._append_uidlist_locked(entries, sync=syncfs)
            finally:
                self._unflock(fd)
        except BaseException as e:
            for p in batch:
                p.error = e
            self._withdraw_locked(batch)
            raise
        # Queued for the reactor before any append of the group is answered
        # (the caller marks them done after this), so the view holds a
        # message when its append's Deferred fires.
        self._to_reactor(self._view.apply_added, [
            MessageInfo(p.uid, p.info.key, p.info.flags, p.info.internaldate, p.info.size)
            for p in batch])

    def _withdraw_locked(self, batch: list[_Pending]) -> None:
        """
        Take back the files of a group whose commit failed after they were
        renamed into new/ or cur/ (see :meth:`_unpublish_locked`).
        """
        # A file still in tmp/ was never renamed (a failed first syncfs removed it).
        self._unpublish_locked([(p.uid, p.relpath, p.base) for p in batch if p.tmp is None])

    def _unpublish_locked(self, published: list[tuple[int, str, str]]) -> None:
        """
        Remove the files ``(uid, relpath, base)`` a failed group renamed into
        new/ or cur/, and fsync those directories: their appends are answered
        with an error, so neither a later scan nor a rename brought back by a
        power loss may deliver them after all (the sender retries: the
        message would arrive twice).  A file another program renamed
        meanwhile (a mail client's flag change) is found by its base name.
        Uidlist lines already written for them are ignored, as for any
        missing file.
        """
        files = self._disk.files
        on_disk: dict[str, str] | None = None
        for uid, relpath, base in published:
            if uid and files.get(uid) == relpath:
                del files[uid]
            try:
                os.unlink(os.path.join(self.path, relpath))
            except FileNotFoundError:
                if on_disk is None:
                    with contextlib.suppress(OSError):
                        on_disk = self._names_by_base()
                found = (on_disk or {}).get(base)
                if found is not None:
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(self.path, found))
            except OSError:
                pass
        for sub in sorted({relpath[:3] for _, relpath, _ in published}):
            with contextlib.suppress(OSError):
                fsync_dir(os.path.join(self.path, sub))

    # -- append through the journal (journaled = True) ---------------------

    def _append_journaled(self, message: bytes, flags: frozenset[str],
                          internaldate: datetime | None) -> Deferred[int]:
        """
        Queue the append for the folder's committer, starting it when none
        runs: one pool thread then takes every append queued meanwhile
        (see :meth:`_run_commits`), so a busy folder costs one thread hand
        off and one call into the reactor per group, not per message.
        """
        answer: Deferred[int] = Deferred()
        with self._queue_lock:
            self._queue.append(_Queued(message, flags, internaldate, answer))
            start = not self._committer_running
            self._committer_running = True
        if start:
            self._in_thread(self._run_commits)
        return answer

    def _run_commits(self) -> None:
        """The committer: commit queued groups until none is left."""
        while True:
            with self._queue_lock:
                batch, self._queue = self._queue, []
                if not batch:
                    self._committer_running = False
                    return
            try:
                self._commit_journaled(batch)
            except BaseException as e:
                # A bug, not a disk error (those fail the group's appends
                # inside): fail what this group left unanswered.
                log.failure("Maildir {path}: journal commit failed", path=self.path)
                self._to_reactor(self._answer, [], [(q, e) for q in batch if not q.answer.called])
            try:
                self._checkpoint_if_due()
            except Exception:
                log.failure("Maildir {path}: journal checkpoint failed (retried later)",
                            path=self.path)

    def _answer(self, infos: list[MessageInfo],
                results: list[tuple[_Queued, int | BaseException]]) -> None:
        """In the reactor: show the group's messages, then answer its appends."""
        if infos:
            self._view.apply_added(infos)
        for q, result in results:
            if q.answer.called:
                continue
            if isinstance(result, BaseException):
                error = result if isinstance(result, StorageError) else StorageError(
                    f"could not commit message to {self.name}: {result}")
                q.answer.errback(error)
            else:
                q.answer.callback(result)

    def _stage(self, q: _Queued) -> _Staged:
        """Write ``q``'s file in tmp/ (not synced: the journal is)."""
        return _Staged(q, *self._write_new_file(q.message, q.internaldate, sync=False))

    def _write_new_file(self, message: bytes, internaldate: datetime | None,
                        sync: bool) -> tuple[bytes, str, str, int]:
        """:meth:`_new_file`, with the file written in tmp/ (and fsynced if ``sync``)."""
        data, base, tmp, stamp = self._new_file(message, internaldate)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._fill(fd, tmp, data, stamp, sync)
        os.close(fd)
        return data, base, tmp, stamp

    def _new_file(self, message: bytes,
                  internaldate: datetime | None) -> tuple[bytes, str, str, int]:
        """
        A new message's stored form (LF line ends), its unique base name,
        its path in tmp/ and its mtime: INTERNALDATE is the file's mtime, in
        whole seconds (IMAP's resolution), so it reads back the same after
        a restart.
        """
        data = to_lf(message)
        now = time.time()
        base = f"{unique_name(now)},S={len(data)},W={len(message)}"
        stamp = int(internaldate.timestamp() if internaldate is not None else now)
        return data, base, os.path.join(self.path, "tmp", base), stamp

    @staticmethod
    def _fill(fd: int, tmp: str, data: bytes, stamp: int, sync: bool) -> None:
        """
        Write ``data`` to the new file ``tmp`` open on ``fd``, set its mtime,
        fsync it if ``sync``; on failure close and remove it.
        """
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.utime(fd, (stamp, stamp))
            if sync:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise

    def _open_journal_locked(self) -> int:
        """
        The journal's descriptor: opened once, created if need be; its
        directory is fsynced once per process (another process may have
        just created the file and not yet made its name durable).
        """
        if self._journal_fd < 0:
            path = os.path.join(self.path, JOURNAL)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fsync_dir(self.path)
                st = os.fstat(fd)
            except BaseException:
                os.close(fd)
                raise
            self._journal_fd, self._journal_id = fd, (st.st_dev, st.st_ino)
        return self._journal_fd

    def _journal_still_ours_locked(self, jfd: int) -> bool:
        """
        Under both locks: ``jfd`` is still the open journal and still the
        file named ``pymail-journal`` in this folder.  Not so when the
        folder was deleted meanwhile (``close_journal``: the number may
        already belong to another file) or deleted, or renamed, and made
        again by another process: then the descriptor is dropped and the
        group fails (the sender retries; the next group opens the new file).
        """
        if self._journal_fd != jfd:
            return False
        try:
            st = os.stat(os.path.join(self.path, JOURNAL))
            if (st.st_dev, st.st_ino) == self._journal_id:
                return True
        except FileNotFoundError:
            pass
        os.close(jfd)
        self._journal_fd = -1
        self._journal_end = -1
        # Records this process wrote went to the old file: the next
        # checkpoint cannot count on a syncfs through a new descriptor.
        self._journal_trusted = False
        return False

    def _commit_journaled(self, batch: list[_Queued]) -> None:
        """
        One group: write the files in tmp/, then under the folder's locks
        number them, append them to the journal and ``fdatasync`` it (now
        they are durable), rename them into new/ (cur/ with flags) and
        append their uidlist lines; answer every append with one call into
        the reactor.  An append whose file cannot be written fails alone; a
        failure from the journal write on fails the group and takes back
        what it did (files, journal records), so a refused message never
        turns up later.
        """
        results: list[tuple[_Queued, int | BaseException]] = []
        try:
            with self._lock:
                # Opened before the files are written: a later syncfs on it
                # reports their write-back errors (see _checkpoint_locked).
                jfd = self._open_journal_locked()
        except OSError as e:  # the folder was deleted, the disk is full...
            self._to_reactor(self._answer, [], [(q, e) for q in batch])
            return
        staged = []
        for q in batch:
            try:
                staged.append(self._stage(q))
            except Exception as e:
                results.append((q, e))
        infos: list[MessageInfo] = []
        with self._lock:
            try:
                lock_fd = self._flock()
            except BaseException as e:
                self._unlink_staged(staged)
                self._to_reactor(self._answer, [], results + [(s.queued, e) for s in staged])
                return
            try:
                if not self._journal_still_ours_locked(jfd):
                    self._unlink_staged(staged)
                    gone = StorageError(f"{self.name} was deleted or replaced meanwhile")
                    staged, results = [], results + [(s.queued, gone) for s in staged]
                self._read_uidlist_locked()
                numbered = []
                for s in staged:
                    try:
                        letters = self._letters_locked(s.queued.flags) if s.queued.flags else None
                    except Exception as e:
                        self._unlink_staged([s])
                        results.append((s.queued, e))
                        continue
                    s.relpath = f"new/{s.base}" if letters is None else f"cur/{s.base}:2,{letters}"
                    s.uid = self._disk.next_uid
                    self._disk.next_uid += 1
                    numbered.append(s)
                if numbered:
                    try:
                        infos = self._journal_and_publish_locked(jfd, numbered)
                    except BaseException as e:
                        results.extend((s.queued, e) for s in numbered)
                    else:
                        results.extend((s.queued, s.uid) for s in numbered)
                        self._reserve_modseqs_locked(len(numbered))
                # Queued while the lock is held: the view learns of the
                # messages in the order they reached the disk.
                self._to_reactor(self._answer, infos, results)
            finally:
                self._unflock(lock_fd)

    def _journal_and_publish_locked(self, jfd: int, group: list[_Staged]) -> list[MessageInfo]:
        """The durable half of :meth:`_commit_journaled`; undone whole on failure."""
        records = [maildir_journal.Record(s.uid, s.stamp, s.relpath, s.data) for s in group]
        blob = maildir_journal.encode(records)
        start = os.fstat(jfd).st_size
        if start != self._journal_end:
            start = self._cut_torn_tail_locked(jfd, start)
        renamed: list[_Staged] = []
        try:
            view = memoryview(blob)
            while view:
                view = view[os.write(jfd, view):]
            os.fdatasync(jfd)
            files = self._disk.files
            for s in group:
                os.rename(s.tmp, os.path.join(self.path, s.relpath))
                renamed.append(s)
                files[s.uid] = s.relpath
            self._append_uidlist_locked([(s.uid, s.base) for s in group], sync=_no_sync)
        except BaseException:
            self._take_back_locked(jfd, start, group, renamed)
            raise
        self._journal_end = start + len(blob)
        self._journal_own += len(blob)
        self._journal_records += len(group)
        return [MessageInfo(s.uid, s.base, s.queued.flags,
                            datetime.fromtimestamp(s.stamp, UTC), len(s.queued.message))
                for s in group]

    def _cut_torn_tail_locked(self, jfd: int, size: int) -> int:
        """
        Another process wrote to the journal since this one did (or this
        one has not yet): read it and cut off a torn last write (its writer
        died in the middle of it: never acknowledged), so that no record is
        ever appended after damage, which a replay stops at.  The new size.
        """
        with open(os.path.join(self.path, JOURNAL), "rb") as f:
            data = f.read(size)
        good = maildir_journal.decode(data)[1]
        if good < size:
            os.ftruncate(jfd, good)
            os.fdatasync(jfd)
            log.warn("Maildir {path}: cut {count} octet(s) of an unfinished journal write "
                     "(its writer stopped in the middle)", path=self.path, count=size - good)
        self._journal_end = good
        return good

    def _take_back_locked(self, jfd: int, start: int, group: list[_Staged],
                          renamed: list[_Staged]) -> None:
        """
        Undo a failed group before its appends are answered with an error:
        first its journal records (a replay would deliver them after all),
        durably; then its files (:meth:`_unpublish_locked`).  Should any of
        it fail, the sender's retry could only add a duplicate.
        """
        with contextlib.suppress(OSError):
            os.ftruncate(jfd, start)
            os.fdatasync(jfd)
        self._journal_end = -1  # the cut may have failed: look before the next write
        self._unpublish_locked([(s.uid, s.relpath, s.base) for s in renamed])
        self._unlink_staged([s for s in group if s not in renamed])

    @staticmethod
    def _unlink_staged(staged: Iterable[_Staged]) -> None:
        for s in staged:
            with contextlib.suppress(OSError):
                os.unlink(s.tmp)

    # -- the journal: checkpoint and replay --------------------------------

    def _checkpoint_if_due(self) -> None:
        """A checkpoint once this process's journal writes pass a threshold."""
        if (self._journal_own >= self.checkpoint_bytes
                or self._journal_records >= self.checkpoint_records):
            self._checkpoint_now()

    def flush_index(self) -> Deferred[None]:
        """
        Write the index changes still waiting for their batch (see
        :attr:`index_write_delay`), and later ones at once (for a stop).
        """
        return self._index_queue.flush()

    def checkpoint(self) -> Deferred[None]:
        """Make every journaled delivery durable in its own file and empty the journal."""
        return self._in_thread(self._checkpoint_now)

    def _checkpoint_now(self) -> None:
        with self._lock:
            fd = self._flock()
            try:
                self._checkpoint_locked()
            finally:
                self._unflock(fd)

    def _checkpoint_locked(self) -> None:
        """
        Under both locks: make the files the journal covers durable, then
        empty it.  One ``syncfs`` when every record in it was written by
        this process through the descriptor it is called on, open since
        before those files were written (Linux reports their write-back
        errors to it) and through which no error was reported before;
        otherwise every recorded file is written again in place from its
        record and fsynced, then new/, cur/ and the uidlist (an fsync alone
        would not do: Linux reports a write-back error once, and whoever
        saw it first may have been another descriptor, or this checkpoint's
        failed attempt).  Called before anything removes or moves a message
        file, so a replay never brings back a message that was expunged.
        """
        path = os.path.join(self.path, JOURNAL)
        own = self._journal_fd >= 0
        try:
            jfd = self._journal_fd if own else os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        try:
            size = os.fstat(jfd).st_size
            if size:
                syncfs = self.journal_syncfs
                if (own and self._journal_trusted and size == self._journal_own
                        and syncfs is not None):
                    syncfs(jfd)
                else:
                    self._rewrite_journaled_locked(maildir_journal.read(path)[0])
                os.ftruncate(jfd, 0)
                os.fsync(jfd)
        except BaseException:
            self._journal_trusted = False
            raise
        finally:
            if not own:
                os.close(jfd)
        self._journal_own = self._journal_records = 0
        self._journal_trusted = True
        if own:
            self._journal_end = 0

    def close_journal(self) -> None:
        """Close the journal's descriptor (the folder was deleted); reopened if used again."""
        with self._lock:
            if self._journal_fd >= 0:
                os.close(self._journal_fd)
                self._journal_fd = -1
                self._journal_end = -1
                self._journal_trusted = False

    def _rewrite_journaled_locked(self, records: list[maildir_journal.Record]) -> None:
        """
        Write every recorded message's octets again into its file, wherever
        it is now (the same octets: readers see no change), and fsync it;
        then fsync new/, cur/ and the uidlist.  A file found nowhere was
        removed by another program.  A file that may not be written (made
        read-only by another program) is fsynced as it is when it holds the
        recorded octets, else replaced by a durable copy of them.
        """
        on_disk = self._names_by_base()
        for r in records:
            for attempt in (1, 2):
                rel = on_disk.get(r.base)
                if rel is None:
                    break
                try:
                    self._rewrite_in_place(rel, r)
                except FileNotFoundError:
                    # Renamed by another program since the listing: list again, once.
                    if attempt == 1:
                        on_disk = self._names_by_base()
                    continue
                break
        for sub in ("new", "cur"):
            fsync_dir(os.path.join(self.path, sub))
        with contextlib.suppress(FileNotFoundError):
            fd = os.open(os.path.join(self.path, UIDLIST), os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _rewrite_in_place(self, rel: str, r: maildir_journal.Record) -> None:
        path = os.path.join(self.path, rel)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as e:
            if not (isinstance(e, PermissionError) or e.errno == errno.EROFS):
                raise
            if self._file_holds(rel, r.data):
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            else:
                self._write_record_file(rel, r)
            return
        try:
            view = memoryview(r.data)
            offset = 0
            while offset < len(view):
                offset += os.pwrite(fd, view[offset:], offset)
            os.utime(fd, (r.mtime, r.mtime))  # the write moved it
            os.fsync(fd)
        finally:
            os.close(fd)

    def _write_record_file(self, target: str, r: maildir_journal.Record) -> None:
        """Put a durable copy of ``r``'s octets at ``target`` (through tmp/, renamed over it)."""
        tmp = os.path.join(self.path, "tmp", r.base + ".replay")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        self._fill(fd, tmp, r.data, r.mtime, sync=True)
        os.close(fd)
        os.rename(tmp, os.path.join(self.path, target))

    def _replay_journal_locked(self) -> None:
        """
        At open, under the folder lock: finish what a crash left of the
        journaled deliveries, then checkpoint.  A record from an earlier
        boot of the machine whose file is missing, or holds other octets
        (its data never reached the disk), has it written again, durably,
        under the name the file has now or the one it was delivered under,
        and a uidlist line lost with it written again with the record's UID.
        A record from this boot is only made durable: the kernel lost
        nothing since it was written, so a missing file was removed by
        another program (a delete, a move) and stays removed.  Torn records
        were never acknowledged and are dropped.
        """
        path = os.path.join(self.path, JOURNAL)
        try:
            if not os.stat(path).st_size:
                return
        except FileNotFoundError:
            return
        fd = self._flock()
        try:
            records, skipped = maildir_journal.read(path)
            restored = self._restore_records_locked(
                [r for r in records if not r.this_boot])
            self._checkpoint_locked()
        finally:
            self._unflock(fd)
        log.info("Maildir {path}: replayed the delivery journal: {count} message(s) checked, "
                 "{restored} written again, {torn} octet(s) of unfinished writes dropped",
                 path=self.path, count=len(records), restored=restored, torn=skipped)

    def _restore_records_locked(self, records: list[maildir_journal.Record]) -> int:
        if not records:
            return 0
        on_disk = self._names_by_base()
        restored = 0
        for r in records:
            rel = on_disk.get(r.base)
            if rel is not None and self._file_holds(rel, r.data):
                continue
            target = rel or r.relpath
            self._write_record_file(target, r)
            on_disk[r.base] = target
            restored += 1
        if restored:
            for sub in ("new", "cur"):
                fsync_dir(os.path.join(self.path, sub))
        self._read_uidlist_locked(force=True)
        by_base = self._disk.uid_by_base or {}
        used = set(by_base.values())
        lost = sorted((r.uid, r.base) for r in records
                      if r.base not in by_base and r.uid not in used)
        if lost:
            self._append_uidlist_locked(lost)
            self._disk.next_uid = max(self._disk.next_uid, lost[-1][0] + 1)
        return restored

    def _file_holds(self, relpath: str, data: bytes) -> bool:
        try:
            with open(os.path.join(self.path, relpath), "rb") as f:
                return f.read(len(data) + 1) == data
        except FileNotFoundError:
            return False

    def restore(
        self,
        uidvalidity: int,
        uidnext: int,
        messages: Sequence[tuple[int, bytes, frozenset[str], datetime]],
    ) -> Deferred[None]:
        return self._in_thread(self._restore, uidvalidity, uidnext, list(messages))

    def _restore(self, uidvalidity: int, uidnext: int,
                 messages: list[tuple[int, bytes, frozenset[str], datetime]]) -> None:
        with self._lock:
            fd = self._flock()
            try:
                self._read_uidlist_locked()
                self._scan_locked()
                if self._disk.files:
                    raise StorageError(f"{self.name} is not empty; restore needs an empty folder")
                infos = []
                for uid, message, flags, when in messages:
                    _, base, tmp, stamp = self._write_new_file(message, when, sync=True)
                    rel = f"cur/{base}:2,{self._letters_locked(flags)}"
                    os.rename(tmp, os.path.join(self.path, rel))
                    self._disk.files[uid] = rel
                    infos.append(MessageInfo(uid, base, flags, datetime.fromtimestamp(stamp, UTC),
                                             len(message)))
                fsync_dir(os.path.join(self.path, "cur"))
                self._disk.uidvalidity = uidvalidity
                self._disk.next_uid = max(uidnext, max(self._disk.files, default=0) + 1)
                self._write_uidlist_locked()
                self._index.open()
                self._index.reset(uidvalidity, self._view.highestmodseq)
            finally:
                self._unflock(fd)
            self._reserve_modseqs_locked(len(infos))
            self._to_reactor(self._view.apply_added, infos)

    def _move_all_to(self, target: str) -> None:
        """
        RENAME INBOX: move every message into the new folder directory
        ``target`` with the same UIDs (under a new UIDVALIDITY there), and
        leave this folder empty.
        """
        with self._lock:
            fd = self._flock()
            try:
                # The journal stays here; its files leave durable.
                self._checkpoint_locked()
                self._read_uidlist_locked()
                self._scan_locked()
                os.mkdir(target, 0o700)
                for sub in ("cur", "new", "tmp"):
                    os.mkdir(os.path.join(target, sub), 0o700)
                open(os.path.join(target, "maildirfolder"), "wb").close()
                if self._disk.keywords:
                    write_file_durably(
                        os.path.join(target, KEYWORDS),
                        "".join(f"{i} {k}\n" for i, k in enumerate(self._disk.keywords)
                                if k).encode(),
                    )
                moved = sorted(self._disk.files)
                lines = [f"3 V{new_uidvalidity()} N{self._disk.next_uid} "
                         f"G{os.urandom(16).hex()}\n".encode()]
                for uid in moved:
                    rel = self._disk.files[uid]
                    base = split_name(rel.split("/", 1)[1])[0]
                    lines.append(f"{uid} :{base}\n".encode("utf-8", "surrogateescape"))
                write_file_durably(os.path.join(target, UIDLIST), b"".join(lines))
                for uid in moved:
                    rel = self._disk.files[uid]
                    os.rename(os.path.join(self.path, rel), os.path.join(target, rel))
                for sub in ("cur", "new"):
                    fsync_dir(os.path.join(target, sub))
                    fsync_dir(os.path.join(self.path, sub))
                fsync_dir(target)
                fsync_dir(os.path.dirname(target))
                self._disk.files.clear()
                self._write_uidlist_locked()
            finally:
                self._unflock(fd)
            self._cache.clear()
            if moved:
                self._reserve_modseqs_locked(1)
                self._to_reactor(self._view.apply_expunged, moved)

    # -- flags and expunge -------------------------------------------------

    def set_flags(
        self, uids: Iterable[int], flags: Iterable[str], mode: str
    ) -> Deferred[dict[int, frozenset[str]]]:
        try:
            flagset = normalise_flags(flags)
            present = self._view.lookup(uids)
            # Only messages whose flags change are renamed (and get a new
            # MODSEQ).  A folder has few distinct flag sets: the new set is
            # worked out once per distinct old one (None: no change).
            wanted = {}
            after_of: dict[frozenset[str], frozenset[str] | None] = {}
            for info in present:
                old = info.flags
                try:
                    after = after_of[old]
                except KeyError:
                    after = apply_flag_mode(old, flagset, mode)
                    after = after_of[old] = None if after == old else after
                if after is not None:
                    wanted[info.uid] = after
        except (ValueError, StorageError) as e:
            return fail(e)

        def answer(done: list[int]) -> dict[int, frozenset[str]]:
            # The view was already updated through callFromThread; answer
            # with what it holds now, for every message asked for that is
            # still there.
            missing = set(wanted).difference(done)
            return {i.uid: i.flags for i in self._view.lookup([p.uid for p in present])
                    if i.uid not in missing}

        def recorded(done: list[int]) -> dict[int, frozenset[str]]:
            if self._renames:
                # Acknowledged: the renames follow at once, in the pool, from
                # the reactor's next turn (this one writes the answer, and a
                # thread renaming meanwhile would contend for the GIL).
                self._to_reactor(self._start_renames)
            return answer(done)

        if not wanted:
            return succeed(answer([]))
        return self._in_thread(self._set_flags, wanted).addCallback(recorded)

    def _set_flags(self, wanted: dict[int, frozenset[str]]) -> list[int]:
        """
        Write-behind of the flag renames (the precedent is Dovecot's "dirty"
        Maildir flags) when there are at least :attr:`write_behind_min`: the
        new name of every message whose flags change is recorded durably in
        the folder's index (:meth:`FolderIndex.add_renames`, one fsynced
        transaction) and taken into ``files``; the STORE is answered then,
        and :meth:`_finish_renames` renames the files right after in the
        thread pool.  Fewer renames are done here, before the answer.  Until
        they are done, a read finds a message under either name
        (:meth:`_open_fd`); anything else that looks at the file names (a
        scan, expunge, the next flag change) finishes the renames first,
        under the folder lock; a fresh open after a crash finishes the ones
        the index still lists (:meth:`_load`).
        """
        done: dict[int, frozenset[str]] = {}
        files = self._disk.files
        get = files.get
        renames: list[tuple[int, str, str]] = []
        #: The ":2,<letters>" info of each distinct new flag set.
        info_of: dict[frozenset[str], str] = {}
        with self._lock, paused_gc():
            self._finish_renames_locked()
            # The hot loop of a STORE 1:*: the new name made with one slice
            # and one concatenation (``files`` holds "cur/<base>:2,<letters>"
            # or "new/<base>").
            for uid, flags in wanted.items():
                old = get(uid)
                if old is None:
                    continue
                info = info_of.get(flags)
                if info is None:
                    info = info_of[flags] = ":2," + self._letters_locked(flags)
                cut = old.find(":2,", 4)
                new = "cur/" + (old[4:] if cut < 0 else old[4:cut]) + info
                if new != old:
                    renames.append((uid, old, new))
                done[uid] = flags
            self._reserve_modseqs_locked(len(done))
            if renames:
                behind = len(renames) >= self.write_behind_min
                if behind:
                    self._renames_batches.append(
                        self._index.add_renames([r[2] for r in renames]))
                pending = self._renames
                for uid, old, new in renames:
                    pending[uid] = old
                    files[uid] = new
                if not behind:
                    # A few renames cost less than the index's two fsyncs:
                    # done now, before the answer.
                    self._finish_renames_locked()
            if done:
                self._to_reactor(self._apply_flags_paused, done)
        return list(done)

    def _start_renames(self) -> None:
        self._in_thread(self._finish_renames).addErrback(
            lambda f: log.failure("Maildir {path}: flag renames failed (retried by the next "
                                  "change or open)", f, path=self.path))

    def _finish_renames(self) -> None:
        with self._lock:
            self._finish_renames_locked()

    def _finish_renames_locked(self, flocked: bool = False) -> None:
        """
        Do the recorded flag renames (``self._renames``: uid -> old relative
        path, ``files`` holding the new one), fsync cur/, then forget them
        in the index.  The hot loop of a STORE 1:*: renames relative to open
        directory descriptors (no path lookups).  Under the folder's file
        lock (``flocked``: the caller holds it), so another process's open
        that redoes recorded renames (see :meth:`_recover_renames_locked`)
        never interleaves with them.
        """
        pending = self._renames
        if not pending:
            return
        if not flocked:
            lock = self._flock()
            try:
                self._finish_renames_locked(flocked=True)
            finally:
                self._unflock(lock)
            return
        files = self._disk.files
        rename = os.rename
        cur = os.open(os.path.join(self.path, "cur"), os.O_RDONLY | os.O_DIRECTORY)
        new_dir = -1
        on_disk: dict[str, str] | None = None
        try:
            for uid, old in pending.items():
                new = files.get(uid)
                if new is None:
                    continue
                if old[0] == "c":
                    src_dir = cur
                else:
                    if new_dir < 0:
                        new_dir = os.open(os.path.join(self.path, "new"),
                                          os.O_RDONLY | os.O_DIRECTORY)
                    src_dir = new_dir
                try:
                    rename(old[4:], new[4:], src_dir_fd=src_dir, dst_dir_fd=cur)
                except FileNotFoundError:
                    # Renamed by another program meanwhile: found by base
                    # name (the folder listed once for all such files).
                    if on_disk is None:
                        on_disk = self._names_by_base()
                    self._rename_found(on_disk, old, new)
            os.fsync(cur)
        finally:
            os.close(cur)
            if new_dir >= 0:
                os.close(new_dir)
        if self._renames_batches:
            self._index.renames_done(self._renames_batches)
            self._renames_batches = []
        pending.clear()

    def _names_by_base(self) -> dict[str, str]:
        """Base name -> relative path of every message file in new/ and cur/."""
        found = {}
        for sub in ("new", "cur"):
            for n in os.listdir(os.path.join(self.path, sub)):
                found[split_name(n)[0]] = f"{sub}/{n}"
        return found

    def _rename_found(self, on_disk: dict[str, str], old: str, new: str) -> None:
        """
        Rename the file of ``old``'s base name, wherever ``on_disk`` (see
        :meth:`_names_by_base`) has it, to ``new``; nothing when it is
        already there or gone (deleted by another program).
        """
        base = split_name(old[4:])[0]
        found = on_disk.get(base)
        if found is not None and found != new:
            os.rename(os.path.join(self.path, found), os.path.join(self.path, new))
            on_disk[base] = new

    def _apply_flags_paused(self, done: dict[int, frozenset[str]]) -> None:
        # 10,000 new MessageInfos and the index rows of a STORE 1:*, none of
        # them garbage: no cyclic GC passes over the folder meanwhile.
        with paused_gc():
            self._view.apply_flags(done)

    def expunge(self, uids: Iterable[int] | None = None) -> Deferred[list[int]]:
        allowed = None if uids is None else set(uids)
        doomed = [
            i.uid
            for i in self._view.messages()
            if "\\Deleted" in i.flags and (allowed is None or i.uid in allowed)
        ]
        if not doomed:
            return self._in_thread(lambda: [])
        return self._in_thread(self._expunge, doomed)

    def _expunge(self, doomed: list[int]) -> list[int]:
        removed = []
        with self._lock:
            fd = self._flock()
            try:
                # Under the file lock this expunge takes anyway (not twice).
                self._finish_renames_locked(flocked=True)
                # A replay must not bring back what is removed here.
                self._checkpoint_locked()
                self._read_uidlist_locked()
                for uid in doomed:
                    rel = self._disk.files.get(uid)
                    if rel is None:
                        continue
                    try:
                        os.unlink(os.path.join(self.path, rel))
                    except FileNotFoundError:
                        found = self._find_by_uid(uid)
                        if found is not None:
                            os.unlink(os.path.join(self.path, found))
                    del self._disk.files[uid]
                    removed.append(uid)
                if removed:
                    fsync_dir(os.path.join(self.path, "cur"))
                    fsync_dir(os.path.join(self.path, "new"))
                    self._write_uidlist_locked()
            finally:
                self._unflock(fd)
            if removed:
                self._reserve_modseqs_locked(1)
                self._to_reactor(self._view.apply_expunged, removed)
        return removed
