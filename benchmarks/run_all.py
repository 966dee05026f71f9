#!/usr/bin/env python3
"""
The side-by-side benchmark suite: pymail against Postfix, Dovecot, aiosmtpd
(with and without fsync) and smtp-sink, on loopback, in the same run, with
the workloads interleaved (every repetition runs pymail, then each anchor)
and the median of the repetitions compared against every goal of the
storage (3), IMAP (4), POP3 (5) and SMTP (6) issues.

    python benchmarks/run_all.py --quick                 # about 4 minutes
    python benchmarks/run_all.py                         # the full run, 20-25 minutes
    python benchmarks/run_all.py --only smtp,pop3 --reps 5 --jsonl out.jsonl

Installs missing anchors first (apt-get install postfix dovecot-imapd
dovecot-pop3d strace; pip install aiosmtpd), so run it as root on a
machine where that is fine.  Every server is started under a temporary
directory on 127.0.0.1 high ports and stopped by its PID at the end; the
Postfix instance can deliver only to its own Maildirs (no smtp client in
its master.cf, error(8) for every other destination).

Results: a table of medians and pymail/anchor ratios on stdout, one JSON
line per measurement and per goal in --jsonl, and with --chart a PNG of how
far each goal is met (needs matplotlib: pip install -e '.[bench]').  The
run is bounded by --max-minutes: when time is up, the remaining steps are
skipped and the table says so.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import anchors  # noqa: E402
import durability_audit  # noqa: E402
import idle_push  # noqa: E402
import load_imap  # noqa: E402
import load_pop3  # noqa: E402
import load_smtp  # noqa: E402
import mailgen  # noqa: E402
import probe  # noqa: E402
import procstat  # noqa: E402

HOST = "127.0.0.1"
RESULTS = Path(__file__).resolve().parent / "results"
PROTOCOLS = ("probe", "smtp", "imap", "pop3", "audit")
SETTLE_TIMEOUT_S = 60.0


class Profile:
    """How big each workload is."""

    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.folder = 10_000
        self.smtp_small = 300 if quick else 2_000
        self.smtp_large = 100 if quick else 500
        self.smtp_concurrency = (1, 10, 50)
        self.smtp_large_concurrency = (10,) if quick else (1, 10, 50)
        self.append = 300 if quick else 2_000
        self.parallel = 10
        self.idle = 200 if quick else 1_000
        self.idle_push = 200 if quick else 10_000
        self.max_minutes = 6.0 if quick else 40.0


class Progress:
    def __init__(self, deadline: float) -> None:
        self.t0 = time.monotonic()
        self.deadline = deadline
        self.tty = sys.stderr.isatty()

    def say(self, text: str) -> None:
        elapsed = time.monotonic() - self.t0
        line = f"[{elapsed:6.1f}s] {text}"
        if self.tty:
            sys.stderr.write("\r\x1b[K" + line[:150])
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def done(self) -> None:
        if self.tty:
            sys.stderr.write("\n")

    def out_of_time(self) -> bool:
        return time.monotonic() > self.deadline


class Recorder:
    def __init__(self, path: Path | None) -> None:
        self.values: dict[tuple[str, str, str], list[float]] = defaultdict(list)
        self.notes: list[str] = []
        self.audit: list[tuple[str, str, bool]] = []
        self.file = open(path, "a") if path else None
        self.run_id = time.strftime("%Y-%m-%dT%H:%M:%S")

    def add(self, rep: int, server: str, workload: str, figures: dict[str, Any]) -> None:
        for metric, value in figures.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                if value is not None and not isinstance(value, bool):
                    self.notes.append(f"{server} {workload}: {metric} = {value}")
                continue
            self.values[(server, workload, metric)].append(float(value))
            self.write({"type": "measurement", "rep": rep, "server": server,
                        "workload": workload, "metric": metric, "value": value})

    def write(self, record: dict[str, Any]) -> None:
        if self.file:
            record = {"run": self.run_id, **record}
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

    def median(self, server: str, workload: str, metric: str) -> float | None:
        values = [v for v in self.values.get((server, workload, metric), []) if v == v]
        return statistics.median(values) if values else None


# ---------------------------------------------------------------- goals
# kind "ratio": pymail / anchor compared with target; "absolute": pymail's
# value compared with target.  higher: whether a bigger value is better.
GOALS: list[dict[str, Any]] = [
    # issue 6: SMTP
    dict(issue=6, goal="4 KiB msgs/s at 10 connections >= 2x Postfix", kind="ratio",
         workload="smtp-4k-c10", metric="msgs_per_s", anchor="postfix", target=2.0, higher=True),
    dict(issue=6, goal="4 KiB msgs/s at 50 connections >= 2x Postfix", kind="ratio",
         workload="smtp-4k-c50", metric="msgs_per_s", anchor="postfix", target=2.0, higher=True),
    dict(issue=6, goal="100 KiB msgs/s at 10 connections >= Postfix", kind="ratio",
         workload="smtp-100k-c10", metric="msgs_per_s", anchor="postfix", target=1.0, higher=True),
    dict(issue=6, goal="p99 MAIL->250 at 10 connections < 50 ms", kind="absolute",
         workload="smtp-4k-c10", metric="p99_ms", target=50.0, higher=False),
    # issue 3: storage
    dict(issue=3, goal="4 KiB durable deliveries, 10 SMTP connections >= 1,500/s", kind="absolute",
         workload="smtp-4k-c10", metric="msgs_per_s", target=1500.0, higher=True),
    dict(issue=3, goal="4 KiB durable APPENDs, 10 IMAP clients >= 1,500/s", kind="absolute",
         workload="imap-append", metric="append10_msgs_per_s", target=1500.0, higher=True),
    *(dict(issue=3, goal=f"{backend}: {goal}", kind="absolute",
           workload=f"storage-100k-{backend}", metric=metric, target=target, higher=higher)
      for backend in ("maildir", "mbox")
      for goal, metric, target, higher in (
          ("SELECT of a 100,000-message folder (index warm) <= 0.3 s", "select_fresh_s",
           0.3, False),
          ("FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE), 100,000 <= 2 s", "fetch_meta_s",
           2.0, False),
          ("an open 100,000-message folder <= 100 MB RSS", "server_rss_mb", 100.0, False),
          ("index rebuild of a 100,000-message folder <= 60 s", "index_rebuild_s", 60.0, False),
          ("4 KiB durable deliveries, 10 writers, in-process >= 1,500/s", "deliveries10_per_s",
           1500.0, True))),
    # issue 4: IMAP
    dict(issue=4, goal="LOGIN+SELECT (10,000 msgs) <= Dovecot (39 ms ref)", kind="ratio",
         workload="imap", metric="login_select_ms", anchor="dovecot", target=1.0, higher=False),
    dict(issue=4, goal="FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE) <= Dovecot",
         kind="ratio", workload="imap", metric="fetch_meta_s", anchor="dovecot", target=1.0,
         higher=False),
    dict(issue=4, goal="UID SEARCH SUBJECT <= Dovecot", kind="ratio", workload="imap",
         metric="search_subject_ms", anchor="dovecot", target=1.0, higher=False),
    dict(issue=4, goal="STORE 1:* +FLAGS <= Dovecot", kind="ratio", workload="imap",
         metric="store_s", anchor="dovecot", target=1.0, higher=False),
    dict(issue=4, goal="every BODY.PEEK[] >= 300 MB/s", kind="absolute", workload="imap",
         metric="fetch_bodies_mb_s", target=300.0, higher=True),
    dict(issue=4, goal="memory per idle authenticated connection <= 5 KB (RSS growth, KiB)",
         kind="absolute", workload="imap-idle", metric="idle_rss_kib_per_conn", target=5.0,
         higher=False, detail="idle_connections", detail_label="connections"),
    dict(issue=4, goal="10,000 IDLE connections, each pushed a new message within 1 s",
         kind="absolute", workload="imap-push", metric="push_all_s", target=1.0, higher=False,
         detail="push_received", detail_label="connections pushed", need=10_000),
    # issue 5: POP3
    dict(issue=5, goal="RETR of every message, MB/s >= Dovecot (not pipelined)", kind="ratio",
         workload="pop3", metric="retr_sequential_mb_s", anchor="dovecot", target=1.0,
         higher=True),
    dict(issue=5, goal="RETR of every message, MB/s >= Dovecot (pipelined)", kind="ratio",
         workload="pop3", metric="retr_pipelined_mb_s", anchor="dovecot", target=1.0,
         higher=True),
    dict(issue=5, goal="login + STAT + UIDL (10,000 msgs) <= 150 ms", kind="absolute",
         workload="pop3", metric="login_stat_uidl_ms", target=150.0, higher=False),
]

# Context rows: pymail beside each anchor, no goal attached.
CONTEXT: list[tuple[str, str, bool]] = [
    ("smtp-4k-c1", "msgs_per_s", True), ("smtp-4k-c10", "msgs_per_s", True),
    ("smtp-4k-c50", "msgs_per_s", True), ("smtp-100k-c1", "msgs_per_s", True),
    ("smtp-100k-c10", "msgs_per_s", True), ("smtp-100k-c50", "msgs_per_s", True),
    ("smtp-4k-c1", "p99_ms", False), ("smtp-4k-c10", "p50_ms", False),
    ("smtp-4k-c50", "p99_ms", False), ("smtp-4k-c10", "server_cpu_s_per_1000", False),
    ("smtp-100k-c10", "server_cpu_s_per_1000", False),
    ("imap", "search_body_ms", False), ("imap", "fetch_bodies_mb_s", True),
    ("imap", "store_then_noop_s", False),
    ("imap-parallel", "parallel10_fetch_meta_s", False),
    ("imap-append", "append10_msgs_per_s", True), ("imap-append", "append10_p99_ms", False),
    ("imap-idle", "idle_rss_kib_per_conn", False), ("imap-idle", "idle_pss_kib_per_conn", False),
    ("imap-cold", "login_select_ms", False), ("imap-cold", "fetch_meta_s", False),
    ("pop3", "retr_sequential_msgs_s", True), ("pop3", "retr_pipelined_msgs_s", True),
    ("pop3", "login_ms", False), ("pop3", "uidl_ms", False),
    ("storage-100k-maildir", "select_open_s", False),
    ("storage-100k-mbox", "select_open_s", False),
    ("imap-idle", "login_setup_rss_mib", False), ("imap-push", "push_p99_s", False),
    ("imap-push", "push_open_s", False),
]


def evaluate(rec: Recorder) -> list[dict[str, Any]]:
    rows = []
    for g in GOALS:
        mine = rec.median("pymail", g["workload"], g["metric"])
        row = dict(g, pymail=mine, anchor_value=None, value=None, met=None)
        if g["kind"] == "ratio":
            theirs = rec.median(g["anchor"], g["workload"], g["metric"])
            row["anchor_value"] = theirs
            if mine is not None and theirs:
                row["value"] = mine / theirs
        else:
            row["value"] = mine
        if row["value"] is not None:
            value, target = row["value"], g["target"]
            row["met"] = value >= target if g["higher"] else value <= target
        if g.get("detail"):
            row["detail_value"] = rec.median("pymail", g["workload"], g["detail"])
            if row["met"] and (row["detail_value"] or 0) < g.get("need", 0):
                row["met"] = None  # met, but on fewer connections than the goal names
        rows.append(row)
    return rows


def _fmt(v: float | None) -> str:
    if v is None:
        return "—"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}" if abs(v) < 1 else f"{v:.2f}"


def goal_table(rows: list[dict[str, Any]], audit: list[tuple[str, str, bool]]) -> str:
    out = ["| issue | goal | pymail | anchor | measured | target | met |",
           "| --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for backend, what, ok in audit:
        reply = {"smtp_250": "250", "imap_append_ok": "APPEND OK",
                 "imap_store_ok": "STORE 1:* OK"}[what]
        out.append(f"| 3, 6 | durability ({backend}): {reply} written after the fsyncs (strace) "
                   f"| {'pass' if ok else 'FAIL'} | | | pass | {'yes' if ok else '**no**'} |")
    for r in rows:
        measured = (f"{_fmt(r['value'])}x" if r["kind"] == "ratio" and r["value"] is not None
                    else _fmt(r["value"]))
        target = (("≥ " if r["higher"] else "≤ ") + _fmt(r["target"])
                  + ("x" if r["kind"] == "ratio" else ""))
        anchor = (f"{r['anchor']} {_fmt(r['anchor_value'])}" if r["kind"] == "ratio" else "")
        if r.get("detail_value") is not None:
            measured += f" ({r['detail_value']:,.0f} {r['detail_label']})"
        met = {True: "yes", False: "**no**", None: "not measured"}[r["met"]]
        if r["met"] is None and r["value"] is not None:
            met = f"yes at {r['detail_value']:,.0f}, not measured at {r['need']:,}"
        out.append(f"| {r['issue']} | {r['goal']} | {_fmt(r['pymail'])} | {anchor} | "
                   f"{measured} | {target} | {met} |")
    return "\n".join(out)


def context_table(rec: Recorder, servers: list[str]) -> str:
    anchors_ = [s for s in servers if s != "pymail"]
    out = ["| workload | metric | pymail | " + " | ".join(anchors_) + " |",
           "| --- | --- | ---: | " + " | ".join("---:" for _ in anchors_) + " |"]
    for workload, metric, _higher in CONTEXT:
        mine = rec.median("pymail", workload, metric)
        cells = []
        for a in anchors_:
            theirs = rec.median(a, workload, metric)
            if theirs is None:
                cells.append("")
            elif mine is not None and theirs:
                cells.append(f"{_fmt(theirs)} ({_fmt(mine / theirs)}x)")
            else:
                cells.append(_fmt(theirs))
        if mine is None and not any(cells):
            continue
        out.append(f"| {workload} | {metric} | {_fmt(mine)} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def chart(rows: list[dict[str, Any]], path: Path, title: str) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    shown = [r for r in rows if r["value"]]
    labels = [f"#{r['issue']} {r['goal']}"[:70] for r in shown]
    score = [(r["value"] / r["target"]) if r["higher"] else (r["target"] / r["value"])
             for r in shown]
    fig, ax = plt.subplots(figsize=(10, 0.42 * len(shown) + 1.4))
    colors = ["#2a9d4a" if s >= 1 else "#d1495b" for s in score]
    ax.barh(range(len(shown)), score, color=colors)
    ax.set_yticks(range(len(shown)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xlabel("share of the goal reached (1 = goal met; log scale)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# ---------------------------------------------------------------- steps
LARGE_FOLDER = 100_000
LARGE_DELIVERIES = 2_000


def storage_large(work: Path, backend: str, count: int) -> dict[str, float]:
    """
    The 100,000-message storage goals, through the storage engineer's
    benchmarks/storage_bench.py (in-process: no network between the
    folder and the figure): index rebuild, SELECT with the index warm in a
    fresh process and on an open folder, FETCH of the metadata, RSS.
    """
    import storage_bench
    data = str(work / "data")
    folder = os.path.join(data, "mail", "example.org", "bench")
    if backend == "maildir":
        storage_bench.build_maildir(folder, count)
        os.makedirs(folder, exist_ok=True)
        open(os.path.join(folder, "pymail-special-use"), "w").close()
    else:
        mfolder = os.path.join(data, "mbox", "example.org", "bench")
        storage_bench.build_mbox(os.path.join(mfolder, "INBOX"),
                                 os.path.join(mfolder, ".pymail-state", "INBOX"), count)
        open(os.path.join(mfolder, ".pymail-special-use"), "w").close()
    cold = storage_bench.run_child(backend, data, "cold", 0)
    warm = storage_bench.run_child(backend, data, "warm", 0)
    rate = storage_bench.run_child(backend, str(work / "deliver"), "deliver",
                                   LARGE_DELIVERIES)["deliveries_per_s"]
    shutil.rmtree(work, ignore_errors=True)
    return {"messages": cold["messages"], "index_rebuild_s": cold["open_s"],
            "select_fresh_s": warm["open_s"], "select_open_s": warm["select_open_s"],
            "fetch_meta_s": warm["fetch_s"], "server_rss_mb": warm["rss_mib"] * 1.048576,
            "deliveries10_per_s": rate}


CACHE = Path("/var/tmp/pymail-bench-cache")


def cached_folder(count: int, say: Callable[[str], None]) -> Path:
    """The generated folder, written once per seed and count and kept for later runs."""
    path = CACHE / f"maildir-{mailgen.DEFAULT_SEED}-{count}"
    done = path / ".complete"
    if not done.exists():
        if path.exists():
            shutil.rmtree(path)
        say(f"generating the {count:,}-message folder (seed {mailgen.DEFAULT_SEED}) in {path}")
        mailgen.write_maildir(path, count)
        done.write_text("ok\n")
    return path


def drop_page_cache(folder: Path) -> int:
    """
    Ask the kernel to forget the cached pages of every message of *folder*
    (posix_fadvise DONTNEED; the files are clean, so nothing is written).
    Every server's folder is hard-linked to the same template, so without
    this only the first server's cold phase would read from the disk.
    """
    dropped = 0
    for sub in ("cur", "new"):
        if not (folder / sub).is_dir():
            continue
        for entry in os.scandir(folder / sub):
            fd = os.open(entry.path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                dropped += 1
            finally:
                os.close(fd)
    return dropped


def on_fresh_pymail(server: anchors.Server, root: Path,
                    measure: Callable[[anchors.Server], dict[str, Any]]) -> dict[str, Any]:
    """
    Run a memory measurement on a freshly started pymail (for pymail; an
    anchor is measured as it is).  A long-running process reuses heap freed
    by the folder phases, so its RSS would hardly grow per connection and
    the figure would flatter it.
    """
    if not isinstance(server, anchors.PymailServer):
        return measure(server)
    fresh = anchors.PymailServer(root)
    fresh.start()
    try:
        return measure(fresh)
    finally:
        fresh.stop()
        shutil.rmtree(root, ignore_errors=True)


def settle(server: anchors.Server) -> None:
    """Wait until a queueing server (Postfix) has delivered everything it accepted."""
    if not isinstance(server, anchors.PostfixServer):
        return
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while time.monotonic() < deadline:
        queued = sum(len(files) for sub in ("incoming", "active", "maildrop")
                     for _, _, files in os.walk(server.spool / sub))
        if not queued:
            return
        time.sleep(0.1)


def smtp_step(server: anchors.Server, count: int, size: int, conns: int,
              progress: Callable[[int, int], None]) -> dict[str, Any]:
    cpu0 = procstat.cpu_seconds(server.pid)
    t0 = time.monotonic()
    figures = asyncio.run(load_smtp.run(HOST, server.ports["smtp"], count, size, conns,
                                        rcpt=anchors.SINK_USER, max_seconds=120.0,
                                        on_progress=progress))
    settle(server)
    figures["settle_s"] = time.monotonic() - t0 - figures["elapsed_s"]
    cpu = procstat.cpu_seconds(server.pid) - cpu0
    if figures["accepted"]:
        figures["server_cpu_s_per_1000"] = cpu / figures["accepted"] * 1000
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller workloads (~4 minutes)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (default 3, minimum 3)")
    parser.add_argument("--only", default=",".join(PROTOCOLS),
                        help=f"comma-separated subset of {','.join(PROTOCOLS)}")
    parser.add_argument("--jsonl", type=Path, default=RESULTS / "results.jsonl",
                        help="append JSON lines here (default benchmarks/results/results.jsonl, "
                             "which git ignores)")
    parser.add_argument("--chart", type=Path, help="write a PNG chart of the goals here")
    parser.add_argument("--markdown", type=Path, help="also write the tables as Markdown here")
    parser.add_argument("--max-minutes", type=float, help="time bound (default 6 quick, 40 full)")
    parser.add_argument("--large", action="store_true",
                        help="also the 100,000-message storage goals on pymail (adds ~5 min)")
    parser.add_argument("--idle-push", type=int, metavar="N",
                        help="IDLE connections held on pymail for the push test "
                             "(default 200 quick, 10000 full; 0 skips)")
    parser.add_argument("--no-install", action="store_true", help="don't apt-get/pip install")
    args = parser.parse_args(argv)
    if args.reps < 3:
        parser.error("at least 3 repetitions are needed for a median worth reading")
    only = set(args.only.split(","))
    if only - set(PROTOCOLS):
        parser.error(f"unknown --only parts: {sorted(only - set(PROTOCOLS))}")
    prof = Profile(args.quick)
    minutes = args.max_minutes or prof.max_minutes
    prog = Progress(time.monotonic() + minutes * 60)
    if not args.no_install:
        anchors.ensure_installed(prog.say)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    args.jsonl.parent.mkdir(parents=True, exist_ok=True)
    rec = Recorder(args.jsonl)
    truncated: list[str] = []
    work = Path(tempfile.mkdtemp(prefix="pymail-bench-", dir="/var/tmp"))
    servers: dict[str, anchors.Server] = {}
    try:
        if "probe" in only:
            prog.say("probing the machine (fsyncs/s, bare Maildir loop, loopback)")
            rec.add(0, "machine", "probe", probe.run(str(work), 1.0))
        need_imap = bool(only & {"imap", "pop3"})
        names = ["pymail"]
        if "smtp" in only:
            names += ["postfix", "aiosmtpd", "aiosmtpd-nofsync", "smtp-sink"]
        if need_imap:
            names.append("dovecot")
        makers: dict[str, Callable[[Path], anchors.Server]] = {
            "pymail": anchors.PymailServer, "postfix": anchors.PostfixServer,
            "dovecot": anchors.DovecotServer,
            "aiosmtpd": lambda r: anchors.AiosmtpdServer(r, True),
            "aiosmtpd-nofsync": lambda r: anchors.AiosmtpdServer(r, False),
            "smtp-sink": anchors.SmtpSinkServer}
        for name in names:
            servers[name] = makers[name](work / name)
        if need_imap:
            template = cached_folder(prof.folder, prog.say)
            rec.write({"type": "folder", "messages": prof.folder, "seed": mailgen.DEFAULT_SEED,
                       "octets": sum(p.stat().st_size for p in (template / "cur").iterdir())})
            for name in ("pymail", "dovecot"):
                prog.say(f"copying the folder to {name}")
                anchors.prefill(servers[name], template)
        for name, server in servers.items():
            prog.say(f"starting {name}")
            server.start()
        if need_imap:
            for name in ("pymail", "dovecot"):
                prog.say(f"{name}: first SELECT and FETCH of the folder (cold, untimed in goals)")
                drop_page_cache(template)
                cold = asyncio.run(load_imap.folder_phases(
                    HOST, servers[name].ports["imap"], anchors.BENCH_USER, anchors.PASSWORD))
                rec.add(0, name, "imap-cold", cold)
        smtp_servers = [n for n in names if n != "dovecot"]
        imap_servers = ["pymail", "dovecot"]
        for rep in range(1, args.reps + 1):
            steps: list[tuple[str, str, Callable[[anchors.Server], dict[str, Any]]]] = []
            if "smtp" in only:
                for size, label, count, concs in (
                        (4096, "4k", prof.smtp_small, prof.smtp_concurrency),
                        (102400, "100k", prof.smtp_large, prof.smtp_large_concurrency)):
                    for c in concs:
                        for n in smtp_servers:
                            steps.append((n, f"smtp-{label}-c{c}",
                                          lambda s, size=size, count=count, c=c, rep=rep:
                                          smtp_step(s, count, size, c, _progress_cb(prog, s, rep))))
            if "imap" in only:
                for n in imap_servers:
                    steps.append((n, "imap", lambda s: asyncio.run(load_imap.folder_phases(
                        HOST, s.ports["imap"], anchors.BENCH_USER, anchors.PASSWORD))))
                for n in imap_servers:
                    steps.append((n, "imap-parallel", lambda s: asyncio.run(
                        load_imap.parallel_fetch(HOST, s.ports["imap"], anchors.BENCH_USER,
                                                 anchors.PASSWORD, prof.parallel))))
                for n in imap_servers:
                    steps.append((n, "imap-append", lambda s: asyncio.run(
                        load_imap.append_load(HOST, s.ports["imap"], anchors.APPEND_USER,
                                              anchors.PASSWORD, prof.append, 10))))
                for n in imap_servers:
                    steps.append((n, "imap-idle", lambda s, rep=rep: on_fresh_pymail(
                        s, work / f"pymail-idle-{rep}", lambda f: asyncio.run(
                            load_imap.idle_memory(HOST, f.ports["imap"], anchors.BENCH_USER,
                                                  anchors.PASSWORD, prof.idle, f.pid)))))
            if "pop3" in only:
                for n in imap_servers:
                    steps.append((n, "pop3", lambda s: asyncio.run(load_pop3.run(
                        HOST, s.ports["pop3"], anchors.BENCH_USER, anchors.PASSWORD))))
            for name, workload, step in steps:
                if prog.out_of_time():
                    truncated.append(f"rep {rep}: {workload} on {name}")
                    continue
                prog.say(f"rep {rep}/{args.reps}  {workload:14} {name}")
                try:
                    figures = step(servers[name])
                except Exception as e:  # a failing server is a result, not a crash
                    rec.notes.append(f"rep {rep} {name} {workload}: {e!r}")
                    continue
                rec.add(rep, name, workload, figures)
        push = prof.idle_push if args.idle_push is None else args.idle_push
        if push and "imap" in only and not prog.out_of_time():
            prog.say(f"pymail: {push:,} IDLE connections and one SMTP delivery")
            rec.add(1, "pymail", "imap-push", on_fresh_pymail(
                servers["pymail"], work / "pymail-push", lambda f: asyncio.run(idle_push.run(
                    HOST, f.ports["imap"], f.ports["smtp"], anchors.PUSH_USER,
                    anchors.PASSWORD, push, prog.say, f.pid))))
        if "audit" in only and not prog.out_of_time():
            for backend in durability_audit.BACKENDS:
                prog.say(f"durability audit ({backend}): strace of pymail through one SMTP "
                         "delivery, one APPEND and a STORE 1:*")
                if backend == "maildir":
                    audit = durability_audit.audit(servers["pymail"])
                else:
                    extra = servers[f"pymail-{backend}"] = anchors.PymailServer(
                        work / f"pymail-{backend}", backend)
                    extra.start()
                    audit = durability_audit.audit(extra)
                rec.write({"type": "audit", **audit})
                for what in ("smtp_250", "imap_append_ok", "imap_store_ok"):
                    ok = audit[what]["ok"]
                    rec.audit.append((backend, what, ok))
                    rec.notes.append(
                        f"durability audit ({backend}), {what}: "
                        + ("PASS: durable before the reply (see benchmarks/durability_audit.py "
                           "for what is checked)" if ok else f"FAIL: {audit[what]}"))
    finally:
        for name, server in servers.items():
            if getattr(server, "pid", None):
                prog.say(f"stopping {name} (pid {server.pid})")
                server.stop()
        prog.done()
    if args.large and not prog.out_of_time():
        for backend in ("maildir", "mbox"):
            prog.say(f"storage: a 100,000-message {backend} folder (benchmarks/storage_bench.py)")
            rec.add(1, "pymail", f"storage-100k-{backend}",
                    storage_large(work / f"large-{backend}", backend, LARGE_FOLDER))
        prog.done()
    shutil.rmtree(work, ignore_errors=True)

    rows = evaluate(rec)
    for r in rows:
        rec.write({"type": "goal", **{k: v for k, v in r.items()}})
    machine = {k[2]: v[0] for k, v in rec.values.items() if k[0] == "machine"}
    header = (f"pymail benchmarks {rec.run_id}, {'quick' if prof.quick else 'full'}, "
              f"{args.reps} repetitions (medians), {platform.node()}, {os.cpu_count()} CPUs")
    if machine:
        header += (f"; probe: {machine['fsyncs_per_s_1thread']:,.0f} fsyncs/s (1 thread), "
                   f"{machine['fsyncs_per_s_10threads']:,.0f} (10 threads), bare durable "
                   f"Maildir loop {machine['maildir_durable_deliveries_per_s']:,.0f}/s, "
                   f"loopback {machine['loopback_mb_per_s']:,.0f} MB/s")
    text = [header, "", "Goals (issues 3, 4, 5, 6):", "", goal_table(rows, rec.audit), "",
            "pymail beside every anchor (anchor median, pymail/anchor in brackets):", "",
            context_table(rec, [n for n in servers if not n.startswith("pymail-")]), ""]
    if rec.notes:
        text += ["Notes:", ""] + [f"- {n}" for n in rec.notes] + [""]
    if truncated:
        text += [f"Skipped for lack of time (--max-minutes {minutes:g}): "
                 + "; ".join(truncated), ""]
    print("\n".join(text))
    if args.markdown:
        args.markdown.write_text("\n".join(text))
    title = (f"pymail against its goals: {rec.run_id}, {'quick' if prof.quick else 'full'} run, "
             f"medians of {args.reps}")
    if args.chart and chart(rows, args.chart, title):
        print(f"chart: {args.chart}")
    return 0


def _progress_cb(prog: Progress, server: anchors.Server, rep: int) -> Callable[[int, int], None]:
    def cb(done: int, total: int) -> None:
        if prog.tty and (done % 25 == 0 or done == total):
            prog.say(f"rep {rep}  smtp {server.name}: {done}/{total}")
    return cb


if __name__ == "__main__":
    sys.exit(main())
