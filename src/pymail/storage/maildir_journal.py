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
makes those files durable (``syncfs``, or an fsync of each) and empties the
journal; an open after a crash first *replays* it: every recorded message
whose file is missing or differs is written again, durably, under the same
name and UID.  Databases call this a write-ahead log.

The file, ``pymail-journal`` in the folder directory, is a sequence of
records, each a header line and the message::

    PJ1 <uid> <mtime> <length> <crc32 in hex> <relative path>\\n
    <length octets: the file's content, LF line ends as stored>\\n

A record is whole only if its header parses, its octets are all there, the
trailing newline follows and the CRC-32 of the octets matches: a crash in
the middle of a group's write leaves a torn tail, which was never
acknowledged and is ignored.  Records are appended under the folder's file
lock (the one the uidlist is written under), so several pymail processes
may share a folder.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterable

import attrs

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
    """One journaled delivery: the file ``relpath`` (``new/...`` or ``cur/...``) with UID ``uid``."""

    uid: int
    mtime: int
    relpath: str
    data: bytes

    @property
    def base(self) -> str:
        """The Maildir base name (the file name without its ``:2,`` flags)."""
        return self.relpath.split("/", 1)[1].split(":", 1)[0]


def encode(records: Iterable[Record]) -> bytes:
    """The journal octets for ``records``, in order."""
    parts: list[bytes] = []
    for r in records:
        parts.append(b"%s %d %d %d %08x %s\n" % (
            _MAGIC, r.uid, r.mtime, len(r.data), zlib.crc32(r.data),
            r.relpath.encode("utf-8", "surrogateescape")))
        parts.append(r.data)
        parts.append(b"\n")
    return b"".join(parts)


def decode(data: bytes) -> tuple[list[Record], int]:
    """
    The whole records at the start of ``data`` and the length they take;
    anything after the first record that is not whole (a torn tail, or
    damage) is left out.
    """
    records: list[Record] = []
    pos = 0
    end = len(data)
    while pos < end:
        eol = data.find(b"\n", pos, pos + 4096)
        if eol < 0:
            break
        fields = data[pos:eol].split(b" ", 5)
        if len(fields) != 6 or fields[0] != _MAGIC:
            break
        try:
            uid, mtime, length, crc = (int(fields[1]), int(fields[2]), int(fields[3]),
                                       int(fields[4], 16))
        except ValueError:
            break
        relpath = fields[5].decode("utf-8", "surrogateescape")
        start = eol + 1
        stop = start + length
        if (uid < 1 or length < 0 or stop >= end or data[stop:stop + 1] != b"\n"
                or relpath[:4] not in ("new/", "cur/") or "/" in relpath[4:]):
            break
        body = data[start:stop]
        if zlib.crc32(body) != crc:
            break
        records.append(Record(uid, mtime, relpath, body))
        pos = stop + 1
    return records, pos


def read(path: str) -> tuple[list[Record], int, int]:
    """The whole records of the journal at ``path``, their length and the file's size."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return [], 0, 0
    records, good = decode(data)
    return records, good, len(data)
