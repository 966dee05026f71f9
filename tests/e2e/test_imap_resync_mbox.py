"""
Disconnected-mode IMAP over the mbox backend, against the real pymail
process: a client SELECTs with CONDSTORE and keeps a local copy; while it is
away another session changes flags and expunges, another program rewrites
the mbox file, and the server is stopped, started and killed with SIGKILL;
the client's ``SELECT ... (QRESYNC ...)`` (RFC 7162) then gets exactly the
VANISHED and FETCH responses for what changed.
"""

from __future__ import annotations

import mailbox
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import PymailProcess
from test_imap_resync import (
    ALICE,
    Session,
    another_session,
    deliver,
    fetched,
    first_sync,
    resync,
)

MBOX = '[storage]\nbackend = "mbox"\n'
MIXED = '[storage]\nbackend = "maildir"\ndomains = ["example.org=mbox"]\n'


@pytest.fixture
def mbox_server(tmp_path: Path) -> Iterator[PymailProcess]:
    proc = PymailProcess(tmp_path, extra_config=MBOX, users={ALICE[0]: ALICE[1]})
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def flag_outside(path: Path, uid: int, flag: str) -> None:
    """Another program (Python's mailbox, dotlocked) flags a message and rewrites the file."""
    md = mailbox.mbox(str(path), create=False)
    md.lock()
    try:
        [key] = [k for k, m in md.items() if m["X-UID"] == str(uid)]
        message = md[key]
        message.add_flag(flag)
        md[key] = message
        md.flush()
    finally:
        md.unlock()
        md.close()


def test_qresync_over_mbox_after_sessions_another_program_a_restart_and_kill9(
    mbox_server: PymailProcess,
) -> None:
    """Over mbox, a QRESYNC SELECT returns exactly what changed, across a restart and a SIGKILL."""
    server = mbox_server
    deliver(server, 8)
    inbox = server.data_dir / "mbox" / "localhost" / "alice" / "INBOX"
    assert inbox.read_bytes().count(b"\nX-UID: ") == 8
    # The client's first sync, with CONDSTORE.
    uidvalidity, known_modseq, local = first_sync(server, "SELECT INBOX (CONDSTORE)")
    assert sorted(local) == list(range(1, 9))

    # While it is away: another session, then a clean restart...
    another_session(server, "UID STORE 2 +FLAGS.SILENT (\\Flagged)",
                    "UID STORE 4 +FLAGS.SILENT (\\Deleted)", "UID EXPUNGE 4")
    server.stop()
    server.start()
    # ... more changes, one by another program (seen by the next command),
    # then SIGKILL right after the last acknowledged change...
    other = Session(server.ports["imap"])
    other.ok("SELECT INBOX")
    other.ok("UID STORE 3 +FLAGS.SILENT (\\Seen $Label1)")
    flag_outside(inbox, 5, "A")  # \Answered
    noop = other.ok("NOOP")
    assert any(b"FETCH" in line and b"\\Answered" in line for line in noop), noop
    other.ok("UID STORE 6 +FLAGS.SILENT (\\Deleted)")
    other.ok("UID EXPUNGE 6")
    other.ok("UID STORE 7 +FLAGS.SILENT (\\Draft)")
    server.kill9()
    other.file.close()
    other.sock.close()
    server.start()
    truth = fetched(another_session(server, "UID FETCH 1:* (FLAGS MODSEQ)"))
    assert sorted(truth) == [1, 2, 3, 5, 7, 8]

    # The client comes back and resynchronises: exactly what changed.
    assert resync(server, uidvalidity, known_modseq, local) == ({4, 6}, {2, 3, 5, 7})
    assert local == truth
    assert local[2][0] == {b"\\Flagged"}
    assert local[3][0] == {b"\\Seen", b"$Label1"}
    assert local[5][0] == {b"\\Answered"}
    assert local[7][0] == {b"\\Draft"}


def test_mixed_backends_offer_condstore_when_all_persist_modseq(tmp_path: Path) -> None:
    """Maildir for one domain, mbox for another: both persist MODSEQs, so CONDSTORE is on."""
    proc = PymailProcess(tmp_path, extra_config=MIXED,
                         users={ALICE[0]: ALICE[1], "bob@example.org": "bob-pw"})
    proc.start()
    try:
        session = Session(proc.ports["imap"])
        caps = b" ".join(session.ok("CAPABILITY"))
        session.close()
    finally:
        proc.stop()
    assert b"CONDSTORE" in caps and b"QRESYNC" in caps
