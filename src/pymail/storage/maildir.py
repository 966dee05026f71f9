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

Threads and the reactor: every file operation runs in the reactor's thread
pool.  The *disk state* (which file has which UID) belongs to the threads
and is guarded by one lock per folder; the *view* (what sessions see)
belongs to the reactor thread.  Every change to the disk state is handed to
the reactor with ``callFromThread`` while the lock is still held, so the
view applies changes in exactly the order they happened on disk.

Durability and group commit: an append writes ``tmp/``, fsyncs, renames
into ``new/`` (or ``cur/`` with flags) and fsyncs that directory in its own
thread, in parallel with other appends.  It then queues itself; whichever
thread next takes the lock commits every queued append at once: UIDs
assigned, one uidlist append and one uidlist fsync.  An append's Deferred
fires only after that commit.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, UTC
from typing import Any, TypeVar
from collections.abc import Callable

import attrs
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorFromThreads, IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from zope.interface import implementer

# Importing twisted.mail.imap4 registers the 'imap4-utf-7' codec (RFC 3501 5.1.3)
# that Dovecot uses for Maildir++ folder names.
import twisted.mail.imap4  # noqa: F401, E402

from pymail.errors import (
    BadMailboxName,
    MailboxExists,
    NoSuchMailbox,
    NoSuchMessage,
    StorageError,
)
from pymail.interfaces import (
    IMailbox,
    IMailboxListener,
    IMailboxRestore,
    IMailStore,
    IMailStoreFactory,
    MessageInfo,
)
from pymail.storage.base import (
    MailboxView,
    apply_flag_mode,
    canonical_name,
    check_mailbox_name,
    keywords_of,
    normalise_flags,
    rename_plan,
)
from pymail.storage.account import AccountFiles, OpenMailboxes, ensure_thread_pool
from pymail.storage.index import (
    FolderIndex,
    IndexQueue,
    decode_value,
    encode_value,
    rebuild_modseq,
)
from pymail.storage.fsutil import fsync_dir, to_crlf, to_lf, wire_size, write_file_durably

log = Logger()

UIDLIST = "dovecot-uidlist"
KEYWORDS = "dovecot-keywords"
LOCKFILE = "pymail-uidlist.lock"
SUBSCRIPTIONS = "subscriptions"
ROLES = "pymail-special-use"
#: Prefix of a folder directory being deleted: two dots make an empty
#: hierarchy level, which neither Dovecot nor pymail lists as a folder.
TRASHED_PREFIX = "..pymail-deleted."

_T = TypeVar("_T")

# Maildir info letters for the IMAP system flags, in the ASCII order the
# Maildir specification asks for.
_FLAG_LETTERS = {
    "\\Draft": "D",
    "\\Flagged": "F",
    "\\Answered": "R",
    "\\Seen": "S",
    "\\Deleted": "T",
}
_LETTER_FLAGS = {v: k for k, v in _FLAG_LETTERS.items()}
_MAX_KEYWORDS = 26
#: A scan is trusted to have seen every change only when the folder's
#: directories had not changed for this long before it (file systems store
#: mtimes with a granularity of up to 2 s, so a change in the same tick as
#: the scan leaves the mtime as it was).
TIMESTAMP_GRANULARITY_NS = 2_000_000_000

_counter = itertools.count()
_last_uidvalidity = [0]
_uidvalidity_lock = threading.Lock()


def new_uidvalidity() -> int:
    """
    A UIDVALIDITY for a new folder: the current time, but never the same
    value twice in one process (a folder deleted and re-created within a
    second must not get its old UIDVALIDITY back).
    """
    with _uidvalidity_lock:
        value = max(int(time.time()), _last_uidvalidity[0] + 1)
        _last_uidvalidity[0] = value
        return value


def _hostname_for_filenames() -> str:
    # The Maildir spec: '/' and ':' in the host part are encoded.
    return socket.gethostname().replace("/", "\\057").replace(":", "\\072") or "localhost"


_HOST = _hostname_for_filenames()


def split_name(filename: str) -> tuple[str, str]:
    """``base:2,FS`` -> (``base``, ``FS``); a name without info -> (name, "")."""
    base, sep, info = filename.partition(":2,")
    return base, info if sep else ""


def base_size_fields(base: str) -> dict[str, int]:
    """The ``,S=`` and ``,W=`` fields Dovecot puts in a base name."""
    fields = {}
    for part in base.split(",")[1:]:
        key, eq, value = part.partition("=")
        if eq and key in ("S", "W") and value.isdigit():
            fields[key] = int(value)
    return fields


def parse_uidlist_header(line: bytes) -> tuple[int, int, str]:
    """(UIDVALIDITY, next UID, GUID) from a version-3 uidlist header; zeros if unreadable."""
    header = line.split()
    uidvalidity = next_uid = 0
    guid = ""
    if header and header[0] == b"3":
        for field in header[1:]:
            if field[:1] == b"V" and field[1:].isdigit():
                uidvalidity = int(field[1:])
            elif field[:1] == b"N" and field[1:].isdigit():
                next_uid = int(field[1:])
            elif field[:1] == b"G":
                guid = field[1:].decode("ascii", "replace")
    return uidvalidity, next_uid, guid


@attrs.define
class _Pending:
    relpath: str
    base: str
    info: MessageInfo
    uid: int = 0
    done: bool = False
    error: BaseException | None = None


@attrs.define
class _DiskState:
    """Which file holds which UID: owned by the threads, under ``lock``."""

    uidvalidity: int = 0
    next_uid: int = 1
    guid: str = ""
    files: dict[int, str] = attrs.Factory(dict)  # uid -> "cur/name:2,S" | "new/name"
    #: UIDs the uidlist gives to base names that have no known file (another
    #: program's delivery in progress); ``None``: the uidlist's lines have not
    #: been read (an open trusted the index), read them before a scan uses them.
    uid_by_base: dict[str, int] | None = attrs.Factory(dict)
    keywords: list[str] = attrs.Factory(list)
    uidlist_stamp: tuple[int, int] = (0, 0)  # (inode, size) last read or written
    dir_stamp: tuple[int, int] = (0, 0)  # mtimes of new/ and cur/ at the last scan
    scanned_ns: int = 0  # when the last scan read dir_stamp (time.time_ns())


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
        rows = []
        for uid in change.uids:
            rel = box._disk.files.get(uid)
            if rel is None or uid not in view:
                continue
            info = view.info(uid)
            rows.append((uid, rel, int(info.internaldate.timestamp()), info.size, info.modseq))
        box._index_queue.add(upsert=rows, highestmodseq=highest)


@implementer(IMailbox, IMailboxRestore)
class MaildirMailbox:
    """One Maildir folder."""

    #: ``read()`` may be called from the thread pool (it only looks up the
    #: file name and reads the file); IMAP FETCH reads bodies there.
    threadsafe_read = True

    def __init__(self, path: str, name: str, reactor: Any) -> None:
        self.name = name
        self.path = path
        self._reactor = reactor
        self._lock = threading.Lock()
        self._disk = _DiskState()
        self._pending: list[_Pending] = []
        self._pending_lock = threading.Lock()
        #: Base names of appends renamed into new/ or cur/ but not yet
        #: committed (under _pending_lock): a scan leaves them to their append.
        self._in_flight: set[str] = set()
        self._cache: dict[tuple[int, str], Any] = {}
        self._flag_sets: dict[tuple[str, tuple[str, ...]], frozenset[str]] = {}
        self._index = FolderIndex(path)
        self._index_queue = IndexQueue(self._index, self._in_thread)
        self._view = MailboxView(self)
        self._view.add_listener(_IndexWriter(self))

    # -- the view (reactor thread) ---------------------------------------

    def uidvalidity(self) -> int:
        return self._disk.uidvalidity

    def uidnext(self) -> int:
        return self._disk.next_uid

    def highestmodseq(self) -> int:
        return self._view.highestmodseq

    def messages(self) -> Sequence[MessageInfo]:
        return self._view.messages()

    def info(self, uid: int) -> MessageInfo:
        return self._view.info(uid)

    def add_listener(self, listener: IMailboxListener) -> None:
        self._view.add_listener(listener)

    def remove_listener(self, listener: IMailboxListener) -> None:
        self._view.remove_listener(listener)

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

    def read(self, uid: int) -> bytes:
        if uid not in self._view:
            raise NoSuchMessage(f"no message with UID {uid} in {self.name}")
        relpath = self._disk.files.get(uid)
        for attempt in range(2):
            if relpath is not None:
                try:
                    with open(os.path.join(self.path, relpath), "rb") as f:
                        return to_crlf(f.read())
                except FileNotFoundError:
                    pass
            if attempt == 0:
                # Another program renamed it (a flag change) or removed it:
                # find it by its base name.
                relpath = self._find_by_uid(uid)
        raise NoSuchMessage(f"message UID {uid} in {self.name} was removed by another program")

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
        def loaded(result: tuple[list[MessageInfo], int]) -> MaildirMailbox:
            infos, highest = result
            self._view.load(infos)
            self._view.highestmodseq = max(self._view.highestmodseq, highest)
            return self

        return self._in_thread(self._load).addCallback(loaded)

    def _load(self) -> tuple[list[MessageInfo], int]:
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(self.path, sub), mode=0o700, exist_ok=True)
        with self._lock:
            self._index.open()
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
            result = self._load_index_locked()
            self._index.set_sync(self._sync_record_locked())
            return result

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

    def _load_trusted_locked(self) -> tuple[list[MessageInfo], int] | None:
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
        files: dict[int, str] = {}
        infos = []
        flag_sets: dict[str, frozenset[str]] = {}
        from_timestamp = datetime.fromtimestamp
        last_date, when = -1, datetime.fromtimestamp(0, UTC)
        info = MessageInfo
        # The hot loop of SELECT in a fresh process: ~1 us per message.
        for uid, rel, date, size, modseq in rows:
            base, _, letters = rel[4:].partition(":2,")
            files[uid] = rel
            flags = flag_sets.get(letters)
            if flags is None:
                flags = flag_sets[letters] = self._flags_of(letters)
            if date != last_date:  # messages delivered in one second share one object
                last_date, when = date, from_timestamp(date, UTC)
            infos.append(info(uid, base, flags, when, size, modseq))
        d.files = files
        return infos, index.meta("highestmodseq") or 1

    def _load_index_locked(self) -> tuple[list[MessageInfo], int]:
        """
        The folder's messages, taking INTERNALDATE, size and MODSEQ from the
        index where it knows the file (no stat), and bringing the index up
        to date with the files (rebuilding it if it was lost).
        """
        index = self._index
        files = self._disk.files
        highest = index.meta("highestmodseq") or 1
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
            index.update(upsert=upsert, delete=stale, highestmodseq=highest)
        return infos, highest

    # -- the uidlist -------------------------------------------------------

    def _read_uidlist_locked(self, force: bool = False) -> bool:
        """Re-read the uidlist if another process changed it; True if read."""
        path = os.path.join(self.path, UIDLIST)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            if not self._disk.uidvalidity:
                self._disk.uidvalidity = new_uidvalidity()
                self._disk.guid = os.urandom(16).hex()
                self._write_uidlist_locked()
            return False
        if not force and (st.st_ino, st.st_size) == self._disk.uidlist_stamp:
            return False
        with open(path, "rb") as f:
            data = f.read()
        lines = data.split(b"\n")
        uidvalidity, next_uid, guid = parse_uidlist_header(lines[0])
        if guid:
            self._disk.guid = guid
        if not uidvalidity:
            log.warn(
                "Maildir {path}: uidlist header unreadable; starting a new UIDVALIDITY",
                path=self.path,
            )
            self._disk = attrs.evolve(
                self._disk, uidvalidity=new_uidvalidity(), files={}, uid_by_base={}
            )
            self._write_uidlist_locked()
            return True
        if self._disk.uidvalidity and uidvalidity != self._disk.uidvalidity:
            log.warn(
                "Maildir {path}: UIDVALIDITY changed from {old} to {new} by another program",
                path=self.path, old=self._disk.uidvalidity, new=uidvalidity,
            )
            self._disk.files.clear()
        self._disk.uid_by_base = uid_by_base = {}
        self._disk.uidvalidity = uidvalidity
        max_uid = 0
        bad = 0
        for line in lines[1:]:
            if not line:
                continue
            head, sep, base = line.partition(b" :")
            fields = head.split()
            if not sep or not fields or not fields[0].isdigit() or not base:
                bad += 1
                continue
            uid = int(fields[0])
            name = base.decode("utf-8", "surrogateescape")
            uid_by_base.setdefault(name, uid)
            max_uid = max(max_uid, uid)
        if bad:
            log.warn(
                "Maildir {path}: skipped {bad} unreadable uidlist line(s); "
                "their messages get new UIDs",
                path=self.path, bad=bad,
            )
        self._disk.next_uid = max(self._disk.next_uid, next_uid, max_uid + 1)
        self._disk.uidlist_stamp = (st.st_ino, st.st_size)
        return True

    def _uidlist_header(self) -> bytes:
        d = self._disk
        return f"3 V{d.uidvalidity} N{d.next_uid} G{d.guid}\n".encode()

    def _write_uidlist_locked(self) -> None:
        """Rewrite the whole uidlist (compacted to the files that exist)."""
        lines = [self._uidlist_header()]
        for uid in sorted(self._disk.files):
            base = split_name(self._disk.files[uid].split("/", 1)[1])[0]
            lines.append(f"{uid} :{base}\n".encode("utf-8", "surrogateescape"))
        path = os.path.join(self.path, UIDLIST)
        write_file_durably(path, b"".join(lines))
        st = os.stat(path)
        self._disk.uidlist_stamp = (st.st_ino, st.st_size)
        # The uidlist now lists exactly the known files.
        self._disk.uid_by_base = {}

    def _append_uidlist_locked(self, entries: list[tuple[int, str]]) -> None:
        """Append lines for new UIDs and fsync (Dovecot appends the same way)."""
        path = os.path.join(self.path, UIDLIST)
        data = b"".join(
            f"{uid} :{base}\n".encode("utf-8", "surrogateescape") for uid, base in entries
        )
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, data)
            os.fsync(fd)
            st = os.fstat(fd)
        finally:
            os.close(fd)
        self._disk.uidlist_stamp = (st.st_ino, st.st_size)

    def _read_keywords_locked(self) -> None:
        try:
            with open(os.path.join(self.path, KEYWORDS), encoding="utf-8") as f:
                entries = [line.rstrip("\n").split(" ", 1) for line in f if line.strip()]
        except FileNotFoundError:
            return
        keywords: list[str] = []
        for entry in entries:
            if len(entry) == 2 and entry[0].isdigit() and int(entry[0]) < _MAX_KEYWORDS:
                index = int(entry[0])
                keywords.extend([""] * (index + 1 - len(keywords)))
                keywords[index] = entry[1]
        self._disk.keywords = keywords

    def _letters_locked(self, flags: frozenset[str]) -> str:
        letters = [_FLAG_LETTERS[f] for f in flags if f in _FLAG_LETTERS]
        new_keyword = False
        for kw in sorted(f for f in flags if not f.startswith("\\")):
            if kw not in self._disk.keywords:
                if len(self._disk.keywords) >= _MAX_KEYWORDS:
                    raise StorageError(
                        f"{self.name}: at most {_MAX_KEYWORDS} keywords per Maildir folder"
                    )
                self._disk.keywords.append(kw)
                new_keyword = True
            letters.append(chr(ord("a") + self._disk.keywords.index(kw)))
        if new_keyword:
            write_file_durably(
                os.path.join(self.path, KEYWORDS),
                "".join(f"{i} {k}\n" for i, k in enumerate(self._disk.keywords) if k).encode(),
            )
        return "".join(sorted(letters))

    def _flags_of(self, info_letters: str) -> frozenset[str]:
        # Most messages share a handful of flag sets: share the objects too
        # (about 20 MB less for a 100,000-message folder).
        key = (info_letters, tuple(self._disk.keywords))
        shared = self._flag_sets.get(key)
        if shared is None:
            shared = self._flag_sets[key] = self._compute_flags(info_letters)
        return shared

    def _compute_flags(self, info_letters: str) -> frozenset[str]:
        flags = set()
        for letter in info_letters:
            if letter in _LETTER_FLAGS:
                flags.add(_LETTER_FLAGS[letter])
            elif "a" <= letter <= "z":
                index = ord(letter) - ord("a")
                if index < len(self._disk.keywords) and self._disk.keywords[index]:
                    flags.add(self._disk.keywords[index])
        return frozenset(flags)

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
        self._disk.dir_stamp = self._dir_stamp()
        self._disk.scanned_ns = time.time_ns()
        found: dict[str, str] = {}
        for sub in ("new", "cur"):
            for n in os.listdir(os.path.join(self.path, sub)):
                if n.startswith("."):
                    continue
                base = split_name(n)[0]
                found[base] = f"{sub}/{n}"
        with self._pending_lock:
            # This process's appends between rename and commit: their
            # commit gives them their UID.
            for base in self._in_flight:
                found.pop(base, None)
        by_base = {split_name(r.split("/", 1)[1])[0]: u for u, r in self._disk.files.items()}
        gone = [u for b, u in by_base.items() if b not in found]
        changed: dict[int, str] = {}
        for base, rel in found.items():
            uid = by_base.get(base)
            if uid is not None and self._disk.files[uid] != rel:
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
        return self._in_thread(self._append, bytes(message), flagset, internaldate)

    def _append(
        self, message: bytes, flags: frozenset[str], internaldate: datetime | None
    ) -> int:
        data = to_lf(message)
        now = time.time()
        unique = f"{int(now)}.M{int(now * 1e6) % 1000000}P{os.getpid()}Q{next(_counter)}.{_HOST}"
        base = f"{unique},S={len(data)},W={len(message)}"
        tmp = os.path.join(self.path, "tmp", base)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        # INTERNALDATE is the file's mtime, in whole seconds (IMAP's
        # resolution), so it reads back the same after a restart.
        stamp = int(internaldate.timestamp() if internaldate is not None else now)
        os.utime(tmp, (stamp, stamp))
        if flags:
            with self._lock:
                letters = self._letters_locked(flags)
            relpath = f"cur/{base}:2,{letters}"
        else:
            relpath = f"new/{base}"
        with self._pending_lock:
            self._in_flight.add(base)
        try:
            os.rename(tmp, os.path.join(self.path, relpath))
            # The directory fsync runs here, in parallel with the other
            # appends' (the file system joins them in one journal commit);
            # the serial commit below only appends to the uidlist and fsyncs it.
            fsync_dir(os.path.join(self.path, relpath.split("/", 1)[0]))
        except BaseException:
            with self._pending_lock:
                self._in_flight.discard(base)
            raise
        when = datetime.fromtimestamp(stamp, UTC)
        entry = _Pending(relpath, base, MessageInfo(0, base, flags, when, len(message)))
        # Queue first, then wait for the folder lock: appends that queue while
        # another thread commits are all committed by the next lock holder
        # (one uidlist fsync and one directory fsync for the whole group).
        with self._pending_lock:
            self._pending.append(entry)
        with self._lock:
            if not entry.done:
                try:
                    self._commit_pending_locked()
                except BaseException:
                    if entry.error is None:
                        raise
        if entry.error is not None:
            raise StorageError(f"could not commit message to {self.name}: {entry.error}")
        return entry.uid

    def _commit_pending_locked(self) -> None:
        with self._pending_lock:
            batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            self._commit_locked(batch)
        finally:
            with self._pending_lock:
                self._in_flight.difference_update(p.base for p in batch)

    def _commit_locked(self, batch: list[_Pending]) -> None:
        try:
            fd = self._flock()
            try:
                self._read_uidlist_locked()
                entries = []
                for p in batch:
                    uid = self._disk.next_uid
                    self._disk.next_uid += 1
                    p.uid = uid
                    self._disk.files[uid] = p.relpath
                    entries.append((uid, p.base))
                self._append_uidlist_locked(entries)
            finally:
                self._unflock(fd)
        except BaseException as e:
            for p in batch:
                p.error, p.done = e, True
            raise
        for p in batch:
            p.done = True
        infos = [attrs.evolve(p.info, uid=p.uid) for p in batch]
        self._to_reactor(self._view.apply_added, infos)

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
                    data = to_lf(message)
                    now = time.time()
                    base = (f"{int(now)}.M{int(now * 1e6) % 1000000}P{os.getpid()}"
                            f"Q{next(_counter)}.{_HOST},S={len(data)},W={len(message)}")
                    tmp = os.path.join(self.path, "tmp", base)
                    with open(tmp, "wb") as f:
                        f.write(data)
                        f.flush()
                        os.fsync(f.fileno())
                    stamp = int(when.timestamp())
                    os.utime(tmp, (stamp, stamp))
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
                self._to_reactor(self._view.apply_expunged, moved)

    # -- flags and expunge -------------------------------------------------

    def set_flags(
        self, uids: Iterable[int], flags: Iterable[str], mode: str
    ) -> Deferred[dict[int, frozenset[str]]]:
        try:
            flagset = normalise_flags(flags)
            wanted = {
                uid: apply_flag_mode(self._view.info(uid).flags, flagset, mode)
                for uid in uids
                if uid in self._view
            }
        except (ValueError, StorageError) as e:
            return fail(e)
        d = self._in_thread(self._set_flags, wanted)
        # The view was already updated through callFromThread; answer with
        # what it holds now.
        d.addCallback(lambda done: {u: self._view.info(u).flags for u in done if u in self._view})
        return d

    def _set_flags(self, wanted: dict[int, frozenset[str]]) -> list[int]:
        done: dict[int, frozenset[str]] = {}
        with self._lock:
            for uid, flags in wanted.items():
                old = self._disk.files.get(uid)
                if old is None:
                    continue
                base = split_name(old.split("/", 1)[1])[0]
                new = f"cur/{base}:2,{self._letters_locked(flags)}"
                if new != old:
                    try:
                        os.rename(os.path.join(self.path, old), os.path.join(self.path, new))
                    except FileNotFoundError:
                        found = self._find_by_uid(uid)
                        if found is None:
                            continue
                        os.rename(os.path.join(self.path, found), os.path.join(self.path, new))
                    self._disk.files[uid] = new
                done[uid] = flags
            if done:
                fsync_dir(os.path.join(self.path, "cur"))
                self._to_reactor(self._view.apply_flags, done)
        return list(done)

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
                self._to_reactor(self._view.apply_expunged, removed)
        return removed


def _encode_folder(name: str) -> str:
    """A folder name as Dovecot's Maildir++ stores it: modified UTF-7."""
    return name.encode("imap4-utf-7").decode("ascii")


def _decode_folder(name: str) -> str:
    return name.encode("ascii").decode("imap4-utf-7")


def _decode_folder_strict(name: str) -> str:
    """
    Decode a file name, refusing anything that is not exactly what pymail
    (or Dovecot) would write for the folder: the codec is lenient, and a
    name that does not round-trip would open a different file.
    """
    decoded = _decode_folder(name)
    if _encode_folder(decoded) != name:
        raise ValueError(f"{name!r} is not canonical modified UTF-7")
    return decoded


@implementer(IMailStore)
class MaildirStore:
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
        return os.path.join(self.root, "." + _encode_folder(name))

    def _in_thread(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        reactor = self._factory.reactor
        return deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)

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
                    names.append(check_mailbox_name(_decode_folder_strict(entry[1:])))
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
    def _make_folder_dirs(path: str) -> None:
        os.mkdir(path, 0o700)
        for sub in ("cur", "new", "tmp"):
            os.mkdir(os.path.join(path, sub), 0o700)
        open(os.path.join(path, "maildirfolder"), "wb").close()
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

    # -- subscriptions and special use -------------------------------------

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

    def ensure_account(self) -> None:
        """Give a new account its INBOX and special-use folders (see AccountFiles.set_up)."""
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(self.root, sub), mode=0o700, exist_ok=True)

        def create(name: str) -> None:
            path = self._folder_path(name)
            if not os.path.isdir(os.path.join(path, "cur")):
                self._make_folder_dirs(path)

        self._files.set_up(create)


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

    def __init__(self, reactor: IReactorThreads | IReactorFromThreads | None = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor  # type: ignore[assignment]
        self.reactor: Any = reactor
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

    def mailbox_at(self, path: str, name: str) -> Deferred[IMailbox]:
        """The live mailbox for a folder directory, opened once per process."""
        return self.registry.get(path, name,
                                 lambda: MaildirMailbox(path, name, self.reactor).open())
