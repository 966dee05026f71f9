#!/usr/bin/env python3
"""
Durability audit: trace a running pymail with strace while one message is
delivered over SMTP and one is APPENDed over IMAP, and check from the trace
that the 250 (and the APPEND OK) is written to the socket only after

- the message file was fsynced (the file that ends up in new/ or cur/),
- it was renamed out of tmp/,
- the uidlist was fsynced, and
- the directory it was renamed into was fsynced,

where a ``syncfs`` on the folder (Maildir's group commit on Linux: one for
the group's files before their renames, one for the names and the uidlist
after them) counts as the fsync of every file and directory below it.
With the Maildir journal (``maildir.sync = "journal"``, the default) the
check is instead that the message's record (its name in the record's
header) was written to the folder's ``pymail-journal`` and that file
fdatasynced before the rename out of tmp/ and before the reply: the record
holds the whole message, and an open after a crash writes back any file it
covers that is missing or incomplete.

    python benchmarks/durability_audit.py     # starts its own pymail, once per backend
    python benchmarks/durability_audit.py --keep-trace /tmp/trace   # trace.maildir, trace.mbox

mbox: the check is that the folder file was fsynced after the 354 (or the
APPEND literal's continuation) and before the reply.

A ``STORE 1:* +FLAGS.SILENT`` on 300 messages is checked too: before its OK
either the renames were done and ``cur/`` fsynced, or (Maildir write-behind,
256 messages and more) the new names were committed to the folder's SQLite
index (its WAL or database file fsynced) and the folder directory fsynced,
the renames following the OK; mbox: the folder file fsynced before the OK.

Needs strace (apt-get install strace) and root (or ptrace rights).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import anchors  # noqa: E402
import load_imap  # noqa: E402
import load_smtp  # noqa: E402

SYSCALLS = "fsync,fdatasync,syncfs,rename,renameat,renameat2,write,sendto,sendmsg,writev"
ATTACH_WAIT_S = 1.5
BACKENDS = ("maildir", "mbox")
_LINE = re.compile(r"^(?:\[pid\s+)?(\d+)\]?\s+(\S+)\s+(.*)$")
_CALL = re.compile(r"^(\w+)\((.*)$")
_RESUMED = re.compile(r"^<\.\.\. (\w+) resumed>(.*)$")
_FD_PATH = re.compile(r"^\d+<([^>]*)>")


def parse(trace: str) -> list[tuple[str, str, str]]:
    """Completed calls in completion order: (name, first argument, whole text)."""
    pending: dict[str, tuple[str, str]] = {}
    done: list[tuple[str, str, str]] = []
    for raw in trace.splitlines():
        m = _LINE.match(raw)
        if not m:
            continue
        pid, _, rest = m.groups()
        if (r := _RESUMED.match(rest)) is not None:
            name, args = pending.pop(pid, (r.group(1), ""))
            done.append((name, args, args + r.group(2)))
            continue
        c = _CALL.match(rest)
        if c is None:
            continue
        name, args = c.groups()
        if rest.endswith("<unfinished ...>"):
            pending[pid] = (name, args)
        else:
            done.append((name, args, rest))
    return done


def _socket_write(call: tuple[str, str, str], marker: str) -> bool:
    name, args, text = call
    return name in ("sendto", "write", "sendmsg", "writev") and "TCP" in args and marker in text


def _span(calls: list[tuple[str, str, str]], after_marker: str,
          reply_marker: str) -> tuple[int, int] | dict[str, object]:
    """
    The indexes of the first socket write holding ``after_marker`` and of
    the first one after it holding ``reply_marker``, or the failed check
    saying which is missing.
    """
    start = next((i for i, c in enumerate(calls) if _socket_write(c, after_marker)), None)
    if start is None:
        return {"ok": False, "why": f"no socket write containing {after_marker!r} in the trace"}
    reply = next((i for i in range(start + 1, len(calls))
                  if _socket_write(calls[i], reply_marker)), None)
    if reply is None:
        return {"ok": False, "why": f"no socket write containing {reply_marker!r} in the trace"}
    return start, reply


def _fsynced_paths(calls: list[tuple[str, str, str]], start: int, end: int) -> list[str]:
    """The paths fsynced (or fdatasynced) successfully by calls[start:end], in order."""
    return [m.group(1) for n, a, t in calls[start:end]
            if n in ("fsync", "fdatasync") and t.rstrip().endswith("= 0")
            and (m := _FD_PATH.match(a)) is not None]


def check(calls: list[tuple[str, str, str]], after_marker: str,
          reply_marker: str) -> dict[str, object]:
    """
    Was everything durable before the first socket write holding
    ``reply_marker`` that follows the one holding ``after_marker`` (the 354
    or the literal's continuation)?
    """
    span = _span(calls, after_marker, reply_marker)
    if isinstance(span, dict):
        return span
    start, reply = span
    renames = [(i, t) for i, (n, a, t) in enumerate(calls[start:reply], start)
               if n.startswith("rename") and "/tmp/" in t and ("/new/" in t or "/cur/" in t)]
    if not renames:
        return check_mbox(calls, start, reply)
    ri, rtext = renames[-1]
    target = re.findall(r'"([^"]+)"', rtext)[-1]
    base = target.rsplit("/", 1)[1].split(":")[0]
    folder = target.rsplit("/", 2)[0]
    subdir = target.rsplit("/", 2)[1]

    journaled = check_journal(calls, start, ri, base, folder)
    if journaled is not None:
        return {**journaled, "message": target}

    def fsynced(pred: object, start: int, end: int, syncfs_start: int = 0) -> bool:
        for i, (n, a, t) in enumerate(calls[start:end], start):
            if not t.rstrip().endswith("= 0") or (m := _FD_PATH.match(a)) is None:
                continue
            if n in ("fsync", "fdatasync") and pred(m.group(1)):  # type: ignore[operator]
                return True
            if n == "syncfs" and i >= syncfs_start and _same_tree(m.group(1), folder):
                return True
        return False
    file_ok = fsynced(lambda p: base in p, 0, ri)
    dir_ok = fsynced(lambda p: p == f"{folder}/{subdir}", ri, reply)
    # A syncfs covers the uidlist only once its line is written: after the rename.
    uidlist_ok = fsynced(lambda p: "uidlist" in p and p.startswith(folder), 0, reply, ri)
    return {"ok": file_ok and dir_ok and uidlist_ok, "file_fsync_before_rename": file_ok,
            "dir_fsync_before_reply": dir_ok, "uidlist_fsync_before_reply": uidlist_ok,
            "message": target}


def check_journal(calls: list[tuple[str, str, str]], start: int, rename: int, base: str,
                  folder: str) -> dict[str, object] | None:
    """
    The journal check, or None when the message was not journaled: a write
    to ``<folder>/pymail-journal`` holding ``base``, then an fsync or
    fdatasync of that file, both before the rename at ``rename`` (which
    comes before the reply).
    """
    journal = f"{folder}/pymail-journal"
    written = next((i for i, (n, a, t) in enumerate(calls[start:rename], start)
                    if n == "write" and (m := _FD_PATH.match(a)) is not None
                    and m.group(1) == journal and base in t), None)
    if written is None:
        return None
    synced = journal in _fsynced_paths(calls, written + 1, rename)
    return {"ok": synced, "journal_written_before_rename": True,
            "journal_synced_before_rename": synced}


def check_store(calls: list[tuple[str, str, str]], after_marker: str,
                reply_marker: str) -> dict[str, object]:
    """
    Was the STORE durable before its OK: the renames done and ``cur/``
    fsynced, or the new names in the index (fsynced) and the folder fsynced
    (write-behind); for mbox the folder file fsynced?
    """
    span = _span(calls, after_marker, reply_marker)
    if isinstance(span, dict):
        return span
    start, reply = span
    synced = _fsynced_paths(calls, start, reply)

    def in_cur(text: str) -> bool:
        return "/cur/" in text or "/cur>" in text  # full paths, or dir fds shown by -yy

    renames_before = sum(1 for n, _, t in calls[start:reply] if n.startswith("rename")
                         and in_cur(t))
    renames_after = sum(1 for n, _, t in calls[reply:] if n.startswith("rename") and in_cur(t))
    if any("/mbox/" in p for p in synced):
        # The folder is rewritten beside itself, fsynced, renamed over the
        # folder file, and the directory fsynced.
        rewrites = [p for p in synced if "pymail-rewrite" in p]
        replaced = any(n.startswith("rename") and "pymail-rewrite" in t
                       for n, _, t in calls[start:reply])
        dir_ok = any(os.path.dirname(r) in synced for r in rewrites)
        in_place = check_mbox(calls, start, reply)["ok"]
        return {"ok": bool(in_place or (rewrites and replaced and dir_ok)),
                "rewrite_fsynced": bool(rewrites), "rewrite_renamed": replaced,
                "dir_fsynced": dir_ok, "fsynced": sorted(set(synced))}
    index = [p for p in synced if ".sqlite" in p and "/mail/" in p]
    folders = {os.path.dirname(p) for p in index}
    written_behind = bool(index) and any(p in folders for p in synced)
    synchronous = renames_before > 0 and any(p.endswith("/cur") for p in synced)
    return {"ok": written_behind or synchronous,
            "mode": "write-behind" if written_behind and not synchronous else "renames",
            "index_fsynced_before_ok": bool(index),
            "folder_fsynced_before_ok": bool(folders & set(synced)),
            "renames_before_ok": renames_before, "renames_after_ok": renames_after}


def _same_tree(path: str, folder: str) -> bool:
    """``path`` is the folder, inside it or above it (so on its file system, for syncfs)."""
    path, folder = path.rstrip("/"), folder.rstrip("/")
    return path == folder or path.startswith(folder + "/") or folder.startswith(path + "/")


def check_mbox(calls: list[tuple[str, str, str]], start: int, reply: int) -> dict[str, object]:
    """mbox: the folder file was fsynced between the 354/continuation and the reply."""
    synced = [p for p in _fsynced_paths(calls, start, reply) if "/mbox/" in p]
    folder_files = [p for p in synced if os.path.isfile(p)
                    and not os.path.basename(p).startswith(".")]
    return {"ok": bool(folder_files), "mbox_fsync_before_reply": bool(folder_files),
            "fsynced": sorted(set(synced)), "message": folder_files[-1] if folder_files else None}


#: Messages in the folder for the STORE check: above Maildir's write-behind
#: threshold (MaildirMailbox.write_behind_min).
STORE_MESSAGES = 300


async def _traffic(server: anchors.Server) -> tuple[str, str]:
    """Deliver, APPEND, then STORE; the markers around the STORE's OK."""
    await load_smtp.run("127.0.0.1", server.ports["smtp"], 1, 4096, 1)
    await asyncio.sleep(0.3)
    c = await load_imap.Client.connect("127.0.0.1", server.ports["imap"])
    await c.command(f'LOGIN "{anchors.APPEND_USER}" "{anchors.PASSWORD}"')
    message = load_smtp.wire_messages(4096, "x@example.org")[0][:-3]
    await c.command("APPEND INBOX (\\Seen)", message)
    await asyncio.sleep(0.3)
    for _ in range(STORE_MESSAGES - 1):
        await c.command("APPEND INBOX", message)
    await c.command("SELECT INBOX")
    await c.command("NOOP")
    before = f"b{c.n} OK"
    await c.command("STORE 1:* +FLAGS.SILENT (\\Flagged)")
    store = f"b{c.n} OK"
    await c.command("NOOP")
    await asyncio.sleep(0.3)
    await c.close()
    return before, store


def audit(server: anchors.Server, keep: str | None = None) -> dict[str, object]:
    """Trace ``server`` (a started PymailServer) through one SMTP delivery and one APPEND."""
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
        tracer = subprocess.Popen(
            ["strace", "-f", "-tt", "-yy", "-s", "300", "-e", f"trace={SYSCALLS}",
             "-o", out.name, "-p", str(server.pid)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(ATTACH_WAIT_S)
        try:
            before, store = asyncio.run(_traffic(server))
            time.sleep(0.3)
        finally:
            anchors.stop_pid(tracer.pid)
        trace = Path(out.name).read_text(errors="replace")
    if keep:
        Path(keep).write_text(trace)
    calls = parse(trace)
    return {"backend": getattr(server, "backend", "maildir"),
            "smtp_250": check(calls, "354 ", "\"250 "),
            "imap_append_ok": check(calls, "\"+ ", " OK "),
            "imap_store_ok": check_store(calls, before, store)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep-trace", metavar="FILE", help="save the raw strace output")
    args = parser.parse_args(argv)
    anchors.ensure_installed()
    ok = True
    for backend in BACKENDS:
        with tempfile.TemporaryDirectory(prefix="pymail-audit-") as tmp:
            server = anchors.PymailServer(Path(tmp) / "pymail", backend)
            server.start()
            try:
                keep = f"{args.keep_trace}.{backend}" if args.keep_trace else None
                result = audit(server, keep)
            finally:
                server.stop()
        print(json.dumps(result, indent=2))
        ok = ok and all(v["ok"] for v in result.values() if isinstance(v, dict))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
