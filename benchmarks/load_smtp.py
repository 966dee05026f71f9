#!/usr/bin/env python3
"""
SMTP load generator: N messages over C concurrent connections to any SMTP
server given only host:port, timing MAIL to the final 250 of each message.

    python benchmarks/load_smtp.py 127.0.0.1:2525 -n 2000 -c 10 --size 4096
    python benchmarks/load_smtp.py 127.0.0.1:2525 -n 200 -c 50 --size 102400 --server-pid 1234

The client is asyncio with raw sockets (smtplib costs more CPU per message
than the fastest server here spends).  When the server offers PIPELINING,
MAIL, RCPT and DATA go in one write (RFC 2920), as Postfix's own clients do;
otherwise one command at a time.  Messages are realistic MIME from
mailgen.py, in wire form and dot-stuffed.  Prints accepted messages/s,
p50/p99 latency and, with --server-pid, the server tree's CPU seconds per
1,000 messages and those of its main (reactor) thread alone.  Bounded by
--count and --max-seconds; loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import mailgen  # noqa: E402
import procstat  # noqa: E402

DISTINCT_MESSAGES = 64
CONNECT_TIMEOUT_S = 10.0


class SMTPFailure(Exception):
    pass


def wire_messages(size: int, to: str, seed: int = mailgen.DEFAULT_SEED) -> list[bytes]:
    """A pool of distinct messages of about ``size`` octets, dot-stuffed CRLF."""
    out = []
    for n in range(DISTINCT_MESSAGES):
        target = size
        for _ in range(3):  # the generator lands near its target: correct twice
            data = mailgen.crlf(mailgen.make_message(n, target, seed, to))
            target += size - len(data)
        data = data.replace(b"\r\n.", b"\r\n..")
        if data.startswith(b"."):
            data = b"." + data
        out.append(data + b".\r\n")
    return out


async def _reply(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    lines = []
    while True:
        line = await reader.readline()
        if not line:
            raise SMTPFailure("connection closed")
        lines.append(line)
        if len(line) < 4 or line[3:4] != b"-":
            return int(line[:3]), b"".join(lines)


async def _expect(reader: asyncio.StreamReader, codes: tuple[int, ...], what: str) -> bytes:
    code, text = await _reply(reader)
    if code not in codes:
        raise SMTPFailure(f"{what}: {text!r}")
    return text


async def _connection(host: str, port: int, sender: str, rcpt: str, messages: list[bytes],
                      next_index: list[int], count: int, deadline: float,
                      latencies: list[float], pipelining: str, done: list[int],
                      on_progress: object) -> None:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, limit=1 << 20),
                                            CONNECT_TIMEOUT_S)
    try:
        await _expect(reader, (220,), "banner")
        writer.write(b"EHLO bench.client.example\r\n")
        ehlo = await _expect(reader, (250,), "EHLO")
        pipe = pipelining == "on" or (pipelining == "auto" and b"PIPELINING" in ehlo.upper())
        envelope = f"MAIL FROM:<{sender}>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode()
        while next_index[0] < count and time.monotonic() < deadline:
            i = next_index[0]
            next_index[0] += 1
            t0 = time.perf_counter()
            if pipe:
                writer.write(envelope)
                await _expect(reader, (250,), "MAIL")
                await _expect(reader, (250, 251), "RCPT")
                await _expect(reader, (354,), "DATA")
            else:
                for line, codes in ((f"MAIL FROM:<{sender}>\r\n", (250,)),
                                    (f"RCPT TO:<{rcpt}>\r\n", (250, 251)), ("DATA\r\n", (354,))):
                    writer.write(line.encode())
                    await _expect(reader, codes, line.split(":")[0].strip())
            writer.write(messages[i % len(messages)])
            await _expect(reader, (250,), "end of data")
            latencies.append(time.perf_counter() - t0)
            done[0] += 1
            if callable(on_progress):
                on_progress(done[0], count)
        writer.write(b"QUIT\r\n")
        await writer.drain()
        try:
            await asyncio.wait_for(reader.read(), 2)
        except (TimeoutError, ConnectionError):
            pass
    finally:
        writer.close()


async def run(host: str, port: int, count: int, size: int, concurrency: int,
              sender: str = "sender@remote.example", rcpt: str = "sink@example.org",
              pipelining: str = "auto", max_seconds: float = 120.0,
              server_pid: int | None = None, on_progress: object = None) -> dict[str, float]:
    """Send ``count`` messages; return the figures as a dict."""
    messages = wire_messages(size, rcpt)
    latencies: list[float] = []
    next_index = [0]
    done = [0]
    cpu0 = procstat.cpu_seconds(server_pid) if server_pid else 0.0
    main0 = procstat.thread_cpu_seconds(server_pid) if server_pid else 0.0
    start = time.perf_counter()
    deadline = time.monotonic() + max_seconds
    results = await asyncio.gather(*(
        _connection(host, port, sender, rcpt, messages, next_index, count, deadline,
                    latencies, pipelining, done, on_progress)
        for _ in range(concurrency)), return_exceptions=True)
    elapsed = time.perf_counter() - start
    errors = [r for r in results if isinstance(r, BaseException)]
    cpu = procstat.cpu_seconds(server_pid) - cpu0 if server_pid else float("nan")
    main = procstat.thread_cpu_seconds(server_pid) - main0 if server_pid else float("nan")
    accepted = len(latencies)
    out = {
        "accepted": accepted,
        "msgs_per_s": accepted / elapsed if elapsed else 0.0,
        "p50_ms": procstat.percentile(latencies, 0.50) * 1000,
        "p99_ms": procstat.percentile(latencies, 0.99) * 1000,
        "elapsed_s": elapsed,
        "server_cpu_s_per_1000": cpu / accepted * 1000 if accepted else float("nan"),
        # The reactor thread runs the protocol and holds the GIL for most of
        # it: the part one process cannot spread over cores.
        "server_reactor_cpu_s_per_1000": main / accepted * 1000 if accepted else float("nan"),
        "message_octets": len(messages[0]),
        "failed_connections": len(errors),
    }
    if errors:
        out["first_error"] = repr(errors[0])  # type: ignore[assignment]
    return out


def parse_hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("server", help="host:port of the SMTP server")
    parser.add_argument("-n", "--count", type=int, default=1000)
    parser.add_argument("-c", "--concurrency", type=int, default=1)
    parser.add_argument("--size", type=int, default=4096, help="message octets (default 4096)")
    parser.add_argument("--sender", default="sender@remote.example")
    parser.add_argument("--rcpt", default="sink@example.org")
    parser.add_argument("--pipelining", choices=("auto", "on", "off"), default="auto")
    parser.add_argument("--server-pid", type=int, help="measure this process tree's CPU")
    parser.add_argument("--max-seconds", type=float, default=120.0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    host, port = parse_hostport(args.server)

    def progress(done: int, total: int) -> None:
        if sys.stderr.isatty() and (done % 50 == 0 or done == total):
            sys.stderr.write(f"\rsmtp {done}/{total}")

    figures = asyncio.run(run(host, port, args.count, args.size, args.concurrency,
                              args.sender, args.rcpt, args.pipelining, args.max_seconds,
                              args.server_pid, progress))
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:30} {value:.2f}" if isinstance(value, float) else f"{key:30} {value}")
    return 0 if not figures["failed_connections"] else 1


if __name__ == "__main__":
    sys.exit(main())
