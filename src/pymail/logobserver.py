"""
The text log observer ``twistd pymail`` logs through: the same lines as
twistd's own (``2026-11-27T10:00:00+0000 [namespace#level] text``, which
operators' scripts and the fail2ban filter in ``examples/fail2ban`` match),
made for less CPU per line.

twistd's observer formats the timestamp and flushes the file for every event
(60-90 us a line, about a tenth of the reactor thread under SMTP load).  This
one

* formats the timestamp once per second and reuses it;
* formats a plain event with ``str.format_map`` (what twistd's formatter
  does, minus its ``{name()}`` call syntax; anything else goes the slow,
  exact way);
* keeps a turn's lines in memory and writes and flushes them together at
  the end of the reactor turn (a ``callLater(0)``), at shutdown, and at once
  for events logged from other threads or while the reactor is not running.
  A crash loses at most the lines of the turn it happens in.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from typing import IO, Any

from twisted.logger import (
    ILogObserver,
    LogEvent,
    eventAsText,
    formatTime,
    timeFormatRFC3339,
)
from twisted.python import threadable
from twisted.python.compat import ioType
from twisted.python.logfile import LogFile
from zope.interface import implementer

#: A fractional second this close to the next one may round up to it in
#: ``datetime.fromtimestamp`` (microsecond rounding): such times are formatted
#: without the per-second cache.
_ROUNDING_EDGE = 0.9999995


def _plain_text(event: LogEvent) -> str | None:
    """
    The event's text as twistd's ``eventAsText`` would give it, or None when
    only the exact slow path can say (failures, legacy events, call syntax,
    formatting errors).
    """
    fmt = event.get("log_format")
    if type(fmt) is not str or "()" in fmt or "log_failure" in event:
        return None
    try:
        return fmt.format_map(event)
    except Exception:
        return None


@implementer(ILogObserver)
class TurnFlushingLogObserver:
    """
    Write events as twistd's classic text lines to ``out``, flushing at most
    once per reactor turn.

    :param out: a text file (``sys.stdout``) or a binary one
        (:class:`twisted.python.logfile.LogFile`), like twistd's observer.
    :param reactor: provides ``callLater`` and ``running``.
    :param in_reactor_thread: says whether the caller is the reactor's thread.
    """

    def __init__(
        self,
        out: IO[Any] | LogFile,
        reactor: Any,
        time_format: str | None = timeFormatRFC3339,
        in_reactor_thread: Callable[[], bool] = threadable.isInIOThread,
    ) -> None:
        self._out = out
        self._binary = ioType(out) is not str
        self._reactor = reactor
        self._time_format = time_format
        self._in_reactor_thread = in_reactor_thread
        self._second: int | None = None
        self._second_text = "-"
        self._pending: list[str] = []

    def _timestamp(self, when: float | None) -> str:
        if when is None or self._time_format is None:
            return formatTime(when, self._time_format)
        second = int(when)
        if when - second >= _ROUNDING_EDGE:
            return formatTime(when, self._time_format)
        if second != self._second:
            self._second_text = formatTime(second, self._time_format)
            self._second = second
        return self._second_text

    def format(self, event: LogEvent) -> str | None:
        """The line for ``event`` (with its newline), or None for an event with no text."""
        text = _plain_text(event)
        if text is None:
            text = eventAsText(event, includeTraceback=True, includeTimestamp=False,
                               includeSystem=False)
            if not text:
                return None
        if "\n" in text:
            text = text.replace("\n", "\n\t")
        system = event.get("log_system")
        if system is None:
            level = event.get("log_level")
            system = f"{event.get('log_namespace', '-')}#{level.name if level else '-'}"
        else:
            try:
                system = str(system)
            except Exception:
                system = "UNFORMATTABLE"
        return f"{self._timestamp(event.get('log_time'))} [{system}] {text}\n"

    def __call__(self, event: LogEvent) -> None:
        line = self.format(event)
        if not line:
            return
        if not self._in_reactor_thread():
            # Another thread: the held lines are the reactor thread's to touch.
            self._write(line)
            self._out.flush()
        elif getattr(self._reactor, "running", False):
            if not self._pending:
                self._reactor.callLater(0, self.flush)
            self._pending.append(line)
        else:
            self._pending.append(line)
            self.flush()

    def _write(self, text: str) -> None:
        self._out.write(text.encode("utf-8") if self._binary else text)

    def flush(self) -> None:
        """Write and flush every line held so far."""
        if self._pending:
            text = "".join(self._pending)
            self._pending = []
            self._write(text)
        self._out.flush()


def observer_for_twistd(twistd_options: Any, reactor: Any) -> TurnFlushingLogObserver | None:
    """
    The observer for the log destination twistd's options name, chosen the
    way twistd chooses its own (stdout under ``-n`` without ``--logfile`` or
    with ``--logfile -``; else the file, ``twistd.log`` by default, rotated
    by size and on SIGUSR1), or None to leave logging to twistd (``--syslog``,
    ``--logger``, or a daemon asked to log to stdout, which twistd refuses).
    """
    if twistd_options is None or twistd_options.get("logger") or twistd_options.get("syslog"):
        return None
    filename = twistd_options.get("logfile")
    nodaemon = twistd_options.get("nodaemon")
    out: IO[Any] | LogFile
    if filename == "-" or (nodaemon and not filename):
        if not nodaemon:
            return None
        out = sys.stdout
    else:
        log_file = LogFile.fromFullPath(filename or "twistd.log")
        if not signal.getsignal(signal.SIGUSR1):

            def rotate(signum: int, frame: Any) -> None:
                reactor.callFromThread(log_file.rotate)

            signal.signal(signal.SIGUSR1, rotate)
        out = log_file
    observer = TurnFlushingLogObserver(out, reactor)
    reactor.addSystemEventTrigger("after", "shutdown", observer.flush)
    return observer
