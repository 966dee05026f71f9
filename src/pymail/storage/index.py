"""
A per-folder index in SQLite: UID, INTERNALDATE, size and MODSEQ of each
message, the folder's HIGHESTMODSEQ, and cached derived values (parsed
ENVELOPE and BODYSTRUCTURE), so opening and FETCHing a large folder does
not stat or read every message.

The mail files stay the truth.  The index only ever speeds things up: a
missing, truncated or corrupt index is deleted and rebuilt from the files
(a log line says so), and nothing but MODSEQ history lives only here.  After
a rebuild, HIGHESTMODSEQ restarts from the current time in milliseconds, so
it is still above any MODSEQ a client saw before (RFC 7162 forbids going
back).

All access goes through one lock: the connection is shared by the reactor
thread (cache reads) and the thread pool (writes).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from typing import Any

from twisted.logger import Logger

log = Logger()

INDEX_FILE = "pymail-index.sqlite"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS msgs (
    uid INTEGER PRIMARY KEY, base TEXT NOT NULL, date REAL NOT NULL,
    size INTEGER NOT NULL, modseq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS cache (
    uid INTEGER NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (uid, name));
"""


def encode_value(value: Any) -> str:
    """Nested tuples/lists of bytes, str, int, None -> JSON text (bytes tagged)."""

    def convert(v: Any) -> Any:
        if isinstance(v, bytes):
            return {"b": v.decode("latin-1")}
        if isinstance(v, (tuple, list)):
            return [convert(x) for x in v]
        if v is None or isinstance(v, (str, int)):
            return v
        raise TypeError(f"cannot cache a value of type {type(v).__name__}")

    return json.dumps(convert(value), separators=(",", ":"))


def decode_value(text: str) -> Any:
    """The inverse of :func:`encode_value` (lists come back as tuples)."""

    def convert(v: Any) -> Any:
        if isinstance(v, dict):
            return v["b"].encode("latin-1")
        if isinstance(v, list):
            return tuple(convert(x) for x in v)
        return v

    return convert(json.loads(text))


def rebuild_modseq() -> int:
    """The HIGHESTMODSEQ a rebuilt index starts from (see the module docstring)."""
    return time.time_ns() // 1_000_000


class FolderIndex:
    """The index of one folder, in ``<folder>/pymail-index.sqlite``."""

    def __init__(self, folder: str) -> None:
        self.path = os.path.join(folder, INDEX_FILE)
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self.rebuilt = False

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        version = db.execute("SELECT value FROM meta WHERE key='version'").fetchone()
        if version is None:
            db.execute("INSERT INTO meta VALUES ('version', ?)", (SCHEMA_VERSION,))
        elif version[0] != SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"index schema {version[0]}, expected {SCHEMA_VERSION}")
        db.execute("SELECT count(*) FROM msgs").fetchone()
        return db

    def open(self) -> None:
        """Open the index, replacing it if it is unreadable."""
        with self._lock:
            existed = os.path.exists(self.path)
            try:
                self._db = self._connect()
                self.rebuilt = not existed
            except sqlite3.DatabaseError as e:
                log.warn("index {path} is unreadable ({error}); rebuilding it from the mail "
                         "files", path=self.path, error=str(e))
                self._remove_files()
                self._db = self._connect()
                self.rebuilt = True

    def _remove_files(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            try:
                os.unlink(self.path + suffix)
            except FileNotFoundError:
                pass

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _run(self, sql: str, args: Iterable[Any] = ()) -> list[Any]:
        assert self._db is not None, "index not open"
        return self._db.execute(sql, tuple(args)).fetchall()

    def meta(self, key: str) -> int | None:
        with self._lock:
            row = self._run("SELECT value FROM meta WHERE key=?", (key,))
        return row[0][0] if row else None

    def rows(self) -> dict[int, tuple[str, float, int, int]]:
        """uid -> (base, date, size, modseq)."""
        with self._lock:
            return {r[0]: (r[1], r[2], r[3], r[4])
                    for r in self._run("SELECT uid, base, date, size, modseq FROM msgs")}

    def reset(self, uidvalidity: int, highestmodseq: int) -> None:
        """Forget every message (a new UIDVALIDITY or a rebuild)."""
        with self._lock:
            assert self._db is not None
            self._db.execute("BEGIN")
            self._run("DELETE FROM msgs")
            self._run("DELETE FROM cache")
            self._run("INSERT OR REPLACE INTO meta VALUES ('uidvalidity', ?)", (uidvalidity,))
            self._run("INSERT OR REPLACE INTO meta VALUES ('highestmodseq', ?)",
                      (highestmodseq,))
            self._db.execute("COMMIT")

    def update(self, upsert: Iterable[tuple[int, str, float, int, int]] = (),
               modseqs: Iterable[tuple[int, int]] = (), delete: Iterable[int] = (),
               highestmodseq: int | None = None) -> None:
        """One transaction: add or replace rows, change MODSEQs, delete UIDs."""
        with self._lock:
            if self._db is None:
                return
            self._db.execute("BEGIN")
            try:
                # Writes may arrive out of order from the thread pool: a row
                # only ever moves forward in MODSEQ.
                self._db.executemany(
                    "INSERT INTO msgs VALUES (?, ?, ?, ?, ?) ON CONFLICT(uid) DO UPDATE SET "
                    "base=excluded.base, date=excluded.date, size=excluded.size, "
                    "modseq=excluded.modseq WHERE excluded.modseq >= msgs.modseq",
                    list(upsert))
                self._db.executemany("UPDATE msgs SET modseq=max(modseq, ?) WHERE uid=?",
                                     [(m, u) for u, m in modseqs])
                gone = [(u,) for u in delete]
                self._db.executemany("DELETE FROM msgs WHERE uid=?", gone)
                self._db.executemany("DELETE FROM cache WHERE uid=?", gone)
                if highestmodseq is not None:
                    self._run("INSERT INTO meta VALUES ('highestmodseq', ?) ON CONFLICT(key) "
                              "DO UPDATE SET value=max(value, excluded.value)",
                              (highestmodseq,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def get_cached(self, uid: int, name: str) -> Any:
        """The cached value, or ``KeyError``."""
        with self._lock:
            if self._db is None:
                raise KeyError(uid)
            row = self._run("SELECT value FROM cache WHERE uid=? AND name=?", (uid, name))
        if not row:
            raise KeyError(uid)
        return decode_value(row[0][0])

    def put_cached(self, uid: int, name: str, value: Any) -> None:
        text = encode_value(value)
        with self._lock:
            if self._db is not None:
                self._run("INSERT OR REPLACE INTO cache VALUES (?, ?, ?)", (uid, name, text))
