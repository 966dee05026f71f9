#!/usr/bin/env python3
"""
IDLE push at scale: hold N IMAP connections in IDLE on one folder, deliver
one message over SMTP, and time how long until every connection has been
told ``* n EXISTS``.  Also the server's RSS per IDLE connection.

    python benchmarks/idle_push.py 127.0.0.1:1143 127.0.0.1:2525 --user push@example.org \\
        --password pw -n 10000 --server-pid 1234

Connections are opened 50 at a time (each LOGIN costs the server a password
hash).  Loopback only; bounded by -n and --timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import load_imap  # noqa: E402
import load_smtp  # noqa: E402
import procstat  # noqa: E402

OPEN_CONCURRENCY = 50
PUSH_TIMEOUT_S = 30.0


async def _idle_client(host: str, port: int, user: str, password: str) -> load_imap.Client:
    c = await load_imap.Client.connect(host, port)
    await c.command(f'LOGIN "{user}" "{password}"')
    await c.command("SELECT INBOX")
    c.writer.write(b"i IDLE\r\n")
    line = await c.reader.readline()
    if not line.startswith(b"+"):
        raise load_imap.IMAPError(f"IDLE: {line!r}")
    return c


async def _wait_exists(c: load_imap.Client) -> float:
    while True:
        line = await c.reader.readline()
        if not line:
            raise load_imap.IMAPError("closed while idling")
        if line.endswith(b" EXISTS\r\n"):
            return time.perf_counter()


async def run(host: str, imap_port: int, smtp_port: int, user: str, password: str, count: int,
              say: Callable[[str], None] | None = None,
              server_pid: int | None = None) -> dict[str, float]:
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)
    clients: list[load_imap.Client] = []
    before = procstat.memory_kib(server_pid) if server_pid else None

    async def one() -> None:
        async with gate:
            clients.append(await _idle_client(host, imap_port, user, password))
            if say and len(clients) % 250 == 0:
                say(f"IDLE connections: {len(clients):,}/{count:,}")
    t0 = time.perf_counter()
    results = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors and say:
        say(f"first failure: {errors[0]!r}")
    out: dict[str, float] = {"push_connections": len(clients),
                             "push_failed": sum(isinstance(r, BaseException) for r in results),
                             "push_open_s": time.perf_counter() - t0}
    if server_pid and before:
        after = procstat.memory_kib(server_pid)
        out["push_rss_kib_per_conn"] = (after["rss"] - before["rss"]) / max(1, len(clients))
    waits = [asyncio.ensure_future(_wait_exists(c)) for c in clients]
    sent = time.perf_counter()
    await load_smtp.run(host, smtp_port, 1, 4096, 1, rcpt=user)
    done, pending = await asyncio.wait(waits, timeout=PUSH_TIMEOUT_S)
    delays = sorted(w.result() - sent for w in done if not w.exception())
    for w in pending:
        w.cancel()
    out["push_received"] = len(delays)
    out["push_all_s"] = delays[-1] if len(delays) == len(clients) and delays else float("inf")
    out["push_p50_s"] = procstat.percentile(delays, 0.5)
    out["push_p99_s"] = procstat.percentile(delays, 0.99)
    for c in clients:
        c.writer.close()
    await asyncio.sleep(0.5)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("imap", help="host:port of the IMAP server")
    parser.add_argument("smtp", help="host:port of its SMTP service")
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("-n", "--count", type=int, default=1000)
    parser.add_argument("--server-pid", type=int)
    args = parser.parse_args(argv)
    host, _, iport = args.imap.rpartition(":")
    _, _, sport = args.smtp.rpartition(":")

    def say(text: str) -> None:
        if sys.stderr.isatty():
            sys.stderr.write("\r" + text)
    figures = asyncio.run(run(host, int(iport), int(sport), args.user, args.password,
                              args.count, say, args.server_pid))
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
