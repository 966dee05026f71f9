#!/usr/bin/env python3
"""
Probe of the machine's limits, for reading every other figure against:
fsyncs per second (4 KiB write + fsync, one thread and 10 threads), a bare
durable Maildir delivery loop (write tmp/, fsync, rename into new/, fsync
new/), and loopback TCP throughput.  Each probe runs for a bounded time.

    python benchmarks/probe.py [--seconds 1.0] [--dir /var/tmp]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import threading
import time

BLOCK = b"x" * 4096
LOOPBACK_CHUNK = 1 << 20


def fsyncs_per_s(directory: str, seconds: float, threads: int = 1) -> float:
    counts = [0] * threads
    deadline = time.monotonic() + seconds

    def loop(i: int) -> None:
        path = os.path.join(directory, f"fsync-probe-{i}")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            while time.monotonic() < deadline:
                os.pwrite(fd, BLOCK, 0)
                os.fsync(fd)
                counts[i] += 1
        finally:
            os.close(fd)
            os.unlink(path)
    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(counts) / (time.perf_counter() - t0)


def maildir_deliveries_per_s(directory: str, seconds: float) -> float:
    root = tempfile.mkdtemp(prefix="maildir-probe-", dir=directory)
    for sub in ("tmp", "new", "cur"):
        os.mkdir(os.path.join(root, sub))
    new_fd = os.open(os.path.join(root, "new"), os.O_RDONLY)
    n = 0
    deadline = time.monotonic() + seconds
    t0 = time.perf_counter()
    try:
        while time.monotonic() < deadline:
            name = f"{n}.probe"
            tmp = os.path.join(root, "tmp", name)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, BLOCK)
            os.fsync(fd)
            os.close(fd)
            os.rename(tmp, os.path.join(root, "new", name))
            os.fsync(new_fd)
            n += 1
        took = time.perf_counter() - t0
    finally:
        os.close(new_fd)
        for name in os.listdir(os.path.join(root, "new")):
            os.unlink(os.path.join(root, "new", name))
        for sub in ("tmp", "new", "cur"):
            os.rmdir(os.path.join(root, sub))
        os.rmdir(root)
    return n / took


def loopback_mb_per_s(seconds: float) -> float:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    received = [0]

    def sink() -> None:
        conn, _ = server.accept()
        with conn:
            while data := conn.recv(LOOPBACK_CHUNK):
                received[0] += len(data)
    t = threading.Thread(target=sink)
    t.start()
    chunk = b"\0" * LOOPBACK_CHUNK
    deadline = time.monotonic() + seconds
    t0 = time.perf_counter()
    with socket.create_connection(server.getsockname()) as client:
        while time.monotonic() < deadline:
            client.sendall(chunk)
    t.join()
    took = time.perf_counter() - t0
    server.close()
    return received[0] / took / 1e6


def run(directory: str, seconds: float) -> dict[str, float]:
    return {
        "fsyncs_per_s_1thread": fsyncs_per_s(directory, seconds, 1),
        "fsyncs_per_s_10threads": fsyncs_per_s(directory, seconds, 10),
        "maildir_durable_deliveries_per_s": maildir_deliveries_per_s(directory, seconds),
        "loopback_mb_per_s": loopback_mb_per_s(seconds),
        "cpus": float(os.cpu_count() or 0),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=1.0, help="per probe (default 1)")
    parser.add_argument("--dir", default=tempfile.gettempdir(),
                        help="a directory on the disk the servers use")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    figures = run(args.dir, args.seconds)
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:34} {value:10.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
