"""
One mbox folder, :class:`MboxMailbox` (the account's layout is in
:mod:`pymail.storage.mbox`; the file format and locking in
:mod:`pymail.storage.mbox_format`; the index in
:mod:`pymail.storage.mbox_index`).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, MutableMapping, Sequence
from datetime import datetime, UTC
from typing import Any, TypeVar

import attrs
from twisted.internet.defer import Deferred, fail
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from zope.interface import implementer

from pymail.errors import NoSuchMessage, StorageError
from pymail.interfaces import IMailbox, IMailboxRestore, MessageInfo
from pymail.storage.base import (
    MailboxView,
    ViewBacked,
    apply_flag_mode,
    normalise_flags,
    paused_gc,
)
from pymail.storage.fsutil import as_bytes, to_lf, write_file_durably
from pymail.storage.index import rebuild_modseq
from pymail.storage.maildir_files import new_uidvalidity
from pymail.storage.mbox_format import (
    DOTLOCK_TIMEOUT_SECONDS,
    _ASCTIME,
    _QUOTED_FROM,
    _from_date,
    _Locked,
    _parse_meta,
    _shared_flags,
    _split_messages,
    _wire,
    _with_meta,
    write_folder,
)
from pymail.storage.mbox_entries import (
    PACKED_FIELDS,
    Entries,
    Entry as _Entry,
    last_entry,
    peek_entry,
    rows_of,
)
from pymail.storage.mbox_index import MboxIndex

log = Logger()

_T = TypeVar("_T")

#: A trusted open: the messages, their UIDs when ascending, HIGHESTMODSEQ.
_Trusted = tuple[list[MessageInfo], list[int] | None, int]

#: An open that finds more rows appended since the index's last snapshot
#: packs them all into a new snapshot (one BLOB: faster to load than rows).
REPACK_APPENDED_ROWS = 5000


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
    entries: MutableMapping[int, _Entry] = attrs.Factory(Entries)
    #: The folder's HIGHESTMODSEQ: every change is numbered here, under the
    #: folder lock, and written to the index with the rows before the view
    #: is told (the view then gives the same numbers: see MboxMailbox._tell).
    highestmodseq: int = 1


@attrs.frozen
class _Rescan:
    """What a parse of the file found changed, numbered from ``start``."""

    start: int
    gone: list[int]
    changed: dict[int, frozenset[str]]
    added: list[_Entry]


@implementer(IMailbox, IMailboxRestore)
class MboxMailbox(ViewBacked):
    """One mbox folder."""

    #: Seconds to wait for another program's dotlock before giving up.
    lock_timeout: float = DOTLOCK_TIMEOUT_SECONDS

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

    # -- the view ---------------------------------------------------------

    def uidvalidity(self) -> int:
        return self._disk.uidvalidity

    def uidnext(self) -> int:
        return self._disk.next_uid

    def read(self, uid: int) -> bytes:
        if uid not in self._view:
            raise NoSuchMessage(f"no message with UID {uid} in {self.name}")
        for _ in range(2):
            entry = peek_entry(self._disk.entries, uid)
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
        def loaded(result: _Trusted | None) -> MboxMailbox:
            if result is not None:
                infos, uids, highest = result
                self._view.load(infos, uids, highest)
            return self

        return self._in_thread(self._open_now).addCallback(loaded)

    def _open_now(self) -> _Trusted | None:
        """
        Load the folder: from the index when it describes the file as it is
        (returns the messages with the MODSEQs and HIGHESTMODSEQ recorded),
        else by parsing the file (the view is told).  A parse gives every
        message a new MODSEQ above anything a client can have seen: above
        the recorded HIGHESTMODSEQ and, when the folder has messages, above
        :func:`~pymail.storage.index.rebuild_modseq` (the index may have been
        lost, or have lost its last transactions in a system crash).
        """
        with self._lock, paused_gc():
            recorded = 0
            if self._index.ensure_open():
                recorded = self._index.meta("highestmodseq") or 0
                trusted = self._load_trusted_locked(recorded)
                if trusted is not None:
                    return trusted
            base = max(recorded, 1)
            if self._read_state()[0] or self._stamp()[1]:
                base = max(base, rebuild_modseq())
            self._disk.highestmodseq = max(self._disk.highestmodseq, base)
        with paused_gc():
            self._refresh_now()
        return None

    def _tell(self, start: int, apply: Callable[[Any], Any], change: Any) -> None:
        """
        In the reactor: apply a change to the view that the disk side
        numbered from ``start`` (its HIGHESTMODSEQ before the change).  The
        view numbers messages as the disk side did (one MODSEQ per changed
        or added message, in order; one per expunge), so the MODSEQs
        clients see are the ones in the index.
        """
        view = self._view
        if view.highestmodseq > start:
            # Never expected: the view would hand out MODSEQs the index does
            # not hold.  Raise the disk's counter past them.
            log.error("mbox {path}: view HIGHESTMODSEQ {view} ahead of the folder's {disk}",
                      path=self.path, view=view.highestmodseq, disk=start)
            apply(change)
            self._in_thread(self._catch_up_modseq, view.highestmodseq)
            return
        view.highestmodseq = start
        apply(change)

    def _catch_up_modseq(self, value: int) -> None:
        with self._lock:
            if value > self._disk.highestmodseq:
                self._disk.highestmodseq = value
                if self._index.ensure_open():
                    self._index.raise_highestmodseq(value)

    def _tell_locked(self, start: int, apply: Callable[[Any], Any], change: Any) -> None:
        """From the thread: :meth:`_tell` in the reactor, after what was told before."""
        self._to_reactor(self._tell, start, apply, change)

    def _number_locked(self, entries: Iterable[_Entry]) -> int:
        """Give each entry the next MODSEQ, in order; the HIGHESTMODSEQ before."""
        d = self._disk
        start = d.highestmodseq
        for entry in entries:
            d.highestmodseq += 1
            entry.modseq = d.highestmodseq
        return start

    def _load_trusted_locked(self, recorded: int) -> _Trusted | None:
        """
        The messages from the index, their UIDs when ascending (else None)
        and HIGHESTMODSEQ, if the index describes the file; else None.
        """
        validity, next_uid = self._read_state()
        if not validity:
            return None
        stamp = self._stamp()
        loaded = self._index.load(validity, stamp)
        grown = False
        if loaded is None:
            # Another program may only have appended since the index was
            # written: take the rows for the file as it was, then parse the
            # new tail (below), when _scan_tail_locked finds it so.
            was = self._index.recorded_stamp()
            if was is None or was[0] != stamp[0] or was[1] >= stamp[1]:
                return None
            loaded = self._index.load(validity, was)
            if loaded is None:
                return None
            stamp, grown = was, True
        ints, texts = loaded
        uid_column = ints[0::PACKED_FIELDS]
        if any(a >= b for a, b in zip(uid_column, uid_column[1:], strict=False)):
            return None  # not by ascending UID: parse the file instead
        flag_sets: dict[str, frozenset[str]] = {}
        flags = []
        for text in texts:
            shared = flag_sets.get(text)
            if shared is None:
                shared = flag_sets[text] = _shared_flags(text)
            flags.append(shared)
        infos = []
        last_date, when = -1, datetime.fromtimestamp(0, UTC)
        prefix = f"{validity}."
        info = MessageInfo
        modseqs = ints[7::PACKED_FIELDS]
        highest = max(recorded, max(modseqs, default=0), 1)
        # The view's UID list and its MessageInfos share one int per UID.
        uid_list: list[int] = uid_column.tolist()
        # The hot loop of SELECT in a fresh process: the positions in the
        # file stay packed (Entries); only the view's objects are built.
        for uid, shared, date, size, modseq in zip(uid_list, flags, ints[4::PACKED_FIELDS],
                                                   ints[5::PACKED_FIELDS], modseqs, strict=True):
            if date != last_date:  # messages of one second share one object
                last_date, when = date, datetime.fromtimestamp(date, UTC)
            infos.append(info(uid, prefix + str(uid), shared, when, size, modseq))
        entries = Entries(ints, flags)
        uids: list[int] | None = uid_list
        uid = uid_column[-1] if len(uid_column) else 0
        self._disk.uidvalidity = validity
        self._disk.next_uid = max(next_uid, uid + 1)
        self._disk.stamp = stamp
        self._disk.entries = entries
        self._disk.highestmodseq = highest
        self._index_synced = True
        if grown:
            with _Locked(self.path, self.lock_timeout):
                added = self._scan_tail_locked(tell=False)
            if added is None:
                self._disk = _Disk()
                self._index_synced = False
                return None
            infos.extend(self._info(e) for e in added)
            uids = None
        if self._index.appended_count() > REPACK_APPENDED_ROWS:
            self._index_snapshot_locked()
        return infos, uids, self._disk.highestmodseq

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
            with _Locked(self.path, self.lock_timeout):
                self._rescan_locked()

    def _rescan_locked(self) -> None:
        """Parse the file again and tell the reactor what changed since the last scan."""
        # Another pymail process may have written the file, numbering its
        # changes above ours: number ours above every MODSEQ it recorded.
        try:
            if self._index.ensure_open():
                recorded = self._index.meta("highestmodseq") or 0
                self._disk.highestmodseq = max(self._disk.highestmodseq, recorded)
        except (OSError, sqlite3.Error):
            pass
        if self._scan_tail_locked() is not None:
            return
        self._tell_rescan_locked(self._scan_locked())

    def _tell_rescan_locked(self, found: _Rescan) -> None:
        """Tell the view what a parse found, in the order its MODSEQs were given."""
        start = found.start
        if found.gone:
            self._tell_locked(start, self._view.apply_expunged, found.gone)
            start += 1
        if found.changed:
            self._tell_locked(start, self._view.apply_flags, found.changed)
            start += len(found.changed)
        if found.added:
            self._tell_locked(start, self._view.apply_added,
                              [self._info(e) for e in found.added])

    def _scan_tail_locked(self, tell: bool = True) -> list[_Entry] | None:
        """
        When another program only appended to the file (procmail, a local
        delivery agent), parse just the new messages, tell the reactor
        (when ``tell``) and return them; None (nothing done) when the file
        changed in any other way, and the caller parses it all.

        "Only appended" is checked as Dovecot does: the same inode, a larger
        size, the last known message still at its offsets (its ``From `` line
        and its ``X-UID``, followed by the blank line the old file ended with),
        and a ``From `` line right at the old end.
        """
        d = self._disk
        if not d.entries or not d.uidvalidity or self._read_state()[0] != d.uidvalidity:
            return None
        ino, old_size, _ = d.stamp
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        if st.st_ino != ino or st.st_size <= old_size:
            return None
        last = last_entry(d.entries)
        if last is None or last.end != old_size - 1:
            return None
        with open(self.path, "rb") as f:
            f.seek(last.start)
            known = f.read(old_size - last.start)
            tail = f.read()
        if not (known.startswith(b"From ") and known.endswith(b"\n\n")
                and tail.startswith(b"From ") and len(known) == old_size - last.start):
            return None
        if _parse_meta(known[last.body_start - last.start:last.end - last.start])[2] != last.uid:
            return None
        added: list[_Entry] = []
        missing: list[_Entry] = []
        seen = set(d.entries)
        for start, body_start, end, from_line, quoted in _split_messages(tail):
            stripped, flags, uid = _parse_meta(tail[body_start:end])
            when = _from_date(from_line) or datetime.fromtimestamp(0, UTC)
            entry = _Entry(0, old_size + start, old_size + body_start, old_size + end, flags,
                           when, len(_wire(stripped, quoted)), quoted)
            # An X-UID below UIDNEXT that is not a known message was given
            # before (and expunged): IMAP never gives a UID twice.
            if uid is None or uid in seen or uid < d.next_uid:
                missing.append(entry)
            else:
                entry.uid = uid
                seen.add(uid)
                added.append(entry)
        next_uid = max([d.next_uid] + [e.uid + 1 for e in added])
        for entry in missing:
            entry.uid = next_uid
            next_uid += 1
        added = sorted(added + missing, key=lambda e: e.uid)
        d.next_uid = next_uid
        start = self._number_locked(added)
        for entry in added:
            d.entries[entry.uid] = entry
        log.info("mbox {path}: {n} message(s) appended by another program", path=self.path,
                 n=len(added))
        if missing or not tail.endswith(b"\n"):
            # New messages need their X-UID headers (or the file its final
            # newline): a rewrite, which copies the clean messages as they are.
            with open(self.path, "rb") as f:
                data = f.read()
            self._rewrite_locked(data, set())
        else:
            d.stamp = self._stamp()
            self._index_snapshot_locked(appended=added)
            self._write_state()
        if tell:
            self._tell_locked(start, self._view.apply_added, [self._info(e) for e in added])
        return added

    def _info(self, entry: _Entry) -> MessageInfo:
        return MessageInfo(entry.uid, f"{self._disk.uidvalidity}.{entry.uid}", entry.flags,
                           entry.internaldate, entry.size, entry.modseq)

    def _scan_locked(self) -> _Rescan:
        """
        Parse the whole file; give UIDs to messages without one (rewriting).
        Messages another program changed, added or removed since the last
        scan get new MODSEQs (the others keep theirs); returns what changed.
        """
        validity, next_uid = self._read_state()
        if not validity:
            validity = new_uidvalidity()
        before = self._disk.entries
        if self._disk.uidvalidity and validity != self._disk.uidvalidity:
            log.warn("mbox {path}: UIDVALIDITY changed by another program", path=self.path)
            # Every message is new: the old ones are gone, whatever their UIDs.
            self._disk.entries = Entries()
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
        found = self._renumber_locked(before, entries)
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
        return found

    def _renumber_locked(self, before: MutableMapping[int, _Entry],
                         entries: dict[int, _Entry]) -> _Rescan:
        """
        Compare a parse (``entries``) with the messages known before (those
        of ``before`` still in ``self._disk.entries``, or none): the
        unchanged keep their MODSEQs; an expunge, each changed and each new
        message take the next ones (in the order the view is told).
        """
        if before is not self._disk.entries:
            gone = list(before)
            before = {}
        else:
            gone = [u for u in before if u not in entries]
        changed: dict[int, frozenset[str]] = {}
        touched = []
        added = []
        for uid in sorted(entries):
            entry = entries[uid]
            # Read without making a lasting Entry of every packed row.
            old = peek_entry(before, uid)
            if old is None:
                added.append(entry)
            elif old.flags != entry.flags:
                changed[uid] = entry.flags
                touched.append(entry)
            else:
                entry.modseq = old.modseq
        start = self._disk.highestmodseq
        if gone:
            self._disk.highestmodseq += 1
        self._number_locked(touched)
        self._number_locked(added)
        return _Rescan(start, gone, changed, added)

    def _index_snapshot_locked(self, appended: list[_Entry] | None = None) -> None:
        """
        The index now describes the file as this process knows it: all of
        it, or (``appended``, when the index was in step before) the rows of
        messages just appended.  A failure is logged, never raised: the file
        is already written, and an index without a stamp is not trusted.
        """
        try:
            if not self._index.ensure_open():
                return
            if appended is not None and self._index_synced:
                self._index.appended(self._disk.uidvalidity, [e.row() for e in appended],
                                     self._disk.stamp, self._disk.highestmodseq)
            else:
                self._index.snapshot(self._disk.uidvalidity, rows_of(self._disk.entries),
                                     self._disk.stamp, self._disk.highestmodseq)
            self._index_synced = True
        except (OSError, sqlite3.Error) as e:
            self._index_synced = False
            log.warn("mbox {path}: could not update the index ({error}); the next open "
                     "parses the file", path=self.path, error=str(e))
            try:
                self._index.forget_stamp()
            except (OSError, sqlite3.Error):
                pass

    def _rewrite_locked(self, data: bytes, drop: set[int]) -> None:
        """
        Write the folder anew (without the UIDs in ``drop``) beside the old
        file, fsync, and rename it into place.
        """
        kept = (e for e in self._disk.entries.values() if e.uid not in drop)
        offsets = write_folder(self.path, data, sorted(kept, key=lambda e: e.start))
        for uid in drop:
            self._disk.entries.pop(uid, None)
        for uid, (start, body_start, end) in offsets.items():
            e = self._disk.entries[uid]
            e.start, e.body_start, e.end, e.quoted, e.clean = start, body_start, end, True, True
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
            self._rescan_locked()
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
        return self._in_thread(self._append, as_bytes(message), flagset, when)

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
                    with _Locked(self.path, self.lock_timeout):
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
                                  p.flags, p.when, p.size, clean=True))
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
        start = self._number_locked(entries)
        for p, entry in zip(batch, entries, strict=True):
            self._disk.entries[entry.uid] = entry
            p.uid, p.done = entry.uid, True
        self._disk.stamp = self._stamp()
        self._index_snapshot_locked(appended=entries)
        self._tell_locked(start, self._view.apply_added, [self._info(e) for e in entries])

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
        with self._lock, _Locked(self.path, self.lock_timeout):
            data = self._sync_locked()
            changed: dict[int, frozenset[str]] = {}
            touched = []
            done = []
            for uid in uids:
                entry = self._disk.entries.get(uid)
                if entry is None:
                    continue
                done.append(uid)
                new = apply_flag_mode(entry.flags, flags, mode)
                if new != entry.flags:
                    entry.flags, entry.clean = new, False
                    changed[uid] = new
                    touched.append(entry)
            if changed:
                start = self._number_locked(touched)
                self._rewrite_locked(data, set())
                self._tell_locked(start, self._view.apply_flags, changed)
        return done

    def expunge(self, uids: Iterable[int] | None = None) -> Deferred[list[int]]:
        allowed = None if uids is None else set(uids)
        return self._in_thread(self._expunge, allowed)

    def _expunge(self, allowed: set[int] | None) -> list[int]:
        with self._lock, _Locked(self.path, self.lock_timeout):
            data = self._sync_locked()
            doomed = sorted(
                u for u, e in self._disk.entries.items()
                if "\\Deleted" in e.flags and (allowed is None or u in allowed)
            )
            if doomed:
                start = self._disk.highestmodseq
                self._disk.highestmodseq += 1
                self._rewrite_locked(data, set(doomed))
                self._tell_locked(start, self._view.apply_expunged, doomed)
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
        with self._lock, _Locked(self.path, self.lock_timeout):
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
            self._tell_rescan_locked(self._scan_locked())

    def _move_all_to(self, target: MboxMailbox) -> None:
        """RENAME INBOX: copy every message to the empty ``target``, then empty this file."""
        with self._lock, _Locked(self.path, self.lock_timeout):
            data = self._sync_locked()
            moved = sorted(self._disk.entries)
            target._disk.uidvalidity = new_uidvalidity()
            target._disk.next_uid = self._disk.next_uid
            target._disk.highestmodseq = self._disk.highestmodseq
            target._disk.entries = {u: attrs.evolve(e) for u, e in self._disk.entries.items()}
            with _Locked(target.path, self.lock_timeout):
                target._rewrite_locked(data, set())
                target._write_state()
            start = self._disk.highestmodseq
            if moved:
                self._disk.highestmodseq += 1
            self._rewrite_locked(data, set(moved))
            self._cache.clear()
            if moved:
                self._tell_locked(start, self._view.apply_expunged, moved)
