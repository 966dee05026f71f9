#!/usr/bin/env python3
"""
POP3 against issue 5's speed goals, on a real ``twistd pymail`` process:
a maildrop of N generated messages (benchmarks/mailgen.py, written straight
into the account's Maildir), then benchmarks/load_pop3.py's session run
several times: the first run builds the index (cold), later ones are warm.

    python benchmarks/pop3_bench.py                 # 10,000 messages, 3 runs
    python benchmarks/pop3_bench.py -n 2000 --runs 2 --json

Goals (issue 5, Dovecot 2.3 on the same machine): RETR of every message at
>= 100 MB/s / 3,600 messages/s; login + STAT + UIDL <= 150 ms with a warm
index; no Nagle stall when the client does not pipeline.  Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "e2e"))

from harness import PymailProcess  # noqa: E402
from load_pop3 import run  # noqa: E402
from mailgen import write_maildir  # noqa: E402

USER, PASSWORD = "bench@example.org", "bench-pw"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--count", type=int, default=10_000, help="messages (10000)")
    parser.add_argument("--runs", type=int, default=3, help="sessions, first is cold (3)")
    parser.add_argument("--json", action="store_true", help="one JSON line per run")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pymail-pop3-bench-") as tmp:
        server = PymailProcess(Path(tmp), users={USER: PASSWORD})
        maildir = server.data_dir / "mail" / "example.org" / "bench"
        octets = write_maildir(maildir, args.count, to=USER, progress=True)
        print(f"maildrop: {args.count} messages, {octets / 1e6:.1f} MB in {maildir}",
              file=sys.stderr)
        server.start()
        try:
            for i in range(args.runs):
                figures = asyncio.run(run("127.0.0.1", server.ports["pop3"], USER, PASSWORD))
                figures["run"] = i + 1
                figures["index"] = "cold" if i == 0 else "warm"
                if args.json:
                    print(json.dumps(figures))
                else:
                    print(f"run {i + 1} ({figures['index']} index)")
                    for key, value in figures.items():
                        if isinstance(value, float):
                            print(f"  {key:28} {value:10.1f}")
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
