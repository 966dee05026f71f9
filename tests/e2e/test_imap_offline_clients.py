"""
Offline-mode IMAP clients against the real pymail process: offlineimap3
two-way sync to a local Maildir, and mutt in batch mode reading, flagging
and deleting over IMAP.
"""

from __future__ import annotations

import imaplib
import os
import pty
import re
import select
import smtplib
import subprocess
import time
from pathlib import Path

from harness import PymailProcess, corpus_messages, tool, wire

ALICE = ("alice@localhost", "alice-pw")
#: Bounds each client run: a hang (say, mutt waiting at a prompt) fails the test.
CLIENT_TIMEOUT = 60


def deliver(server: PymailProcess, messages: list[bytes]) -> None:
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=30) as smtp:
        for message in messages:
            smtp.sendmail("sender@example.net", [ALICE[0]], message)


def server_state(server: PymailProcess) -> dict[bytes, tuple[frozenset[bytes], bytes]]:
    """Message-ID -> (flags, whole message) of alice's INBOX, read with imaplib."""
    imap = imaplib.IMAP4("127.0.0.1", server.ports["imap"])
    imap.login(*ALICE)
    imap.select("INBOX", readonly=True)
    _, data = imap.fetch("1:*", "(FLAGS BODY.PEEK[])")
    imap.logout()
    state = {}
    for item in data:
        if not isinstance(item, tuple):
            continue
        flags = re.search(rb"FLAGS \(([^)]*)\)", item[0])
        assert flags is not None, item[0]
        message = item[1]
        mid = re.search(rb"(?im)^message-id:\s*(\S+)", message)
        assert mid is not None, message[:200]
        state[mid.group(1)] = (frozenset(flags.group(1).split()) - {b"\\Recent"}, message)
    return state


def local_inbox(root: Path) -> dict[bytes, tuple[str, bytes]]:
    """Message-ID -> (Maildir info flags, message with CRLF) of the local INBOX."""
    out = {}
    for sub in ("cur", "new"):
        for path in (root / "INBOX" / sub).iterdir():
            data = path.read_bytes()
            mid = re.search(rb"(?im)^message-id:\s*(\S+)", data)
            assert mid is not None, path
            info = path.name.split(":2,", 1)[1] if ":2," in path.name else ""
            out[mid.group(1)] = ("".join(c for c in info if c.isupper()), wire(data))
    return out


def numbered(n: int, subject: str) -> bytes:
    return (f"Message-ID: <m{n}@example.net>\r\nFrom: a@example.net\r\nTo: {ALICE[0]}\r\n"
            f"Subject: {subject}\r\n\r\nbody of {n}\r\nsecond line\r\n").encode()


def run_offlineimap(config: Path) -> None:
    result = subprocess.run(
        [tool("offlineimap"), "-c", str(config), "-o", "-u", "basic"],
        capture_output=True, text=True, timeout=CLIENT_TIMEOUT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ERROR" not in result.stdout + result.stderr, result.stdout + result.stderr


def test_offlineimap_two_way_sync(server: PymailProcess, tmp_path: Path) -> None:
    """offlineimap3 downloads exactly, syncs flags, new mail and deletes both ways, then rests."""
    corpus = [b"Message-ID: <c%d@example.net>\r\n" % n + wire(p.read_bytes())
              for n, p in enumerate(corpus_messages()[:2])]
    first = [numbered(1, "one"), numbered(2, "two"), numbered(3, "three")]
    deliver(server, first)
    local = tmp_path / "local"
    config = tmp_path / "offlineimaprc"
    config.write_text(
        "[general]\naccounts = test\n"
        f"metadata = {tmp_path / 'meta'}\n"
        "[Account test]\nlocalrepository = local\nremoterepository = remote\n"
        "[Repository local]\ntype = Maildir\n"
        f"localfolders = {local}\n"
        "[Repository remote]\ntype = IMAP\nremotehost = 127.0.0.1\n"
        f"remoteport = {server.ports['imap']}\n"
        f"remoteuser = {ALICE[0]}\nremotepass = {ALICE[1]}\n"
        "ssl = no\nstarttls = no\n"
    )
    run_offlineimap(config)
    mine = local_inbox(local)
    theirs = server_state(server)
    assert set(mine) == set(theirs) == {b"<m1@example.net>", b"<m2@example.net>",
                                        b"<m3@example.net>"}
    for mid, (_, message) in theirs.items():
        assert mine[mid][1] == message  # byte for byte (in wire form)
    # Special-use folders came down too.
    assert (local / "Sent").is_dir() and (local / "Trash").is_dir()

    # Local changes: read m1, delete m2, a new message; server: flag m3, deliver more.
    inbox = local / "INBOX"
    for sub in ("cur", "new"):
        for path in (inbox / sub).iterdir():
            data = path.read_bytes()
            if b"<m1@example.net>" in data:
                base = path.name.split(":2,", 1)[0]
                path.rename(inbox / "cur" / (base + ":2,S"))
            elif b"<m2@example.net>" in data:
                path.unlink()
    new_local = numbered(4, "written offline").replace(b"\r\n", b"\n")
    (inbox / "new" / "1700000000.offline4.test").write_bytes(new_local)
    imap = imaplib.IMAP4("127.0.0.1", server.ports["imap"])
    imap.login(*ALICE)
    imap.select("INBOX")
    _, found = imap.search(None, "HEADER", "Message-ID", "<m3@example.net>")
    imap.store(found[0].decode(), "+FLAGS", "(\\Flagged)")
    imap.logout()
    deliver(server, corpus)

    run_offlineimap(config)
    theirs = server_state(server)
    mine = local_inbox(local)
    assert set(mine) == set(theirs)
    assert b"<m2@example.net>" not in theirs
    assert theirs[b"<m1@example.net>"][0] == {b"\\Seen"}
    assert theirs[b"<m4@example.net>"][1] == wire(new_local)
    assert mine[b"<m3@example.net>"][0] == "F"
    for mid, (_, message) in theirs.items():
        assert mine[mid][1] == message
    assert len(theirs) == 3 + len(corpus)

    # A third run finds nothing to do.
    before = sorted(str(p.relative_to(local)) for p in local.rglob("*") if p.is_file()
                    and "offlineimap" not in p.name)
    run_offlineimap(config)
    after = sorted(str(p.relative_to(local)) for p in local.rglob("*") if p.is_file()
                   and "offlineimap" not in p.name)
    assert before == after
    assert server_state(server) == theirs


def run_mutt(server: PymailProcess, home: Path, keys: str) -> tuple[int, str]:
    """Run mutt on alice's IMAP INBOX, typing ``keys`` (mutt's push syntax)."""
    muttrc = home / "muttrc"
    muttrc.write_text(
        f'set folder="imap://{ALICE[0].replace("@", "%40")}@127.0.0.1:{server.ports["imap"]}/"\n'
        f'set imap_pass="{ALICE[1]}"\n'
        'set spoolfile="+INBOX"\n'
        "set ssl_starttls=no\nset ssl_force_tls=no\n"
        "set imap_passive=no\nset imap_check_subscribed=no\n"
        "set confirmappend=no\nset confirmcreate=no\n"
        "set delete=yes\nset quit=yes\nset move=no\nset mark_old=no\n"
        "set wait_key=no\nset sort=date-sent\n"
        f'set header_cache="{home / "hcache"}"\n'
    )
    env = dict(os.environ, HOME=str(home), TERM="vt100", COLUMNS="120", LINES="40")
    env.pop("MAIL", None)
    # mutt is interactive only on a terminal (else it composes from stdin):
    # give it a pseudo-terminal and drain what it draws.
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [tool("mutt"), "-n", "-F", str(muttrc), "-e", f"push '{keys}'"],
        stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True,
    )
    os.close(slave)
    screen = bytearray()
    deadline = time.monotonic() + CLIENT_TIMEOUT
    try:
        while proc.poll() is None or select.select([master], [], [], 0)[0]:
            if time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"mutt did not finish: {screen[-2000:]!r}")
            if select.select([master], [], [], 0.1)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the terminal closed
                    break
                if not chunk:
                    break
                screen += chunk
        proc.wait(10)
    finally:
        os.close(master)
    return proc.returncode, screen.decode("utf-8", "replace")


def test_mutt_reads_flags_and_deletes_over_imap(server: PymailProcess, tmp_path: Path) -> None:
    """mutt in batch mode saves a message exactly, flags one and deletes one over IMAP."""
    messages = [numbered(1, "one"), numbered(2, "two"), numbered(3, "three")]
    deliver(server, messages)
    saved = tmp_path / "saved.mbox"
    # Message 1: save a copy to a local mbox; message 2: flag; message 3: delete; then quit
    # (delete=yes expunges on the way out).
    keys = (f"<first-entry><copy-message>{saved}<enter>"
            "<next-entry><flag-message>"
            "<next-entry><delete-message>"
            "<sync-mailbox><quit>")
    code, screen = run_mutt(server, tmp_path, keys)
    assert code == 0, screen
    theirs = server_state(server)
    assert set(theirs) == {b"<m1@example.net>", b"<m2@example.net>"}, screen
    assert b"\\Flagged" in theirs[b"<m2@example.net>"][0]
    assert b"\\Flagged" not in theirs[b"<m1@example.net>"][0]
    copy = saved.read_bytes()
    # mutt writes an mbox: a From_ line, then the message with LF endings and
    # its own bookkeeping fields (Content-Length, Lines, Status) added.
    assert copy.startswith(b"From ")
    header, _, body = wire(copy.split(b"\n", 1)[1].rstrip(b"\n") + b"\n").partition(b"\r\n\r\n")
    kept = [line for line in header.split(b"\r\n")
            if not re.match(rb"(?i)(content-length|lines|status|x-status):", line)]
    assert b"\r\n".join(kept) + b"\r\n\r\n" + body == theirs[b"<m1@example.net>"][1]
