"""
FETCH data items (RFC 3501 section 6.4.5): parsing the request into
:class:`FetchItem` values and rendering each item of one message.

Rendering is the hot loop of IMAP (a client's first sync fetches the flags
of every message), so each item compiles to one small function and a
response line is one bytes join.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

import attrs

from pymail.imap import bodystructure as bs
from pymail.imap.derive import BODY, BODYSTRUCTURE, ENVELOPE, Derivation
from pymail.imap.message import header_subset, split_message
from pymail.imap.parser import Cursor, ParseError, format_date_time
from pymail.imap.responses import astring, literal
from pymail.interfaces import MessageInfo

_ITEM_NAME = re.compile(rb"[A-Za-z0-9.]+")
_PART = re.compile(rb"[1-9][0-9]*(?:\.[1-9][0-9]*)*")

#: Items whose value comes from MessageInfo alone.
_META_ITEMS = frozenset({"UID", "FLAGS", "INTERNALDATE", "RFC822.SIZE", "MODSEQ"})
_DERIVED_ITEMS = frozenset({"ENVELOPE", "BODYSTRUCTURE", "BODY"})
_SIMPLE_ITEMS = _META_ITEMS | {
    "ENVELOPE", "RFC822", "RFC822.HEADER", "RFC822.TEXT", "BODYSTRUCTURE", "BODY",
}
_MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}


@attrs.frozen
class Section:
    """
    A BODY[...] section.

    :ivar part: MIME part numbers (empty for the whole message).
    :ivar text: ``""``, ``"HEADER"``, ``"HEADER.FIELDS"``,
        ``"HEADER.FIELDS.NOT"``, ``"TEXT"`` or ``"MIME"``.
    :ivar fields: the header field names for HEADER.FIELDS[.NOT], as given.
    """

    part: tuple[int, ...] = ()
    text: str = ""
    fields: tuple[bytes, ...] = ()

    def spec(self) -> bytes:
        """The section as written in the response: ``1.HEADER.FIELDS (FROM)``."""
        out = b".".join(b"%d" % p for p in self.part)
        if self.text:
            out = out + b"." + self.text.encode() if out else self.text.encode()
        if self.fields:
            out += b" (" + b" ".join(astring(f) for f in self.fields) + b")"
        return out


@attrs.frozen
class FetchItem:
    """
    One FETCH data item.

    :ivar name: ``"UID"``, ``"FLAGS"``, ..., or ``"BODY[]"`` for a section.
    :ivar section: for ``BODY[]`` items.
    :ivar peek: BODY.PEEK (does not set ``\\Seen``).
    :ivar partial: ``(start, count)`` of ``<start.count>``.
    """

    name: str
    section: Section | None = None
    peek: bool = False
    partial: tuple[int, int] | None = None

    @property
    def sets_seen(self) -> bool:
        """Fetching this item marks the message ``\\Seen`` (RFC 3501 6.4.5)."""
        return (self.name == "BODY[]" and not self.peek) or self.name in ("RFC822", "RFC822.TEXT")

    @property
    def needs_message(self) -> bool:
        # ENVELOPE and BODYSTRUCTURE come from the storage cache, which reads
        # the message itself only the first time.
        return self.name not in _META_ITEMS and self.name not in _DERIVED_ITEMS


def parse_fetch_items(cur: Cursor) -> list[FetchItem]:
    """``fetch-att`` / ``"(" fetch-att *(SP fetch-att) ")"`` / ALL / FAST / FULL."""
    if cur.accept(b"("):
        items = [_fetch_att(cur)]
        while not cur.accept(b")"):
            cur.sp()
            items.append(_fetch_att(cur))
        return items
    m = _ITEM_NAME.match(cur.data, cur.pos)
    if m is not None:
        macro = _MACROS.get(m.group().upper().decode())
        if macro is not None and cur.data[m.end() : m.end() + 1] in (b"", b" ", b")"):
            cur.pos = m.end()
            return [FetchItem(name) for name in macro]
    return [_fetch_att(cur)]


def _fetch_att(cur: Cursor) -> FetchItem:
    m = _ITEM_NAME.match(cur.data, cur.pos)
    if m is None:
        raise cur.fail("a FETCH data item")
    name = m.group().upper().decode()
    cur.pos = m.end()
    if cur.peek() != b"[":
        if name not in _SIMPLE_ITEMS:
            raise ParseError(f"unknown FETCH data item {name!r}")
        return FetchItem(name)
    if name not in ("BODY", "BODY.PEEK"):
        raise ParseError(f"{name} does not take a section")
    cur.pos += 1
    section = _section(cur)
    cur.expect(b"]")
    partial = None
    if cur.accept(b"<"):
        start = cur.number()
        cur.expect(b".")
        count = cur.nz_number()
        cur.expect(b">")
        partial = (start, count)
    return FetchItem("BODY[]", section, name == "BODY.PEEK", partial)


def _section(cur: Cursor) -> Section:
    part: tuple[int, ...] = ()
    m = _PART.match(cur.data, cur.pos)
    if m is not None:
        part = tuple(int(p) for p in m.group().split(b"."))
        cur.pos = m.end()
        if not cur.accept(b"."):
            return Section(part)
    for text in ("HEADER.FIELDS.NOT", "HEADER.FIELDS", "HEADER", "TEXT", "MIME"):
        if cur.peek_upper(len(text)) == text.encode():
            cur.pos += len(text)
            break
    else:
        if part:
            raise cur.fail("HEADER, TEXT or MIME after the part number")
        return Section()
    if text == "MIME" and not part:
        raise ParseError("MIME needs a part number, as in BODY[1.MIME]")
    fields: tuple[bytes, ...] = ()
    if text.startswith("HEADER.FIELDS"):
        cur.sp()
        names = cur.parenthesised("astring")
        if not names:
            raise ParseError(f"{text} needs at least one field name")
        fields = tuple(names)
    return Section(part, text, fields)


# -- rendering -----------------------------------------------------------------

#: A renderer turns (view, info, message bytes or None) into ``NAME value``.
Renderer = Callable[["FetchView", MessageInfo, "bytes | None"], bytes]


class FetchView(Protocol):
    """What renderers need from the session: flags and date rendering."""

    date_cache: dict[datetime, bytes]

    def flags_of(self, info: MessageInfo) -> bytes:
        """The FLAGS list of a message as this session shows it."""

    def derived(
        self, uid: int, name: str, compute: Callable[[bytes], bytes], message: bytes | None
    ) -> bytes:
        """A rendered value derived from the message, cached by the storage index."""


def internaldate(view: FetchView, when: datetime) -> bytes:
    cache = view.date_cache
    value = cache.get(when)
    if value is None:
        if len(cache) > 100_000:
            cache.clear()
        value = cache[when] = format_date_time(when)
    return value


def section_bytes(section: Section, message: bytes) -> bytes:
    """The bytes a section names (RFC 3501 section 6.4.5, BODY[<section>])."""
    if section.part:
        target = bs.part_bytes(message, section.part, section.text == "MIME")
        if target is None:
            return b""
        if section.text in ("", "MIME"):
            return target
        message = target
    if section.text == "":
        return message
    header, body = split_message(message)
    if section.text == "HEADER":
        return header
    if section.text == "TEXT":
        return body
    names = frozenset(f.lower() for f in section.fields)
    return header_subset(header, names, section.text == "HEADER.FIELDS.NOT")


#: The derived values behind ENVELOPE, BODYSTRUCTURE and BODY.
_DERIVATIONS = {"ENVELOPE": ENVELOPE, "BODYSTRUCTURE": BODYSTRUCTURE, "BODY": BODY}


def derivation(item: FetchItem) -> Derivation | None:
    """The derived value ``item`` shows, if it is ENVELOPE, BODYSTRUCTURE or BODY."""
    return _DERIVATIONS.get(item.name)


def renderer(item: FetchItem) -> Renderer:
    """The function that renders ``item`` for one message."""
    name = item.name
    if name == "UID":
        return lambda v, i, m: b"UID %d" % i.uid
    if name == "FLAGS":
        return lambda v, i, m: b"FLAGS " + v.flags_of(i)
    if name == "INTERNALDATE":
        return lambda v, i, m: b"INTERNALDATE " + internaldate(v, i.internaldate)
    if name == "RFC822.SIZE":
        return lambda v, i, m: b"RFC822.SIZE %d" % i.size
    if name == "MODSEQ":
        # RFC 7162 3.1.4.1; asking for it turns CONDSTORE on (the caller does).
        return lambda v, i, m: b"MODSEQ (%d)" % i.modseq
    derived = derivation(item)
    if derived is not None:
        label = name.encode() + b" "
        key, compute = derived.name, derived.compute
        return lambda v, i, m: label + v.derived(i.uid, key, compute, m)
    if name == "RFC822":
        return lambda v, i, m: b"RFC822 " + literal(m or b"")
    if name == "RFC822.HEADER":
        return lambda v, i, m: b"RFC822.HEADER " + literal(split_message(m or b"")[0])
    if name == "RFC822.TEXT":
        return lambda v, i, m: b"RFC822.TEXT " + literal(split_message(m or b"")[1])
    assert item.section is not None
    section = item.section
    partial = item.partial
    label = b"BODY[" + section.spec() + b"]"
    if partial is not None:
        label += b"<%d>" % partial[0]
    label += b" "

    def render_section(v: FetchView, i: MessageInfo, m: bytes | None) -> bytes:
        data = section_bytes(section, m or b"")
        if partial is not None:
            data = data[partial[0] : partial[0] + partial[1]]
        return label + (literal(data) if data else b'""')

    return render_section
