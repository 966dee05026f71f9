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
import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import PymailProcess
from test_imap_resync import ALICE, Session, code_value, fetched, uid_set

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
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=30) as smtp:
        for n in range(1, 9):
            smtp.sendmail("s@example.net", [ALICE[0]], b"Subject: m%d\r\n\r\nbody %d\r\n" % (n, n))
    inbox = server.data_dir / "mbox" / "localhost" / "alice" / "INBOX"
    assert inbox.read_bytes().count(b"\nX-UID: ") == 8

    # The client's first sync, with CONDSTORE.
    client = Session(server.ports["imap"])
    caps = b" ".join(client.ok("CAPABILITY"))
    assert b"CONDSTORE" in caps and b"QRESYNC" in caps
    selected = client.ok("SELECT INBOX (CONDSTORE)")
    uidvalidity = code_value(selected, b"UIDVALIDITY")
    known_modseq = code_value(selected, b"HIGHESTMODSEQ")
    local = fetched(client.ok("UID FETCH 1:* (FLAGS MODSEQ)"))
    assert sorted(local) == list(range(1, 9))
    assert max(m for _, m in local.values()) <= known_modseq
    client.close()

    # While it is away: another session, then a clean restart...
    other = Session(server.ports["imap"])
    other.ok("SELECT INBOX")
    other.ok("UID STORE 2 +FLAGS.SILENT (\\Flagged)")
    other.ok("UID STORE 4 +FLAGS.SILENT (\\Deleted)")
    other.ok("UID EXPUNGE 4")
    other.close()
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
    other = Session(server.ports["imap"])
    other.ok("SELECT INBOX")
    truth = fetched(other.ok("UID FETCH 1:* (FLAGS MODSEQ)"))
    other.close()
    assert sorted(truth) == [1, 2, 3, 5, 7, 8]

    # The client comes back and resynchronises: exactly what changed.
    client = Session(server.ports["imap"])
    client.ok("ENABLE QRESYNC")
    resync = client.ok(f"SELECT INBOX (QRESYNC ({uidvalidity} {known_modseq} 1:8))")
    assert code_value(resync, b"UIDVALIDITY") == uidvalidity
    assert code_value(resync, b"HIGHESTMODSEQ") > known_modseq
    vanished = [line for line in resync if line.startswith(b"* VANISHED (EARLIER) ")]
    assert len(vanished) == 1 and uid_set(vanished[0].split()[-1]) == {4, 6}
    changes = fetched(resync)
    assert set(changes) == {2, 3, 5, 7}
    for uid, (flags, modseq) in changes.items():
        assert modseq > known_modseq
        local[uid] = (flags, modseq)
    for uid in (4, 6):
        del local[uid]
    assert local == truth
    assert local[2][0] == {b"\\Flagged"}
    assert local[3][0] == {b"\\Seen", b"$Label1"}
    assert local[5][0] == {b"\\Answered"}
    assert local[7][0] == {b"\\Draft"}

    # Nothing changed since: a second resync with what it now knows is empty.
    newest = code_value(resync, b"HIGHESTMODSEQ")
    known = ",".join(str(u) for u in sorted(local))
    client.ok("UNSELECT")
    again = client.ok(f"SELECT INBOX (QRESYNC ({uidvalidity} {newest} {known}))")
    assert not fetched(again)
    assert not [line for line in again if b"VANISHED" in line]
    client.close()


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
