"""
The index of one mbox folder, beside its state file
(``<folders>/.pymail-state/<name>.index.sqlite``): per UID the message's
offsets in the file, its flags, INTERNALDATE, wire size, quoting and
MODSEQ, plus the file's stamp (inode, size, mtime) when the rows were
written and the folder's HIGHESTMODSEQ.

MODSEQs (RFC 7162) live only here: the rows, their MODSEQs and
HIGHESTMODSEQ are written in one transaction, before any session is told
of the change, so a MODSEQ a client saw is never lost by a restart (or a
``kill -9``).  When the index cannot be trusted (lost, corrupt, or the
file changed while pymail was not watching) the folder's messages get new
MODSEQs above the recorded HIGHESTMODSEQ and above
:func:`pymail.storage.index.rebuild_modseq`, as the Maildir index does.

Opening a folder whose file still has the recorded stamp takes every
message from the index in one query instead of parsing the file.  The file
stays the truth: the rows and the stamp are written in one transaction,
always right after pymail wrote or parsed the file under its locks, so a
stamp that matches means the rows describe the file; any other program's
change moves the stamp and the next open parses the file again (and
rewrites the index).  A missing, corrupt or older index is rebuilt the
same way, with a log line.
"""

from __future__ import annotations

import os
import struct
import sys
from array import array
from collections.abc import Iterable

from pymail.storage.index import SqliteIndex

SCHEMA_VERSION = 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS msgs (
    uid INTEGER PRIMARY KEY, start INTEGER NOT NULL, body_start INTEGER NOT NULL,
    end INTEGER NOT NULL, flags TEXT NOT NULL, date INTEGER NOT NULL,
    size INTEGER NOT NULL, quoted INTEGER NOT NULL, modseq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS snapshot (
    id INTEGER PRIMARY KEY CHECK (id = 1), ints BLOB NOT NULL, flags TEXT NOT NULL);
"""

#: Integers per packed row (a snapshot row, and mbox_entries.Entries):
#: uid, start, body_start, end, date, size, quoted, modseq.
PACKED_FIELDS = 8
_PACKED = struct.Struct(f"<{PACKED_FIELDS}q")

#: One row: uid, start, body_start, end, flags (space-separated), date, size,
#: quoted, modseq.
Row = tuple[int, int, int, int, str, int, int, int, int]

_STAMP_KEYS = ("file_ino", "file_size", "file_mtime_ns")


def index_path(state_path: str) -> str:
    """Where the index of the folder with this state file lives."""
    return state_path + ".index.sqlite"


class MboxIndex(SqliteIndex):
    """The SQLite index of one mbox file (see the module docstring)."""

    def __init__(self, state_path: str) -> None:
        super().__init__(index_path(state_path), _SCHEMA, SCHEMA_VERSION)

    def ensure_open(self) -> bool:
        """Open the index if it is not; False when its directory does not exist yet."""
        if self._db is not None:
            return True
        if not os.path.isdir(os.path.dirname(self.path)):
            return False
        self.open()
        return True

    def load(self, uidvalidity: int,
             stamp: tuple[int, int, int]) -> tuple[array[int], list[str]] | None:
        """
        Every message by ascending UID if the index describes this file;
        else None: 8 integers per message (uid, start, body_start, end,
        date, size, quoted, modseq) in one array, and each message's flags text.
        The last complete snapshot is one packed BLOB (taken as it is, no
        work per message), followed by the rows appended since.
        """
        with self._lock:
            if self._db is None:
                return None
            meta = dict(self._run("SELECT key, value FROM meta"))
            if meta.get("uidvalidity") != uidvalidity or tuple(
                    meta.get(k) for k in _STAMP_KEYS) != stamp:
                return None
            snap = self._run("SELECT ints, flags FROM snapshot WHERE id = 1")
            extra = self._run("SELECT uid, start, body_start, end, date, size, quoted, "
                              "modseq, flags FROM msgs ORDER BY uid")
        ints: array[int] = array("q")
        texts: list[str] = []
        if snap and snap[0][0]:
            ints.frombytes(snap[0][0])
            if sys.byteorder != "little":  # the BLOB is _PACKED: little-endian
                ints.byteswap()
            texts = snap[0][1].split("\n")
        for row in extra:
            ints.extend(row[:PACKED_FIELDS])
            texts.append(row[PACKED_FIELDS])
        if len(ints) != PACKED_FIELDS * len(texts):
            return None  # a damaged snapshot: the file is parsed instead
        return ints, texts

    def recorded_stamp(self) -> tuple[int, int, int] | None:
        """The file's stamp the rows describe, or None when there is none."""
        with self._lock:
            if self._db is None:
                return None
            meta = dict(self._run("SELECT key, value FROM meta"))
        stamp = tuple(meta.get(k) for k in _STAMP_KEYS)
        if any(v is None for v in stamp):
            return None
        return stamp  # type: ignore[return-value]

    def _set_meta(self, values: dict[str, int]) -> None:
        assert self._db is not None
        self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", list(values.items()))

    def _write(self, replace: bool, uidvalidity: int, rows: Iterable[Row],
               stamp: tuple[int, int, int], highestmodseq: int) -> None:
        with self._lock:
            if self._db is None:
                return
            with self._transaction_locked():
                if replace:
                    ordered = sorted(rows)
                    ints = b"".join(_PACKED.pack(u, s, b, e, d, z, q, m)
                                    for u, s, b, e, _, d, z, q, m in ordered)
                    flags = "\n".join(row[4] for row in ordered)
                    self._db.execute("DELETE FROM msgs")
                    self._db.execute("INSERT OR REPLACE INTO snapshot VALUES (1, ?, ?)",
                                     (ints, flags))
                else:
                    self._db.executemany(
                        "INSERT OR REPLACE INTO msgs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        list(rows))
                meta = dict(zip(_STAMP_KEYS, stamp, strict=True))
                self._set_meta({"uidvalidity": uidvalidity, **meta})
                self._raise_meta_locked("highestmodseq", highestmodseq)

    def snapshot(self, uidvalidity: int, rows: Iterable[Row],
                 stamp: tuple[int, int, int], highestmodseq: int) -> None:
        """The whole folder as parsed or written just now, with the file's stamp."""
        self._write(True, uidvalidity, rows, stamp, highestmodseq)

    def appended(self, uidvalidity: int, rows: Iterable[Row],
                 stamp: tuple[int, int, int], highestmodseq: int) -> None:
        """Messages appended just now, and the file's stamp after the append."""
        self._write(False, uidvalidity, rows, stamp, highestmodseq)

    def forget_stamp(self) -> None:
        """Make the rows untrusted (a write of them failed)."""
        with self._lock:
            if self._db is not None:
                self._db.executemany("DELETE FROM meta WHERE key=?", [(k,) for k in _STAMP_KEYS])

    def appended_count(self) -> int:
        """Rows appended since the last snapshot (the open re-snapshots when many)."""
        with self._lock:
            if self._db is None:
                return 0
            return int(self._run("SELECT count(*) FROM msgs")[0][0])

    def raise_highestmodseq(self, value: int) -> None:
        """Record HIGHESTMODSEQ (it only ever goes up)."""
        with self._lock:
            if self._db is not None:
                self._raise_meta_locked("highestmodseq", value)
