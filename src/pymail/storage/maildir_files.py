"""
A Maildir folder's metadata files, in Dovecot's formats so a mailbox moves
between pymail and Dovecot: ``dovecot-uidlist`` (UIDVALIDITY, next UID and
"uid :basename" lines, version 3) and ``dovecot-keywords`` ("index keyword"
lines: keyword i is the letter a+i in a file name's ``:2,`` info); plus the
file-name helpers and the per-folder disk state the mailbox keeps.
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
import time
from collections.abc import Callable

import attrs
from twisted.logger import Logger

from pymail.errors import StorageError
from pymail.storage.fsutil import write_file_durably

log = Logger()

UIDLIST = "dovecot-uidlist"
KEYWORDS = "dovecot-keywords"
LOCKFILE = "pymail-uidlist.lock"


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


def unique_name(now: float) -> str:
    """
    The unique part of a new message file's name, as the Maildir spec
    makes it: ``<seconds>.M<microseconds>P<pid>Q<counter>.<host>``.
    """
    return f"{int(now)}.M{int(now * 1e6) % 1000000}P{os.getpid()}Q{next(_counter)}.{_HOST}"


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
class DiskState:
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


class MaildirFilesMixin:
    """
    Reading and writing the uidlist and keywords files of one folder, for
    :class:`~pymail.storage.maildir_folder.MaildirMailbox` (its ``path``,
    ``name``, ``_disk`` and ``_flag_sets``).  Every method runs in a thread
    with the folder lock held.
    """

    path: str
    name: str
    _disk: DiskState
    _flag_sets: dict[tuple[str, tuple[str, ...]], frozenset[str]]

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
        uid_by_base: dict[str, int] = {}
        self._disk.uid_by_base = uid_by_base
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
        files = self._disk.files
        if files:
            # UIDs of known files are in ``files``: keep only the others.
            self._disk.uid_by_base = {b: u for b, u in uid_by_base.items() if u not in files}
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

    def _append_uidlist_locked(self, entries: list[tuple[int, str]],
                               before_fsync: Callable[[], None] | None = None,
                               sync: Callable[[int], None] = os.fsync) -> None:
        """
        Append lines for new UIDs and fsync (Dovecot appends the same way).
        ``before_fsync`` runs between the write and the fsync: the group
        commit fsyncs the message directories there, so on a journalling
        file system the directory fsync commits the uidlist's change too and
        the uidlist's own fsync finds little left to do (one journal commit
        to wait for instead of two).  A crash in between leaves uidlist
        lines for files that may not exist, which every reader ignores.
        ``sync`` makes the write durable given the uidlist's fd (the group
        commit passes ``syncfs``, which also covers the directories).
        """
        path = os.path.join(self.path, UIDLIST)
        data = b"".join(
            f"{uid} :{base}\n".encode("utf-8", "surrogateescape") for uid, base in entries
        )
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, data)
            if before_fsync is not None:
                before_fsync()
            sync(fd)
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
