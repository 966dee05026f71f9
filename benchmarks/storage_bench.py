"""
Storage figures for large folders, for both file backends.

    /work/venv/bin/python benchmarks/storage_bench.py [--messages 100000] [--dir /tmp/x]

For Maildir and mbox it builds one folder of N messages (written directly,
as another program would), then, each in a fresh process:

- index rebuild: opening the folder with no index (Maildir: every file is
  listed and stat'ed, UIDs come from dovecot-uidlist, the SQLite index is
  built; mbox: the whole file is parsed); the process then stays up 2.1 s
  and refreshes once, as a server does on the next command (a scan made
  within 2 s of a change is redone before the index is trusted);
- SELECT (index warm, fresh process): opening the folder again (wall and CPU);
- SELECT (folder open): refresh + UIDVALIDITY/UIDNEXT/EXISTS on the live
  folder, what a second session's SELECT costs;
- FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE): the response lines built
  from the folder's view, as the IMAP FETCH loop does (no network);
- RSS of the process with the folder open (minus the RSS before opening);
- STORE +FLAGS (\\Answered) on one message, then on every message;
- durable delivery: 10 concurrent writers, each appending 4 KiB messages
  one after the other through ``IMailbox.append`` on a real reactor (thread
  pool, group commit, the view and the index updated), full fsync
  durability, to an empty folder: messages per second.

Machine load changes these figures a lot, so every run first measures two
probes and prints the figures relative to them: the bare single-threaded
durable delivery loop (the disk's pace: ~2,300/s on the idle project
machine) and a fixed pure-Python workload (the CPU's pace).

Every loop is bounded by --messages and --deliveries.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
BODY = b"x" * 60 + b"\n"
ADDRESS = "bench@example.org"


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def message(n: int, size: int) -> bytes:
    head = (f"From: sender{n % 97}@example.org\nTo: {ADDRESS}\nSubject: message {n}\n"
            f"Message-ID: <{n}@bench.example>\nDate: Mon, 2 Jan 2023 10:00:00 +0000\n\n").encode()
    body = BODY * max(1, (size - len(head)) // len(BODY))
    return head + body


def build_maildir(root: str, count: int) -> None:
    """A Maildir INBOX of ``count`` messages with a Dovecot uidlist, no index."""
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    lines = [f"3 V1700000000 N{count + 1} G0123456789abcdef0123456789abcdef\n"]
    start = 1_700_000_000
    for n in range(1, count + 1):
        data = message(n, 1024)
        wire = len(data) + data.count(b"\n")
        base = f"{start + n}.M{n}P1.bench,S={len(data)},W={wire}"
        flags = "S" if n % 3 else "FS"
        name = f"{base}:2,{flags}"
        path = os.path.join(root, "cur", name)
        with open(path, "wb") as f:
            f.write(data)
        os.utime(path, (start + n, start + n))
        lines.append(f"{n} :{base}\n")
    with open(os.path.join(root, "dovecot-uidlist"), "w") as f:
        f.writelines(lines)


def build_mbox(path: str, state: str, count: int) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.makedirs(os.path.dirname(state), exist_ok=True)
    with open(path, "wb") as f:
        for n in range(1, count + 1):
            data = message(n, 1024)
            head, _, body = data.partition(b"\n\n")
            status = b"Status: RO\nX-Status: F\n" if n % 3 == 0 else b"Status: RO\nX-Status: \n"
            f.write(b"From sender@example.org Mon Jan  2 10:00:00 2023\n" + head + b"\n" + status
                    + b"X-UID: %d\n\n" % n + body + b"\n")
    with open(state, "w") as f:
        f.write(f"1700000000 {count + 1}\n")


def open_folder(backend: str, data_dir: str) -> Any:
    """Open INBOX synchronously (thread work inline)."""
    from pymail.testing import ThreadlessReactor

    inline = ThreadlessReactor()
    if backend == "maildir":
        from pymail.storage.maildir import MaildirStoreFactory

        store = MaildirStoreFactory(inline).open_store(ADDRESS, data_dir)
    else:
        from pymail.storage.mbox import MboxStoreFactory

        store = MboxStoreFactory(inline).open_store(ADDRESS, data_dir)
    out: list[Any] = []
    store.get_mailbox("INBOX").addBoth(out.append)
    return out[0], inline


def fetch_lines(box: Any) -> int:
    """Build FETCH (UID FLAGS RFC822.SIZE INTERNALDATE) lines for every message."""
    total = 0
    dates: dict[datetime, bytes] = {}
    for n, info in enumerate(box.messages(), 1):
        date = dates.get(info.internaldate)
        if date is None:
            date = dates[info.internaldate] = info.internaldate.strftime(
                '"%d-%b-%Y %H:%M:%S +0000"').encode()
        line = b"* %d FETCH (UID %d FLAGS (%s) RFC822.SIZE %d INTERNALDATE %s)\r\n" % (
            n, info.uid, " ".join(sorted(info.flags)).encode(), info.size, date)
        total += len(line)
    return total


def deliver_outside(backend: str, data_dir: str) -> None:
    """One message delivered by another program (a Maildir file in new/; an mbox append)."""
    data = message(0, 1024)
    if backend == "maildir":
        folder = os.path.join(data_dir, "mail", "example.org", "bench")
        with open(os.path.join(folder, "tmp", "1.outside.bench"), "wb") as f:
            f.write(data)
        os.rename(os.path.join(folder, "tmp", "1.outside.bench"),
                  os.path.join(folder, "new", "1.outside.bench"))
    else:
        with open(os.path.join(data_dir, "mbox", "example.org", "bench", "INBOX"), "ab") as f:
            f.write(b"From outside@example.org Mon Jan  2 10:00:00 2023\n" + data + b"\n")


def cpu_probe() -> float:
    """Seconds for a fixed pure-Python workload (object creation, dicts, strings)."""
    t0 = time.perf_counter()
    table: dict[int, tuple[int, str]] = {}
    for n in range(300_000):
        table[n] = (n * 7, f"{n}.M{n}P1.bench:2,S".partition(":2,")[0])
    return time.perf_counter() - t0


def measure(backend: str, data_dir: str, phase: str) -> dict[str, float]:
    import pymail.storage.maildir  # noqa: F401  (imports are not the folder's cost)
    import pymail.storage.mbox  # noqa: F401
    import pymail.testing  # noqa: F401

    before = rss_kib()
    t0, c0 = time.perf_counter(), time.process_time()
    box, inline = open_folder(backend, data_dir)
    opened, opened_cpu = time.perf_counter() - t0, time.process_time() - c0
    result: dict[str, float] = {"open_s": opened, "open_cpu_s": opened_cpu,
                                "messages": len(box.messages())}
    if phase == "cold":
        time.sleep(2.1)
        box.refresh()
    if phase == "warm":
        def select() -> float:
            t0 = time.perf_counter()
            box.refresh()
            (box.uidvalidity(), box.uidnext(), len(box.messages()))
            return time.perf_counter() - t0

        result["select_open_s"] = select()
        t0, c0 = time.perf_counter(), time.process_time()
        result["fetch_bytes"] = fetch_lines(box)
        result["fetch_s"] = time.perf_counter() - t0
        result["fetch_cpu_s"] = time.process_time() - c0
        result["rss_mib"] = (rss_kib() - before) / 1024
        result["rss_total_mib"] = rss_kib() / 1024
        # STORE +FLAGS on one message (Maildir: a rename; mbox: a rewrite,
        # which the first time rebuilds every message another program wrote
        # and later copies the messages pymail wrote as they are).
        for key, flag in (("store_first_s", "\\Answered"), ("store_s", "\\Draft")):
            t0 = time.perf_counter()
            box.set_flags([box.messages()[len(box.messages()) // 2].uid], [flag], "add")
            result[key] = time.perf_counter() - t0
        # STORE +FLAGS 1:* (Maildir: one rename per message, one directory
        # fsync, the index in one transaction; mbox: one rewrite).
        uids = [i.uid for i in box.messages()]
        t0 = time.perf_counter()
        box.set_flags(uids, ["\\Answered"], "add")
        result["store_all_s"] = time.perf_counter() - t0
        # Another program delivers one message: the next SELECT rescans
        # (Maildir: lists the directories; mbox: parses the file and
        # rewrites it to give the message its X-UID header).
        deliver_outside(backend, data_dir)
        result["select_rescan_s"] = select()
    return result


def deliveries(backend: str, data_dir: str, count: int, writers: int) -> float:
    """Messages per second, ``writers`` concurrent appenders of 4 KiB, durably, on a reactor."""
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred, ensureDeferred, gatherResults

    if backend == "maildir":
        from pymail.storage.maildir import MaildirStoreFactory

        store = MaildirStoreFactory(reactor).open_store(ADDRESS, data_dir)
    else:
        from pymail.storage.mbox import MboxStoreFactory

        store = MboxStoreFactory(reactor).open_store(ADDRESS, data_dir)
    payload = message(0, 4096).replace(b"\n", b"\r\n")[:4096]
    per_writer = count // writers
    result: list[Any] = []

    async def writer(box: Any) -> None:
        for _ in range(per_writer):
            await box.append(payload)

    async def run() -> None:
        box = await store.get_mailbox("INBOX")
        t0 = time.perf_counter()
        await gatherResults([ensureDeferred(writer(box)) for _ in range(writers)],
                            consumeErrors=True)
        result.append(per_writer * writers / (time.perf_counter() - t0))
        assert len(box.messages()) == per_writer * writers

    def stop(outcome: Any) -> None:
        if not result:
            result.append(outcome)
        reactor.stop()

    def start() -> Deferred[None]:
        return ensureDeferred(run()).addBoth(stop)

    reactor.callWhenRunning(start)
    reactor.run()
    if not isinstance(result[0], float):
        result[0].raiseException()
    return float(result[0])


def bare_loop(directory: str, count: int) -> float:
    """Single-threaded durable Maildir-style deliveries per second, no pymail: the disk's pace."""
    for sub in ("tmp", "new"):
        os.makedirs(os.path.join(directory, sub), exist_ok=True)
    data = b"x" * 4096
    t0 = time.perf_counter()
    for n in range(count):
        tmp = os.path.join(directory, "tmp", str(n))
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, data)
        os.fsync(fd)
        os.close(fd)
        os.rename(tmp, os.path.join(directory, "new", str(n)))
        fd = os.open(os.path.join(directory, "new"), os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    return count / (time.perf_counter() - t0)


def child(args: argparse.Namespace) -> None:
    if args.phase == "deliver":
        rate = deliveries(args.backend, args.dir, args.deliveries, 10)
        print(json.dumps({"deliveries_per_s": rate}))
    else:
        print(json.dumps(measure(args.backend, args.dir, args.phase)))


def run_child(backend: str, data_dir: str, phase: str, deliveries_n: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", "--backend", backend, "--dir", data_dir,
         "--phase", phase, "--deliveries", str(deliveries_n)],
        capture_output=True, text=True, check=True, timeout=1800)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--deliveries", type=int, default=5000,
                        help="messages delivered in the durable-delivery test (default 5000)")
    parser.add_argument("--dir", help="work directory (default: a temporary one, removed)")
    parser.add_argument("--backend", choices=["maildir", "mbox"], action="append")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.backend = args.backend[0]
        child(args)
        return
    work = args.dir or tempfile.mkdtemp(prefix="pymail-storage-bench-")
    try:
        print(f"{args.messages} messages per folder, {args.deliveries} durable deliveries "
              f"by 10 writers; work dir {work}; {os.cpu_count()} CPUs")
        bare = bare_loop(os.path.join(work, "bare"), min(args.deliveries, 1000))
        cpu = cpu_probe()
        print(f"probe: bare single-threaded durable delivery loop (the disk's pace now): "
              f"{bare:.0f} messages/s")
        print(f"probe: fixed pure-Python workload (the CPU's pace now): {cpu:.3f} s; "
              f"load average {os.getloadavg()[0]:.1f}")
        for backend in args.backend or ["maildir", "mbox"]:
            data = os.path.join(work, backend)
            t0 = time.perf_counter()
            if backend == "maildir":
                build_maildir(os.path.join(data, "mail", "example.org", "bench"), args.messages)
                os.makedirs(os.path.join(data, "mail", "example.org", "bench"), exist_ok=True)
                open(os.path.join(data, "mail", "example.org", "bench", "pymail-special-use"),
                     "w").close()
            else:
                folder = os.path.join(data, "mbox", "example.org", "bench")
                build_mbox(os.path.join(folder, "INBOX"),
                           os.path.join(folder, ".pymail-state", "INBOX"), args.messages)
                open(os.path.join(folder, ".pymail-special-use"), "w").close()
            built = time.perf_counter() - t0
            cold = run_child(backend, data, "cold", 0)
            warm = run_child(backend, data, "warm", 0)
            ddir = os.path.join(work, backend + "-deliver")
            rate = run_child(backend, ddir, "deliver", args.deliveries)["deliveries_per_s"]
            print(f"\n{backend} (folder written in {built:.1f} s)")
            print(f"  index rebuild / first open (no index):  {cold['open_s']:7.2f} s   "
                  f"({int(cold['messages'])} messages)")
            print(f"  SELECT, index warm, fresh process:      {warm['open_s']:7.2f} s   "
                  f"(CPU {warm['open_cpu_s']:.2f} s)")
            print(f"  SELECT, folder already open:            {warm['select_open_s']:7.3f} s   "
                  f"(after another program's delivery: {warm['select_rescan_s']:.3f} s)")
            print(f"  FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE): {warm['fetch_s']:5.2f} s   "
                  f"(CPU {warm['fetch_cpu_s']:.2f} s)")
            print(f"  STORE +FLAGS on one message:            {warm['store_s']:7.3f} s   "
                  f"(the first one after another program wrote the folder: "
                  f"{warm['store_first_s']:.3f} s)")
            print(f"  STORE +FLAGS 1:* (every message):       {warm['store_all_s']:7.3f} s")
            print(f"  RSS of the open folder:                 {warm['rss_mib']:7.1f} MiB   "
                  f"(process {warm['rss_total_mib']:.1f} MiB)")
            print(f"  durable delivery, 10 writers, 4 KiB:    {rate:7.0f} messages/s   "
                  f"({rate / bare:.2f} x the bare loop)")
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
