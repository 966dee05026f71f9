"""
The ENVELOPE of a message (RFC 3501 section 7.4.2) as a pure function of
its bytes, so the storage index can compute it once and cache it.

The result is a nested tuple of ``bytes | None`` that
:func:`pymail.imap.responses.sexp` writes to the wire.  Header values are
passed through raw: encoded-words stay encoded, 8-bit bytes stay as they
are (they go out as literals), and nothing in a malformed header raises.
"""

from __future__ import annotations

import re

from pymail.imap.message import first_value, header_fields, split_message
from pymail.imap.responses import Run, Sexp, string

Address = tuple[bytes | None, bytes | None, bytes | None, bytes | None]
Envelope = tuple[
    bytes | None,  # date
    bytes | None,  # subject
    "tuple[Address, ...] | None",  # from
    "tuple[Address, ...] | None",  # sender
    "tuple[Address, ...] | None",  # reply-to
    "tuple[Address, ...] | None",  # to
    "tuple[Address, ...] | None",  # cc
    "tuple[Address, ...] | None",  # bcc
    bytes | None,  # in-reply-to
    bytes | None,  # message-id
]

_MISSING_DOMAIN = b"MISSING_DOMAIN"


def envelope(message: bytes) -> Envelope:
    """The ENVELOPE structure of ``message`` (wire form)."""
    return envelope_of_fields(header_fields(split_message(message)[0]))


def envelope_of_fields(fields: list[tuple[bytes, bytes]]) -> Envelope:
    """The ENVELOPE structure of a message whose header fields are ``fields``."""

    def value(name: bytes) -> bytes | None:
        v = first_value(fields, name)
        return v if v else None

    def addresses(name: bytes) -> tuple[Address, ...] | None:
        v = first_value(fields, name)
        if not v:
            return None
        return parse_address_list(v) or None

    from_ = addresses(b"from")
    sender = addresses(b"sender") or from_
    reply_to = addresses(b"reply-to") or from_
    return (
        value(b"date"),
        value(b"subject"),
        from_,
        sender,
        reply_to,
        addresses(b"to"),
        addresses(b"cc"),
        addresses(b"bcc"),
        value(b"in-reply-to"),
        value(b"message-id"),
    )


def _address_list_wire(addresses: tuple[Address, ...]) -> bytes:
    return b"(" + b"".join([
        b"(" + b" ".join([b"NIL" if v is None else string(v) for v in address]) + b")"
        for address in addresses
    ]) + b")"


def envelope_wire(env: Envelope) -> bytes:
    """
    The ENVELOPE in wire form: what ``sexp(envelope_sexp(env))`` gives,
    written directly (this runs once per message of a folder's first FETCH).
    """
    out = []
    for i, value in enumerate(env):
        if value is None:
            out.append(b"NIL")
        elif 2 <= i <= 7:
            out.append(_address_list_wire(value))  # type: ignore[arg-type]
        else:
            out.append(string(value))  # type: ignore[arg-type]
    return b"(" + b" ".join(out) + b")"


def envelope_sexp(env: Envelope) -> Sexp:
    """The ENVELOPE ready for :func:`~pymail.imap.responses.sexp` (address lists unspaced)."""
    out: list[Sexp] = []
    for i, value in enumerate(env):
        if 2 <= i <= 7 and value is not None:
            out.append([Run(value)])  # type: ignore[arg-type]
        else:
            out.append(value)  # type: ignore[arg-type]
    return out


# A token is (kind, text): kind is b"atom", b"quoted", b"domlit" or a
# special character itself (b"<", b"@", b",", ...).  Comments are dropped.
Token = tuple[bytes, bytes]


_TOKEN = re.compile(
    rb"""
    [ \t\r\n]*
    (?:
      (?P<atom>[^ \t\r\n()<>@,;:\\".\[\]]+)
    | "(?P<quoted>(?:[^"\\]|\\.)*)(?:"|\Z)
    | (?P<domlit>\[[^\]]*(?:\]|\Z))
    | (?P<comment>\()
    | (?P<special>[<>@,;:.\\\])])
    )
    """,
    re.VERBOSE | re.DOTALL,
)
_QUOTED_PAIR = re.compile(rb"\\(.)", re.DOTALL)


def _skip_comment(value: bytes, i: int) -> int:
    """The index after the (possibly nested) comment opening at ``i``."""
    depth = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if ch == 0x5C:  # backslash
            i += 2
            continue
        if ch == 0x28:
            depth += 1
        elif ch == 0x29:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return n


def _tokenize(value: bytes) -> list[Token]:
    tokens: list[Token] = []
    i = 0
    n = len(value)
    match = _TOKEN.match
    while i < n:
        m = match(value, i)
        if m is None:
            break  # only trailing whitespace is left
        kind = m.lastgroup
        if kind == "atom":
            tokens.append((b"atom", m.group("atom")))
        elif kind == "quoted":
            text = m.group("quoted")
            if b"\\" in text:
                text = _QUOTED_PAIR.sub(rb"\1", text)
            tokens.append((b"quoted", text))
        elif kind == "domlit":
            tokens.append((b"domlit", m.group("domlit")))
        elif kind == "comment":
            i = _skip_comment(value, m.start("comment"))
            continue
        else:
            ch = m.group("special")
            tokens.append((ch, ch))
        i = m.end()
    return tokens


def _phrase(tokens: list[Token]) -> bytes | None:
    words = [text for kind, text in tokens if kind in (b"atom", b"quoted")]
    # "." may appear in obsolete phrases (RFC 5322 obs-phrase): keep it.
    out = b""
    for kind, text in tokens:
        if kind in (b"atom", b"quoted"):
            out = out + b" " + text if out else text
        elif kind == b".":
            out += b"."
    return out if words else None


def _quote_local(kind_texts: list[Token]) -> bytes:
    parts = []
    for kind, text in kind_texts:
        if kind == b"quoted":
            escaped = text.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
            parts.append(b'"' + escaped + b'"')
        else:
            parts.append(text)
    return b"".join(parts)


def _addr_spec(tokens: list[Token]) -> tuple[bytes | None, bytes | None, bytes | None]:
    """(route, mailbox, host) from the tokens of an addr-spec or angle-addr."""
    route = None
    colon = next((i for i, t in enumerate(tokens) if t[0] == b":"), None)
    if colon is not None and tokens and tokens[0][0] == b"@":
        route = b"".join(text for _, text in tokens[:colon])
        tokens = tokens[colon + 1 :]
    at = None
    for i in range(len(tokens) - 1, -1, -1):
        if tokens[i][0] == b"@":
            at = i
            break
    if at is None:
        local = _quote_local(tokens)
        return route, local or None, _MISSING_DOMAIN if local else None
    local = _quote_local(tokens[:at])
    host = b"".join(text for _, text in tokens[at + 1 :])
    return route, local or None, host or _MISSING_DOMAIN


def _mailbox(tokens: list[Token]) -> Address | None:
    if not tokens:
        return None
    lt = next((i for i, t in enumerate(tokens) if t[0] == b"<"), None)
    if lt is not None:
        gt = next((i for i in range(lt + 1, len(tokens)) if tokens[i][0] == b">"), len(tokens))
        name = _phrase(tokens[:lt])
        route, local, host = _addr_spec(tokens[lt + 1 : gt])
    else:
        name = None
        route, local, host = _addr_spec(tokens)
    if local is None and name is None:
        return None
    return (name, route, local, host)


_ATOM = rb'[^ \t\r\n()<>@,;:\\".\[\]]+'
_DOT_ATOM = _ATOM + rb"(?:\." + _ATOM + rb")*"
#: One mailbox of the shapes nearly every header has (``a@b.c``,
#: ``Name Words <a@b.c>``, ``"Quoted, Name" <a@b.c>``), then a comma or
#: the end: what :func:`_tokenize` and :func:`_mailbox` make of exactly
#: these shapes, without building tokens.
_SIMPLE_MAILBOX = re.compile(
    rb"[ \t]*(?:(?P<local>" + _DOT_ATOM + rb")@(?P<host>" + _DOT_ATOM + rb")"
    rb"|(?:(?P<name>" + _ATOM + rb"(?:[ \t]+" + _ATOM + rb")*)|\"(?P<quoted>[^\"\\\r\n]*)\")?"
    rb"[ \t]*<(?P<alocal>" + _DOT_ATOM + rb")@(?P<ahost>" + _DOT_ATOM + rb")>)"
    rb"[ \t]*(?:,|\Z)"
)


def _simple_address_list(value: bytes) -> tuple[Address, ...] | None:
    """The addresses of ``value`` when every one has a simple shape, else None."""
    out: list[Address] = []
    pos = 0
    end = len(value)
    match = _SIMPLE_MAILBOX.match
    while pos < end:
        m = match(value, pos)
        if m is None:
            return None
        local = m.group("local")
        if local is not None:
            out.append((None, None, local, m.group("host")))
        else:
            name = m.group("name")
            if name is not None:
                name = b" ".join(name.split())
            else:
                name = m.group("quoted")
            out.append((name, None, m.group("alocal"), m.group("ahost")))
        pos = m.end()
    return tuple(out)


def parse_address_list(value: bytes) -> tuple[Address, ...]:
    """
    The addresses of an address-list header value, with RFC 3501 group
    markers: ``(NIL NIL group NIL)`` ... ``(NIL NIL NIL NIL)``.  Garbage
    is skipped, never raised.
    """
    simple = _simple_address_list(value)
    if simple is not None:
        return simple
    return _parse_address_list(value)


def _parse_address_list(value: bytes) -> tuple[Address, ...]:
    """:func:`parse_address_list` for any value, token by token."""
    tokens = _tokenize(value)
    out: list[Address] = []
    current: list[Token] = []
    in_group = False
    depth = 0
    for token in tokens:
        kind = token[0]
        if kind == b"<":
            depth += 1
        elif kind == b">":
            depth = max(0, depth - 1)
        if depth == 0 and kind == b":" and not in_group and not any(
            t[0] == b"@" for t in current
        ):
            out.append((None, None, _phrase(current) or b"", None))
            in_group = True
            current = []
            continue
        if depth == 0 and kind in (b",", b";"):
            mailbox = _mailbox(current)
            if mailbox is not None:
                out.append(mailbox)
            current = []
            if kind == b";" and in_group:
                out.append((None, None, None, None))
                in_group = False
            continue
        current.append(token)
    mailbox = _mailbox(current)
    if mailbox is not None:
        out.append(mailbox)
    if in_group:
        out.append((None, None, None, None))
    return tuple(out)
