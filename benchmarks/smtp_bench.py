"""
SMTP acceptance benchmark: messages accepted per second (each fsynced
before its 250) and the latency from MAIL to the final 250, at 1, 10 and
50 concurrent connections, for 4 KiB and 100 KiB messages, plus the
server's CPU seconds (from /proc).

Runs a real ``twistd -n pymail`` on loopback (Maildir storage, data in a
temporary directory) and an asyncio client in this process.  Every run is
bounded in messages and in time.  ``--target local`` (the default) sends to
a local account (Maildir); ``--target queue`` sends to an alias of a remote
address, so each message is fsynced into the outbound queue (the runner
then fails to resolve the domain and defers it for an hour).

    /work/venv/bin/python benchmarks/smtp_bench.py [--messages 2000] [--seconds 20]
    /work/venv/bin/python benchmarks/smtp_bench.py --target queue
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))

from harness import PymailProcess  # noqa: E402

RECIPIENTS = {"local": b"bob@example.org", "queue": b"fwd@example.org"}
QUEUE_CONFIG = """
[relay]
nameservers = ["127.0.0.1:9"]
dns_timeout = 1
retry_schedule = ["1h"]
"""


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def make_message(size: int) -> bytes:
    head = b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: bench\r\n\r\n"
    line = b"abcdefghijklmnopqrstuvwxyz0123456789 " * 2 + b"\r\n"
    body = line * ((size - len(head)) // len(line) + 1)
    return (head + body)[:size - 2] + b"\r\n"


async def reply(reader: asyncio.StreamReader) -> bytes:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("server closed the connection")
        if line[3:4] != b"-":
            return line


async def client(port: int, message: bytes, budget: list[int], deadline: float,
                 latencies: list[float], recipient: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await reply(reader)
    writer.write(b"EHLO bench.example\r\n")
    await reply(reader)
    data = message + b".\r\n"
    while budget[0] > 0 and time.monotonic() < deadline:
        budget[0] -= 1
        start = time.perf_counter()
        writer.write(b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<" + recipient + b">\r\nDATA\r\n")
        for expected in (b"250", b"250", b"354"):
            got = await reply(reader)
            assert got.startswith(expected), got
        writer.write(data)
        final = await reply(reader)
        assert final.startswith(b"250"), final
        latencies.append(time.perf_counter() - start)
    writer.write(b"QUIT\r\n")
    await writer.drain()
    writer.close()


async def run(port: int, connections: int, message: bytes, count: int,
              seconds: float, recipient: bytes = RECIPIENTS["local"]
              ) -> tuple[int, float, list[float]]:
    budget = [count]
    latencies: list[float] = []
    start = time.monotonic()
    deadline = start + seconds
    await asyncio.gather(*(client(port, message, budget, deadline, latencies, recipient)
                           for _ in range(connections)))
    return len(latencies), time.monotonic() - start, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="example:\n  python benchmarks/smtp_bench.py",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=2000, help="per run (default 2000)")
    parser.add_argument("--seconds", type=float, default=20.0, help="per run (default 20)")
    parser.add_argument("--connections", default="1,10,50")
    parser.add_argument("--sizes", default="4096,102400")
    parser.add_argument("--target", choices=("local", "queue"), default="local")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = PymailProcess(Path(tmp), users={"bob@example.org": "bob-pw"},
                               extra_config=QUEUE_CONFIG if args.target == "queue" else "")
        server.pymail("alias", "add", "fwd@example.org", "far@remote.invalid")
        server.start()
        assert server.proc is not None
        pid = server.proc.pid
        try:
            print(f"{'size':>7} {'conns':>5} {'msgs':>6} {'msg/s':>8} {'p50 ms':>7} "
                  f"{'p99 ms':>7} {'cpu s':>6}")
            for size in (int(s) for s in args.sizes.split(",")):
                message = make_message(size)
                for conns in (int(c) for c in args.connections.split(",")):
                    cpu0 = cpu_seconds(pid)
                    n, elapsed, lat = asyncio.run(
                        run(server.ports["smtp"], conns, message, args.messages, args.seconds,
                            RECIPIENTS[args.target]))
                    cpu = cpu_seconds(pid) - cpu0
                    lat.sort()
                    p50 = statistics.median(lat) * 1000
                    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
                    print(f"{size:>7} {conns:>5} {n:>6} {n / elapsed:>8.0f} {p50:>7.1f} "
                          f"{p99:>7.1f} {cpu:>6.2f}", flush=True)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
