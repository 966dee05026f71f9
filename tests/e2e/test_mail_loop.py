"""
The first complete mail loop with real clients: SMTP in (smtplib, swaks),
Maildir, and IMAP (imaplib) and POP3 (poplib) out, byte for byte.
"""

from __future__ import annotations

import imaplib
import poplib
import re
import smtplib
import subprocess
from pathlib import Path

from harness import PymailProcess, corpus_messages, strip_trace, tool, wire

ALICE = ("alice@localhost", "alice-pw")

def imap_fetch_all(server: PymailProcess) -> list[bytes]:
    imap = imaplib.IMAP4("127.0.0.1", server.ports["imap"])
    try:
        imap.login(*ALICE)
        typ, data = imap.select("INBOX", readonly=True)
        assert typ == "OK"
        count = int(data[0])
        if not count:
            return []
        typ, data = imap.fetch(f"1:{count}", "(UID BODY.PEEK[])")
        assert typ == "OK"
        return [item[1] for item in data if isinstance(item, tuple)]
    finally:
        imap.logout()


def pop3_retr_all(server: PymailProcess) -> list[bytes]:
    pop = poplib.POP3("127.0.0.1", server.ports["pop3"], timeout=30)
    try:
        pop.user(ALICE[0])
        pop.pass_(ALICE[1])
        count, _ = pop.stat()
        out = []
        for n in range(1, count + 1):
            _, lines, _ = pop.retr(n)
            out.append(b"".join(line + b"\r\n" for line in lines))
        return out
    finally:
        pop.quit()


def test_corpus_round_trip_smtplib(server: PymailProcess) -> None:
    """Every corpus message sent with smtplib reads back byte-exact over IMAP and POP3."""
    sent = []
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=30) as smtp:
        for path in corpus_messages():
            message = wire(path.read_bytes())
            refused = smtp.sendmail("sender@remote.example", [ALICE[0]], message)
            assert refused == {}
            sent.append(message)
    imap_messages = imap_fetch_all(server)
    assert len(imap_messages) == len(sent)
    for got, want in zip(imap_messages, sent, strict=True):
        assert strip_trace(got) == want
    pop_messages = pop3_retr_all(server)
    assert len(pop_messages) == len(sent)
    for got, want in zip(pop_messages, sent, strict=True):
        assert strip_trace(got) == want


def test_corpus_round_trip_swaks(server: PymailProcess, tmp_path: Path) -> None:
    """Every corpus message sent with swaks reads back byte-exact over IMAP and POP3."""
    swaks = tool("swaks")
    sent = []
    for path in corpus_messages():
        # --no-data-fixup: swaks sends the file as it is (no header
        # "repairs", no added blank line), so give it the wire form with its
        # own closing dot.
        message = wire(path.read_bytes())
        copy = tmp_path / path.name
        copy.write_bytes(message + b".\r\n")
        result = subprocess.run(
            [swaks, "--server", f"127.0.0.1:{server.ports['smtp']}", "--from",
             "sender@remote.example", "--to", ALICE[0], "--data", f"@{copy}",
             "--no-strip-from", "--no-data-fixup", "--helo", "client.test"],
            capture_output=True, text=True, timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert re.search(r"<-  250 2\.0\.0 ", result.stdout), result.stdout
        sent.append(message)
    imap_messages = imap_fetch_all(server)
    pop_messages = pop3_retr_all(server)
    assert len(imap_messages) == len(pop_messages) == len(sent)
    triples = zip(imap_messages, pop_messages, sent, strict=True)
    for path, (got_imap, got_pop, want) in zip(corpus_messages(), triples, strict=True):
        assert strip_trace(got_imap) == want, path.name
        assert strip_trace(got_pop) == want


def test_received_header_and_log_share_queue_id(server: PymailProcess) -> None:
    """The Received header names a queue id that the server log names too."""
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=30) as smtp:
        smtp.sendmail("sender@remote.example", [ALICE[0]], b"Subject: id\r\n\r\nx\r\n")
    [message] = imap_fetch_all(server)
    match = re.search(rb"\bby mx\.test\.example \(pymail\) with E?SMTP[A-Z]* id ([0-9A-Z]+)",
                      message)
    assert match, message[:400]
    server.wait_for_log(match.group(1).decode())


def test_unknown_user_and_relay_refused(server: PymailProcess) -> None:
    """RCPT to an unknown local user gets 550 5.1.1; to another domain, 554 5.7.1."""
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=30) as smtp:
        smtp.ehlo("client.test")
        smtp.mail("sender@remote.example")
        code, text = smtp.rcpt("nobody@localhost")
        assert (code, text[:5]) == (550, b"5.1.1")
        code, text = smtp.rcpt("someone@elsewhere.example")
        assert (code, text[:5]) == (554, b"5.7.1")


def test_message_over_size_limit_refused(tmp_path: Path) -> None:
    """A message above [smtp] max_message_size gets 552 5.3.4, at MAIL and after DATA."""
    proc = PymailProcess(tmp_path, extra_config="", users={ALICE[0]: ALICE[1]})
    text = proc.config_path.read_text().replace(
        "[smtp]\n", "[smtp]\nmax_message_size = 2048\n")
    proc.config_path.write_text(text)
    proc.start()
    try:
        with smtplib.SMTP("127.0.0.1", proc.ports["smtp"], timeout=30) as smtp:
            smtp.ehlo("client.test")
            assert smtp.has_extn("size") and smtp.esmtp_features["size"] == "2048"
            code, text = smtp.mail("a@remote.example", ["SIZE=4096"])
            assert (code, text[:5]) == (552, b"5.3.4")
            smtp.rset()
            # Without SIZE= the limit is enforced while the data arrives.
            assert smtp.mail("a@remote.example")[0] == 250
            assert smtp.rcpt(ALICE[0])[0] == 250
            code, text = smtp.data(b"Subject: big\r\n\r\n" + (b"x" * 70 + b"\r\n") * 100)
            assert (code, text[:5]) == (552, b"5.3.4")
            # The session goes on: a small message is still accepted.
            assert smtp.sendmail("a@remote.example", [ALICE[0]], b"Subject: ok\r\n\r\nx\r\n") == {}
    finally:
        proc.stop()


def test_imap_flags_and_expunge_persist(server: PymailProcess) -> None:
    """STORE and EXPUNGE over IMAP are seen by POP3 and survive a restart, UIDs unchanged."""
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=30) as smtp:
        for n in range(3):
            smtp.sendmail("s@remote.example", [ALICE[0]], b"Subject: %d\r\n\r\nbody\r\n" % n)
    imap = imaplib.IMAP4("127.0.0.1", server.ports["imap"])
    imap.login(*ALICE)
    imap.select("INBOX")
    typ, data = imap.uid("SEARCH", None, "ALL")
    uids = data[0].split()
    assert len(uids) == 3
    imap.uid("STORE", uids[0], "+FLAGS", r"(\Deleted)")
    imap.uid("STORE", uids[1], "+FLAGS", r"(\Flagged)")
    imap.expunge()
    imap.logout()
    server.stop()
    server.start()
    imap = imaplib.IMAP4("127.0.0.1", server.ports["imap"])
    imap.login(*ALICE)
    imap.select("INBOX")
    typ, data = imap.fetch("1:*", "(UID FLAGS)")
    assert typ == "OK"
    text = b" ".join(d for d in data if isinstance(d, bytes))
    assert re.findall(rb"UID (\d+)", text) == uids[1:]
    assert rb"\Flagged" in text
    imap.logout()
    assert len(pop3_retr_all(server)) == 2
