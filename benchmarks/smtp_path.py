#!/usr/bin/env python3
"""
CPU per message of the SMTP protocol's own work (#6), in-process: the real
SMTPServer, LocalDelivery and FileDirectory, the `memory` storage backend
and pymail's log observer writing to /dev/null, driven through fake
transports on 10 sessions as load_smtp.py drives a server (MAIL, RCPT and
DATA in one read, then the body in reads of at most 64 KiB, one reactor
turn after each).  No sockets, no disk: what is left is parsing, the DATA
reader, the Received header, the policy, the log line and the Deferreds.

    python benchmarks/smtp_path.py                  # 4 KiB and 100 KiB
    python benchmarks/smtp_path.py --size 4096 -n 5000 --repeats 7

Prints, per size, the minimum and median over the repeats of process CPU
microseconds per message.  To compare two versions of the code, run it
against each in turn (e.g. ``PYTHONPATH=/path/to/other/src``), interleaved.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import load_smtp  # noqa: E402
from twisted.internet import reactor  # noqa: E402
from twisted.internet.testing import StringTransport  # noqa: E402
from twisted.logger import globalLogBeginner  # noqa: E402

from pymail.directory.files import FileDirectory  # noqa: E402
from pymail.logobserver import TurnFlushingLogObserver  # noqa: E402
from pymail.smtp.delivery import LocalDelivery  # noqa: E402
from pymail.smtp.server import SMTPFactory, SMTPServer  # noqa: E402
from pymail.storage.memory import MemoryStoreFactory  # noqa: E402

SESSIONS = 10
#: What one read from a TCP socket gives Twisted at most.
READ_SIZE = 65536
#: Stored messages are dropped this often, so memory does not grow.
DROP_EVERY = 20
ENVELOPE = b"MAIL FROM:<sender@remote.example>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n"


def _setup(data_dir: str) -> tuple[list[tuple[SMTPServer, StringTransport]], MemoryStoreFactory]:
    Path(data_dir, "domains").write_text("example.org\n")
    Path(data_dir, "passwd").write_text("bob@example.org:x::::::\n")
    # The reactor is not run; it is marked running so that the directory and
    # the log observer behave as under twistd (once-per-turn work), and each
    # turn is ended by hand with runUntilCurrent().
    reactor.running = True  # type: ignore[attr-defined]
    globalLogBeginner.beginLoggingTo(
        [TurnFlushingLogObserver(open("/dev/null", "w"), reactor,  # noqa: SIM115
                                 in_reactor_thread=lambda: True)],
        redirectStandardIO=False, discardBuffer=True)
    stores = MemoryStoreFactory()
    delivery = LocalDelivery(FileDirectory(data_dir, reactor), stores, data_dir)
    factory = SMTPFactory("mx.example.org", delivery, reactor)
    sessions = []
    for _ in range(SESSIONS):
        server = factory.buildProtocol(None)
        transport = StringTransport()
        server.makeConnection(transport)
        server.dataReceived(b"EHLO client.example\r\n")
        sessions.append((server, transport))
    return sessions, stores


def _run(sessions: list[tuple[SMTPServer, StringTransport]], stores: MemoryStoreFactory,
         messages: list[bytes], count: int) -> None:
    turn: Any = reactor.runUntilCurrent  # type: ignore[attr-defined]
    for k in range(count):
        server, transport = sessions[k % SESSIONS]
        server.dataReceived(ENVELOPE)
        turn()
        body = messages[k % len(messages)]
        for start in range(0, len(body), READ_SIZE):
            server.dataReceived(body[start:start + READ_SIZE])
        turn()
        transport.clear()
        if k % DROP_EVERY == 0:
            stores._stores.clear()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, action="append",
                        help="message size in octets (repeatable; default 4096 and 102400)")
    parser.add_argument("-n", "--messages", type=int, default=0,
                        help="messages per repeat (default 3000 for 4 KiB, 600 for 100 KiB)")
    parser.add_argument("--repeats", type=int, default=5, help="repeats per size (default 5)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        sessions, stores = _setup(data_dir)
        for size in args.size or [4096, 102400]:
            count = args.messages or (3000 if size < 50_000 else 600)
            messages = load_smtp.wire_messages(size, "bob@example.org")
            _run(sessions, stores, messages, 100)  # warm up
            per_message = []
            for _ in range(args.repeats):
                start = time.process_time()
                _run(sessions, stores, messages, count)
                per_message.append((time.process_time() - start) / count * 1e6)
                stores._stores.clear()
            print(f"size={size:<7} us_per_msg min {min(per_message):7.1f} "
                  f"median {statistics.median(per_message):7.1f}  ({args.repeats} x {count})")


if __name__ == "__main__":
    main()
