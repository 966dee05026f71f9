"""
``pymail queue list|show ID|flush|delete ID``: the outbound queue from
the command line.  Works on the spool files directly, so it is safe while
the server runs; the server notices changes at its next scan
(``[relay] scan_interval``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

from pymail.relay.queue import QueuedMessage, QueueError, Spool

EXAMPLES = """\
examples:
  pymail queue list
  pymail queue show 06HHGN2G00000AIU
  pymail queue show 06HHGN2G00000AIU --message
  pymail queue flush                      (retry everything at the next scan)
  pymail queue delete 06HHGN2G00000AIU    (drop a message without a bounce)
"""


def add_queue_command(add: Callable[[str, str, str], argparse.ArgumentParser],
                      config: Callable[[argparse.Namespace], Any]) -> None:
    """Add the ``queue`` command to ``pymail``'s parser (``add`` makes a subcommand)."""
    queue = add("queue", "inspect and manage the outbound queue", "pymail queue list")
    queue.epilog = EXAMPLES
    actions = queue.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, text: str, example: str) -> argparse.ArgumentParser:
        return actions.add_parser(name, help=text, description=text,
                                  epilog=f"example:\n  {example}",
                                  formatter_class=argparse.RawDescriptionHelpFormatter)

    action("list", "list queued messages: id, age, size, sender, recipients, next try",
           "pymail queue list")
    p = action("show", "show one message's envelope and each recipient's last reply",
               "pymail queue show 06HHGN2G00000AIU")
    p.add_argument("queue_id", metavar="ID")
    p.add_argument("--message", action="store_true", help="print the message itself too")
    action("flush", "try every queued message again now (at the server's next queue scan)",
           "pymail queue flush")
    p = action("delete", "remove messages from the queue, without a bounce",
               "pymail queue delete 06HHGN2G00000AIU")
    p.add_argument("queue_ids", metavar="ID", nargs="+")
    queue.set_defaults(func=lambda args: run(args, config(args)))


def _spool(config: Any) -> Spool:
    return Spool(os.path.join(config.data_dir, "queue"))


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _fail(message: str) -> None:
    from pymail.cli import CommandError

    raise CommandError(message)


def run(args: argparse.Namespace, config: Any, out: TextIO | None = None,
        now: float | None = None) -> None:
    out = out or sys.stdout
    now = time.time() if now is None else now
    if not os.path.isdir(os.path.join(config.data_dir, "queue")):
        if args.action in ("show", "delete"):
            _fail("the queue is empty; see `pymail queue list`")
        out.write("The queue is empty.\n")
        return
    spool = _spool(config)
    if args.action == "list":
        list_queue(spool, out, now)
    elif args.action == "show":
        try:
            entry = spool.read_envelope_now(args.queue_id)
        except QueueError as e:
            _fail(str(e))
            return
        show(entry, out, now)
        if args.message:
            out.write("\n")
            out.write(spool.read_message_now(args.queue_id).decode("utf-8", "replace"))
    elif args.action == "flush":
        flush(spool, out, now)
    elif args.action == "delete":
        for queue_id in args.queue_ids:
            if not os.path.exists(spool.envelope_path(queue_id)):
                _fail(f"no queued message {queue_id}; see `pymail queue list`")
            spool.remove_now(queue_id)
            out.write(f"deleted {queue_id}\n")


def list_queue(spool: Spool, out: TextIO, now: float) -> None:
    entries = list(spool.entries())
    if not entries:
        out.write("The queue is empty.\n")
        return
    out.write(f"{'ID':<18} {'AGE':>5} {'SIZE':>9} {'NEXT TRY':>8}  SENDER -> PENDING RECIPIENTS\n")
    for e in entries:
        pending = e.pending()
        nxt = "now" if e.next_attempt <= now else "in " + _age(e.next_attempt - now)
        rcpts = ", ".join(r.address for r in pending[:3])
        if len(pending) > 3:
            rcpts += f" (+{len(pending) - 3} more)"
        out.write(f"{e.queue_id:<18} {_age(now - e.created):>5} {e.size:>9} {nxt:>8}  "
                  f"<{e.sender}> -> {rcpts}\n")
        last = next((r.reply for r in pending if r.reply), "")
        if last:
            out.write(f"{'':<18} last reply: {last[:100]}\n")
    out.write(f"{len(entries)} message(s), "
              f"{sum(len(e.pending()) for e in entries)} recipient(s) waiting.\n")


def show(entry: QueuedMessage, out: TextIO, now: float) -> None:
    def when(t: float) -> str:
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

    out.write(f"id:           {entry.queue_id}\n")
    out.write(f"sender:       <{entry.sender}>\n")
    out.write(f"queued:       {when(entry.created)} ({_age(now - entry.created)} ago) "
              f"from {entry.client}\n")
    out.write(f"size:         {entry.size} octets\n")
    out.write(f"attempts:     {entry.attempts}\n")
    out.write(f"next attempt: {when(entry.next_attempt)}\n")
    if entry.ret or entry.envid:
        out.write(f"dsn:          RET={entry.ret or '-'} ENVID={entry.envid or '-'}\n")
    for r in entry.recipients:
        out.write(f"  <{r.address}> {r.state}")
        if r.notify:
            out.write(f" NOTIFY={','.join(r.notify)}")
        out.write("\n")
        if r.reply:
            out.write(f"      {r.remote + ': ' if r.remote else ''}{r.reply}\n")


def flush(spool: Spool, out: TextIO, now: float) -> None:
    ids = spool.ids()
    if not ids:
        out.write("The queue is empty.\n")
        return
    tty = out.isatty()
    done = 0
    for i, queue_id in enumerate(ids, 1):
        try:
            entry = spool.read_envelope_now(queue_id)
        except QueueError:
            continue  # delivered meanwhile
        entry.next_attempt = now
        spool.rewrite_now(entry)
        done += 1
        if tty:
            out.write(f"\rflushing {i}/{len(ids)}")
            out.flush()
    if tty:
        out.write("\n")
    out.write(f"{done} message(s) marked for immediate retry; a running server picks them "
              "up at its next queue scan ([relay] scan_interval).\n")
