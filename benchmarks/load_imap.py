#!/usr/bin/env python3
"""
IMAP load generator for any IMAP4rev1 server given host:port, a user and a
password, on a prefilled folder (see mailgen.py and run_all.py).

    python benchmarks/load_imap.py 127.0.0.1:1143 --user bench@example.org --password pw
    python benchmarks/load_imap.py 127.0.0.1:1143 --user u --password pw --idle 1000 --server-pid 99

Phases: LOGIN+SELECT; FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE);
FETCH 1:* BODY.PEEK[] (MB/s); UID SEARCH SUBJECT and BODY; STORE 1:* +FLAGS
(undone afterwards, untimed); K parallel clients each doing LOGIN, SELECT
and the FETCH above; with --idle N, N authenticated idle connections and
the server tree's RSS and PSS growth per connection (from /proc).  The client
is asyncio with raw sockets: imaplib builds Python objects for every line
and literal and would be slower than the servers it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import mailgen  # noqa: E402
import procstat  # noqa: E402

_LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n$")
STREAM_LIMIT = 1 << 24
IDLE_OPEN_CONCURRENCY = 50


class IMAPError(Exception):
    pass


class Client:
    """A minimal IMAP client: tagged commands, literals counted or kept."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.n = 0

    @classmethod
    async def connect(cls, host: str, port: int) -> Client:
        reader, writer = await asyncio.open_connection(host, port, limit=STREAM_LIMIT)
        greeting = await reader.readline()
        if not greeting.startswith(b"* OK"):
            raise IMAPError(f"greeting: {greeting!r}")
        return cls(reader, writer)

    async def command(self, text: str, literal: bytes | None = None) -> tuple[list[bytes], int]:
        """Run one command; return the untagged lines (literals elided) and literal octets."""
        self.n += 1
        tag = f"b{self.n}".encode()
        if literal is None:
            self.writer.write(tag + b" " + text.encode() + b"\r\n")
        else:
            self.writer.write(tag + b" " + text.encode() + f" {{{len(literal)}}}\r\n".encode())
            cont = await self.reader.readline()
            if not cont.startswith(b"+"):
                raise IMAPError(f"{text}: {cont!r}")
            self.writer.write(literal + b"\r\n")
        lines: list[bytes] = []
        octets = 0
        reader = self.reader
        while True:
            line = await reader.readline()
            if not line:
                raise IMAPError(f"{text}: connection closed")
            while (m := _LITERAL.search(line)) is not None:
                size = int(m.group(1))
                await reader.readexactly(size)
                octets += size
                rest = await reader.readline()
                line = line[:m.start()] + b"{}" + rest
            if line.startswith(tag + b" "):
                if line[len(tag) + 1:len(tag) + 3] != b"OK":
                    raise IMAPError(f"{text}: {line!r}")
                return lines, octets
            lines.append(line)

    async def login_select(self, user: str, password: str) -> int:
        await self.command(f'LOGIN "{user}" "{password}"')
        lines, _ = await self.command("SELECT INBOX")
        for line in lines:
            if line.endswith(b" EXISTS\r\n"):
                return int(line.split()[1])
        raise IMAPError("SELECT gave no EXISTS")

    async def close(self) -> None:
        try:
            self.writer.write(b"z LOGOUT\r\n")
            await asyncio.wait_for(self.reader.read(), 2)
        except (asyncio.TimeoutError, ConnectionError):
            pass
        self.writer.close()


def _fetches(lines: list[bytes]) -> int:
    return sum(1 for line in lines if line.startswith(b"* ") and b" FETCH " in line[:30])


def _search_hits(lines: list[bytes]) -> int:
    for line in lines:
        if line.startswith(b"* SEARCH"):
            return len(line.split()) - 2
    return 0


async def folder_phases(host: str, port: int, user: str, password: str) -> dict[str, float]:
    """The single-client phases on the folder (the folder is left unchanged)."""
    out: dict[str, float] = {}
    c = await Client.connect(host, port)
    t0 = time.perf_counter()
    exists = await c.login_select(user, password)
    out["login_select_ms"] = (time.perf_counter() - t0) * 1000
    out["messages"] = exists
    t0 = time.perf_counter()
    lines, _ = await c.command("FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE)")
    out["fetch_meta_s"] = time.perf_counter() - t0
    if _fetches(lines) != exists:
        raise IMAPError(f"FETCH gave {_fetches(lines)} of {exists}")
    t0 = time.perf_counter()
    lines, octets = await c.command("FETCH 1:* BODY.PEEK[]")
    took = time.perf_counter() - t0
    out["fetch_bodies_s"] = took
    out["fetch_bodies_mb_s"] = octets / took / 1e6
    out["fetch_bodies_octets"] = octets
    if _fetches(lines) != exists:
        raise IMAPError(f"FETCH BODY.PEEK[] gave {_fetches(lines)} of {exists}")
    t0 = time.perf_counter()
    lines, _ = await c.command(f"UID SEARCH SUBJECT {mailgen.SUBJECT_WORD}")
    out["search_subject_ms"] = (time.perf_counter() - t0) * 1000
    out["search_subject_hits"] = _search_hits(lines)
    t0 = time.perf_counter()
    lines, _ = await c.command(f"UID SEARCH BODY {mailgen.BODY_WORD}")
    out["search_body_ms"] = (time.perf_counter() - t0) * 1000
    out["search_body_hits"] = _search_hits(lines)
    t0 = time.perf_counter()
    lines, _ = await c.command("STORE 1:* +FLAGS (\\Flagged)")
    out["store_s"] = time.perf_counter() - t0
    # A server that renames Maildir files after the OK (pymail above 256
    # messages) finishes them before it answers the next command: STORE
    # then NOOP is the time until every file has its new name.
    await c.command("NOOP")
    out["store_then_noop_s"] = time.perf_counter() - t0
    await c.command("STORE 1:* -FLAGS.SILENT (\\Flagged)")
    await c.close()
    return out


async def parallel_fetch(host: str, port: int, user: str, password: str, k: int) -> dict[str, float]:
    """K clients at once, each LOGIN, SELECT and FETCH 1:* of the metadata."""
    async def one() -> None:
        c = await Client.connect(host, port)
        await c.login_select(user, password)
        await c.command("FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE)")
        await c.close()
    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(k)))
    return {f"parallel{k}_fetch_meta_s": time.perf_counter() - t0}


async def append_load(host: str, port: int, user: str, password: str, count: int,
                      clients: int, size: int = 4096) -> dict[str, float]:
    """``count`` APPENDs of ``size``-octet messages over ``clients`` connections."""
    messages = [mailgen.crlf(mailgen.make_message(n, size - 80, to=user)) for n in range(32)]
    index = [0]
    latencies: list[float] = []

    async def one() -> None:
        c = await Client.connect(host, port)
        await c.command(f'LOGIN "{user}" "{password}"')
        while index[0] < count:
            i = index[0]
            index[0] += 1
            t0 = time.perf_counter()
            await c.command("APPEND INBOX", messages[i % len(messages)])
            latencies.append(time.perf_counter() - t0)
        await c.close()
    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(clients)))
    took = time.perf_counter() - t0
    return {f"append{clients}_msgs_per_s": len(latencies) / took,
            f"append{clients}_p99_ms": procstat.percentile(latencies, 0.99) * 1000}


async def idle_memory(host: str, port: int, user: str, password: str, count: int,
                      server_pid: int, on_progress: object = None) -> dict[str, float]:
    """Open ``count`` authenticated connections; server memory growth per connection."""
    # Warm-up: one batch of concurrent logins, closed again, so that what the
    # server sets up once (login processes, a thread pool whose password
    # hashing leaves each thread a malloc arena) is not charged to the
    # connections measured; that fixed cost is reported on its own.
    start = procstat.memory_kib(server_pid)
    warmers = await asyncio.gather(*(Client.connect(host, port)
                                     for _ in range(IDLE_OPEN_CONCURRENCY)))
    await asyncio.gather(*(w.command(f'LOGIN "{user}" "{password}"') for w in warmers))
    for w in warmers:
        w.writer.close()
    warm = await Client.connect(host, port)
    await warm.command(f'LOGIN "{user}" "{password}"')
    await asyncio.sleep(1.0)
    before = procstat.memory_kib(server_pid)
    clients: list[Client] = []
    gate = asyncio.Semaphore(IDLE_OPEN_CONCURRENCY)

    async def one() -> None:
        async with gate:
            c = await Client.connect(host, port)
            await c.command(f'LOGIN "{user}" "{password}"')
            clients.append(c)
            if callable(on_progress):
                on_progress(len(clients), count)
    t0 = time.perf_counter()
    results = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
    opened = time.perf_counter() - t0
    await asyncio.sleep(1.0)
    after = procstat.memory_kib(server_pid)
    failed = sum(1 for r in results if isinstance(r, BaseException))
    n = len(clients)
    out = {
        "idle_connections": n,
        "idle_failed": failed,
        "idle_open_s": opened,
        "idle_rss_kib_per_conn": (after["rss"] - before["rss"]) / n if n else float("nan"),
        "idle_pss_kib_per_conn": (after["pss"] - before["pss"]) / n if n else float("nan"),
        "idle_processes_after": after["processes"],
        "login_setup_rss_mib": (before["rss"] - start["rss"]) / 1024,
    }
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        out["idle_first_error"] = repr(errors[0])  # type: ignore[assignment]
    for c in clients:
        c.writer.close()
    warm.writer.close()
    await asyncio.sleep(0.5)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("server", help="host:port of the IMAP server")
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--parallel", type=int, default=10, help="K parallel clients (default 10)")
    parser.add_argument("--idle", type=int, default=0, help="idle connections to open (0: skip)")
    parser.add_argument("--server-pid", type=int, help="the server's PID (needed for --idle)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    host, _, port = args.server.rpartition(":")

    async def everything() -> dict[str, float]:
        figures = await folder_phases(host, int(port), args.user, args.password)
        figures.update(await parallel_fetch(host, int(port), args.user, args.password,
                                            args.parallel))
        if args.idle and args.server_pid:
            figures.update(await idle_memory(host, int(port), args.user, args.password,
                                             args.idle, args.server_pid))
        return figures

    figures = asyncio.run(everything())
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:28} {value:.3f}" if isinstance(value, float) else f"{key:28} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
