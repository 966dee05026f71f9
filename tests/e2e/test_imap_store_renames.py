"""
STORE on a Maildir folder against the real pymail process: the OK comes
once the new file names are recorded in the folder's index, and the file
renames follow at once in the storage thread.  Another program sees every
renamed file soon after the OK, a FETCH in between reads every message
byte for byte, and a kill -9 right after the OK loses no flag change.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from harness import PymailProcess, corpus_messages, read_imap_reply

from pymail.storage.maildir import MaildirStoreFactory

ALICE = ("alice@localhost", "alice-pw")
#: How many copies of the corpus the folder holds (a few thousand files:
#: their renames take tens of milliseconds).
COPIES = 30
#: How long another program may wait for the renames after the OK.
RENAMES_DONE_WITHIN_S = 10.0


class Session:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.sock.recv(4096)
        self.n = 0
        assert b" OK" in self.command(f"LOGIN {ALICE[0]} {ALICE[1]}")
        assert b" OK" in self.command("SELECT INBOX")

    def command(self, text: str) -> bytes:
        self.n += 1
        tag = b"t%d" % self.n
        self.sock.sendall(tag + b" " + text.encode() + b"\r\n")
        reply = read_imap_reply(self.sock, tag)
        assert reply.rsplit(b"\r\n", 2)[-2].startswith(tag + b" OK"), reply[-300:]
        return reply

    def close(self) -> None:
        self.sock.close()


def fill(server: PymailProcess) -> tuple[Path, list[bytes]]:
    root = Path(MaildirStoreFactory.account_root(ALICE[0], str(server.data_dir)))
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    files = [p.read_bytes() for p in corpus_messages()] * COPIES
    now = int(time.time())
    for n, data in enumerate(files):
        (root / "cur" / f"{now - 100_000 + n}.M{n:05d}P1.test:2,").write_bytes(data)
    return root, files


def crlf(data: bytes) -> bytes:
    """A file another program wrote (LF) as IMAP serves it: CRLF, nothing added."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def flagged_names(root: Path) -> int:
    return sum(n.partition(":2,")[2] == "F" for n in os.listdir(root / "cur"))


def flags_with(reply: bytes, flag: bytes) -> int:
    """How many FETCH lines of ``reply`` list ``flag``."""
    return sum(flag in line.partition(b"FLAGS (")[2].partition(b")")[0].split()
               for line in reply.split(b"\r\n") if b" FETCH (" in line)


def bodies(reply: bytes) -> list[bytes]:
    """The literals of a FETCH 1:* BODY.PEEK[] reply, in order."""
    out = []
    pos = 0
    while (start := reply.find(b"BODY[] {", pos)) >= 0:
        end = reply.index(b"}\r\n", start)
        size = int(reply[start + 8:end])
        out.append(reply[end + 3:end + 3 + size])
        pos = end + 3 + size
    return out


def test_store_renames_reach_the_files_soon_after_the_ok(tmp_path: Path) -> None:
    """After STORE 1:* +FLAGS every file is renamed within seconds, and FETCH meanwhile is exact."""
    server = PymailProcess(tmp_path, users=dict([ALICE]))
    root, files = fill(server)
    server.start()
    try:
        s = Session(server.ports["imap"])
        s.command("STORE 1:* +FLAGS.SILENT (\\Flagged)")
        # Right after the OK, while renames may still run: every message
        # reads byte for byte.
        assert bodies(s.command("FETCH 1:* BODY.PEEK[]")) == [crlf(d) for d in files]
        deadline = time.monotonic() + RENAMES_DONE_WITHIN_S
        while flagged_names(root) < len(files) and time.monotonic() < deadline:
            time.sleep(0.005)
        assert flagged_names(root) == len(files)
        assert len(os.listdir(root / "cur")) == len(files)
        s.command("NOOP")
        assert flags_with(s.command("FETCH 1:* FLAGS"), b"\\Flagged") == len(files)
        s.close()
    finally:
        server.stop()


def test_kill_right_after_store_ok_loses_no_flag_change(tmp_path: Path) -> None:
    """A kill -9 right after the OK, then a restart: every message has the flag, on disk too."""
    server = PymailProcess(tmp_path, users=dict([ALICE]))
    root, files = fill(server)
    server.start()
    s = Session(server.ports["imap"])
    s.command("STORE 1:* +FLAGS.SILENT (\\Seen)")
    server.kill9()
    s.close()
    server.start()
    try:
        s = Session(server.ports["imap"])
        assert flags_with(s.command("FETCH 1:* FLAGS"), b"\\Seen") == len(files)
        assert sum(n.endswith(":2,S") for n in os.listdir(root / "cur")) == len(files)
        assert bodies(s.command("FETCH 1:* BODY.PEEK[]")) == [crlf(d) for d in files]
        s.close()
    finally:
        server.stop()
