"""The turn-flushing log observer: twistd's exact lines, written once per reactor turn."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.application.service import Application
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import (
    ILogObserver,
    LogLevel,
    formatEventAsClassicLogText,
    formatTime,
    timeFormatRFC3339,
)
from twisted.python.failure import Failure
from twisted.python.logfile import LogFile
from twisted.scripts.twistd import ServerOptions

from pymail.logobserver import TurnFlushingLogObserver, observer_for_twistd
from pymail.tap import makeService

NOW = 1_795_780_000.25


class _RunningClock(Clock):
    """A Clock that says it is running, as the real reactor does once started."""

    running = True


class _CountingFile(io.StringIO):
    """A text file that counts its flushes."""

    flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


def _twistd_line(event: dict[str, Any]) -> str | None:
    return formatEventAsClassicLogText(event, lambda t: formatTime(t, timeFormatRFC3339))


def _failure() -> Failure:
    try:
        raise ValueError("boom")
    except ValueError:
        return Failure()


def _events() -> list[dict[str, Any]]:
    base = {"log_time": NOW, "log_level": LogLevel.info, "log_namespace": "pymail.maillog"}
    return [
        {**base, "log_format": "mail.accepted id={queue_id} size={size}", "queue_id": "Q1",
         "size": 1234},
        {**base, "log_format": "width {n:>6} and {r!r}", "n": 7, "r": "x"},
        {**base, "log_format": "missing {nothing}"},
        {**base, "log_format": "call {f()}", "f": lambda: "called"},
        {**base, "log_format": "two\nlines"},
        {**base, "log_format": "braces {{literal}}"},
        {**base, "log_format": "failed", "log_failure": _failure()},
        {**base, "log_format": "from {log_namespace}", "log_system": "custom"},
        {"log_time": NOW, "log_format": None, "message": ("legacy",), "log_system": "-"},
        {**base, "log_format": "no time", "log_time": None},
        {"log_time": NOW, "log_format": "no level or namespace"},
        {**base, "log_format": None},
    ]


def test_lines_are_twistds_lines() -> None:
    """Every kind of event gives byte for byte the line twistd's own text observer gives."""
    observer = TurnFlushingLogObserver(io.StringIO(), Clock())
    for event in _events():
        assert observer.format(event) == _twistd_line(event), event


@given(st.floats(min_value=0, max_value=4_000_000_000, allow_nan=False))
def test_cached_timestamp_matches_twistds(when: float) -> None:
    """The per-second timestamp cache gives twistd's timestamp for any time, edges included."""
    observer = TurnFlushingLogObserver(io.StringIO(), Clock())
    event = {"log_time": when, "log_format": "x", "log_namespace": "n"}
    observer.format({**event, "log_time": int(when)})  # fill the cache for this second
    assert observer.format(event) == _twistd_line(event)


def test_lines_are_written_once_per_turn() -> None:
    """In the reactor thread, a turn's lines are written and flushed together when it ends."""
    out = _CountingFile()
    clock = _RunningClock()
    observer = TurnFlushingLogObserver(out, clock, in_reactor_thread=lambda: True)
    events = _events()[:3]
    for event in events:
        observer(event)
    assert out.getvalue() == ""
    clock.advance(0)
    assert out.getvalue() == "".join(_twistd_line(e) or "" for e in events)
    assert out.flushes == 1
    assert not clock.getDelayedCalls()


def test_other_threads_and_a_stopped_reactor_write_at_once() -> None:
    """Events from another thread, or while the reactor is not running, are flushed at once."""
    out = _CountingFile()
    event = _events()[0]
    TurnFlushingLogObserver(out, _RunningClock(), in_reactor_thread=lambda: False)(event)
    assert out.getvalue() == _twistd_line(event)
    TurnFlushingLogObserver(out, Clock(), in_reactor_thread=lambda: True)(event)
    assert out.getvalue() == 2 * (_twistd_line(event) or "")
    assert out.flushes == 2


def test_binary_log_file_gets_utf8(tmp_path: Path) -> None:
    """A twistd LogFile (binary) receives the lines encoded as UTF-8."""
    log_file = LogFile.fromFullPath(str(tmp_path / "p.log"))
    event = {**_events()[0], "queue_id": "Ré"}
    observer = TurnFlushingLogObserver(log_file, Clock())
    observer(event)
    log_file.close()
    assert (tmp_path / "p.log").read_bytes() == (_twistd_line(event) or "").encode("utf-8")


def test_twistd_destinations(tmp_path: Path) -> None:
    """The observer goes where twistd's would: stdout under -n, else the file; not syslog."""
    reactor = MemoryReactorClock()
    on_stdout = observer_for_twistd({"nodaemon": True, "logfile": None}, reactor)
    assert on_stdout is not None and on_stdout._out is sys.stdout
    to_file = observer_for_twistd({"nodaemon": True, "logfile": str(tmp_path / "x.log")}, reactor)
    assert to_file is not None and isinstance(to_file._out, LogFile)
    to_file._out.close()
    assert observer_for_twistd({"nodaemon": True, "syslog": True}, reactor) is None
    assert observer_for_twistd({"nodaemon": True, "logger": "a.b"}, reactor) is None
    assert observer_for_twistd({"nodaemon": False, "logfile": "-"}, reactor) is None


def test_held_lines_are_flushed_at_shutdown() -> None:
    """The observer made for twistd flushes the turn's lines after the reactor shuts down."""
    reactor = MemoryReactorClock()
    observer = observer_for_twistd({"nodaemon": True, "logfile": None}, reactor)
    assert observer is not None
    observer._out = out = _CountingFile()
    reactor.running = True
    observer._in_reactor_thread = lambda: True
    observer(_events()[0])
    assert out.getvalue() == ""
    for trigger in reactor.triggers["after"]["shutdown"]:
        trigger[0]()
    assert out.getvalue() == _twistd_line(_events()[0])


def test_twistd_pymail_installs_the_observer(tmp_path: Path) -> None:
    """`twistd -n pymail` puts the observer on twistd's application, so twistd logs through it."""
    config = tmp_path / "pymail.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\nhostname = "mx.test"\n'
        + "".join(f'[{name}]\nlisten = ["tcp:0:interface=127.0.0.1"]\n'
                  for name in ("smtp", "submission", "imap", "pop3"))
    )
    options = ServerOptions()
    options.parseOptions(["-n", "pymail", "--config", str(config)])
    service = makeService(options.subOptions)
    try:
        application = Application("pymail")
        service.setServiceParent(application)
        observer = application.getComponent(ILogObserver)
        assert isinstance(observer, TurnFlushingLogObserver)
        assert observer._out is sys.stdout
    finally:
        for listener in service.listeners():
            listener.stopService()
