#!/usr/bin/env python3
"""
Webmail and a huge message: how much CPU the server's reactor thread spends
to show one (the rest of the server waits for that long), and how long
another user's page takes meanwhile.  The message is the cheapest attack an
outside sender has: 20 MB of empty lines (issue 8).  Real ``twistd pymail``
process, Maildir, HTTP over loopback; CPU read from /proc.

    python benchmarks/web_big_message.py
    python benchmarks/web_big_message.py --megabytes 20 --views 3

Bounded by --views and each request's 600 s timeout; loopback only.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from web_bench import (  # noqa: E402
    PASSWORD,
    USER,
    Client,
    PymailProcess,
    fill_maildir,
    free_port,
    wait_for_port,
)

import procstat  # noqa: E402

_TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of all of ``pid``'s threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="example: python benchmarks/web_big_message.py "
                                            "--megabytes 20 --views 3")
    parser.add_argument("--megabytes", type=int, default=20, help="size of the message")
    parser.add_argument("--views", type=int, default=3, help="timed views of it")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pymail-web-big-") as tmp:
        port = free_port()
        proc = PymailProcess(Path(tmp), extra_config=(
            f'[web]\nlisten = ["tcp:{port}:interface=127.0.0.1"]\n'), users={USER: PASSWORD})
        box = proc.data_dir / "mail" / "localhost" / "bench"
        fill_maildir(box, 1)
        big = (f"From: Stranger <x@remote.example>\nTo: {USER}\nSubject: huge\n"
               "MIME-Version: 1.0\nContent-Type: text/plain\n\n").encode()
        big += b"\n" * (args.megabytes * 1024 * 1024 // 2)  # CRLF on the wire: 2 bytes a line
        (box / "new" / "1800000000.M1P1.huge").write_bytes(big)
        proc.start()
        try:
            assert proc.proc is not None
            pid = proc.proc.pid
            wait_for_port(proc, port)
            viewer, other = Client(port), Client(port)
            viewer.sign_in()
            other.sign_in()
            other.request("GET", "/mail/INBOX")
            uid = None
            for candidate in ("2", "1"):
                status, page = viewer.request("GET", f"/mail/INBOX/{candidate}")
                if b"huge" in page[:20000]:
                    uid = candidate
                    break
            if uid is None:
                raise SystemExit("the huge message was not found")
            rows = []
            for _ in range(args.views):
                reactor0, all0 = procstat.thread_cpu_seconds(pid), process_cpu(pid)
                waits: list[float] = []
                started = time.monotonic()
                worker = threading.Thread(target=lambda: viewer.request(
                    "GET", f"/mail/INBOX/{uid}"))
                worker.start()
                time.sleep(0.02)  # the view is under way
                while worker.is_alive() and len(waits) < 100:
                    t = time.monotonic()
                    other.request("GET", "/mail/INBOX")
                    waits.append((time.monotonic() - t) * 1000)
                worker.join()
                took = time.monotonic() - started
                rows.append((procstat.thread_cpu_seconds(pid) - reactor0, process_cpu(pid) - all0, took,
                             max(waits) if waits else 0.0, len(waits)))
        finally:
            proc.stop()
    print(f"webmail view of a {args.megabytes} MB message of empty lines "
          f"(load average {os.getloadavg()[0]:.1f})")
    for reactor_s, all_s, took, worst, count in rows:
        print(f"  reactor thread CPU {reactor_s:5.2f} s   server CPU {all_s:5.2f} s   "
              f"view {took:5.2f} s   other user's page meanwhile: worst {worst:7.1f} ms "
              f"of {count}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
