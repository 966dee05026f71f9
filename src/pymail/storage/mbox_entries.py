"""
Where each message of an mbox folder is in its file (:class:`Entry`), and
the per-folder table of them (:class:`Entries`).

An open of a big folder takes its rows from the index as one packed array
of integers (see :mod:`pymail.storage.mbox_index`) and keeps them packed:
about 70 bytes a message instead of an object of about 250, and no object
built per message at open.  A message becomes an :class:`Entry` the first
time it is asked for (a read, a flag change, a rewrite); from then on it is
an ordinary object that the folder changes in place.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterator, MutableMapping
from datetime import datetime, UTC

import attrs

from pymail.storage.mbox_index import PACKED_FIELDS, Row

#: In an index row's ``quoted`` column: the message is clean (see Entry.clean).
CLEAN_BIT = 2

_FLAG_TEXT: dict[frozenset[str], str] = {}


def flags_text(flags: frozenset[str]) -> str:
    """The index's text for a flag set (space-separated, sorted), one string per set."""
    text = _FLAG_TEXT.get(flags)
    if text is None:
        text = _FLAG_TEXT[flags] = " ".join(sorted(flags))
    return text


@attrs.define
class Entry:
    """One message in the file: where it is and what its headers say."""

    uid: int
    start: int  # offset of the "From " line
    body_start: int  # offset just after the "From " line
    end: int  # offset just after the message (before the separating blank line)
    flags: frozenset[str]
    internaldate: datetime
    size: int
    quoted: bool = True  # "From " lines in the body are mboxrd-quoted
    #: The file holds exactly what a rewrite would write for this message
    #: (pymail wrote it, and its flags have not changed since): a rewrite
    #: copies its bytes instead of parsing and rebuilding them.
    clean: bool = False
    #: The message's MODSEQ (RFC 7162), given by the folder under its lock.
    modseq: int = 0

    def row(self) -> Row:
        return (self.uid, self.start, self.body_start, self.end, flags_text(self.flags),
                int(self.internaldate.timestamp()), self.size,
                int(self.quoted) | (CLEAN_BIT if self.clean else 0), self.modseq)


class Entries(MutableMapping[int, Entry]):
    """
    UID -> :class:`Entry`: packed rows (strictly ascending UIDs) plus the
    messages that became objects (asked for, added or replaced).

    :param packed: ``PACKED_FIELDS`` integers per message, as the index
        stores them, by ascending UID.
    :param flags: each packed message's flag set (shared objects).
    """

    def __init__(self, packed: array[int] | None = None,
                 flags: list[frozenset[str]] | None = None) -> None:
        self._packed = packed if packed is not None else array("q")
        self._flags = flags if flags is not None else []
        self._uids = self._packed[0::PACKED_FIELDS]
        #: Packed rows no longer valid here: deleted, or now in ``_live``.
        self._dropped: set[int] = set()
        self._live: dict[int, Entry] = {}

    def _position(self, uid: int) -> int:
        uids = self._uids
        pos = bisect.bisect_left(uids, uid)
        if pos < len(uids) and uids[pos] == uid and uid not in self._dropped:
            return pos
        return -1

    def _unpack(self, pos: int) -> Entry:
        base = pos * PACKED_FIELDS
        uid, start, body_start, end, date, size, quoted, modseq = \
            self._packed[base:base + PACKED_FIELDS]
        return Entry(uid, start, body_start, end, self._flags[pos],
                     datetime.fromtimestamp(date, UTC), size, quoted & 1 == 1,
                     quoted & CLEAN_BIT != 0, modseq)

    def __getitem__(self, uid: int) -> Entry:
        entry = self._live.get(uid)
        if entry is not None:
            return entry
        pos = self._position(uid)
        if pos < 0:
            raise KeyError(uid)
        # From now on an object the folder may change in place.
        entry = self._live[uid] = self._unpack(pos)
        self._drop(uid)
        return entry

    def peek(self, uid: int) -> Entry | None:
        """
        The message's entry for reading only (a read of its bytes): a packed
        one is unpacked into a temporary object and stays packed.
        """
        entry = self._live.get(uid)
        if entry is None:
            pos = self._position(uid)
            if pos >= 0:
                entry = self._unpack(pos)
        return entry

    def __setitem__(self, uid: int, entry: Entry) -> None:
        if uid not in self._live and self._position(uid) >= 0:
            self._drop(uid)
        self._live[uid] = entry

    def __delitem__(self, uid: int) -> None:
        if self._live.pop(uid, None) is not None:
            return
        if self._position(uid) < 0:
            raise KeyError(uid)
        self._drop(uid)

    def _drop(self, uid: int) -> None:
        """A packed row is no longer valid; when none is left, free the arrays."""
        self._dropped.add(uid)
        if len(self._dropped) == len(self._uids):
            self._packed, self._flags, self._uids = array("q"), [], array("q")
            self._dropped = set()

    def __contains__(self, uid: object) -> bool:
        return uid in self._live or (isinstance(uid, int) and self._position(uid) >= 0)

    def __iter__(self) -> Iterator[int]:
        # Both taken before the first key is given: iterating values()
        # unpacks each message into _live, which must not yield it again.
        dropped = self._dropped
        packed = [uid for uid in self._uids if uid not in dropped]
        live = list(self._live)
        yield from packed
        yield from live

    def __len__(self) -> int:
        return len(self._uids) - len(self._dropped) + len(self._live)

    def clear(self) -> None:
        self._packed, self._flags, self._uids = array("q"), [], array("q")
        self._dropped.clear()
        self._live.clear()

    def last(self) -> Entry | None:
        """The message that starts last in the file, or None."""
        best: Entry | None = max(self._live.values(), key=lambda e: e.start, default=None)
        packed, dropped = self._packed, self._dropped
        starts = packed[1::PACKED_FIELDS]
        latest = max(starts, default=-1)
        if len(starts) and (best is None or latest > best.start):
            # Packed rows are in UID order, not file order: the largest start
            # that is still valid (usually simply the largest).
            top = starts.index(latest)
            if packed[top * PACKED_FIELDS] not in dropped:
                return self[packed[top * PACKED_FIELDS]]
            order = sorted(range(len(starts)), key=starts.__getitem__, reverse=True)
            for pos in order:
                if best is not None and starts[pos] <= best.start:
                    break
                if packed[pos * PACKED_FIELDS] not in dropped:
                    return self[packed[pos * PACKED_FIELDS]]
        return best

    def rows(self) -> list[Row]:
        """Every message's index row, without making objects of the packed ones."""
        out: list[Row] = [e.row() for e in self._live.values()]
        packed, dropped, flags = self._packed, self._dropped, self._flags
        for pos, uid in enumerate(self._uids):
            if uid not in dropped:
                base = pos * PACKED_FIELDS
                _, start, body_start, end, date, size, quoted, modseq = \
                    packed[base:base + PACKED_FIELDS]
                out.append((uid, start, body_start, end, flags_text(flags[pos]), date, size,
                            quoted, modseq))
        return out


def peek_entry(entries: MutableMapping[int, Entry], uid: int) -> Entry | None:
    """The entry of ``uid`` for reading only (see :meth:`Entries.peek`), or None."""
    if isinstance(entries, Entries):
        return entries.peek(uid)
    return entries.get(uid)


def last_entry(entries: MutableMapping[int, Entry]) -> Entry | None:
    """The message of ``entries`` that starts last in the file, or None."""
    if isinstance(entries, Entries):
        return entries.last()
    return max(entries.values(), key=lambda e: e.start, default=None)


def rows_of(entries: MutableMapping[int, Entry]) -> list[Row]:
    """The index rows of every message of ``entries``."""
    if isinstance(entries, Entries):
        return entries.rows()
    return [e.row() for e in entries.values()]
