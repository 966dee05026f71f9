"""
A per-folder index in SQLite: UID, INTERNALDATE, size and MODSEQ of each
message, the folder's HIGHESTMODSEQ, and cached derived values (parsed
ENVELOPE and BODYSTRUCTURE), so opening and FETCHing a large folder does
not stat or read every message.

The mail files stay the truth.  The index only ever speeds things up: a
missing, truncated or corrupt index is deleted and rebuilt from the files
(a log line says so), and nothing but MODSEQ history lives only here, with
one exception: a Maildir flag change is acknowledged once it is recorded in
the ``renames`` table, and its file renames follow right after (see
:meth:`FolderIndex.add_renames`); an index replaced at the next open hands
them to the new one when its ``renames`` table can still be read, and an
unreadable one loses the flag changes whose renames a crash cut short.  After
a rebuild, HIGHESTMODSEQ restarts from the current time in milliseconds, so
it is still above any MODSEQ a client saw before (RFC 7162 forbids going
back).

All access goes through one lock: the connection is shared by the reactor
thread (cache reads) and the thread pool (writes).

The sync record: after a full scan of the folder that saw every change
(the folder had been quiet for longer than the file system's timestamp
granularity), the backend stores what the folder's stamps (directory
mtimes, uidlist inode and size) were.  A later open that finds the same
stamps trusts the rows and loads them in one query, without listing the
directories.  The record is written through the same ordered queue as the
rows (:class:`IndexQueue`), so it never claims rows that have not landed.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from pymail.storage.fsutil import fsync_dir

log = Logger()

INDEX_FILE = "pymail-index.sqlite"

#: Kinds of row writes for :meth:`FolderIndex.apply` and :class:`IndexQueue`.
UPSERT = "upsert"
RENAMED = "renamed"
DELETE = "delete"

# A process's writes are applied in the order it queued them (IndexQueue),
# so each takes the row's file name as that process last knew it.  The
# MODSEQ only moves forward: another process that opened the folder while
# this one's rows were waiting may have numbered the row higher (it did
# not trust the rows), and a number a client saw there must not be undercut.
_WRITES = {
    UPSERT: "INSERT INTO msgs VALUES (?, ?, ?, ?, ?) ON CONFLICT(uid) DO UPDATE SET "
            "base=excluded.base, date=excluded.date, size=excluded.size, "
            "modseq=max(msgs.modseq, excluded.modseq)",
    RENAMED: "UPDATE msgs SET base=?1, modseq=max(modseq, ?2) WHERE uid=?3",
}
SCHEMA_VERSION = 2

#: The ``meta`` key of the bound on MODSEQs handed out (see
#: FolderIndex.raise_modseq_upper).
MODSEQ_UPPER = "modseq_upper"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS msgs (
    uid INTEGER PRIMARY KEY, base TEXT NOT NULL, date INTEGER NOT NULL,
    size INTEGER NOT NULL, modseq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS sync (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS cache (
    uid INTEGER NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (uid, name));
CREATE TABLE IF NOT EXISTS renames (batch INTEGER PRIMARY KEY, names BLOB NOT NULL);
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


class SqliteIndex:
    """
    One SQLite index file: opened in WAL mode (no fsync per transaction:
    the mail files are the truth), replaced when unreadable, with a
    ``meta`` table of integers and a schema version.

    :param path: the file.
    :param schema: the tables (``CREATE TABLE IF NOT EXISTS``; must create
        ``meta`` and ``msgs``).
    :param version: the schema version; an index of another version is
        rebuilt.
    """

    def __init__(self, path: str, schema: str = _SCHEMA, version: int = SCHEMA_VERSION) -> None:
        self.path = path
        self._schema = schema
        self._version = version
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self.rebuilt = False

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(self._schema)
        version = db.execute("SELECT value FROM meta WHERE key='version'").fetchone()
        if version is None:
            db.execute("INSERT INTO meta VALUES ('version', ?)", (self._version,))
        elif version[0] != self._version:
            raise sqlite3.DatabaseError(f"index schema {version[0]}, expected {self._version}")
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

    def _raise_meta_locked(self, key: str, value: int) -> None:
        """Set the ``meta`` value ``key`` to ``value`` unless it is higher already."""
        self._run("INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) "
                  "DO UPDATE SET value=max(value, excluded.value)", (key, value))

    @contextlib.contextmanager
    def _transaction_locked(self) -> Iterator[sqlite3.Connection]:
        """BEGIN, then COMMIT, or ROLLBACK and re-raise on any error."""
        db = self._db
        assert db is not None, "index not open"
        db.execute("BEGIN")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    @contextlib.contextmanager
    def _full_sync_locked(self) -> Iterator[sqlite3.Connection]:
        """Commits inside are fsynced before they return (``synchronous=FULL``)."""
        db = self._db
        assert db is not None, "index not open"
        db.execute("PRAGMA synchronous=FULL")
        try:
            yield db
        finally:
            db.execute("PRAGMA synchronous=NORMAL")


class FolderIndex(SqliteIndex):
    """The index of one Maildir folder, in ``<folder>/pymail-index.sqlite``."""

    def __init__(self, folder: str) -> None:
        super().__init__(os.path.join(folder, INDEX_FILE))
        #: Recorded flag renames read from an index being replaced.
        self._salvaged: list[str] = []

    def open(self) -> None:
        """
        :meth:`SqliteIndex.open`; an index replaced because it was unreadable
        or of another schema version hands its recorded flag renames (which
        are acknowledged changes, see :meth:`add_renames`) to the new one.
        """
        super().open()
        salvaged, self._salvaged = self._salvaged, []
        if salvaged:
            self.add_renames(salvaged)
            log.info("index {path}: kept {count} recorded flag rename(s) from the index it "
                     "replaced", path=self.path, count=len(salvaged))

    def _remove_files(self) -> None:
        try:
            db = sqlite3.connect(self.path)
            try:
                rows = db.execute("SELECT names FROM renames ORDER BY batch").fetchall()
            finally:
                db.close()
            self._salvaged = [n for (blob,) in rows if blob
                              for n in bytes(blob).decode("utf-8", "surrogateescape").split("\0")]
        except sqlite3.Error as e:
            log.warn("index {path}: recorded flag renames unreadable ({error}); changes a "
                     "crash cut short may be lost", path=self.path, error=str(e))
        super()._remove_files()

    def rows(self) -> dict[int, tuple[str, int, int, int]]:
        """uid -> (base, date, size, modseq)."""
        with self._lock:
            return {r[0]: (r[1], r[2], r[3], r[4])
                    for r in self._run("SELECT uid, base, date, size, modseq FROM msgs")}

    def ordered_rows(self) -> list[tuple[int, str, int, int, int]]:
        """Every (uid, base, date, size, modseq), by ascending UID, in one query."""
        with self._lock:
            return self._run("SELECT uid, base, date, size, modseq FROM msgs ORDER BY uid")

    def add_renames(self, names: Iterable[str]) -> int:
        """
        Record the new names (paths relative to the folder) of flag renames
        that are acknowledged before they are done, durably: one row for
        the batch (the names NUL-separated: no file name holds a NUL), in a
        transaction committed with ``synchronous=FULL`` (the WAL is fsynced
        before this returns), then the folder directory that holds the index
        files is fsynced (the -wal file may be new since the open).  Returns
        the batch's number, for :meth:`renames_done`; a failure after the
        insert takes the row back out (the change is not acknowledged, so a
        later open must not apply it).  See
        :meth:`pymail.storage.maildir_folder.MaildirMailbox.set_flags`.
        """
        blob = "\0".join(names).encode("utf-8", "surrogateescape")
        with self._lock, self._full_sync_locked() as db:
            batch = db.execute("INSERT INTO renames (names) VALUES (?)", (blob,)).lastrowid
            assert batch is not None
            try:
                fsync_dir(os.path.dirname(self.path) or ".")
            except BaseException:
                db.execute("DELETE FROM renames WHERE batch=?", (batch,))
                raise
        return batch

    def renames(self) -> list[str]:
        """The new names of the recorded flag renames not yet marked done, in order."""
        return [n for names in self.renames_by_batch().values() for n in names]

    def renames_by_batch(self) -> dict[int, list[str]]:
        """The recorded flag renames not yet marked done: batch -> new names, in order."""
        with self._lock:
            if self._db is None:
                return {}
            rows = self._run("SELECT batch, names FROM renames ORDER BY batch")
        return {batch: blob.decode("utf-8", "surrogateescape").split("\0")
                for batch, blob in rows}

    def renames_done(self, batches: Iterable[int]) -> None:
        """
        Forget the recorded flag renames of ``batches`` (every one of them
        is done and fsynced).  Only those: another process sharing the
        folder may have recorded renames it has not done yet.  Committed
        with ``synchronous=FULL``: a later flag change of the same files may
        be acknowledged right after this (renamed before its answer, with no
        index write of its own), and a batch a power loss brought back would
        be redone by the next open, reverting that change.
        """
        done = [(b,) for b in batches]
        with self._lock:
            if self._db is not None and done:
                with self._full_sync_locked(), self._transaction_locked() as db:
                    db.executemany("DELETE FROM renames WHERE batch=?", done)

    def modseq_upper(self) -> int:
        """The recorded bound on the MODSEQs handed out (0: none; see raise_modseq_upper)."""
        return self.meta(MODSEQ_UPPER) or 0

    def raise_modseq_upper(self, value: int) -> None:
        """
        Record that MODSEQs up to ``value`` may be handed out, before any
        client is told of them: the rows and HIGHESTMODSEQ are written
        behind the answers that show them, so an open after a ``kill -9``
        that does not trust the rows numbers above this instead.  One
        statement, not fsynced (a process's death loses no completed write).
        """
        with self._lock:
            if self._db is not None:
                self._raise_meta_locked(MODSEQ_UPPER, value)

    def sync_record(self) -> dict[str, int]:
        """The stamps of the last complete sync (empty when there is none)."""
        with self._lock:
            if self._db is None:
                return {}
            return dict(self._run("SELECT key, value FROM sync"))

    def _write_sync(self, record: dict[str, int] | None) -> None:
        assert self._db is not None
        self._db.execute("DELETE FROM sync")
        if record:
            self._db.executemany("INSERT INTO sync VALUES (?, ?)", list(record.items()))

    def set_sync(self, record: dict[str, int] | None) -> None:
        """Replace the sync record (``None`` forgets it)."""
        with self._lock:
            if self._db is not None:
                self._write_sync(record)

    def reset(self, uidvalidity: int, highestmodseq: int) -> None:
        """Forget every message (a new UIDVALIDITY or a rebuild)."""
        with self._lock:
            assert self._db is not None
            self._db.execute("BEGIN")
            self._run("DELETE FROM msgs")
            self._run("DELETE FROM cache")
            self._write_sync(None)
            self._run("INSERT OR REPLACE INTO meta VALUES ('uidvalidity', ?)", (uidvalidity,))
            self._run("INSERT OR REPLACE INTO meta VALUES ('highestmodseq', ?)",
                      (highestmodseq,))
            self._db.execute("COMMIT")

    def apply(self, ops: Iterable[tuple[str, Iterable[Any]]],
              highestmodseq: int | None = None,
              sync: dict[str, int] | None = None) -> None:
        """
        One transaction: the operations in order, each a kind and its rows
        (:data:`UPSERT` ``(uid, base, date, size, modseq)``; :data:`RENAMED`
        ``(base, modseq, uid)``; :data:`DELETE` uids), then HIGHESTMODSEQ and
        (when given) the sync record.
        """
        with self._lock:
            if self._db is None:
                return
            with self._transaction_locked() as db:
                for kind, rows in ops:
                    if kind == DELETE:
                        gone = [(u,) for u in rows]
                        db.executemany("DELETE FROM msgs WHERE uid=?", gone)
                        db.executemany("DELETE FROM cache WHERE uid=?", gone)
                    else:
                        db.executemany(_WRITES[kind], rows)
                if highestmodseq is not None:
                    self._raise_meta_locked("highestmodseq", highestmodseq)
                if sync is not None:
                    self._write_sync(sync)

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

    def get_cached_many(self, uids: Iterable[int], name: str) -> dict[int, Any]:
        """The cached values ``name`` of those of ``uids`` that have one, in one query."""
        wanted = sorted(set(uids))
        if not wanted:
            return {}
        with self._lock:
            if self._db is None:
                return {}
            rows = self._run(
                "SELECT uid, value FROM cache WHERE name=? AND uid BETWEEN ? AND ?",
                (name, wanted[0], wanted[-1]))
        keep = set(wanted)
        return {uid: decode_value(text) for uid, text in rows if uid in keep}

    def put_cached_many(self, name: str, values: dict[int, Any]) -> None:
        """Store the values ``name`` of many messages in one transaction."""
        rows = [(uid, name, encode_value(v)) for uid, v in values.items()]
        if not rows:
            return
        with self._lock:
            if self._db is None:
                return
            with self._transaction_locked() as db:
                db.executemany("INSERT OR REPLACE INTO cache VALUES (?, ?, ?)", rows)


class IndexQueue:
    """
    Index writes from the reactor thread, applied in order by one thread-pool
    job at a time: everything queued while a write waits or runs goes into
    the next transaction.

    With ``delay`` (seconds) and ``call_later`` (the reactor's), a write
    waits that long after the first change queued since the last one, so a
    burst of deliveries costs one transaction and one thread hand-off per
    ``delay``, not one per commit group.  The index is behind the answers
    anyway (a ``kill -9`` loses what was queued, which the next open finds
    by its sync record), so waiting costs nothing but that window; measured
    on 4 KiB SMTP deliveries at 10 connections, writing per group instead of
    every 50 ms cost a quarter of the throughput (docs/performance.md).

    :param run_in_thread: runs a callable in the thread pool; returns a
        Deferred.
    """

    def __init__(self, index: FolderIndex, run_in_thread: Callable[..., Deferred[Any]],
                 call_later: Callable[..., Any] | None = None, delay: float = 0.0) -> None:
        self._index = index
        self._run_in_thread = run_in_thread
        self._call_later = call_later
        self._delay = delay
        self._lock = threading.Lock()
        #: Held by the job that takes and applies a batch: a second job
        #: (a :meth:`flush` while one runs) waits, so batches stay in order.
        self._apply_lock = threading.Lock()
        #: Row writes in the order they were queued, each a kind and its rows
        #: (applied in order in one transaction: a later write wins, as the
        #: rows were queued; no per-row work on the reactor thread).
        self._ops: list[tuple[str, Iterable[Any]]] = []
        self._highest: int | None = None
        self._sync: dict[str, int] | None = None
        #: A write is due (waiting for its delay) or running.
        self._busy = False
        #: The pending delayed call (reactor thread only, as are add(),
        #: _due() and flush(); _due() clears it before it writes).
        self._timer: Any = None

    def add(self, upsert: Iterable[tuple[int, str, int, int, int]] = (),
            delete: Iterable[int] = (), highestmodseq: int | None = None,
            sync: dict[str, int] | None = None,
            renamed: Iterable[tuple[str, int, int]] = ()) -> None:
        """
        Queue rows, deletions, renames ``(base, modseq, uid)`` (a message
        whose file name and MODSEQ changed: a flag change), a HIGHESTMODSEQ
        and a sync record (in this order).  Reactor thread only.
        """
        with self._lock:
            for kind, rows in ((UPSERT, upsert), (DELETE, delete), (RENAMED, renamed)):
                if rows:
                    self._ops.append((kind, rows))
            if highestmodseq is not None:
                self._highest = max(self._highest or 0, highestmodseq)
            # A change queued after a sync record makes the record stale
            # only if the folder's stamps moved, which a later open checks.
            if sync is not None:
                self._sync = sync
            start = not self._busy
            self._busy = True
        if not start:
            return
        if self._delay > 0 and self._call_later is not None:
            self._timer = self._call_later(self._delay, self._due)
        else:
            self._run_in_thread(self._drain)

    def _due(self) -> None:
        self._timer = None
        self._run_in_thread(self._drain)

    def flush(self) -> Deferred[None]:
        """
        Write what is queued now rather than after the delay, and every
        later change at once: the service does it when it stops, and
        sessions still open may change the folder until the reactor stops
        (a delayed call would never run).  Reactor thread only; fires once
        it is written (or its failure logged).
        """
        self._delay = 0.0
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        return self._run_in_thread(self._drain)

    def _drain(self) -> None:
        with self._apply_lock:
            self._drain_locked()

    def _drain_locked(self) -> None:
        while True:
            with self._lock:
                if not (self._ops or self._highest or self._sync):
                    self._busy = False
                    return
                ops = self._ops
                highest, sync = self._highest, self._sync
                self._ops, self._highest, self._sync = [], None, None
            try:
                self._index.apply(ops, highest, sync)
            except Exception:
                log.failure("index {path}: write failed (the next open checks every file)",
                            path=self._index.path)
                try:
                    self._index.set_sync(None)
                except Exception:
                    pass
                with self._lock:
                    self._busy = False
                return
