"""
SEARCH (RFC 3501 section 6.4.4): the grammar of search keys, and their
compilation into a predicate over one message.

BODY and TEXT look at the decoded text (:func:`searchable_text`): quoted-
printable and base64 undone, charsets decoded.

Keys that need only :class:`~pymail.interfaces.MessageInfo` (flags, size,
INTERNALDATE, sequence and UID sets) never read the message.  SUBJECT,
FROM, TO, CC and BCC use the decoded fields kept by the derived-value cache
(:mod:`pymail.imap.cache`, backed by the storage index), so they read a
message only the first time it is searched; other header and text keys
read it once per message, lazily.
"""

from __future__ import annotations

import binascii
import email.utils
import quopri
from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import cast

import attrs

from pymail.imap.cache import DerivedCache
from pymail.imap.derive import Derivation
from pymail.imap import bodystructure as bs
from pymail.imap.message import (
    decoded_value,
    field_value,
    first_value,
    header_fields,
    split_message,
)
from pymail.imap.parser import Cursor, ParseError, SequenceSet
from pymail.interfaces import IMailbox, MessageInfo

#: Charsets SEARCH accepts (anything else is NO [BADCHARSET]).
CHARSETS = ("UTF-8", "US-ASCII")

_FLAG_KEYS = {
    "ANSWERED": ("\\Answered", True),
    "DELETED": ("\\Deleted", True),
    "DRAFT": ("\\Draft", True),
    "FLAGGED": ("\\Flagged", True),
    "SEEN": ("\\Seen", True),
    "UNANSWERED": ("\\Answered", False),
    "UNDELETED": ("\\Deleted", False),
    "UNDRAFT": ("\\Draft", False),
    "UNFLAGGED": ("\\Flagged", False),
    "UNSEEN": ("\\Seen", False),
}
_HEADER_KEYS = {"BCC": b"bcc", "CC": b"cc", "FROM": b"from", "SUBJECT": b"subject", "TO": b"to"}
#: The fields kept, decoded and case-folded, by :func:`searched_fields`.
CACHED_FIELDS = (b"subject", b"from", b"to", b"cc", b"bcc")
_CACHED_INDEX = {name: i for i, name in enumerate(CACHED_FIELDS)}
#: The derived-value name of :func:`searched_fields` (bump on any change).
SEARCH_FIELDS_NAME = "imap.search-fields.1"


def searched_fields(message: bytes) -> tuple[tuple[str, ...], ...]:
    """
    For each of :data:`CACHED_FIELDS`, the decoded (RFC 2047) and
    case-folded values of every such field of ``message``, in order.
    """
    return searched_fields_of(header_fields(split_message(message)[0]))


def searched_fields_of(fields: list[tuple[bytes, bytes]]) -> tuple[tuple[str, ...], ...]:
    """:func:`searched_fields` of a message whose header fields are ``fields``."""
    found: list[list[str]] = [[] for _ in CACHED_FIELDS]
    for name, raw in fields:
        i = _CACHED_INDEX.get(name)
        if i is not None:
            found[i].append(decoded_value(field_value(raw)).casefold())
    return tuple(tuple(values) for values in found)


#: :func:`searched_fields` as a derived value (it looks only at the header).
SEARCH_FIELDS = Derivation(SEARCH_FIELDS_NAME, searched_fields, True, searched_fields_of)
_DATE_KEYS = {"BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"}


@attrs.frozen
class Key:
    """
    One search key.

    :ivar op: the key name (``"AND"`` for a parenthesised list or the
        top-level conjunction, ``"SEQ"`` for a bare sequence set).
    :ivar args: its arguments: sub-keys, strings (bytes), numbers, dates,
        flags or a :class:`SequenceSet`.
    """

    op: str
    args: tuple[object, ...] = ()


def parse_search_keys(cur: Cursor) -> tuple[str | None, Key]:
    """``[CHARSET astring SP] search-key *(SP search-key)`` after the SP."""
    charset = None
    if cur.peek_upper(8) == b"CHARSET ":
        cur.pos += 8
        charset = cur.astring().decode("ascii", "replace")
        cur.sp()
    keys = [_key(cur, 0)]
    while not cur.at_end():
        cur.sp()
        keys.append(_key(cur, 0))
    return charset, keys[0] if len(keys) == 1 else Key("AND", tuple(keys))


def _key(cur: Cursor, depth: int) -> Key:
    if depth > 100:
        raise ParseError("search keys nested too deeply")
    c = cur.peek()
    if c == b"(":
        cur.pos += 1
        keys = [_key(cur, depth + 1)]
        while not cur.accept(b")"):
            cur.sp()
            keys.append(_key(cur, depth + 1))
        return Key("AND", tuple(keys))
    if c == b"*" or c.isdigit():
        return Key("SEQ", (cur.sequence_set(),))
    name = cur.atom().upper().decode("ascii")
    if name in ("ALL", "NEW", "OLD", "RECENT") or name in _FLAG_KEYS:
        return Key(name)
    if name in _HEADER_KEYS or name in ("BODY", "TEXT"):
        cur.sp()
        return Key(name, (cur.astring(),))
    if name == "HEADER":
        cur.sp()
        field = cur.astring()
        cur.sp()
        return Key(name, (field, cur.astring()))
    if name in ("KEYWORD", "UNKEYWORD"):
        cur.sp()
        return Key(name, (cur.atom().decode("ascii"),))
    if name in ("LARGER", "SMALLER"):
        cur.sp()
        return Key(name, (cur.number(),))
    if name in _DATE_KEYS:
        cur.sp()
        return Key(name, (cur.date().date(),))
    if name == "UID":
        cur.sp()
        return Key(name, (cur.sequence_set(),))
    if name == "MODSEQ":
        # RFC 7162 3.1.5: MODSEQ [entry-name entry-type-req] mod-sequence.
        cur.sp()
        if cur.peek() == b'"':
            cur.quoted()
            cur.sp()
            entry_type = cur.atom().lower()
            if entry_type not in (b"priv", b"shared", b"all"):
                raise ParseError(f"unknown MODSEQ entry type {entry_type.decode('ascii')!r}")
            cur.sp()
        return Key(name, (cur.number64(),))
    if name == "NOT":
        cur.sp()
        return Key(name, (_key(cur, depth + 1),))
    if name == "OR":
        cur.sp()
        a = _key(cur, depth + 1)
        cur.sp()
        return Key(name, (a, _key(cur, depth + 1)))
    raise ParseError(f"unknown search key {name!r}")


def uses_cached_fields(key: Key) -> bool:
    """Whether a search key looks at any of :data:`CACHED_FIELDS` (SUBJECT, FROM...)."""
    if key.op in _HEADER_KEYS:
        return True
    if key.op == "HEADER" and cast(bytes, key.args[0]).lower() in _CACHED_INDEX:
        return True
    return any(isinstance(a, Key) and uses_cached_fields(a) for a in key.args)


def uses_modseq(key: Key) -> bool:
    """Whether a search key has a MODSEQ criterion anywhere (RFC 7162 3.1.5)."""
    if key.op == "MODSEQ":
        return True
    return any(isinstance(a, Key) and uses_modseq(a) for a in key.args)


class Candidate:
    """One message being tested: its info and, on demand, its bytes and header."""

    __slots__ = ("info", "index", "recent", "_mailbox", "_message", "_fields", "_cache",
                 "_table")

    def __init__(
        self, mailbox: IMailbox, info: MessageInfo, index: int, recent: bool,
        cache: DerivedCache | None = None,
        table: dict[int, tuple[tuple[str, ...], ...]] | None = None,
    ) -> None:
        self.info = info
        self.index = index
        self.recent = recent
        self._mailbox = mailbox
        self._message: bytes | None = None
        self._fields: list[tuple[bytes, bytes]] | None = None
        self._cache = cache
        #: ``cache``'s table of :data:`SEARCH_FIELDS` for the folder, looked
        #: in first (a dict lookup instead of a cache call per message).
        self._table = table

    def message(self) -> bytes:
        if self._message is None:
            self._message = self._mailbox.read(self.info.uid)
        return self._message

    def fields(self) -> list[tuple[bytes, bytes]]:
        if self._fields is None:
            self._fields = header_fields(split_message(self.message())[0])
        return self._fields

    def header_values(self, name: bytes) -> list[str]:
        return [decoded_value(field_value(raw)) for n, raw in self.fields() if n == name]

    def folded_values(self, name: bytes) -> Sequence[str]:
        """The decoded, case-folded values of the fields called ``name``."""
        i = _CACHED_INDEX.get(name)
        if i is None or self._cache is None:
            return [v.casefold() for v in self.header_values(name)]
        if self._table is not None:
            known = self._table.get(self.info.uid)
            if known is not None:
                return known[i]
        fields = self._cache.get(self._mailbox, self.info.uid, SEARCH_FIELDS_NAME,
                                 searched_fields, self._message)
        return fields[i]


Predicate = Callable[[Candidate], bool]

#: Content-Transfer-Encodings BODY and TEXT look through.
_DECODERS: dict[bytes, Callable[[bytes], bytes]] = {
    b"base64": lambda data: binascii.a2b_base64(data, strict_mode=False),
    b"quoted-printable": quopri.decodestring,
}


def _part_text(part: bs.Part) -> str:
    """A leaf part's content as text: transfer encoding undone, charset decoded."""
    encoding = (first_value(part.fields, b"content-transfer-encoding") or b"").strip().lower()
    data = part.body
    decoder = _DECODERS.get(encoding)
    if decoder is not None:
        try:
            data = decoder(data)
        except (binascii.Error, ValueError):
            data = part.body
        if part.type != b"text":
            return ""  # an encoded attachment holds no searchable text
    charset = dict((k.lower(), v) for k, v in part.params).get(b"charset", b"utf-8")
    try:
        return data.decode(charset.decode("ascii", "replace").strip('"'), "replace")
    except LookupError:
        return data.decode("utf-8", "replace")


def _header_text(fields: list[tuple[bytes, bytes]]) -> str:
    return "\n".join(decoded_value(field_value(raw)) for _, raw in fields)


def searchable_text(message: bytes, with_header: bool) -> str:
    """
    What SEARCH BODY (``with_header`` false) or TEXT looks in, case-folded:
    every part's content with quoted-printable and base64 undone and its
    charset decoded, the headers of parts and attached messages with
    RFC 2047 words decoded, and with ``with_header`` the message's header.
    """
    root = bs.parse(message)
    out: list[str] = [_header_text(root.fields)] if with_header else []

    def walk(part: bs.Part) -> None:
        if part.children:
            for child in part.children:
                out.append(_header_text(child.fields))
                walk(child)
        elif part.message is not None:
            out.append(_header_text(part.message.fields))
            walk(part.message)
        else:
            out.append(_part_text(part))

    walk(root)
    return "\n".join(out).casefold()


def _sent_date(c: Candidate) -> date | None:
    values = c.header_values(b"date")
    if not values:
        return None
    try:
        when: datetime = email.utils.parsedate_to_datetime(values[0])
    except (TypeError, ValueError, IndexError):
        return None
    return when.date()


def compile_key(
    key: Key,
    charset: str,
    resolve: Callable[[SequenceSet, bool], set[int]],
) -> Predicate:
    """
    A predicate for ``key``.

    :param charset: the CHARSET given (one of :data:`CHARSETS`).
    :param resolve: turns a sequence set (and whether it is a UID set) into
        the set of 0-based indexes it names in the session's view.
    """

    def text(value: object) -> str:
        # US-ASCII is a subset of UTF-8; clients that send 8-bit without
        # CHARSET almost always mean UTF-8, so both decode the same way.
        assert isinstance(value, bytes)
        return value.decode("utf-8", "replace").casefold()

    op = key.op
    args = key.args
    if op == "ALL":
        return lambda c: True
    if op == "AND":
        preds = [compile_key(k, charset, resolve) for k in args]  # type: ignore[arg-type]
        return lambda c: all(p(c) for p in preds)
    if op == "NOT":
        p = compile_key(args[0], charset, resolve)  # type: ignore[arg-type]
        return lambda c: not p(c)
    if op == "OR":
        a = compile_key(args[0], charset, resolve)  # type: ignore[arg-type]
        b = compile_key(args[1], charset, resolve)  # type: ignore[arg-type]
        return lambda c: a(c) or b(c)
    if op in _FLAG_KEYS:
        flag, present = _FLAG_KEYS[op]
        return lambda c: (flag in c.info.flags) == present
    if op == "KEYWORD":
        return lambda c: args[0] in c.info.flags
    if op == "UNKEYWORD":
        return lambda c: args[0] not in c.info.flags
    if op == "RECENT":
        return lambda c: c.recent
    if op == "OLD":
        return lambda c: not c.recent
    if op == "NEW":
        return lambda c: c.recent and "\\Seen" not in c.info.flags
    if op == "MODSEQ":
        return lambda c: c.info.modseq >= args[0]  # type: ignore[operator]
    if op == "LARGER":
        return lambda c: c.info.size > args[0]  # type: ignore[operator]
    if op == "SMALLER":
        return lambda c: c.info.size < args[0]  # type: ignore[operator]
    if op in ("SEQ", "UID"):
        wanted = resolve(args[0], op == "UID")  # type: ignore[arg-type]
        return lambda c: c.index in wanted
    if op in ("BEFORE", "ON", "SINCE"):
        day = cast(date, args[0])
        if op == "BEFORE":
            return lambda c: c.info.internaldate.date() < day
        if op == "ON":
            return lambda c: c.info.internaldate.date() == day
        return lambda c: c.info.internaldate.date() >= day
    if op in ("SENTBEFORE", "SENTON", "SENTSINCE"):
        day = cast(date, args[0])

        def sent(c: Candidate) -> bool:
            when = _sent_date(c)
            if when is None:
                return False
            if op == "SENTBEFORE":
                return when < day
            if op == "SENTON":
                return when == day
            return when >= day

        return sent
    if op in _HEADER_KEYS or op == "HEADER":
        if op == "HEADER":
            name = cast(bytes, args[0]).lower()
            needle = text(args[1])
        else:
            name = _HEADER_KEYS[op]
            needle = text(args[0])

        def header_has(c: Candidate) -> bool:
            for value in c.folded_values(name):  # type: ignore[arg-type]
                if needle in value:
                    return True
            return False

        return header_has
    if op in ("BODY", "TEXT"):
        needle = text(args[0])
        with_header = op == "TEXT"
        return lambda c: needle in searchable_text(c.message(), with_header)
    raise ValueError(f"unknown search key {op!r}")  # pragma: no cover - parser stops these
