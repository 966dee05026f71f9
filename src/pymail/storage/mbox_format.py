"""
The mbox file format as pymail, mutt and procmail share it: splitting a
file into messages (mboxrd ``From `` quoting, mutt's ``Content-Length``),
the metadata headers (``Status``, ``X-Status``, ``X-Keywords``, ``X-UID``),
the dotlock plus fcntl lock every reader and writer takes, and the atomic
rewrite of a whole folder (:func:`write_folder`).
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import time
from collections.abc import Iterable, Iterator
from datetime import datetime, UTC
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from pymail.errors import StorageError
from pymail.storage.base import normalise_flags
from pymail.storage.fsutil import fsync_dir, to_crlf

if TYPE_CHECKING:
    from pymail.storage.mbox_entries import Entry

log = Logger()

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


_MONTHS = {m: n for n, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
_WEEKDAYS = frozenset(("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"))


def _from_date(line: bytes) -> datetime | None:
    """The date of a ``From `` line (asctime, UTC), or None if it has none."""
    parts = line.decode("ascii", "replace").split()
    if len(parts) < 7:
        return None
    # The common shape without strptime (5x faster: a full parse of a big
    # mbox spent a third of its time here); anything else takes strptime.
    weekday, month, day, clock, year = parts[2:7]
    hms = clock.split(":")
    if (weekday in _WEEKDAYS and month in _MONTHS and day.isdigit() and year.isdigit()
            and len(year) == 4 and len(hms) == 3 and all(x.isdigit() for x in hms)):
        try:
            return datetime(int(year), _MONTHS[month], int(day), int(hms[0]), int(hms[1]),
                            int(hms[2]), tzinfo=UTC)
        except ValueError:
            pass
    try:
        return datetime.strptime(" ".join(parts[2:7]), _ASCTIME).replace(tzinfo=UTC)
    except ValueError:
        return None


def _wire(stripped: bytes, quoted: bool = True) -> bytes:
    return to_crlf(_UNQUOTE_FROM.sub(rb"\1", stripped) if quoted else stripped)



class _Locked:
    """The dotlock plus an fcntl lock on an mbox file, as a context manager."""

    def __init__(self, path: str, timeout: float = DOTLOCK_TIMEOUT_SECONDS) -> None:
        self._path = path
        self._timeout = timeout
        self._fd = -1
        self._dotlock = path + ".lock"

    def __enter__(self) -> _Locked:
        deadline = time.monotonic() + self._timeout
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


def write_folder(path: str, data: bytes,
                 entries: Iterable[Entry]) -> dict[int, tuple[int, int, int]]:
    """
    Write an mbox folder anew beside ``path`` from the old file's bytes
    ``data``: the messages ``entries`` (in file order), clean ones copied as
    they are, the others rebuilt with their flag and UID headers; fsync,
    rename into place, fsync the directory.  Returns each message's new
    (start, body_start, end).
    """
    # Pieces of the new file: bytes, or (start, end) ranges of ``data``
    # copied as they are (clean messages; adjacent ones merge into one).
    parts: list[bytes | tuple[int, int]] = []
    offsets: dict[int, tuple[int, int, int]] = {}
    pos = 0
    for entry in entries:
        if entry.clean and entry.quoted and data[entry.end:entry.end + 1] == b"\n":
            offsets[entry.uid] = (pos, pos + entry.body_start - entry.start,
                                  pos + entry.end - entry.start)
            pos += entry.end + 1 - entry.start
            last = parts[-1] if parts else None
            if isinstance(last, tuple) and last[1] == entry.start:
                parts[-1] = (last[0], entry.end + 1)
            else:
                parts.append((entry.start, entry.end + 1))
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
    tmp = os.path.join(os.path.dirname(path),
                       f".{os.path.basename(path)}.pymail-rewrite")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    whole = memoryview(data)
    try:
        for part in parts:
            view = whole[part[0]:part[1]] if isinstance(part, tuple) else memoryview(part)
            while view:
                view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        shutil.copymode(path, tmp)
    except OSError:
        pass
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(path))
    return offsets
