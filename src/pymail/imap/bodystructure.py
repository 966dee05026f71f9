"""
MIME structure of a message in wire form, as pure functions of its bytes:
BODYSTRUCTURE / BODY (RFC 3501 section 7.4.2) and the bytes of numbered
parts for ``BODY[1.2]`` and ``BODY[1.2.MIME]`` (section 6.4.5).

The parser is lenient: malformed MIME never raises, it gives the best
structure it can (a multipart without its boundary is one text part, as
RFC 2046 readers do), and nesting is capped so a hostile message cannot
exhaust the stack.
"""

from __future__ import annotations

import attrs

from pymail.imap.envelope import envelope, envelope_sexp
from pymail.imap.message import first_value, header_fields, split_message
from pymail.imap.responses import Run, Sexp

MAX_DEPTH = 40


@attrs.frozen
class Part:
    """
    One MIME entity.

    :ivar header: its header block (with the empty line).
    :ivar body: its content, CRLF form.
    :ivar type: lower-case media type; ``subtype`` likewise.
    :ivar params: Content-Type parameters, ``(name, value)`` as given.
    :ivar children: parts of a multipart.
    :ivar message: the encapsulated message of a message/rfc822 part.
    """

    header: bytes
    body: bytes
    fields: list[tuple[bytes, bytes]]
    type: bytes
    subtype: bytes
    params: tuple[tuple[bytes, bytes], ...]
    children: tuple[Part, ...] = ()
    message: Part | None = None


def _split_params(value: bytes) -> list[bytes]:
    out = []
    current = bytearray()
    quoted = False
    escaped = False
    for byte in value:
        ch = bytes((byte,))
        if escaped:
            current += ch
            escaped = False
        elif ch == b"\\" and quoted:
            current += ch
            escaped = True
        elif ch == b'"':
            quoted = not quoted
            current += ch
        elif ch == b";" and not quoted:
            out.append(bytes(current))
            current = bytearray()
        else:
            current += ch
    out.append(bytes(current))
    return out


def parse_params(items: list[bytes]) -> tuple[tuple[bytes, bytes], ...]:
    """``name=value`` parameters; quoted values unquoted, junk skipped."""
    params = []
    for item in items:
        name, eq, value = item.partition(b"=")
        name = name.strip()
        value = value.strip()
        if not eq or not name:
            continue
        if len(value) >= 2 and value.startswith(b'"') and value.endswith(b'"'):
            value = value[1:-1].replace(b'\\"', b'"').replace(b"\\\\", b"\\")
        params.append((name, value))
    return tuple(params)


def _content_type(
    fields: list[tuple[bytes, bytes]], default: tuple[bytes, bytes]
) -> tuple[bytes, bytes, tuple[tuple[bytes, bytes], ...]]:
    value = first_value(fields, b"content-type")
    if not value:
        if default == (b"text", b"plain"):
            return b"text", b"plain", ((b"charset", b"us-ascii"),)
        return default[0], default[1], ()
    pieces = _split_params(value)
    media, _, sub = pieces[0].strip().partition(b"/")
    media = media.strip().lower()
    sub = sub.strip().lower()
    if not media or not sub:
        return b"text", b"plain", ((b"charset", b"us-ascii"),)
    return media, sub, parse_params(pieces[1:])


def _split_multipart(body: bytes, boundary: bytes) -> list[bytes]:
    delimiter = b"--" + boundary
    parts: list[bytes] = []
    if body.startswith(delimiter):
        start_delim = 0
    else:
        found = body.find(b"\r\n" + delimiter)
        if found < 0:
            return []
        start_delim = found + 2
    while True:
        after = start_delim + len(delimiter)
        if body[after : after + 2] == b"--":
            return parts
        line_end = body.find(b"\r\n", after)
        if line_end < 0:
            return parts
        content_start = line_end + 2
        nxt = body.find(b"\r\n" + delimiter, content_start - 2)
        if nxt < 0:
            parts.append(body[content_start:])
            return parts
        parts.append(body[content_start:nxt] if nxt >= content_start else b"")
        start_delim = nxt + 2


def parse(
    message: bytes, default: tuple[bytes, bytes] = (b"text", b"plain"), depth: int = 0
) -> Part:
    """The MIME tree of an entity (a message or a body part)."""
    header, body = split_message(message)
    if not message.startswith(b"\r\n") and b"\r\n\r\n" not in message and b":" not in header:
        # A body part with no header at all.
        header, body = b"", message
    fields = header_fields(header)
    media, sub, params = _content_type(fields, default)
    if depth >= MAX_DEPTH:
        return Part(header, body, fields, media, sub, params)
    if media == b"multipart":
        boundary = dict((k.lower(), v) for k, v in params).get(b"boundary")
        chunks = _split_multipart(body, boundary) if boundary else []
        if chunks:
            child_default = (b"message", b"rfc822") if sub == b"digest" else (b"text", b"plain")
            children = tuple(parse(c, child_default, depth + 1) for c in chunks)
            return Part(header, body, fields, media, sub, params, children=children)
        return Part(header, body, fields, b"text", b"plain", ((b"charset", b"us-ascii"),))
    if media == b"message" and sub == b"rfc822":
        inner = parse(body, (b"text", b"plain"), depth + 1)
        return Part(header, body, fields, media, sub, params, message=inner)
    return Part(header, body, fields, media, sub, params)


def _lines(data: bytes) -> int:
    count = data.count(b"\n")
    if data and not data.endswith(b"\n"):
        count += 1
    return count


def _nstring_field(part: Part, name: bytes) -> bytes | None:
    value = first_value(part.fields, name)
    return value if value else None


def _params_sexp(params: tuple[tuple[bytes, bytes], ...]) -> Sexp:
    if not params:
        return None
    return [x for pair in params for x in pair]


def _disposition(part: Part) -> Sexp:
    value = first_value(part.fields, b"content-disposition")
    if not value:
        return None
    pieces = _split_params(value)
    kind = pieces[0].strip()
    if not kind:
        return None
    return [kind, _params_sexp(parse_params(pieces[1:]))]


def _language(part: Part) -> Sexp:
    value = first_value(part.fields, b"content-language")
    if not value:
        return None
    tags: list[Sexp] = [t.strip() for t in value.split(b",") if t.strip()]
    return tags or None


def _structure(part: Part, extended: bool, depth: int = 0) -> Sexp:
    if part.children:
        out: list[Sexp] = [Run(_structure(c, extended, depth + 1) for c in part.children)]
        out.append(part.subtype)
        if extended:
            out.extend(
                [
                    _params_sexp(part.params),
                    _disposition(part),
                    _language(part),
                    _nstring_field(part, b"content-location"),
                ]
            )
        return out
    encoding = _nstring_field(part, b"content-transfer-encoding") or b"7BIT"
    out = [
        part.type,
        part.subtype,
        _params_sexp(part.params),
        _nstring_field(part, b"content-id"),
        _nstring_field(part, b"content-description"),
        encoding,
        len(part.body),
    ]
    if part.message is not None:
        out.append(envelope_sexp(envelope(part.body)))
        out.append(_structure(part.message, extended, depth + 1))
        out.append(_lines(part.body))
    elif part.type == b"text":
        out.append(_lines(part.body))
    if extended:
        out.extend(
            [
                _nstring_field(part, b"content-md5"),
                _disposition(part),
                _language(part),
                _nstring_field(part, b"content-location"),
            ]
        )
    return out


def bodystructure(message: bytes, extended: bool = True) -> Sexp:
    """BODYSTRUCTURE (``extended``) or BODY of a message, for ``responses.sexp``."""
    return _structure(parse(message), extended)


def _child(node: Part, n: int, is_root: bool) -> Part | None:
    if node.children:
        return node.children[n - 1] if 0 < n <= len(node.children) else None
    if node.message is not None and not is_root:
        return _child(node.message, n, True)
    return node if n == 1 else None


def part_bytes(message: bytes, path: tuple[int, ...], mime: bool = False) -> bytes | None:
    """
    The content of part ``path`` (``(1, 2)`` for ``1.2``), or its MIME
    header with ``mime``; None when there is no such part.
    """
    node: Part | None = parse(message)
    is_root = True
    for n in path:
        assert node is not None
        node = _child(node, n, is_root)
        if node is None:
            return None
        is_root = False
    assert node is not None
    return node.header if mime else node.body
