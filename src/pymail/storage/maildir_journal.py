"""
The delivery journal of a Maildir folder (``maildir.sync = "journal"``).

Why: making each delivered file durable on its own costs an fsync of the
file, of its directory and of the uidlist, and on a journalling file system
every one of them waits for a commit (measured: 120-250 us of kernel CPU
per 4 KiB message alone, more under load).  Appending the group's messages
to one file and calling ``fdatasync`` once costs about one commit per group
(8-11 us of kernel CPU per message).  So a group of deliveries is written
twice: once here, made durable before any of them is acknowledged, and once
as ordinary Maildir files (``tmp/`` then ``new/``, and uidlist lines) that
readers use at once, left to the kernel to write back.  A *checkpoint*
makes those files durable (``syncfs``, or each written again and fsynced)
and empties the journal; an open after a crash first *replays* it: every recorded message
whose file is missing or differs is written again, durably, under the same
name and UID.  Databases call this a write-ahead log.

The file, ``pymail-journal`` in the folder directory, is a sequence of
records, each a header line and the message::

    PJ1 <boot id> <uid> <mtime> <length> <crc32 in hex> <relative path>\\n
    <length octets: the file's content, LF line ends as stored>\\n

A record is whole only if its header parses, its octets are all there, the
trailing newline follows and the CRC-32 of the header's fields and the octets
matches.  Reading stops at the first record that is not whole: only the last
write can be torn (a crash in the middle of it, never acknowledged), because
every writer first cuts a torn tail off before it appends (see
``MaildirMailbox._journal_and_publish_locked``).  Nothing is searched for
inside a stretch that is not whole, so a message that carries the text of a
record can never be taken for one.  Records are appended under the folder's
file lock (the one the uidlist is written under), so several pymail
processes may share a folder.

The boot id (Linux's ``/proc/sys/kernel/random/boot_id``) tells a replay
whether the machine restarted since the record was written: if not, the
kernel still holds every file as it was written, so a file that is missing
was removed by another program (a mail client's delete, a move) and must not
come back; only a record from an earlier boot has its file written again.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

import attrs


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip() or "-"
    except OSError:
        return "-"


#: This boot of the machine ("-" where the system does not say: every
#: record then counts as from an earlier boot).
BOOT_ID = _boot_id()

#: The journal's file name, in the folder directory.
JOURNAL = "pymail-journal"

_MAGIC = b"PJ1"

#: A checkpoint is made once the journal holds this many octets or records
#: (so a replay reads and compares at most this much), before an expunge or
#: a move of the folder's files, and when an open replays it.
CHECKPOINT_BYTES = 64 * 1024 * 1024
CHECKPOINT_RECORDS = 4096


@attrs.frozen
class Record:
    """One journaled delivery: the file ``relpath`` (``new/...`` or ``cur/...``), UID ``uid``."""

    uid: int
    mtime: int
    relpath: str
    data: bytes
    boot: str = BOOT_ID

    @property
    def this_boot(self) -> bool:
        """Written since the machine last started (so the kernel lost nothing of its file)."""
        return self.boot == BOOT_ID and BOOT_ID != "-"

    @property
    def base(self) -> str:
        """The Maildir base name (the file name without its ``:2,`` flags)."""
        return self.relpath.split("/", 1)[1].split(":", 1)[0]


#: The highest UID IMAP allows (RFC 3501: a 32-bit unsigned number).
_MAX_UID = 2**32 - 1


def _fields(boot: bytes, uid: int, mtime: int, length: int, relpath: bytes) -> bytes:
    return b"%s %d %d %d %s" % (boot, uid, mtime, length, relpath)


def encode(records: Iterable[Record]) -> bytes:
    """The journal octets for ``records``, in order."""
    parts: list[bytes] = []
    for r in records:
        boot = r.boot.encode("ascii")
        relpath = r.relpath.encode("utf-8", "surrogateescape")
        crc = zlib.crc32(r.data, zlib.crc32(_fields(boot, r.uid, r.mtime, len(r.data), relpath)))
        parts.append(b"%s %s %d %d %d %08x %s\n" % (
            _MAGIC, boot, r.uid, r.mtime, len(r.data), crc, relpath))
        parts.append(r.data)
        parts.append(b"\n")
    return b"".join(parts)


def decode(data: bytes) -> tuple[list[Record], int]:
    """The whole records at the start of ``data`` and the length they take."""
    records: list[Record] = []
    pos = 0
    while pos < len(data):
        record, stop = _record_at(data, pos)
        if record is None:
            break
        records.append(record)
        pos = stop
    return records, pos


def _record_at(data: bytes, pos: int) -> tuple[Record | None, int]:
    """The whole record starting at ``pos`` and where it ends, or (None, pos)."""
    eol = data.find(b"\n", pos, pos + 4096)
    if eol < 0:
        return None, pos
    fields = data[pos:eol].split(b" ", 6)
    if len(fields) != 7 or fields[0] != _MAGIC:
        return None, pos
    try:
        boot = fields[1].decode("ascii")
        uid, mtime, length, crc = (int(fields[2]), int(fields[3]), int(fields[4]),
                                   int(fields[5], 16))
    except ValueError:
        return None, pos
    relpath = fields[6].decode("utf-8", "surrogateescape")
    base = relpath[4:].split(":", 1)[0]
    start = eol + 1
    stop = start + length
    if (not 1 <= uid <= _MAX_UID or length < 0 or stop >= len(data)
            or data[stop:stop + 1] != b"\n" or relpath[:4] not in ("new/", "cur/")
            or "/" in relpath[4:] or "\0" in relpath or base in ("", ".", "..")):
        return None, pos
    body = data[start:stop]
    if zlib.crc32(body, zlib.crc32(_fields(fields[1], uid, mtime, length, fields[6]))) != crc:
        return None, pos
    return Record(uid, mtime, relpath, body, boot), stop + 1


def read(path: str) -> tuple[list[Record], int]:
    """The whole records of the journal at ``path`` and the octets after them (a torn write)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return [], 0
    records, good = decode(data)
    return records, len(data) - good
