#!/usr/bin/env python3
"""
CPU per call of the shared per-message paths under SMTP delivery (#6, #3):
one log line through twistd's text observer and through pymail's
TurnFlushingLogObserver, one account lookup with and without the
once-per-turn stamp check, and to_crlf / to_lf on mailgen messages.

    python benchmarks/shared_paths.py             # 20,000 calls per figure
    python benchmarks/shared_paths.py -n 2000

Prints microseconds of process CPU per call; no network, files only in a
temporary directory.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import mailgen  # noqa: E402
from twisted.internet.task import Clock  # noqa: E402
from twisted.logger import LogLevel, textFileLogObserver  # noqa: E402

from pymail.directory.files import FileDirectory  # noqa: E402
from pymail.logobserver import TurnFlushingLogObserver  # noqa: E402
from pymail.storage.fsutil import to_crlf, to_lf  # noqa: E402

#: Log lines and account lookups per simulated reactor turn.
LINES_PER_TURN = (1, 4)
LOOKUPS_PER_TURN = 3


class _RunningClock(Clock):
    running = True


def _event() -> dict[str, object]:
    return {
        "log_format": "mail.accepted id={queue_id} client={client} from={sender} "
                      "to={recipients} size={size} reply={reply} stored={stored}",
        "queue_id": "06H1OTVE880V2KPM", "client": "127.0.0.1",
        "sender": "<sender@remote.example>", "recipients": "<sink@example.org>", "size": 4332,
        "reply": '"250 2.0.0 Ok: queued as 06H1OTVE880V2KPM"',
        "stored": '"sink@example.org/INBOX"', "log_level": LogLevel.info,
        "log_namespace": "pymail.maillog", "log_time": time.time(),
    }


def _per_call(count: int, call: Callable[[int], object]) -> float:
    start = time.process_time()
    for i in range(count):
        call(i)
    return (time.process_time() - start) / count * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--count", type=int, default=20_000, help="calls per figure")
    args = parser.parse_args(argv)
    n = args.count
    with tempfile.TemporaryDirectory() as tmp:
        event = _event()
        with open(Path(tmp) / "twistd.log", "w") as out:
            observe = textFileLogObserver(out)
            cost = _per_call(n, lambda i: observe(event))
            print(f"log line, twistd observer          {cost:7.2f} us")
        for per_turn in LINES_PER_TURN:
            with open(Path(tmp) / "pymail.log", "w") as out:
                clock = _RunningClock()
                ours = TurnFlushingLogObserver(out, clock, in_reactor_thread=lambda: True)

                def line(i: int, ours: TurnFlushingLogObserver = ours,
                         clock: Clock = clock, per_turn: int = per_turn) -> None:
                    ours(event)
                    if i % per_turn == per_turn - 1:
                        clock.advance(0)

                print(f"log line, pymail ({per_turn}/turn)          "
                      f"{_per_call(n, line):7.2f} us")
        writer = FileDirectory(tmp)
        writer.add_domain("example.org")
        writer.add_user("sink@example.org", "h")
        plain = FileDirectory(tmp)
        print(f"lookup, stat every call            "
              f"{_per_call(n, lambda i: plain.has_user('sink@example.org')):7.2f} us")
        clock = _RunningClock()
        turned = FileDirectory(tmp, clock)

        def lookup(i: int) -> None:
            turned.has_user("sink@example.org")
            if i % LOOKUPS_PER_TURN == LOOKUPS_PER_TURN - 1:
                clock.advance(0)

        cost = _per_call(n, lookup)
        print(f"lookup, once per turn ({LOOKUPS_PER_TURN}/turn)     {cost:7.2f} us")
    for size in (4096, 102_400):
        lf = mailgen.make_message(1, size)
        wire = lf.replace(b"\n", b"\r\n")
        calls = max(1, n // (size // 4096))
        crlf_cost = _per_call(calls, lambda i, lf=lf: to_crlf(lf))
        lf_cost = _per_call(calls, lambda i, wire=wire: to_lf(wire))
        print(f"to_crlf {size:>6} octets              {crlf_cost:7.2f} us")
        print(f"to_lf   {size:>6} octets              {lf_cost:7.2f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
