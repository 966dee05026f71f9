#!/usr/bin/env python3
"""
The aiosmtpd anchor: aiosmtpd (from PyPI) with a Maildir delivery handler,
the way a careful Python author would write one.

    python benchmarks/aiosmtpd_maildir.py --port 2526 --maildir /tmp/box [--no-fsync]

Each message is written to tmp/, fsynced, renamed into new/ and the new/
directory fsynced before the 250 (with --no-fsync: written and renamed
only).  The disk work runs in the event loop's default thread pool, so
concurrent connections overlap their fsyncs.  Runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import socket
import sys
import time
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

_counter = itertools.count()


class MaildirHandler:
    def __init__(self, root: str, fsync: bool) -> None:
        self.root = root
        self.fsync = fsync
        self.host = socket.gethostname()
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(root, sub), exist_ok=True)

    def _deliver(self, data: bytes) -> None:
        name = f"{int(time.time())}.P{os.getpid()}Q{next(_counter)}.{self.host}"
        tmp = os.path.join(self.root, "tmp", name)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, os.path.join(self.root, "new", name))
        if self.fsync:
            dfd = os.open(os.path.join(self.root, "new"), os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data: Any = envelope.original_content or envelope.content
        await asyncio.get_running_loop().run_in_executor(
            None, self._deliver, data.replace(b"\r\n", b"\n"))
        return "250 2.0.0 OK delivered"


async def serve(port: int, root: str, fsync: bool) -> None:
    loop = asyncio.get_running_loop()
    handler = MaildirHandler(root, fsync)
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="aiosmtpd.bench", data_size_limit=50 * 1024 * 1024),
        "127.0.0.1", port)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with server:
        await stop.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--maildir", required=True)
    parser.add_argument("--no-fsync", action="store_true")
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.maildir, not args.no_fsync))
    return 0


if __name__ == "__main__":
    sys.exit(main())
