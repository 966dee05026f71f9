#!/usr/bin/env python3
"""
POP3 against issue 5's speed goals, on a real ``twistd pymail`` process:
a maildrop of N generated messages (benchmarks/mailgen.py), then
benchmarks/load_pop3.py's sessions run several times: the first run builds
the index (cold), later ones are warm.  Each run retrieves every message
three times: one command at a time and pipelined from asyncio (the
``retr_sequential_*`` and ``retr_pipelined_*`` lines), and one at a time
from a blocking socket client (``retr_blocking_*``: the rate, and the
median and 99th percentile round trip of a RETR), whose own work per reply
is small, so it shows the server's latency more than the asyncio client's.
With ``--dovecot`` the same maildrop (hard links to the same files) is
served by a private Dovecot (benchmarks/anchors.py) and measured in the
same run, with the ratios.

    python benchmarks/pop3_bench.py                 # 10,000 messages, 3 runs
    python benchmarks/pop3_bench.py --dovecot       # and Dovecot beside it
    python benchmarks/pop3_bench.py -n 2000 --runs 2 --json
    python benchmarks/pop3_bench.py --profile /tmp/pop3.prof   # cProfile of the server

Goals (issue 5, Dovecot 2.3 on the same machine): RETR of every message at
>= 100 MB/s / 3,600 messages/s; login + STAT + UIDL <= 150 ms with a warm
index; no Nagle stall when the client does not pipeline.  Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "e2e"))

from harness import PymailProcess, tool  # noqa: E402
from load_pop3 import blocking_session, session  # noqa: E402
from mailgen import write_maildir  # noqa: E402
from procstat import cpu_seconds  # noqa: E402

USER, PASSWORD = "bench@example.org", "bench-pw"
#: The figures compared with Dovecot (higher is better for rates).
RATES = ("server_cpu_us_per_retr", "server_cpu_us_per_retr_sequential",
         "server_cpu_us_per_retr_pipelined", "server_cpu_us_per_retr_blocking",
         "retr_sequential_mb_s", "retr_sequential_msgs_s",
         "retr_pipelined_mb_s", "retr_pipelined_msgs_s", "retr_blocking_msgs_s")
TIMES = ("login_ms", "stat_ms", "uidl_ms", "login_stat_uidl_ms", "retr_blocking_median_us",
         "retr_blocking_p99_us")


class ProfiledPymail(PymailProcess):
    """pymail under ``twistd --profile`` (cProfile); stats written at stop."""

    def __init__(self, root: Path, profile: Path, **kw: Any) -> None:
        super().__init__(root, **kw)
        self.profile = profile

    def start(self, timeout: float = 20.0) -> None:
        real = tool("twistd")
        wrapper = self.root / "twistd-profiled"
        wrapper.write_text(f"#!/bin/sh\nexec {real} --profiler=cprofile --savestats "
                           f"--profile={self.profile} \"$@\"\n")
        wrapper.chmod(0o755)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(wrapper), "-n", "--pidfile=", "pymail", "--config", str(self.config_path)],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.root)
        log.close()
        import anchors

        anchors.wait_listening(list(self.ports.values()), timeout)


def link_tree(template: Path, target: Path) -> None:
    """The template Maildir as hard links at ``target`` (no copying)."""
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(template, target, copy_function=os.link)


def measure(name: str, port: int, pid: int, run: int, as_json: bool) -> dict[str, Any]:
    """
    One run (a session not pipelined, then one pipelined, both asyncio,
    then one not pipelined from a blocking client) against one server;
    besides load_pop3's wall-clock figures, the server's CPU time (process
    tree, /proc) per message retrieved, for each session and the first two
    together, which a busy machine disturbs much less than the wall clock.
    """
    figures: dict[str, Any] = {}
    total = 0.0
    # The server's CPU is read before QUIT: Dovecot ends the session's
    # process at QUIT, and its time is then counted nowhere (it read as
    # 2-5 us per RETR in some runs when it was read after the session).
    at_end: list[float] = []
    for pipelined in (False, True):
        label = "pipelined" if pipelined else "sequential"
        start = cpu_seconds(pid)
        got = asyncio.run(session("127.0.0.1", port, USER, PASSWORD, pipelined,
                                  before_quit=lambda: at_end.append(cpu_seconds(pid))))
        cpu = at_end.pop() - start
        total += cpu
        if pipelined:
            figures.update({k: v for k, v in got.items() if k.startswith("retr_")})
        else:
            figures.update(got)
        figures[f"server_cpu_us_per_retr_{label}"] = cpu / max(1, got["messages"]) * 1e6
        # Let the server release the maildrop lock of the first session.
        time.sleep(0.2)
    figures["server_cpu_s"] = total
    figures["server_cpu_us_per_retr"] = total / max(1, 2 * figures["messages"]) * 1e6
    # One at a time again, from a blocking client whose own work per reply
    # is small: the round trip is mostly the server's.
    start = cpu_seconds(pid)
    blocking = blocking_session("127.0.0.1", port, USER, PASSWORD,
                                before_quit=lambda: at_end.append(cpu_seconds(pid)))
    cpu = at_end.pop() - start
    figures.update({k: v for k, v in blocking.items() if k.startswith("retr_")})
    figures["server_cpu_us_per_retr_blocking"] = cpu / max(1, blocking["messages"]) * 1e6
    time.sleep(0.2)
    figures.update(server=name, run=run, index="cold" if run == 1 else "warm")
    if as_json:
        print(json.dumps(figures), flush=True)
    else:
        print(f"{name} run {run} ({figures['index']} index)")
        for key, value in figures.items():
            if isinstance(value, float):
                print(f"  {key:34} {value:10.1f}")
    return figures


def warm_median(results: list[dict[str, Any]], key: str) -> float:
    """The median of ``key`` over the warm runs (all runs if there is only one)."""
    values = sorted(r[key] for r in (results[1:] or results))
    return float(statistics.median(values))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--count", type=int, default=10_000, help="messages (10000)")
    parser.add_argument("--runs", type=int, default=3, help="sessions, first is cold (3)")
    parser.add_argument("--json", action="store_true", help="one JSON line per run")
    parser.add_argument("--dovecot", action="store_true",
                        help="also measure a private Dovecot on the same maildrop, runs "
                             "interleaved with pymail's")
    parser.add_argument("--profile", type=Path, metavar="FILE",
                        help="run pymail under cProfile and save its stats to FILE")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pymail-pop3-bench-") as tmp, ExitStack() as stack:
        root = Path(tmp)
        template = root / "template"
        octets = write_maildir(template, args.count, to=USER, progress=True)
        print(f"maildrop: {args.count} messages, {octets / 1e6:.1f} MB", file=sys.stderr)
        pymail_root = root / "pymail"
        pymail_root.mkdir()
        if args.profile:
            server: PymailProcess = ProfiledPymail(pymail_root, args.profile.resolve(),
                                                   users={USER: PASSWORD})
        else:
            server = PymailProcess(pymail_root, users={USER: PASSWORD})
        link_tree(template, server.data_dir / "mail" / "example.org" / "bench")
        server.start()
        stack.callback(server.stop)
        assert server.proc is not None
        targets = [("pymail", server.ports["pop3"], server.proc.pid)]
        if args.dovecot:
            import anchors

            anchors.ensure_installed(lambda *a: print(*a, file=sys.stderr))
            dovecot = anchors.DovecotServer(root / "dovecot")
            anchors.prefill(dovecot, template, USER)
            dovecot.start()
            stack.callback(dovecot.stop)
            anchors.wait_listening([dovecot.ports["pop3"]], anchors.START_TIMEOUT_S)
            targets.append(("dovecot", dovecot.ports["pop3"], dovecot.pid))
        # Runs interleaved, pymail then Dovecot, so both see the same load.
        results: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in targets}
        for run in range(1, args.runs + 1):
            for name, port, pid in targets:
                results[name].append(measure(name, port, pid, run, args.json))
        if not args.dovecot:
            return 0
        ours, theirs = results["pymail"], results["dovecot"]
        a = {k: warm_median(ours, k) for k in RATES + TIMES}
        b = {k: warm_median(theirs, k) for k in RATES + TIMES}
        ratios = {k: a[k] / b[k] for k in RATES + TIMES if b[k]}
        if args.json:
            print(json.dumps({"ratios_pymail_over_dovecot_warm_median": ratios}))
        else:
            print("pymail / dovecot, median of the warm runs: rates >= 1 and times (and CPU "
                  "per RETR) <= 1 are better")
            for key, value in ratios.items():
                print(f"  {key:34} {a[key]:10.1f} {b[key]:10.1f}  x{value:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
