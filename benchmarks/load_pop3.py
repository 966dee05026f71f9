#!/usr/bin/env python3
"""
POP3 load generator for any POP3 server given host:port, a user and a
password: USER/PASS, STAT, UIDL, then RETR of every message, once one
command at a time (as poplib does) and once pipelined (RFC 2449
PIPELINING: windows of commands written at once), then once more one at a
time from a blocking socket client (``blocking_session``: little client
work per reply, so the round trip is mostly the server's).  Never DELE:
the maildrop is left as it was.

    python benchmarks/load_pop3.py 127.0.0.1:1110 --user bench@example.org --password pw

asyncio with raw sockets: poplib reads multi-line responses line by line in
Python and would bound the throughput it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import sys
import time
from collections.abc import Callable

STREAM_LIMIT = 1 << 24
PIPELINE_WINDOW = 64
MULTI_END = b"\r\n.\r\n"


class POP3Error(Exception):
    pass


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, host: str, port: int) -> Client:
        reader, writer = await asyncio.open_connection(host, port, limit=STREAM_LIMIT)
        greeting = await reader.readline()
        if not greeting.startswith(b"+OK"):
            raise POP3Error(f"greeting: {greeting!r}")
        return cls(reader, writer)

    async def status(self, what: str) -> bytes:
        line = await self.reader.readline()
        if not line.startswith(b"+OK"):
            raise POP3Error(f"{what}: {line!r}")
        return line

    async def multi(self, what: str) -> int:
        """A +OK status line and its multi-line body; returns the body's octets."""
        await self.status(what)
        first = await self.reader.readline()
        if first == b".\r\n":
            return 0
        rest = await self.reader.readuntil(MULTI_END)
        return len(first) + len(rest) - 3

    async def simple(self, line: str) -> bytes:
        self.writer.write(line.encode() + b"\r\n")
        return await self.status(line.split()[0])

    async def quit(self) -> None:
        try:
            await self.simple("QUIT")
        finally:
            self.writer.close()


async def session(host: str, port: int, user: str, password: str, pipelined: bool,
                  before_quit: Callable[[], object] | None = None) -> dict[str, float]:
    """
    One session: login, STAT, UIDL, RETR of every message; ``before_quit``
    is called once the last reply is in, before QUIT (a server that ends a
    process per connection at QUIT takes its CPU time with it).
    """
    label = "pipelined" if pipelined else "sequential"
    out: dict[str, float] = {}
    c = await Client.connect(host, port)
    t0 = time.perf_counter()
    await c.simple(f"USER {user}")
    await c.simple(f"PASS {password}")
    out["login_ms"] = (time.perf_counter() - t0) * 1000
    t1 = time.perf_counter()
    count = int((await c.simple("STAT")).split()[1])
    out["stat_ms"] = (time.perf_counter() - t1) * 1000
    t1 = time.perf_counter()
    c.writer.write(b"UIDL\r\n")
    await c.multi("UIDL")
    out["uidl_ms"] = (time.perf_counter() - t1) * 1000
    out["login_stat_uidl_ms"] = (time.perf_counter() - t0) * 1000
    out["messages"] = count
    octets = 0
    t0 = time.perf_counter()
    if pipelined:
        for start in range(1, count + 1, PIPELINE_WINDOW):
            batch = range(start, min(count, start + PIPELINE_WINDOW - 1) + 1)
            c.writer.write(b"".join(f"RETR {i}\r\n".encode() for i in batch))
            for _ in batch:
                octets += await c.multi("RETR")
    else:
        for i in range(1, count + 1):
            c.writer.write(f"RETR {i}\r\n".encode())
            octets += await c.multi("RETR")
    took = time.perf_counter() - t0
    out[f"retr_{label}_s"] = took
    out[f"retr_{label}_mb_s"] = octets / took / 1e6
    out[f"retr_{label}_msgs_s"] = count / took
    if before_quit is not None:
        before_quit()
    await c.quit()
    return out


def blocking_session(host: str, port: int, user: str, password: str,
                     before_quit: Callable[[], object] | None = None) -> dict[str, float]:
    """
    RETR of every message one command at a time from a plain blocking socket
    (no event loop, no line parsing: the reply is complete when it ends with
    CRLF . CRLF, which stuffing keeps out of a body), so that the client's
    own work per reply is small and the round trip is mostly the server's.
    The rate, and the median and 99th percentile of the RETR round trips.
    ``before_quit`` as for :func:`session`.
    """
    sock = socket.create_connection((host, port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    replies = sock.makefile("rb")
    try:
        if not replies.readline().startswith(b"+OK"):
            raise POP3Error("greeting")
        for line in (f"USER {user}", f"PASS {password}", "STAT"):
            sock.sendall(line.encode() + b"\r\n")
            status = replies.readline()
            if not status.startswith(b"+OK"):
                raise POP3Error(f"{line.split()[0]}: {status!r}")
        count = int(status.split()[1])
        round_trips = []
        for i in range(1, count + 1):
            start = time.perf_counter()
            sock.sendall(b"RETR %d\r\n" % i)
            reply = bytearray(sock.recv(STREAM_LIMIT))
            while not reply.endswith(MULTI_END):
                chunk = sock.recv(STREAM_LIMIT)
                if not chunk:
                    raise POP3Error(f"RETR {i}: connection closed")
                reply += chunk
            round_trips.append(time.perf_counter() - start)
            if not reply.startswith(b"+OK"):
                raise POP3Error(f"RETR {i}: {bytes(reply[:80])!r}")
        if before_quit is not None:
            before_quit()
        sock.sendall(b"QUIT\r\n")
        replies.readline()
    finally:
        replies.close()
        sock.close()
    if not round_trips:
        return {"messages": 0}
    round_trips.sort()
    return {
        "messages": count,
        "retr_blocking_msgs_s": count / max(sum(round_trips), 1e-9),
        "retr_blocking_median_us": statistics.median(round_trips) * 1e6,
        "retr_blocking_p99_us": round_trips[int(len(round_trips) * 0.99)] * 1e6,
    }


async def run(host: str, port: int, user: str, password: str) -> dict[str, float]:
    figures = await session(host, port, user, password, pipelined=False)
    # Let the server release the maildrop lock of the first session.
    await asyncio.sleep(0.2)
    piped = await session(host, port, user, password, pipelined=True)
    figures.update({k: v for k, v in piped.items() if k.startswith("retr_")})
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("server", help="host:port of the POP3 server")
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    host, _, port = args.server.rpartition(":")
    figures = asyncio.run(run(host, int(port), args.user, args.password))
    time.sleep(0.2)
    blocking = blocking_session(host, int(port), args.user, args.password)
    figures.update({k: v for k, v in blocking.items() if k.startswith("retr_")})
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:28} {value:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
