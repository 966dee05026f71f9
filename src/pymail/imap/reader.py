"""
The line-and-literal reader under pymail's IMAP server.

IMAP commands are lines, except that a line ending in ``{n}`` or ``{n+}``
announces a literal of exactly ``n`` octets that follows the CRLF, after
which the command line continues (RFC 3501 section 4.3, RFC 7888).  The
reader reassembles each command into one byte string in wire form (without
the final CRLF) and hands it to :meth:`LiteralReader.command_received`.

The reader can be *paused* by its subclass while a command is running:
bytes keep arriving and are buffered but not looked at, so commands run
strictly one at a time and in order, and so a later extension (IDLE,
AUTHENTICATE, STARTTLS) can take over the raw lines that follow a command
(see :meth:`LiteralReader.take_lines`).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from twisted.internet.protocol import Protocol

_LITERAL_AT_END = re.compile(rb"\{(\d{1,20})(\+?)\}\Z")
_TAG = re.compile(rb"[^\x00-\x20\x7f(){%*\"\\+]+")

#: While paused, the reader stops reading from the transport once this much
#: unread input is buffered.
PAUSED_BUFFER_LIMIT = 1024 * 1024


def guess_tag(data: bytes) -> bytes | None:
    """The tag at the start of a (possibly partial) command line, if it has one."""
    m = _TAG.match(data)
    if m is None or data[m.end() : m.end() + 1] not in (b" ", b""):
        return None
    return m.group()


class LiteralReader(Protocol):
    """
    Splits the input into IMAP commands, reading literals exactly.

    Subclasses implement :meth:`command_received`, :meth:`send_raw`,
    :meth:`literal_too_big`, :meth:`line_too_long` and may call
    :meth:`pause_reading` / :meth:`resume_reading`.

    :ivar max_line_length: the longest line (without CRLF) accepted.
    :ivar max_literal_size: the biggest literal accepted.
    """

    # Slots keep an idle connection small (see pymail.imap.server).
    __slots__ = (
        "max_line_length", "max_literal_size", "_buffer", "_pos", "_parts", "_literal_left",
        "_paused", "_processing", "_stopped", "_transport_paused", "_line_taker",
    )

    def __init__(self) -> None:
        self.max_line_length = 64 * 1024
        self.max_literal_size = 64 * 1024 * 1024
        self._buffer = b""
        self._pos = 0
        #: the command assembled so far: line pieces and literals, CRLFs kept
        self._parts: list[bytes] = []
        self._literal_left = 0
        self._paused = False
        self._processing = False
        self._stopped = False
        self._transport_paused = False
        self._line_taker: Callable[[bytes], None] | None = None

    def _reset_command(self) -> None:
        self._parts = []
        self._literal_left = 0

    def connectionMade(self) -> None:
        self._reset_command()

    # -- hooks for subclasses -------------------------------------------------

    def command_received(self, command: bytes) -> None:
        """One whole command (wire form, literals inline, no final CRLF)."""
        raise NotImplementedError

    def send_raw(self, data: bytes) -> None:
        """Write bytes to the client at once (continuation requests)."""
        raise NotImplementedError

    def literal_limit(self) -> int:
        """The biggest literal accepted right now (the server lowers it before login)."""
        return self.max_literal_size

    def literal_too_big(self, tag: bytes | None, size: int, synchronising: bool) -> None:
        """
        A literal over :meth:`literal_limit` was announced; its bytes were
        not read.  For a synchronising literal the command is dropped and
        reading goes on with the next line; for a non-synchronising one the
        client is already sending it, so the subclass must close.
        """
        raise NotImplementedError

    def line_too_long(self, tag: bytes | None) -> None:
        """A line over :attr:`max_line_length`; the subclass must close."""
        raise NotImplementedError

    # -- control --------------------------------------------------------------

    def pause_reading(self) -> None:
        """Stop looking at input until :meth:`resume_reading`."""
        self._paused = True

    def resume_reading(self) -> None:
        """Look at buffered input again and go on reading."""
        self._paused = False
        if self._transport_paused and self.transport is not None:
            self._transport_paused = False
            self.transport.resumeProducing()  # type: ignore[attr-defined]
        self._process()

    def stop_reading(self) -> None:
        """Never look at input again (the connection is closing)."""
        self._stopped = True
        self._buffer = b""
        self._pos = 0

    def take_lines(self, taker: Callable[[bytes], None] | None) -> None:
        """
        Send whole input lines (without CRLF) to ``taker`` instead of
        parsing commands, until called again with ``None``.  For IDLE's
        ``DONE`` and AUTHENTICATE's responses.
        """
        self._line_taker = taker

    def discard_buffered_input(self) -> None:
        """Forget input not yet looked at (after STARTTLS, RFC 3207 style)."""
        self._buffer = b""
        self._pos = 0

    # -- the reading loop -----------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._stopped:
            return
        if self._pos:
            self._buffer = self._buffer[self._pos :] + data
            self._pos = 0
        else:
            self._buffer += data
        if self._paused:
            if len(self._buffer) > PAUSED_BUFFER_LIMIT and not self._transport_paused:
                # Stop reading from the socket until the running command is done.
                self._transport_paused = True
                self.transport.pauseProducing()  # type: ignore[union-attr]
            return
        self._process()

    def _process(self) -> None:
        if self._processing:
            return
        self._processing = True
        try:
            while not self._paused and not self._stopped and self._pos < len(self._buffer):
                if self._literal_left:
                    self._read_literal()
                    continue
                end = self._buffer.find(b"\n", self._pos)
                if end < 0:
                    if len(self._buffer) - self._pos > self.max_line_length + 1:
                        self._too_long(self._buffer[self._pos : self._pos + 200])
                    break
                line = self._buffer[self._pos : end]
                self._pos = end + 1
                if line.endswith(b"\r"):
                    line = line[:-1]
                if len(line) > self.max_line_length:
                    self._too_long(line)
                    break
                self._line(line)
        finally:
            self._processing = False
            if self._pos >= len(self._buffer):
                self._buffer = b""
                self._pos = 0

    def _too_long(self, line: bytes) -> None:
        first = self._parts[0] if self._parts else line[:200]
        self.stop_reading()
        self.line_too_long(guess_tag(first))

    def _read_literal(self) -> None:
        available = len(self._buffer) - self._pos
        take = min(available, self._literal_left)
        self._parts.append(self._buffer[self._pos : self._pos + take])
        self._pos += take
        self._literal_left -= take

    def _line(self, line: bytes) -> None:
        if self._line_taker is not None and not self._parts:
            self._line_taker(line)
            return
        m = _LITERAL_AT_END.search(line)
        if m is None:
            self._parts.append(line)
            command = b"".join(self._parts)
            self._reset_command()
            self.command_received(command)
            return
        size = int(m.group(1))
        synchronising = not m.group(2)
        limit = self.literal_limit()
        total = size + sum(len(p) for p in self._parts)
        if size > limit or total > limit + self.max_line_length:
            first = self._parts[0] if self._parts else line
            self._reset_command()
            if not synchronising:
                self.stop_reading()
            self.literal_too_big(guess_tag(first), size, synchronising)
            return
        self._parts.append(line)
        self._parts.append(b"\r\n")
        self._literal_left = size
        if synchronising:
            self.send_raw(b"+ Ready for literal data\r\n")
