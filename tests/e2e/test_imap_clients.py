"""
IMAP with real clients against the real pymail process: IDLE push of mail
delivered over SMTP and of a file dropped into the Maildir by another
program, IMAPClient using the extensions, and mbsync two-way sync.
"""

from __future__ import annotations

import imaplib
import os
import smtplib
import socket
import subprocess
import time
from pathlib import Path

from harness import PymailProcess, corpus_messages, tool, wire
from imapclient import IMAPClient

from pymail.storage.maildir import MaildirStoreFactory

ALICE = ("alice@localhost", "alice-pw")
#: The most a pushed EXISTS may take in these tests (the goal is 1 s; the
#: benchmark measures it); generous so a loaded CI machine does not flake.
PUSH_DEADLINE = 5.0


class RawIMAP:
    """A minimal line client for IDLE, where imaplib has no API."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buffer = b""
        self.line()  # greeting

    def line(self, timeout: float = 10.0) -> bytes:
        self.sock.settimeout(timeout)
        while b"\r\n" not in self.buffer:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("server closed the connection")
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def command(self, text: str) -> list[bytes]:
        tag = text.split(" ", 1)[0].encode()
        self.sock.sendall(text.encode() + b"\r\n")
        lines = []
        while True:
            line = self.line()
            lines.append(line)
            if line.startswith(tag + b" "):
                return lines

    def done(self, tag: bytes) -> bytes:
        """End IDLE; the tagged reply (untagged updates before it are skipped)."""
        self.sock.sendall(b"DONE\r\n")
        while True:
            line = self.line()
            if line.startswith(tag + b" "):
                return line

    def idle_until(self, wanted: bytes) -> float:
        """Seconds until an untagged line containing ``wanted`` arrives while idling."""
        start = time.monotonic()
        while True:
            left = PUSH_DEADLINE - (time.monotonic() - start)
            assert left > 0, f"no {wanted!r} within {PUSH_DEADLINE}s"
            if wanted in self.line(timeout=left):
                return time.monotonic() - start


def send_smtp(server: PymailProcess, message: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=30) as smtp:
        smtp.sendmail("sender@example.net", [ALICE[0]], message)


def test_idle_pushes_mail_delivered_over_smtp(server: PymailProcess) -> None:
    """A client idling on INBOX sees EXISTS for a message delivered over SMTP, without polling."""
    client = RawIMAP(server.ports["imap"])
    assert client.command(f"a LOGIN {ALICE[0]} {ALICE[1]}")[-1].startswith(b"a OK")
    assert b"* 0 EXISTS" in client.command("b SELECT INBOX")
    client.sock.sendall(b"c IDLE\r\n")
    assert client.line() == b"+ idling"
    send_smtp(server, b"Subject: pushed\r\n\r\nhello\r\n")
    client.idle_until(b"* 1 EXISTS")
    assert client.done(b"c") == b"c OK IDLE terminated"
    fetched = client.command("d FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    client.sock.close()
    assert b"Subject: pushed" in b"\n".join(fetched)


def test_idle_pushes_file_dropped_into_maildir(server: PymailProcess) -> None:
    """A message another program writes into the Maildir reaches an idling client as EXISTS."""
    client = RawIMAP(server.ports["imap"])
    client.command(f"a LOGIN {ALICE[0]} {ALICE[1]}")
    client.command("b SELECT INBOX")
    client.sock.sendall(b"c IDLE\r\n")
    assert client.line() == b"+ idling"
    root = Path(MaildirStoreFactory.account_root(ALICE[0], str(server.data_dir)))
    name = f"{int(time.time())}.outside{os.getpid()}.test"
    (root / "tmp" / name).write_bytes(b"Subject: dropped\n\nfrom procmail\n")
    os.rename(root / "tmp" / name, root / "new" / name)
    client.idle_until(b"* 1 EXISTS")
    assert client.done(b"c") == b"c OK IDLE terminated"
    client.sock.close()


def test_idle_pushes_changes_by_another_session(server: PymailProcess) -> None:
    """Flags set and messages expunged by another imaplib session are pushed to an idling one."""
    send_smtp(server, b"Subject: one\r\n\r\n1\r\n")
    send_smtp(server, b"Subject: two\r\n\r\n2\r\n")
    idler = RawIMAP(server.ports["imap"])
    idler.command(f"a LOGIN {ALICE[0]} {ALICE[1]}")
    idler.command("b SELECT INBOX")
    idler.sock.sendall(b"c IDLE\r\n")
    assert idler.line() == b"+ idling"
    other = imaplib.IMAP4("127.0.0.1", server.ports["imap"])
    other.login(*ALICE)
    other.select("INBOX")
    other.store("1", "+FLAGS", "(\\Flagged)")
    idler.idle_until(b"* 1 FETCH (FLAGS (\\Flagged")
    other.store("2", "+FLAGS", "(\\Deleted)")
    other.expunge()
    idler.idle_until(b"* 2 EXPUNGE")
    other.logout()
    assert idler.done(b"c") == b"c OK IDLE terminated"
    idler.sock.close()


def test_imapclient_uses_the_extensions(server: PymailProcess) -> None:
    """IMAPClient sees the capabilities, uses special-use LIST, APPEND/APPENDUID, MOVE, ESEARCH."""
    messages = [wire(p.read_bytes()) for p in corpus_messages()[:3]]
    with IMAPClient("127.0.0.1", port=server.ports["imap"], ssl=False) as client:
        client.login(*ALICE)
        caps = set(client.capabilities())
        for cap in (b"IDLE", b"UIDPLUS", b"MOVE", b"SPECIAL-USE", b"ESEARCH", b"NAMESPACE"):
            assert cap in caps
        # New accounts get the special-use folders; IMAPClient finds them by role.
        assert client.find_special_folder(b"\\Archive") == "Archive"
        assert client.find_special_folder(b"\\Sent") == "Sent"
        for message in messages:
            response = client.append("INBOX", message, flags=[b"\\Seen"])
            assert b"APPENDUID" in response
        assert client.namespace().personal == (("", "."),)
        client.select_folder("INBOX")
        uids = client.search(["ALL"])
        assert len(uids) == 3
        fetched = client.fetch(uids, ["BODY.PEEK[]", "FLAGS"])
        assert [fetched[u][b"BODY[]"] for u in uids] == messages
        client.move(uids[:2], "Archive")
        assert client.search(["ALL"]) == uids[2:]
        client.select_folder("Archive")
        archived = client.fetch(client.search(["ALL"]), ["BODY.PEEK[]"])
        assert sorted(v[b"BODY[]"] for v in archived.values()) == sorted(messages[:2])
        client.unselect_folder()


def mbsync_config(root: Path, server: PymailProcess) -> Path:
    local = root / "local"
    local.mkdir()
    config = root / "mbsyncrc"
    config.write_text(
        f"""IMAPAccount pymail
Host 127.0.0.1
Port {server.ports["imap"]}
User {ALICE[0]}
Pass {ALICE[1]}
SSLType None
AuthMechs LOGIN

IMAPStore remote
Account pymail

MaildirStore local
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel sync
Far :remote:
Near :local:
Patterns INBOX
Create Both
Expunge Both
SyncState *
"""
    )
    return config


def run_mbsync(config: Path) -> str:
    result = subprocess.run(
        [tool("mbsync"), "-c", str(config), "-V", "sync"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def local_files(root: Path) -> dict[str, str]:
    """Local Maildir message file name -> its subdirectory."""
    out = {}
    for sub in ("new", "cur"):
        folder = root / "local" / "INBOX" / sub
        for f in folder.iterdir() if folder.exists() else ():
            out[f.name] = sub
    return out


def test_mbsync_two_way_sync(server: PymailProcess, tmp_path: Path) -> None:
    """mbsync copies both ways, carries flags and deletes, and a second run changes nothing."""
    send_smtp(server, b"Subject: from server\r\n\r\nremote\r\n")
    send_smtp(server, b"Subject: doomed\r\n\r\nremote 2\r\n")
    config = mbsync_config(tmp_path, server)
    run_mbsync(config)
    assert len(local_files(tmp_path)) == 2
    # A new message locally goes to the server.
    local_new = tmp_path / "local" / "INBOX" / "new" / f"{int(time.time())}.1.local"
    local_new.write_bytes(b"Subject: from local\n\nlocal\n")
    # A flag set on the server and a delete on the server.
    imap = imaplib.IMAP4("127.0.0.1", server.ports["imap"])
    imap.login(*ALICE)
    imap.select("INBOX")
    typ, data = imap.search(None, "SUBJECT", '"from server"')
    imap.store(data[0].decode(), "+FLAGS", "(\\Flagged)")
    typ, data = imap.search(None, "SUBJECT", "doomed")
    imap.store(data[0].decode(), "+FLAGS", "(\\Deleted)")
    imap.expunge()
    run_mbsync(config)
    files = local_files(tmp_path)
    assert len(files) == 2
    flagged = [name for name in files if name.split(":2,", 1)[-1].find("F") >= 0]
    assert len(flagged) == 1
    imap.noop()  # hear of what mbsync appended
    typ, data = imap.search(None, "SUBJECT", '"from local"')
    assert data[0], "the local message did not reach the server"
    # A delete on the local side.
    for sub in ("new", "cur"):
        for f in (tmp_path / "local" / "INBOX" / sub).iterdir():
            if f.name in flagged:
                f.unlink()
    run_mbsync(config)
    imap.noop()
    typ, data = imap.search(None, "ALL")
    assert len(data[0].split()) == 1
    before = local_files(tmp_path)
    run_mbsync(config)
    assert local_files(tmp_path) == before
    imap.noop()
    assert len(imap.search(None, "ALL")[1][0].split()) == 1
    imap.logout()
