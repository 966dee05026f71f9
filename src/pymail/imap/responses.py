"""
Writing IMAP responses: the quoting rules of RFC 3501 section 4 and a
writer that batches a command's responses into few ``transport.write``
calls.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Union

import twisted.mail.imap4  # noqa: F401  (registers the "imap4-utf-7" codec)
from twisted.internet.interfaces import ITransport

#: What may go into a quoted string unchanged: CHARs without CR, LF, NUL.
_QUOTABLE = re.compile(rb'[\x01-\x09\x0b\x0c\x0e-\x7f]*\Z')
_NEEDS_QUOTES = re.compile(rb'[\x00-\x20\x7f-\xff(){%*"\\\]]')
_QUOTE_ESCAPE = re.compile(rb'(["\\])')

class Run(tuple):  # type: ignore[type-arg]
    """
    Items written one after the other with no separator and no parentheses:
    RFC 3501 writes address lists as ``"(" 1*address ")"`` and a multipart
    body as ``"(" 1*body SP media-subtype ...``.
    """


#: A value ``sexp`` can write: None is NIL, ints are numbers, bytes are
#: strings (quoted or literal), lists and tuples are parenthesised (with
#: single spaces), a :class:`Run` is concatenated.
Sexp = Union[None, int, bytes, "list[Sexp]", "tuple[Sexp, ...]", Run]

#: Flush the batched responses to the transport at about this size.
CHUNK_SIZE = 64 * 1024
#: Queued chunks this long or shorter on average are joined before writing.
SMALL_CHUNK = 512


def string(value: bytes) -> bytes:
    """A string: quoted when it can be, else a literal (8-bit, CR, LF, NUL, long)."""
    if len(value) < 1024 and _QUOTABLE.match(value):
        if b'"' in value or b"\\" in value:
            value = _QUOTE_ESCAPE.sub(rb"\\\1", value)
        return b'"' + value + b'"'
    return literal(value)


def literal(value: bytes) -> bytes:
    """A literal ``{n}`` CRLF followed by the bytes."""
    return b"{%d}\r\n" % len(value) + value


def nstring(value: bytes | None) -> bytes:
    return b"NIL" if value is None else string(value)


def astring(value: bytes) -> bytes:
    """An atom if ``value`` is a non-empty atom other than NIL, else a string."""
    if value and not _NEEDS_QUOTES.search(value) and value.upper() != b"NIL":
        return value
    return string(value)


def sexp(value: Sexp) -> bytes:
    """The wire form of a nested structure (ENVELOPE, BODYSTRUCTURE)."""
    if value is None:
        return b"NIL"
    if isinstance(value, bytes):
        return string(value)
    if isinstance(value, int):
        return b"%d" % value
    if isinstance(value, Run):
        return b"".join([sexp(v) for v in value])
    return b"(" + b" ".join([sexp(v) for v in value]) + b")"


def encode_mailbox(name: str) -> bytes:
    """A mailbox name in modified UTF-7 (RFC 3501 section 5.1.3)."""
    return name.encode("imap4-utf-7")


def decode_mailbox(name: bytes) -> str:
    """
    A mailbox name from the wire, in modified UTF-7.

    :raises ValueError: it is not valid modified UTF-7.
    """
    try:
        text = name.decode("imap4-utf-7")
        canonical = text.encode("imap4-utf-7") == name
    except (UnicodeError, ValueError) as e:
        raise ValueError(f"mailbox name is not valid modified UTF-7: {e}") from None
    if not canonical:
        # Twisted's codec is lenient; RFC 3501 5.1.3 allows only the one encoding.
        shown = name.decode("ascii", "backslashreplace")
        raise ValueError(f"mailbox name {shown!r} is not in canonical modified UTF-7")
    return text


def flag_list(flags: Iterable[str]) -> bytes:
    """``(\\Seen foo)``: the flags, sorted for stable output."""
    return ("(" + " ".join(sorted(flags)) + ")").encode("ascii", "replace")


def response_code(code: str | None) -> bytes:
    return b"" if not code else b"[" + code.encode("utf-8") + b"] "


class ResponseWriter:
    """
    Collects response lines and writes them in large chunks.

    Callers add complete response lines (with CRLF) through :meth:`add`,
    and call :meth:`flush` when a command's responses are complete or before
    waiting for something.  Writes after :meth:`close` are dropped.
    """

    __slots__ = ("_transport", "_chunks", "_size", "_closed")

    def __init__(self, transport: ITransport) -> None:
        self._transport = transport
        self._chunks: list[bytes] = []
        self._size = 0
        self._closed = False

    def add(self, data: bytes) -> None:
        """Queue bytes; writes out once about :data:`CHUNK_SIZE` bytes are queued."""
        self._chunks.append(data)
        self._size += len(data)
        if self._size >= CHUNK_SIZE:
            self.flush()

    def untagged(self, text: bytes) -> None:
        self.add(b"* " + text + b"\r\n")

    def tagged(self, tag: bytes, status: str, text: str, code: str | None = None) -> None:
        self.add(
            tag + b" " + status.encode("ascii") + b" " + response_code(code)
            + text.encode("utf-8", "replace") + b"\r\n"
        )

    def flush(self) -> None:
        chunks = self._chunks
        if chunks and not self._closed:
            if len(chunks) == 1:
                self._transport.write(chunks[0])
            elif len(chunks) * SMALL_CHUNK >= self._size:
                # Many short lines (FETCH FLAGS, STORE): one join here is
                # cheaper than the transport's checks and bookkeeping per
                # chunk; message bodies go through whole, uncopied.
                self._transport.write(b"".join(chunks))
            else:
                self._transport.writeSequence(chunks)
        self._chunks = []
        self._size = 0

    def close(self) -> None:
        self.flush()
        self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed
