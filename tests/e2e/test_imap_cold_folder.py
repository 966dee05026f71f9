"""
The first FETCH of ENVELOPEs and the first SEARCH SUBJECT over a Maildir
folder that another program filled (no derived value computed yet), against
the real pymail process: values are filled in batches in the thread pool
from the header blocks, and must be byte for byte what each whole message
gives, before and after a restart (when they come from the folder index).
"""

from __future__ import annotations

import email
import email.header
import email.policy
import socket
import time
from pathlib import Path

from harness import PymailProcess, corpus_messages, read_imap_reply, wire

from pymail.imap import derive
from pymail.storage.maildir import MaildirStoreFactory

ALICE = ("alice@localhost", "alice-pw")


def session(port: int, commands: list[str]) -> list[bytes]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        replies = []
        sock.recv(4096)
        for n, text in enumerate([f"LOGIN {ALICE[0]} {ALICE[1]}", "SELECT INBOX", *commands]):
            tag = b"t%d" % n
            sock.sendall(tag + b" " + text.encode() + b"\r\n")
            replies.append(read_imap_reply(sock, tag))
        return replies[2:]
    finally:
        sock.close()


def subject_has(message: bytes, word: str) -> bool:
    parsed = email.message_from_bytes(message, policy=email.policy.compat32)
    raw = parsed.get("Subject")
    if raw is None:
        return False
    text = str(email.header.make_header(email.header.decode_header(str(raw))))
    return word.casefold() in " ".join(text.split()).casefold()


def test_first_envelope_fetch_and_subject_search_of_a_filled_folder(tmp_path: Path) -> None:
    """A folder another program filled gets exact ENVELOPEs and SEARCH hits, after restarts too."""
    server = PymailProcess(tmp_path, users=dict([ALICE]))
    root = Path(MaildirStoreFactory.account_root(ALICE[0], str(server.data_dir)))
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    # More than one batch, with every corpus message (8-bit, folded and
    # encoded headers, odd MIME) several times.
    files = [p.read_bytes() for p in corpus_messages()] * 6
    assert len(files) > derive.FILL_BATCH
    now = int(time.time())
    for n, data in enumerate(files):
        (root / "cur" / f"{now - 10_000 + n}.M{n:04d}P1.test:2,").write_bytes(data)
    expected = b"".join(
        b"* %d FETCH (UID %d ENVELOPE %s)\r\n" % (n, n, derive.ENVELOPE.compute(wire(data)))
        for n, data in enumerate(files, 1)
    )
    word = "test"
    hits = [n for n, data in enumerate(files, 1) if subject_has(data, word)]
    assert hits  # the corpus has such subjects, so the search is not vacuous
    server.start()
    try:
        for _ in range(2):
            fetched, searched = session(server.ports["imap"], [
                "FETCH 1:* (UID ENVELOPE)", f"UID SEARCH SUBJECT {word}"])
            assert fetched == expected + b"t2 OK FETCH completed\r\n"
            assert searched == (b"* SEARCH " + b" ".join(b"%d" % n for n in hits)
                                + b"\r\nt3 OK UID SEARCH completed\r\n")
            server.stop()
            server.start()
    finally:
        server.stop()
