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
import fcntl
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, UTC
from typing import Any, TypeVar

import attrs
from twisted.internet.defer import Deferred, fail
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from zope.interface import implementer

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
from pymail.storage.fsutil import fsync_dir, to_crlf, to_lf, write_file_durably
from pymail.storage.mbox_index import MboxIndex, Row, index_path
from pymail.storage.maildir import new_uidvalidity

log = Logger()

_T = TypeVar("_T")

STATE_DIR = ".pymail-state"
SUBSCRIPTIONS = ".subscriptions"
ROLES = ".pymail-special-use"
#: A dotlock older than this is stale (procmail's and mutt's rule).
DOTLOCK_STALE_SECONDS = 300
DOTLOCK_TIMEOUT_SECONDS = 30
#: Headers that hold pymail's (and mutt's) metadata, not message content.
META_HEADERS = (b"status", b"x-status", b"x-keywords", b"x-uid", b"x-imapbase",
                b"x-imap", b"content-length")
_META_RE = re.compile(rb"^(" + b"|".join(META_HEADERS) + rb")[ \t]*:", re.IGNORECASE)
_QUOTED_FROM = re.compile(rb"^(>*From )", re.MULTILINE)
_UNQUOTE_FROM = re.compile(rb"^>(>*From )", re.MULTILINE)
_X_STATUS = {"\\Answered": "A", "\\Flagged": "F", "\\Draft": "T", "\\Deleted": "D"}
_X_STATUS_FLAGS = {v: k for k, v in _X_STATUS.items()}
_ASCTIME = "%a %b %d %H:%M:%S %Y"
_FLAG_SETS: dict[frozenset[str], frozenset[str]] = {}


@attrs.define
class _Entry:
    """One message in the file: where it is and what its headers say."""

    uid: int
    start: int  # offset of the "From " line
    body_start: int  # offset just after the "From " line
    end: int  # offset just after the message (before the separating blank line)
    flags: frozenset[str]
    internaldate: datetime
    size: int
    quoted: bool = True  # "From " lines in the body are mboxrd-quoted

    def row(self) -> Row:
        return (self.uid, self.start, self.body_start, self.end, " ".join(sorted(self.flags)),
                int(self.internaldate.timestamp()), self.size, int(self.quoted))


def _shared_flags(text: str) -> frozenset[str]:
    """The flag set an index row names, one object per distinct set."""
    flags = frozenset(text.split())
    return _FLAG_SETS.setdefault(flags, flags)


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\n"):
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() == b"content-length" and value.strip().isdigit():
            return int(value.strip())
    return None


def _split_messages(data: bytes) -> Iterator[tuple[int, int, int, bytes, bool]]:
    """
    (start, body_start, end, from_line, quoted) of each message.

    A message starts at a "From " line at the start of the file or after an
    empty line.  A valid ``Content-Length`` header (mutt writes one, and
    does not quote "From " lines in the body then) is honoured: such a
    message is not mboxrd-quoted (``quoted`` False).  Bytes before the first
    "From " line (garbage) are returned as a message with an empty
    from_line, so nothing is lost.
    """
    size = len(data)
    pos = 0
    if not data.startswith(b"From "):
        # Leading garbage: lenient, the first line that looks like a "From "
        # line starts the first real message.
        nxt = data.find(b"\nFrom ")
        if data.strip():
            yield 0, 0, (size if nxt < 0 else nxt + 1), b"", True
        if nxt < 0:
            return
        pos = nxt + 1
    while pos < size:
        start = pos
        line_end = data.find(b"\n", start)
        body_start = size if line_end < 0 else line_end + 1
        from_line = data[start:body_start].rstrip(b"\n")
        head_end = data.find(b"\n\n", body_start - 1)
        length = _content_length(data[body_start:head_end]) if head_end >= 0 else None
        if length is not None:
            end = head_end + 2 + length
            if end == size or (end < size and data[end:end + 1] == b"\n" and (
                    end + 1 == size or data.startswith(b"From ", end + 1))):
                yield start, body_start, end, from_line, False
                pos = end + 1
                continue
        nxt = data.find(b"\n\nFrom ", body_start - 1)
        if nxt < 0:
            end = size - 1 if data.endswith(b"\n\n") else size
            yield start, body_start, max(end, body_start), from_line, True
            return
        yield start, body_start, max(nxt + 1, body_start), from_line, True
        pos = nxt + 2


def _parse_meta(raw: bytes) -> tuple[bytes, frozenset[str], int | None]:
    """The message without metadata headers (still mboxrd-quoted), its flags and X-UID."""
    head_end = raw.find(b"\n\n")
    head = raw if head_end < 0 else raw[: head_end + 1]
    rest = b"" if head_end < 0 else raw[head_end + 1:]
    kept: list[bytes] = []
    flags: set[str] = set()
    uid = None
    skipping = False
    for line in head.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and kept is not None:
            if not skipping:
                kept.append(line)
            continue
        match = _META_RE.match(line)
        if not match:
            skipping = False
            kept.append(line)
            continue
        skipping = True
        name = match.group(1).lower()
        value = line[match.end():].strip().decode("ascii", "replace")
        if name == b"status":
            if "R" in value:
                flags.add("\\Seen")
        elif name == b"x-status":
            flags.update(_X_STATUS_FLAGS[c] for c in value if c in _X_STATUS_FLAGS)
        elif name == b"x-keywords":
            for kw in value.replace(",", " ").split():
                try:
                    flags.update(normalise_flags([kw]))
                except ValueError:
                    continue
        elif name == b"x-uid" and value.isdigit():
            uid = int(value)
    shared = frozenset(flags)
    # Most messages share a few flag sets: share the objects (memory of big folders).
    return b"".join(kept) + rest, _FLAG_SETS.setdefault(shared, shared), uid


def _meta_headers(flags: frozenset[str], uid: int) -> bytes:
    status = ("R" if "\\Seen" in flags else "") + "O"
    x_status = "".join(c for f, c in _X_STATUS.items() if f in flags)
    out = f"Status: {status}\nX-Status: {x_status}\n"
    keywords = sorted(f for f in flags if not f.startswith("\\"))
    if keywords:
        out += f"X-Keywords: {' '.join(keywords)}\n"
    out += f"X-UID: {uid}\n"
    return out.encode()


def _with_meta(stripped: bytes, flags: frozenset[str], uid: int) -> bytes:
    """Insert the metadata headers at the end of the header block."""
    head_end = stripped.find(b"\n\n")
    if head_end < 0:
        if stripped.startswith(b"\n"):
            return _meta_headers(flags, uid) + stripped
        body = stripped if stripped.endswith(b"\n") or not stripped else stripped + b"\n"
        return body + _meta_headers(flags, uid)
    return stripped[: head_end + 1] + _meta_headers(flags, uid) + stripped[head_end + 1:]


def _from_date(line: bytes) -> datetime | None:
    parts = line.decode("ascii", "replace").split()
    if len(parts) >= 7:
        try:
            return datetime.strptime(" ".join(parts[2:7]), _ASCTIME).replace(tzinfo=UTC)
        except ValueError:
            return None
    return None


def _wire(stripped: bytes, quoted: bool = True) -> bytes:
    return to_crlf(_UNQUOTE_FROM.sub(rb"\1", stripped) if quoted else stripped)


@attrs.define
class _PendingAppend:
    stripped: bytes
    flags: frozenset[str]
    when: datetime
    size: int
    from_line: bytes
    uid: int = 0
    done: bool = False
    error: BaseException | None = None


@attrs.define
class _Disk:
    uidvalidity: int = 0
    next_uid: int = 1
    stamp: tuple[int, int, int] = (0, 0, 0)
    entries: dict[int, _Entry] = attrs.Factory(dict)


class _Locked:
    """The dotlock plus an fcntl lock on an mbox file, as a context manager."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._fd = -1
        self._dotlock = path + ".lock"

    def __enter__(self) -> _Locked:
        deadline = time.monotonic() + DOTLOCK_TIMEOUT_SECONDS
        while True:
            try:
                fd = os.open(self._dotlock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                os.write(fd, str(os.getpid()).encode())
                os.close(fd)
                break
            except FileExistsError:
                try:
                    age = time.time() - os.stat(self._dotlock).st_mtime
                except FileNotFoundError:
                    continue
                if age > DOTLOCK_STALE_SECONDS:
                    log.warn("mbox {path}: removing a stale dotlock ({age:.0f} s old)",
                             path=self._path, age=age)
                    try:
                        os.unlink(self._dotlock)
                    except FileNotFoundError:
                        pass
                    continue
                if time.monotonic() > deadline:
                    raise StorageError(f"{self._path} is locked by another program") from None
                time.sleep(0.05)
        try:
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.lockf(self._fd, fcntl.LOCK_EX)
        except BaseException:
            if self._fd >= 0:
                os.close(self._fd)
            os.unlink(self._dotlock)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
        finally:
            try:
                os.unlink(self._dotlock)
            except FileNotFoundError:
                pass


@implementer(IMailboxListener)
class _ModseqWriter:
    """Records the folder's HIGHESTMODSEQ in the index after every change."""

    def __init__(self, mailbox: MboxMailbox) -> None:
        self._mailbox = mailbox

    def mailbox_changed(self, mailbox: IMailbox, change: Any) -> None:
        box = self._mailbox
        box._in_thread(box._index.raise_highestmodseq, box._view.highestmodseq)


@implementer(IMailbox, IMailboxRestore)
class MboxMailbox:
    """One mbox folder."""

    def __init__(self, path: str, state_path: str, name: str, reactor: Any) -> None:
        self.name = name
        self.path = path
        self.state_path = state_path
        self._reactor = reactor
        self._lock = threading.Lock()
        self._disk = _Disk()
        self._cache: dict[tuple[int, str], Any] = {}
        self._pending: list[_PendingAppend] = []
        self._pending_lock = threading.Lock()
        self._view = MailboxView(self)
        self._index = MboxIndex(state_path)
        #: Whether the index's rows describe the file as self._disk does
        #: (then an append only adds its rows).
        self._index_synced = False
        self._view.add_listener(_ModseqWriter(self))

    # -- the view ---------------------------------------------------------

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
        return keywords_of(self._view.messages())

    def accepts_new_keywords(self) -> bool:
        return True

    def cached(self, uid: int, name: str, compute: Callable[[bytes], _T]) -> _T:
        key = (uid, name)
        try:
            return self._cache[key]  # type: ignore[no-any-return]
        except KeyError:
            value = self._cache[key] = compute(self.read(uid))
            return value

    def read(self, uid: int) -> bytes:
        if uid not in self._view:
            raise NoSuchMessage(f"no message with UID {uid} in {self.name}")
        for _ in range(2):
            entry = self._disk.entries.get(uid)
            if entry is None:
                break
            stamp = self._stamp()
            if stamp == self._disk.stamp:
                with open(self.path, "rb") as f:
                    f.seek(entry.body_start)
                    raw = f.read(entry.end - entry.body_start)
                if self._stamp() == stamp:
                    return _wire(_parse_meta(raw)[0], entry.quoted)
            # Another program changed the file: rescan and look again.
            self._refresh_now()
        raise NoSuchMessage(f"message UID {uid} in {self.name} was removed by another program")

    # -- threads ----------------------------------------------------------

    def _in_thread(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        return deferToThreadPool(self._reactor, self._reactor.getThreadPool(), f, *args)

    def _to_reactor(self, f: Callable[..., Any], *args: Any) -> None:
        self._reactor.callFromThread(f, *args)

    def _stamp(self) -> tuple[int, int, int]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return (0, 0, 0)
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def open(self) -> Deferred[MboxMailbox]:
        def loaded(infos: list[MessageInfo] | None) -> MboxMailbox:
            if infos is not None:
                self._view.load(infos)
            return self

        return self._in_thread(self._open_now).addCallback(loaded)

    def _open_now(self) -> list[MessageInfo] | None:
        """
        Load the folder: from the index when it describes the file as it is
        (returns the messages), else by parsing the file (the view is told).
        Every MODSEQ starts above the HIGHESTMODSEQ recorded before, so a
        CONDSTORE client may see a change twice after a restart, never miss one.
        """
        with self._lock:
            highest = 0
            if self._index.ensure_open():
                highest = self._index.meta("highestmodseq") or 0
                trusted = self._load_trusted_locked(highest + 1)
                if trusted is not None:
                    self._index.raise_highestmodseq(highest + 1)
                    return trusted
            self._to_reactor(self._raise_highestmodseq, highest)
        self._refresh_now()
        return None

    def _raise_highestmodseq(self, value: int) -> None:
        self._view.highestmodseq = max(self._view.highestmodseq, value)

    def _load_trusted_locked(self, modseq: int) -> list[MessageInfo] | None:
        validity, next_uid = self._read_state()
        if not validity:
            return None
        stamp = self._stamp()
        rows = self._index.load(validity, stamp)
        if rows is None:
            return None
        entries: dict[int, _Entry] = {}
        infos = []
        flag_sets: dict[str, frozenset[str]] = {}
        last_date, when = -1, datetime.fromtimestamp(0, UTC)
        for uid, start, body_start, end, text, date, size, quoted in rows:
            flags = flag_sets.get(text)
            if flags is None:
                flags = flag_sets[text] = _shared_flags(text)
            if date != last_date:  # messages of one second share one object
                last_date, when = date, datetime.fromtimestamp(date, UTC)
            entries[uid] = _Entry(uid, start, body_start, end, flags, when, size, bool(quoted))
            infos.append(MessageInfo(uid, f"{validity}.{uid}", flags, when, size, modseq))
        self._disk.uidvalidity = validity
        self._disk.next_uid = max(next_uid, rows[-1][0] + 1 if rows else 1)
        self._disk.stamp = stamp
        self._disk.entries = entries
        self._index_synced = True
        return infos

    # -- state file -------------------------------------------------------

    def _read_state(self) -> tuple[int, int]:
        try:
            with open(self.state_path, "rb") as f:
                fields = f.read().split()
            if len(fields) >= 2 and fields[0].isdigit() and fields[1].isdigit():
                return int(fields[0]), int(fields[1])
            log.warn("mbox {path}: state file unreadable; starting a new UIDVALIDITY",
                     path=self.path)
        except FileNotFoundError:
            pass
        return 0, 1

    def _write_state(self) -> None:
        os.makedirs(os.path.dirname(self.state_path), mode=0o700, exist_ok=True)
        write_file_durably(
            self.state_path, f"{self._disk.uidvalidity} {self._disk.next_uid}\n".encode()
        )

    # -- scanning ---------------------------------------------------------

    def _refresh_now(self) -> None:
        """Rescan the file if it changed, and tell the reactor what changed."""
        with self._lock:
            if self._disk.uidvalidity and self._stamp() == self._disk.stamp:
                return
            with _Locked(self.path):
                before = {u: e.flags for u, e in self._disk.entries.items()}
                self._scan_locked()
            after = self._disk.entries
            gone = [u for u in before if u not in after]
            changed = {u: e.flags for u, e in after.items() if u in before and before[u] != e.flags}
            added = [self._info(e) for u, e in sorted(after.items()) if u not in before]
            if gone:
                self._to_reactor(self._view.apply_expunged, gone)
            if changed:
                self._to_reactor(self._view.apply_flags, changed)
            if added:
                self._to_reactor(self._view.apply_added, added)

    def _info(self, entry: _Entry) -> MessageInfo:
        return MessageInfo(entry.uid, f"{self._disk.uidvalidity}.{entry.uid}", entry.flags,
                           entry.internaldate, entry.size)

    def _scan_locked(self) -> None:
        """Parse the whole file; give UIDs to messages without one (rewriting)."""
        validity, next_uid = self._read_state()
        if not validity:
            validity = new_uidvalidity()
        if self._disk.uidvalidity and validity != self._disk.uidvalidity:
            log.warn("mbox {path}: UIDVALIDITY changed by another program", path=self.path)
            self._disk.entries.clear()
            self._cache.clear()
        self._disk.uidvalidity = validity
        self._disk.next_uid = max(self._disk.next_uid, next_uid)
        with open(self.path, "rb") as f:
            data = f.read()
        entries: dict[int, _Entry] = {}
        missing: list[_Entry] = []
        repaired = 0
        for start, body_start, end, from_line, quoted in _split_messages(data):
            stripped, flags, uid = _parse_meta(data[body_start:end])
            if not from_line:
                repaired += 1
            when = _from_date(from_line) or datetime.fromtimestamp(0, UTC)
            entry = _Entry(0, start, body_start, end, flags, when, len(_wire(stripped, quoted)),
                           quoted)
            if uid is None or uid in entries:
                missing.append(entry)
            else:
                entry.uid = uid
                entries[uid] = entry
        if entries:
            self._disk.next_uid = max(self._disk.next_uid, max(entries) + 1)
        for entry in missing:
            entry.uid = self._disk.next_uid
            self._disk.next_uid += 1
            entries[entry.uid] = entry
        self._disk.entries = entries
        if repaired:
            log.warn("mbox {path}: {n} message(s) without a valid 'From ' line; "
                     "rewriting with one", path=self.path, n=repaired)
        if missing or repaired or not data.endswith(b"\n") and data:
            self._rewrite_locked(data, set())
        else:
            self._disk.stamp = self._stamp()
            self._index_snapshot_locked()
        self._write_state()

    def _index_snapshot_locked(self) -> None:
        """The index now describes the whole file as this process knows it."""
        if self._index.ensure_open():
            self._index.snapshot(self._disk.uidvalidity,
                                 [e.row() for e in self._disk.entries.values()], self._disk.stamp)
            self._index_synced = True

    def _rewrite_locked(self, data: bytes, drop: set[int]) -> None:
        """
        Write the folder anew (without the UIDs in ``drop``) beside the old
        file, fsync, and rename it into place.
        """
        parts: list[bytes] = []
        offsets: dict[int, tuple[int, int, int]] = {}
        pos = 0
        for entry in sorted(self._disk.entries.values(), key=lambda e: e.start):
            if entry.uid in drop:
                continue
            stripped, _, _ = _parse_meta(data[entry.body_start:entry.end])
            if not entry.quoted:
                stripped = _QUOTED_FROM.sub(rb">\1", stripped)
            from_line = data[entry.start:entry.body_start].rstrip(b"\n") or (
                b"From MAILER-DAEMON " + entry.internaldate.strftime(_ASCTIME).encode())
            block = _with_meta(stripped, entry.flags, entry.uid)
            if not block.endswith(b"\n"):
                block += b"\n"
            chunk = from_line + b"\n" + block + b"\n"
            offsets[entry.uid] = (pos, pos + len(from_line) + 1, pos + len(chunk) - 1)
            parts.append(chunk)
            pos += len(chunk)
        tmp = os.path.join(os.path.dirname(self.path),
                           f".{os.path.basename(self.path)}.pymail-rewrite")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for part in parts:
                view = memoryview(part)
                while view:
                    view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            shutil.copymode(self.path, tmp)
        except OSError:
            pass
        os.replace(tmp, self.path)
        fsync_dir(os.path.dirname(self.path))
        for uid in drop:
            self._disk.entries.pop(uid, None)
        for uid, (start, body_start, end) in offsets.items():
            e = self._disk.entries[uid]
            e.start, e.body_start, e.end, e.quoted = start, body_start, end, True
        self._disk.stamp = self._stamp()
        # UIDs of removed messages must never come back after a restart.
        self._write_state()
        self._index_snapshot_locked()

    def _sync_locked(self, read: bool = True) -> bytes:
        """
        Under both locks: rescan if another program changed the file; the
        file's bytes (``b""`` when ``read`` is false: appends need none).
        """
        if self._stamp() != self._disk.stamp:
            before = {u: e.flags for u, e in self._disk.entries.items()}
            self._scan_locked()
            after = self._disk.entries
            gone = [u for u in before if u not in after]
            added = [self._info(e) for u, e in sorted(after.items()) if u not in before]
            changed = {u: e.flags for u, e in after.items() if u in before and before[u] != e.flags}
            if gone:
                self._to_reactor(self._view.apply_expunged, gone)
            if changed:
                self._to_reactor(self._view.apply_flags, changed)
            if added:
                self._to_reactor(self._view.apply_added, added)
        if not read:
            return b""
        with open(self.path, "rb") as f:
            return f.read()

    def refresh(self) -> Deferred[None]:
        return self._in_thread(self._refresh_now)

    # -- append -----------------------------------------------------------

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
        when = (internaldate or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
        return self._in_thread(self._append, bytes(message), flagset, when)

    def _append(self, message: bytes, flags: frozenset[str], when: datetime) -> int:
        stripped = _QUOTED_FROM.sub(rb">\1", to_lf(message))
        from_line = b"From MAILER-DAEMON " + when.strftime(_ASCTIME).encode()
        mine = _PendingAppend(stripped, flags, when, len(message), from_line)
        with self._pending_lock:
            self._pending.append(mine)
        # Group commit: whoever holds the folder lock writes every queued
        # message with one write and one fsync.
        with self._lock:
            if not mine.done:
                with self._pending_lock:
                    batch, self._pending = self._pending, []
                try:
                    with _Locked(self.path):
                        self._commit_locked(batch)
                except BaseException as e:
                    for p in batch:
                        p.error, p.done = e, True
        if mine.error is not None:
            if isinstance(mine.error, StorageError):
                raise mine.error
            raise StorageError(f"could not append to {self.name}: {mine.error}")
        return mine.uid

    def _commit_locked(self, batch: list[_PendingAppend]) -> None:
        self._sync_locked(read=False)
        size = os.path.getsize(self.path)
        lead = b""
        if size:
            with open(self.path, "rb") as f:
                f.seek(max(0, size - 2))
                tail = f.read()
            lead = b"" if tail.endswith(b"\n\n") else (b"\n" if tail.endswith(b"\n")
                                                        else b"\n\n")
        chunks = [lead]
        pos = size + len(lead)
        entries = []
        next_uid = self._disk.next_uid
        for p in batch:
            # UIDs live in each message's X-UID header; the state file
            # catches up at the next rewrite or scan.
            uid = next_uid
            next_uid += 1
            block = _with_meta(p.stripped, p.flags, uid)
            if not block.endswith(b"\n"):
                block += b"\n"
            chunk = p.from_line + b"\n" + block + b"\n"
            entries.append(_Entry(uid, pos, pos + len(p.from_line) + 1, pos + len(chunk) - 1,
                                  p.flags, p.when, p.size))
            chunks.append(chunk)
            pos += len(chunk)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            view = memoryview(b"".join(chunks))
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except BaseException:
            os.ftruncate(fd, size)
            raise
        finally:
            os.close(fd)
        self._disk.next_uid = next_uid
        for p, entry in zip(batch, entries, strict=True):
            self._disk.entries[entry.uid] = entry
            p.uid, p.done = entry.uid, True
        self._disk.stamp = self._stamp()
        if self._index_synced:
            self._index.appended(self._disk.uidvalidity, [e.row() for e in entries],
                                 self._disk.stamp)
        else:
            self._index_snapshot_locked()
        self._to_reactor(self._view.apply_added, [self._info(e) for e in entries])

    # -- flags and expunge ------------------------------------------------

    def set_flags(
        self, uids: Iterable[int], flags: Iterable[str], mode: str
    ) -> Deferred[dict[int, frozenset[str]]]:
        try:
            flagset = normalise_flags(flags)
            apply_flag_mode(frozenset(), flagset, mode)
        except ValueError as e:
            return fail(e)
        wanted = [u for u in uids if u in self._view]
        d = self._in_thread(self._set_flags, wanted, flagset, mode)
        d.addCallback(lambda done: {u: self._view.info(u).flags for u in done if u in self._view})
        return d

    def _set_flags(self, uids: list[int], flags: frozenset[str], mode: str) -> list[int]:
        with self._lock, _Locked(self.path):
            data = self._sync_locked()
            changed: dict[int, frozenset[str]] = {}
            done = []
            for uid in uids:
                entry = self._disk.entries.get(uid)
                if entry is None:
                    continue
                done.append(uid)
                new = apply_flag_mode(entry.flags, flags, mode)
                if new != entry.flags:
                    entry.flags = new
                    changed[uid] = new
            if changed:
                self._rewrite_locked(data, set())
                self._to_reactor(self._view.apply_flags, changed)
        return done

    def expunge(self, uids: Iterable[int] | None = None) -> Deferred[list[int]]:
        allowed = None if uids is None else set(uids)
        return self._in_thread(self._expunge, allowed)

    def _expunge(self, allowed: set[int] | None) -> list[int]:
        with self._lock, _Locked(self.path):
            data = self._sync_locked()
            doomed = sorted(
                u for u, e in self._disk.entries.items()
                if "\\Deleted" in e.flags and (allowed is None or u in allowed)
            )
            if doomed:
                self._rewrite_locked(data, set(doomed))
                self._to_reactor(self._view.apply_expunged, doomed)
        return doomed

    def restore(
        self,
        uidvalidity: int,
        uidnext: int,
        messages: Sequence[tuple[int, bytes, frozenset[str], datetime]],
    ) -> Deferred[None]:
        return self._in_thread(self._restore, uidvalidity, uidnext, list(messages))

    def _restore(self, uidvalidity: int, uidnext: int,
                 messages: list[tuple[int, bytes, frozenset[str], datetime]]) -> None:
        with self._lock, _Locked(self.path):
            self._sync_locked()
            if self._disk.entries:
                raise StorageError(f"{self.name} is not empty; restore needs an empty folder")
            chunks = []
            for uid, message, flags, when in messages:
                stripped = _QUOTED_FROM.sub(rb">\1", to_lf(message))
                block = _with_meta(stripped, flags, uid)
                if not block.endswith(b"\n"):
                    block += b"\n"
                from_line = b"From MAILER-DAEMON " + when.astimezone(UTC).strftime(
                    _ASCTIME).encode()
                chunks.append(from_line + b"\n" + block + b"\n")
            write_file_durably(self.path, b"".join(chunks))
            self._disk.uidvalidity = uidvalidity
            self._disk.next_uid = uidnext
            self._write_state()
            self._disk.stamp = (0, 0, 0)
            self._scan_locked()
            added = [self._info(e) for _, e in sorted(self._disk.entries.items())]
            if added:
                self._to_reactor(self._view.apply_added, added)

    def _move_all_to(self, target: MboxMailbox) -> None:
        """RENAME INBOX: copy every message to the empty ``target``, then empty this file."""
        with self._lock, _Locked(self.path):
            data = self._sync_locked()
            moved = sorted(self._disk.entries)
            target._disk.uidvalidity = new_uidvalidity()
            target._disk.next_uid = self._disk.next_uid
            target._disk.entries = {u: attrs.evolve(e) for u, e in self._disk.entries.items()}
            with _Locked(target.path):
                target._rewrite_locked(data, set())
                target._write_state()
            self._rewrite_locked(data, set(moved))
            self._cache.clear()
            if moved:
                self._to_reactor(self._view.apply_expunged, moved)


def _encode_folder(name: str) -> str:
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
class MboxStore:
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
        encoded = _encode_folder(canonical)
        if encoded.upper() == "INBOX":
            raise BadMailboxName(f"{name!r} would clash with INBOX")
        return (canonical, os.path.join(self.folders, encoded),
                os.path.join(self.folders, STATE_DIR, encoded))

    def _in_thread(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        reactor = self._factory.reactor
        return deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)

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
                names.append(check_mailbox_name(_decode_folder_strict(entry)))
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
        return {n: r for n, r in self._files.roles().items() if n in existing}

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
