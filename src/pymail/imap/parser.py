"""
The IMAP tokenizer: a cursor over one whole command (as the reader gives
it, literals inline) with one method per grammar element of RFC 3501
section 9.  Command argument parsers (in :mod:`pymail.imap.commands`) are
built from these methods; anything malformed raises :class:`ParseError`,
which the server answers with a tagged BAD and no change of state.
"""

from __future__ import annotations

import functools
import re
from datetime import datetime, timedelta, timezone, UTC

import attrs

#: ATOM-CHAR: any CHAR except atom-specials (RFC 3501 section 9).
_ATOM = re.compile(rb"[^\x00-\x20\x7f-\xff(){%*\"\\\]]+")
#: ASTRING-CHAR adds "]" to ATOM-CHAR.
_ASTRING_ATOM = re.compile(rb"[^\x00-\x20\x7f-\xff(){%*\"\\]+")
#: list-mailbox adds the wildcards "%" and "*" (and "]").
_LIST_ATOM = re.compile(rb"[^\x00-\x20\x7f-\xff(){\"\\]+")
#: a tag is an ASTRING-CHAR run without "+".
_TAG = re.compile(rb"[^\x00-\x20\x7f-\xff(){%*\"\\+]+")
_NUMBER = re.compile(rb"[0-9]+")
_NUMBER64 = re.compile(rb"[0-9]{1,20}")
_LITERAL = re.compile(rb"\{([0-9]+)(\+?)\}\r\n")
_QUOTED = re.compile(rb'"((?:[^"\\\r\n\x00]|\\["\\])*)"')
_UNESCAPE = re.compile(rb'\\(["\\])')
_SEQ_SET = re.compile(rb"(?:[0-9]+|\*)(?::(?:[0-9]+|\*))?(?:,(?:[0-9]+|\*)(?::(?:[0-9]+|\*))?)*")
_DATE = re.compile(rb"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})")
_DATE_TIME = re.compile(
    rb'"([ 0-9][0-9])-([A-Za-z]{3})-([0-9]{4}) '
    rb'([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})"'
)
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_NUMBER = {m.lower().encode(): i + 1 for i, m in enumerate(MONTHS)}

#: the largest number IMAP allows (number = 32 bit unsigned).
MAX_NUMBER = 4294967295


class ParseError(Exception):
    """A command that does not follow the grammar; ``str()`` says what was wrong."""


@attrs.frozen
class SequenceSet:
    """
    A sequence set: ranges ``(first, last)`` where ``None`` stands for ``*``.
    Ranges are kept as written; :mod:`pymail.imap.session` resolves them.
    """

    ranges: tuple[tuple[int | None, int | None], ...]


class Cursor:
    """
    Reads the grammar elements of one command in order.

    :ivar data: the whole command, literals inline, no final CRLF.
    :ivar pos: where the next element starts.
    """

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    # -- small helpers ---------------------------------------------------------

    def fail(self, what: str) -> ParseError:
        """A ParseError naming what was expected and what was found."""
        found = self.data[self.pos : self.pos + 20]
        if not found:
            return ParseError(f"expected {what} at end of command")
        return ParseError(f"expected {what} at {found.decode('ascii', 'replace')!r}")

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def peek(self, n: int = 1) -> bytes:
        return self.data[self.pos : self.pos + n]

    def peek_upper(self, n: int) -> bytes:
        return self.data[self.pos : self.pos + n].upper()

    def expect(self, literal: bytes) -> None:
        """Consume exactly ``literal`` (case-insensitively)."""
        end = self.pos + len(literal)
        if self.data[self.pos : end].upper() != literal.upper():
            raise self.fail(repr(literal.decode("ascii"))[1:-1])
        self.pos = end

    def accept(self, literal: bytes) -> bool:
        """Consume ``literal`` (case-insensitively) if it is next."""
        end = self.pos + len(literal)
        if self.data[self.pos : end].upper() == literal.upper():
            self.pos = end
            return True
        return False

    def sp(self) -> None:
        """One space."""
        if self.data[self.pos : self.pos + 1] != b" ":
            raise self.fail("a space")
        self.pos += 1

    def end(self) -> None:
        """Nothing may follow."""
        if self.pos != len(self.data):
            raise self.fail("end of command")

    def _match(self, pattern: re.Pattern[bytes], what: str) -> re.Match[bytes]:
        m = pattern.match(self.data, self.pos)
        if m is None:
            raise self.fail(what)
        self.pos = m.end()
        return m

    # -- grammar elements ------------------------------------------------------

    def tag(self) -> bytes:
        return self._match(_TAG, "a tag").group()

    def atom(self) -> bytes:
        return self._match(_ATOM, "an atom").group()

    def number(self) -> int:
        value = int(self._match(_NUMBER, "a number").group())
        if value > MAX_NUMBER:
            raise ParseError(f"number {value} is too large (max {MAX_NUMBER})")
        return value

    def number64(self) -> int:
        """A mod-sequence value (RFC 7162: up to 2^63 - 1)."""
        value = int(self._match(_NUMBER64, "a number").group())
        if value >= 2**63:
            raise ParseError(f"number {value} is too large (max {2**63 - 1})")
        return value

    def nz_number(self) -> int:
        value = self.number()
        if value == 0:
            raise ParseError("expected a non-zero number, got 0")
        return value

    def literal(self) -> bytes:
        m = self._match(_LITERAL, "a literal")
        size = int(m.group(1))
        start = m.end()
        if start + size > len(self.data):
            raise ParseError("literal is shorter than announced")
        self.pos = start + size
        return self.data[start : start + size]

    def quoted(self) -> bytes:
        m = self._match(_QUOTED, "a quoted string")
        value = m.group(1)
        return _UNESCAPE.sub(rb"\1", value) if b"\\" in value else value

    def string(self) -> bytes:
        """A quoted string or a literal."""
        c = self.data[self.pos : self.pos + 1]
        if c == b'"':
            return self.quoted()
        if c == b"{":
            return self.literal()
        raise self.fail("a string")

    def astring(self) -> bytes:
        """An atom (with "]" allowed) or a string."""
        c = self.data[self.pos : self.pos + 1]
        if c == b'"' or c == b"{":
            return self.string()
        return self._match(_ASTRING_ATOM, "an atom or string").group()

    def nstring(self) -> bytes | None:
        if self.accept(b"NIL"):
            return None
        return self.string()

    def list_mailbox(self) -> bytes:
        """A LIST pattern: like astring, but "%" and "*" are allowed in atoms."""
        c = self.data[self.pos : self.pos + 1]
        if c == b'"' or c == b"{":
            return self.string()
        return self._match(_LIST_ATOM, "a mailbox pattern").group()

    def sequence_set(self) -> SequenceSet:
        text = self._match(_SEQ_SET, "a sequence set").group()
        ranges: list[tuple[int | None, int | None]] = []
        for item in text.split(b","):
            first, _, last = item.partition(b":")
            a = None if first == b"*" else int(first)
            b = a if not last else (None if last == b"*" else int(last))
            for v in (a, b):
                if v is not None and not 0 < v <= MAX_NUMBER:
                    raise ParseError(f"sequence number {v} out of range (1 to {MAX_NUMBER})")
            ranges.append((a, b))
        return SequenceSet(tuple(ranges))

    def parenthesised(self, item: str) -> list[bytes]:
        """``"(" [x *(SP x)] ")"`` where each x is read by method ``item``."""
        self.expect(b"(")
        out: list[bytes] = []
        reader = getattr(self, item)
        if self.accept(b")"):
            return out
        while True:
            out.append(reader())
            if self.accept(b")"):
                return out
            self.sp()

    def flag(self) -> str:
        """``\\`` atom or atom (flag-keyword, flag-extension or a system flag)."""
        if self.accept(b"\\"):
            return "\\" + self.atom().decode("ascii")
        return self.atom().decode("ascii")

    def flag_list(self) -> list[str]:
        self.expect(b"(")
        flags: list[str] = []
        if self.accept(b")"):
            return flags
        while True:
            flags.append(self.flag())
            if self.accept(b")"):
                return flags
            self.sp()

    def date(self) -> datetime:
        """A ``date`` (``1-Feb-1994``, optionally quoted), as midnight UTC."""
        quoted = self.accept(b'"')
        m = self._match(_DATE, "a date like 1-Feb-1994")
        if quoted:
            self.expect(b'"')
        month = _MONTH_NUMBER.get(m.group(2).lower())
        if month is None:
            raise ParseError(f"unknown month {m.group(2).decode('ascii')!r}")
        try:
            return datetime(int(m.group(3)), month, int(m.group(1)), tzinfo=UTC)
        except ValueError as e:
            raise ParseError(f"invalid date: {e}") from None

    def date_time(self) -> datetime:
        """A quoted ``date-time`` as in APPEND: ``"17-Jul-1996 02:44:25 -0700"``."""
        m = self._match(_DATE_TIME, 'a date-time like "17-Jul-1996 02:44:25 -0700"')
        day, mon, year, hh, mm, ss, sign, zh, zm = m.groups()
        month = _MONTH_NUMBER.get(mon.lower())
        if month is None:
            raise ParseError(f"unknown month {mon.decode('ascii')!r}")
        offset = timedelta(hours=int(zh), minutes=int(zm))
        if sign == b"-":
            offset = -offset
        try:
            return datetime(
                int(year), month, int(day.strip()), int(hh), int(mm), int(ss),
                tzinfo=timezone(offset),
            )
        except ValueError as e:
            raise ParseError(f"invalid date-time: {e}") from None


@functools.lru_cache(maxsize=100_000)
def format_date_time(when: datetime) -> bytes:
    """
    An INTERNALDATE in IMAP form, ``"dd-Mon-yyyy hh:mm:ss +zzzz"`` (quoted).
    Memoised: every session of the process shares the rendered dates.
    """
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    offset = when.utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    minutes = abs(minutes)
    return (
        f'"{when.day:02d}-{MONTHS[when.month - 1]}-{when.year:04d} '
        f"{when.hour:02d}:{when.minute:02d}:{when.second:02d} "
        f'{sign}{minutes // 60:02d}{minutes % 60:02d}"'
    ).encode("ascii")
