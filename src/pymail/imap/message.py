"""
Byte-exact views of a message in wire form: the header block, the body,
and header fields with their folded lines, as FETCH BODY[HEADER...], SEARCH
and ENVELOPE need them.  8-bit bytes are carried through untouched.
"""

from __future__ import annotations

import email.header
import re

_FIELD_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")
_UNFOLD = re.compile(rb"\r?\n(?=[ \t])")


def split_message(message: bytes) -> tuple[bytes, bytes]:
    """
    The header (including the empty line that ends it) and the body.

    A message without an empty line is all header (RFC 3501: BODY[TEXT] is
    then empty).
    """
    if message.startswith(b"\r\n"):
        return b"\r\n", message[2:]
    end = message.find(b"\r\n\r\n")
    if end < 0:
        return message, b""
    return message[: end + 4], message[end + 4 :]


def header_fields(header: bytes) -> list[tuple[bytes, bytes]]:
    """
    The fields of a header block, in order: ``(lower-case name, raw bytes
    of the whole field including continuation lines and CRLF)``.  Lines
    that are not fields (junk before the first field) are kept with name
    ``b""`` so nothing is lost.
    """
    fields: list[tuple[bytes, bytes]] = []
    lines = header.split(b"\r\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for line in lines:
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and fields:
            name, raw = fields[-1]
            fields[-1] = (name, raw + line + b"\r\n")
            continue
        m = _FIELD_NAME.match(line)
        fields.append((m.group(1).lower() if m else b"", line + b"\r\n"))
    return fields


def field_value(raw_field: bytes) -> bytes:
    """The unfolded value of one raw field (after the colon), stripped."""
    _, _, value = raw_field.partition(b":")
    return _UNFOLD.sub(b"", value).strip()


def first_value(fields: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The unfolded value of the first field called ``name`` (lower case)."""
    for fname, raw in fields:
        if fname == name:
            return field_value(raw)
    return None


def header_subset(header: bytes, names: frozenset[bytes], exclude: bool) -> bytes:
    """
    BODY[HEADER.FIELDS (...)] / BODY[HEADER.FIELDS.NOT (...)]: the fields
    named (or all but those) with repeated fields kept, then the empty line.
    """
    out = [
        raw
        for name, raw in header_fields(header)
        if name and ((name in names) != exclude)
    ]
    out.append(b"\r\n")
    return b"".join(out)


def decoded_value(raw_value: bytes) -> str:
    """
    A header value as text for SEARCH: RFC 2047 encoded-words decoded where
    they can be, other bytes as UTF-8 (or Latin-1 when that fails).
    """
    try:
        text = raw_value.decode("utf-8")
    except UnicodeDecodeError:
        text = raw_value.decode("latin-1")
    if "=?" not in text:
        return text
    try:
        return str(email.header.make_header(email.header.decode_header(text)))
    except Exception:
        return text
