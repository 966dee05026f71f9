"""
Review of the Maildir flag write-behind against the real pymail process: a
write-behind STORE in a folder RENAMEd while open, and the MODSEQs a
CONDSTORE client saw after a kill -9 right after a STORE's OK.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from harness import PymailProcess, corpus_messages
from test_imap_store_renames import ALICE, Session, bodies, crlf

from pymail.storage.maildir import MaildirStoreFactory

#: Copies of the corpus: 288 messages, above the write-behind
#: threshold (256 renames).
COPIES = 6
RENAMES_DONE_WITHIN_S = 10.0


def fill(folder: Path) -> list[bytes]:
    """Messages another program wrote into ``folder`` (LF endings)."""
    for sub in ("cur", "new", "tmp"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    files = [p.read_bytes() for p in corpus_messages()] * COPIES
    now = int(time.time())
    for n, data in enumerate(files):
        (folder / "cur" / f"{now - 100_000 + n}.M{n:05d}P1.test:2,").write_bytes(data)
    return files


def test_a_write_behind_store_in_a_folder_renamed_while_open(tmp_path: Path) -> None:
    """STORE 1:* in a folder RENAMEd while it was open is answered OK and reaches the files."""
    server = PymailProcess(tmp_path, users=dict([ALICE]))
    account = Path(MaildirStoreFactory.account_root(ALICE[0], str(server.data_dir)))
    files = fill(account / ".Work")
    (account / ".Work" / "maildirfolder").touch()
    server.start()
    try:
        c = Session(server.ports["imap"])
        c.command("SELECT Work")  # the folder is open in the server from here
        c.command("SELECT INBOX")
        c.command("RENAME Work Play")
        c.command("SELECT Play")
        c.command("STORE 1:* +FLAGS.SILENT (\\Seen)")
        assert bodies(c.command("FETCH 1:* BODY.PEEK[]")) == [crlf(d) for d in files]
        cur = account / ".Play" / "cur"
        deadline = time.monotonic() + RENAMES_DONE_WITHIN_S
        while (sum(n.endswith(":2,S") for n in os.listdir(cur)) < len(files)
               and time.monotonic() < deadline):
            time.sleep(0.01)
        assert sum(n.endswith(":2,S") for n in os.listdir(cur)) == len(files)
        c.close()
    finally:
        server.stop()


def modseqs(reply: bytes) -> list[int]:
    return [int(m) for m in re.findall(rb"MODSEQ \((\d+)\)", reply)]


def test_no_modseq_goes_back_after_a_kill_right_after_store(tmp_path: Path) -> None:
    """After a kill -9 right after STORE's OK, HIGHESTMODSEQ and new MODSEQs stay above.

    (The window between the OK and the index's rows is narrow here: the
    in-process test in tests/storage/test_review_write_behind.py holds it
    open; this one checks the whole path through a restart.)
    """
    server = PymailProcess(tmp_path, users=dict([ALICE]))
    account = Path(MaildirStoreFactory.account_root(ALICE[0], str(server.data_dir)))
    fill(account)
    server.start()
    c = Session(server.ports["imap"])
    c.command("SELECT INBOX (CONDSTORE)")
    seen = max(modseqs(c.command("STORE 1:* +FLAGS (\\Seen)")))
    server.kill9()
    c.close()
    server.start()
    try:
        c = Session(server.ports["imap"])
        selected = c.command("SELECT INBOX (CONDSTORE)")
        found = re.search(rb"HIGHESTMODSEQ (\d+)", selected)
        assert found is not None, selected
        highest = int(found.group(1))
        assert highest >= seen, (highest, seen)
        changed = modseqs(c.command("STORE 1 -FLAGS (\\Seen)"))
        assert changed and min(changed) > seen, (changed, seen)
        c.close()
    finally:
        server.stop()
