#!/usr/bin/env python3
"""
The first mail-loop benchmark: N messages over ONE SMTP connection into a
real ``twistd pymail`` process (Maildir, full fsync durability), then the
time to fetch them all back over IMAP and POP3.

    python benchmarks/mail_loop.py            # 1,000 messages of 4 KiB
    python benchmarks/mail_loop.py -n 200 --size 100000 --json results.jsonl

Prints a table and, with --json, appends one JSON line per figure.  Only
loopback traffic; bounded by --count and --max-seconds.
"""

from __future__ import annotations

import argparse
import imaplib
import json
import os
import platform
import poplib
import random
import smtplib
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))

from harness import PymailProcess  # noqa: E402

USER, PASSWORD = "bench@localhost", "bench-pw"


def make_message(n: int, size: int, rng: random.Random) -> bytes:
    header = (
        f"From: Sender {n} <sender{n}@remote.example>\r\n"
        f"To: {USER}\r\n"
        f"Subject: benchmark message {n}\r\n"
        f"Message-ID: <{n}.bench@remote.example>\r\n"
        "Date: Fri, 27 Nov 2026 10:00:00 +0000\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
    ).encode()
    words = [b"lorem", b"ipsum", b"dolor", b"sit", b"amet", b"mail", b"twisted", b"queue"]
    body = bytearray()
    while len(header) + len(body) + 80 < size:
        body += b" ".join(rng.choice(words) for _ in range(10)).ljust(76, b".") + b"\r\n"
    body += b"x" * max(0, size - len(header) - len(body) - 2) + b"\r\n"
    return header + bytes(body)


def progress(label: str, done: int, total: int) -> None:
    if sys.stderr.isatty():
        sys.stderr.write(f"\r{label}: {done}/{total}")
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", "--count", type=int, default=1000, help="messages (default 1000)")
    parser.add_argument("--size", type=int, default=4096, help="message size in octets")
    parser.add_argument("--max-seconds", type=float, default=300.0,
                        help="stop sending after this long (default 300)")
    parser.add_argument("--json", metavar="FILE", help="append results as JSON lines")
    args = parser.parse_args()
    rng = random.Random(20261127)
    messages = [make_message(n, args.size, rng) for n in range(args.count)]
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="pymail-bench-") as tmp:
        server = PymailProcess(Path(tmp), users={USER: PASSWORD})
        server.start()
        try:
            sent = 0
            latencies = []
            start = time.perf_counter()
            with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=60) as smtp:
                smtp.ehlo("bench.client")
                for message in messages:
                    t0 = time.perf_counter()
                    smtp.sendmail("sender@remote.example", [USER], message)
                    latencies.append(time.perf_counter() - t0)
                    sent += 1
                    progress("smtp", sent, len(messages))
                    if time.perf_counter() - start > args.max_seconds:
                        break
            elapsed = time.perf_counter() - start
            latencies.sort()
            results["smtp_messages"] = sent
            results["smtp_msgs_per_s"] = sent / elapsed
            results["smtp_p50_ms"] = latencies[len(latencies) // 2] * 1000
            results["smtp_p99_ms"] = latencies[int(len(latencies) * 0.99) - 1] * 1000

            imap = imaplib.IMAP4("127.0.0.1", server.ports["imap"])
            t0 = time.perf_counter()
            imap.login(USER, PASSWORD)
            typ, data = imap.select("INBOX", readonly=True)
            results["imap_login_select_ms"] = (time.perf_counter() - t0) * 1000
            count = int(data[0])
            assert count == sent, (count, sent)
            t0 = time.perf_counter()
            typ, data = imap.fetch("1:*", "(UID FLAGS RFC822.SIZE INTERNALDATE)")
            results["imap_fetch_meta_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            typ, data = imap.fetch("1:*", "(BODY.PEEK[])")
            took = time.perf_counter() - t0
            octets = sum(len(d[1]) for d in data if isinstance(d, tuple))
            assert sum(1 for d in data if isinstance(d, tuple)) == sent
            results["imap_fetch_all_bodies_s"] = took
            results["imap_fetch_mb_per_s"] = octets / took / 1e6
            imap.logout()

            pop = poplib.POP3("127.0.0.1", server.ports["pop3"], timeout=60)
            t0 = time.perf_counter()
            pop.user(USER)
            pop.pass_(PASSWORD)
            n, _ = pop.stat()
            pop.uidl()
            results["pop3_login_stat_uidl_ms"] = (time.perf_counter() - t0) * 1000
            t0 = time.perf_counter()
            for i in range(1, n + 1):
                pop.retr(i)
            results["pop3_retr_all_s"] = time.perf_counter() - t0
            results["pop3_msgs_per_s"] = n / results["pop3_retr_all_s"]
            pop.quit()
        finally:
            server.stop()

    print(f"pymail mail loop: {sent} messages of {args.size} octets, one SMTP connection, "
          f"Maildir with fsync; {platform.node()} ({os.cpu_count()} cores)")
    width = max(len(k) for k in results)
    for key, value in results.items():
        print(f"  {key:<{width}}  {value:10.2f}" if isinstance(value, float)
              else f"  {key:<{width}}  {value:10d}")
    if args.json:
        with open(args.json, "a") as f:
            for key, value in results.items():
                f.write(json.dumps({"benchmark": "mail_loop", "size": args.size,
                                    "metric": key, "value": value}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
