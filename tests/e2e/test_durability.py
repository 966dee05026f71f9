"""Nothing acknowledged is ever lost: SIGKILL right after the 250."""

from __future__ import annotations

import imaplib
import smtplib

import attrs
from harness import PymailProcess

from pymail.storage import maildir_journal


def test_message_survives_sigkill_after_250(server: PymailProcess) -> None:
    """A message acknowledged with 250 is there, with its UID, after kill -9 and restart."""
    body = b"Subject: durable\r\n\r\n" + b"important line\r\n" * 50
    smtp = smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=30)
    smtp.ehlo("client.test")
    smtp.mail("s@remote.example")
    smtp.rcpt("alice@localhost")
    code, reply = smtp.data(body)
    assert code == 250, reply
    server.kill9()  # no chance to flush anything after the 250
    smtp.close()
    server.start()
    imap = imaplib.IMAP4("127.0.0.1", server.ports["imap"])
    imap.login("alice@localhost", "alice-pw")
    typ, data = imap.select("INBOX")
    assert data == [b"1"]
    typ, data = imap.fetch("1", "(UID BODY.PEEK[])")
    assert data[0][1].endswith(body)
    assert b"UID 1 " in data[0][0] or b"UID 1)" in data[0][0] or b"(UID 1 " in data[0][0]
    imap.logout()


def test_many_acknowledged_messages_survive_sigkill(server: PymailProcess) -> None:
    """Fifty messages, each acknowledged, all survive a kill -9 with distinct UIDs."""
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=30) as smtp:
        for n in range(50):
            smtp.sendmail("s@remote.example", ["alice@localhost"], b"Subject: %d\r\n\r\nx\r\n" % n)
    server.kill9()
    server.start()
    imap = imaplib.IMAP4("127.0.0.1", server.ports["imap"])
    imap.login("alice@localhost", "alice-pw")
    imap.select("INBOX")
    typ, data = imap.uid("SEARCH", None, "ALL")
    assert data[0].split() == [str(n).encode() for n in range(1, 51)]
    imap.logout()


def test_a_power_loss_after_the_250_is_repaired_from_the_journal(server: PymailProcess) -> None:
    """Files a power loss took from acknowledged messages come back from the journal, byte-exact.

    The loss is simulated after a kill -9: what a power loss and a reboot
    can leave of data that was never fsynced (the journal was).
    """
    bodies = [b"Subject: journal %d\r\n\r\n" % n + b"line %d\r\n" % n * 40 for n in range(5)]
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=30) as smtp:
        for body in bodies:
            smtp.sendmail("s@remote.example", ["alice@localhost"], body)
    server.kill9()
    # What a power loss can do to data never fsynced (the journal was):
    # files gone, a file left empty, the uidlist's last lines gone.
    [inbox] = {p.parent for p in server.data_dir.rglob("pymail-journal")
               if p.parent.name == "alice"}
    files = sorted((inbox / "new").iterdir())
    assert len(files) == 5
    files[1].unlink()
    files[4].unlink()
    files[2].write_bytes(b"")
    uidlist = inbox / "dovecot-uidlist"
    uidlist.write_bytes(b"".join(uidlist.read_bytes().splitlines(keepends=True)[:-2]))
    # And the machine restarted: the records are from an earlier boot.
    journal = inbox / "pymail-journal"
    records = maildir_journal.read(str(journal))[0]
    journal.write_bytes(maildir_journal.encode(
        [attrs.evolve(r, boot="an-earlier-boot") for r in records]))
    server.start()
    imap = imaplib.IMAP4("127.0.0.1", server.ports["imap"])
    imap.login("alice@localhost", "alice-pw")
    imap.select("INBOX")  # the folder's first open replays its journal
    server.wait_for_log("replayed the delivery journal: 5 message(s) checked, 3 written again")
    typ, data = imap.uid("SEARCH", None, "ALL")
    assert data[0].split() == [b"1", b"2", b"3", b"4", b"5"]
    for uid, body in enumerate(bodies, 1):
        typ, data = imap.uid("FETCH", str(uid), "(BODY.PEEK[])")
        assert data[0][1].endswith(body), uid
    imap.logout()
    assert (inbox / "pymail-journal").stat().st_size == 0


def test_a_clean_stop_empties_the_delivery_journal(server: PymailProcess) -> None:
    """After SIGTERM the journal is empty (its files made durable): the next start replays nothing."""
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=30) as smtp:
        for n in range(3):
            smtp.sendmail("s@remote.example", ["alice@localhost"], b"Subject: %d\r\n\r\nx\r\n" % n)
    [journal] = [p for p in server.data_dir.rglob("pymail-journal") if p.parent.name == "alice"]
    assert journal.stat().st_size > 0
    server.stop()
    assert journal.stat().st_size == 0
    server.start()
    imap = imaplib.IMAP4("127.0.0.1", server.ports["imap"])
    imap.login("alice@localhost", "alice-pw")
    typ, data = imap.select("INBOX")
    assert data == [b"3"]
    imap.logout()
    assert "replayed the delivery journal" not in server.log()
