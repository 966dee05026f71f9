"""
Memory held by idle authenticated IMAP connections, measured inside the
server process with tracemalloc and with RSS.

Builds the real pymail service (``pymail.service.make_service``) from a
temporary configuration in this process, under tracemalloc, on loopback.
A child process opens --connections connections and logs each in (some
--selected of them also SELECT INBOX), then keeps them open; the parent
measures the Python heap (tracemalloc) and RSS growth per connection, and
prints where the memory went (the top allocation sites).

Password checks (argon2id, 19 MiB each) run in the thread pool first, so
the growth of glibc's per-thread arenas is counted in the warm-up, not
per connection: the figure is what each further idle connection costs.

Example::

    /work/venv/bin/python benchmarks/imap_memory.py --connections 5000
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import resource
import socket
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

USER = ("mem@localhost", "mem-pw")
WARM_LOGINS = 40


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def login(port: int, select: bool) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    s.recv(4096)
    s.sendall(f"a LOGIN {USER[0]} {USER[1]}\r\n".encode())
    if select:
        s.sendall(b"b SELECT INBOX\r\n")
    want = b"b OK" if select else b"a OK"
    data = b""
    while want not in data:
        chunk = s.recv(65536)
        if not chunk or b" NO " in chunk or b" BAD " in chunk:
            raise RuntimeError(f"login failed: {data + chunk!r}")
        data += chunk
    return s


def clients(port: int, count: int, selected: int, ready: multiprocessing.Event,
            done: multiprocessing.Event, parallel: int) -> None:
    """Child process: open the connections in waves, then hold them."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(parallel) as pool:
        socks = list(pool.map(lambda n: login(port, n < selected), range(count)))
    ready.set()
    done.wait(600)
    for s in socks:
        s.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  imap_memory.py --connections 5000 --selected 0",
    )
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--selected", type=int, default=0,
                        help="how many of them also SELECT INBOX")
    parser.add_argument("--messages", type=int, default=0,
                        help="corpus messages written into the INBOX first")
    parser.add_argument("--top", type=int, default=12, help="allocation sites to show")
    parser.add_argument("--rss-only", action="store_true",
                        help="no tracemalloc (its own bookkeeping inflates RSS)")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    from twisted.internet import reactor  # type: ignore[attr-defined]

    from harness import PymailProcess
    from pymail.config import load
    from pymail.service import make_service

    with tempfile.TemporaryDirectory() as tmp:
        limits = (f"[security]\nmax_connections = {args.connections + 200}\n"
                  f"max_connections_per_ip = {args.connections + 200}\n")
        setup = PymailProcess(Path(tmp), extra_config=limits, users=dict([USER]))
        port = setup.ports["imap"]
        if args.messages:
            from imap_bench import fill

            from pymail.storage.maildir import MaildirStoreFactory

            root = Path(MaildirStoreFactory.account_root(USER[0], str(setup.data_dir)))
            for sub in ("cur", "new", "tmp"):
                (root / sub).mkdir(parents=True, exist_ok=True)
            fill(root, args.messages)
        service = make_service(load(str(setup.config_path)), reactor)
        service.startService()

        def measure() -> None:
            ctx = multiprocessing.get_context("spawn")
            warm_ready, warm_done = ctx.Event(), ctx.Event()
            warm = ctx.Process(target=clients, args=(port, WARM_LOGINS, WARM_LOGINS, warm_ready,
                                                     warm_done, WARM_LOGINS))
            warm.start()
            while not warm_ready.wait(0.05):
                yield_reactor()
            warm_done.set()
            warm.join()
            settle(1.0)
            gc.collect()
            if not args.rss_only:
                tracemalloc.start(8)
                before = tracemalloc.take_snapshot()
            rss_before = rss_kb()
            ready, done = ctx.Event(), ctx.Event()
            child = ctx.Process(target=clients, args=(port, args.connections, args.selected,
                                                      ready, done, 20))
            child.start()
            start = time.monotonic()
            while not ready.wait(0.05):
                yield_reactor()
                if time.monotonic() - start > 600:
                    raise RuntimeError("connections not made within 600 s")
            settle(1.0)
            gc.collect()
            rss_after = rss_kb()
            rss = (rss_after - rss_before) * 1024 / args.connections
            print(f"connections: {args.connections} ({args.selected} with INBOX selected, "
                  f"{args.messages} messages)")
            if args.rss_only:
                print(f"RSS growth:  {rss:8.0f} bytes per connection   (goal <= 5 KB)")
                done.set()
                child.join()
                return
            after = tracemalloc.take_snapshot()
            traced = sum(s.size_diff for s in after.compare_to(before, "filename"))
            print(f"tracemalloc: {traced / args.connections:8.0f} bytes per connection"
                  "   (goal <= 5 KB)")
            print(f"RSS growth:  {rss:8.0f} bytes per connection"
                  "   (tracemalloc's own bookkeeping included; see --rss-only)")
            print("top allocation sites (bytes per connection):")
            for stat in after.compare_to(before, "lineno")[: args.top]:
                frame = stat.traceback[0]
                print(f"  {stat.size_diff / args.connections:8.0f}  "
                      f"{os.path.relpath(frame.filename)}:{frame.lineno}")
            tracemalloc.stop()
            done.set()
            child.join()

        def yield_reactor() -> None:
            reactor.runUntilCurrent()  # type: ignore[attr-defined]
            reactor.doIteration(0.01)  # type: ignore[attr-defined]

        def settle(seconds: float) -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                yield_reactor()

        reactor.startRunning(installSignalHandlers=False)  # type: ignore[attr-defined]
        settle(0.5)
        try:
            measure()
        finally:
            service.stopService()
            settle(0.5)
            reactor.getThreadPool().stop()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
