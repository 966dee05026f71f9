"""
SMTP with real TLS: STARTTLS on the MX and submission ports, implicit TLS
on the 465-style listener, AUTH refused in clear text from a non-loopback
policy, with smtplib and swaks as clients.
"""

from __future__ import annotations

import smtplib
import subprocess
import time
from pathlib import Path

import pytest
from tls_harness import ALICE, HOSTNAME, TLSPymailProcess, strip_trace, tool

MESSAGE = (b"From: alice@localhost\r\nTo: alice@localhost\r\nSubject: over TLS\r\n"
           b"Message-ID: <tls-1@t>\r\nDate: Thu, 1 Jan 2026 00:00:00 +0000\r\n\r\nsecret\r\n")


def inbox(server: TLSPymailProcess) -> list[bytes]:
    import poplib

    pop = poplib.POP3("127.0.0.1", server.ports["pop3"], timeout=30)
    try:
        pop.stls(server.client_context())
        pop.user(ALICE[0])
        pop.pass_(ALICE[1])
        count, _ = pop.stat()
        return [b"\r\n".join(pop.retr(n)[1]) + b"\r\n" for n in range(1, count + 1)]
    finally:
        pop.quit()


@pytest.fixture
def tls_server(tmp_path: Path) -> TLSPymailProcess:
    server = TLSPymailProcess(tmp_path, extra_security='cleartext_auth = "tls"',
                              users=dict([ALICE]))
    server.start()
    yield server  # type: ignore[misc]
    server.stop()


def test_starttls_then_auth_on_submission(tls_server: TLSPymailProcess) -> None:
    """AUTH is refused in clear text (538) and works after STARTTLS; the message is stored."""
    with smtplib.SMTP("127.0.0.1", tls_server.ports["submission"], timeout=30) as smtp:
        smtp.ehlo("client.example")
        # Only SCRAM-SHA-256, which sends no password, before TLS.
        assert smtp.has_extn("starttls") and smtp.esmtp_features["auth"].split() == [
            "SCRAM-SHA-256"]
        code, _ = smtp.docmd("AUTH", "PLAIN")
        assert code == 538
        smtp.starttls(context=tls_server.client_context())
        smtp.ehlo("client.example")
        assert smtp.has_extn("auth") and not smtp.has_extn("starttls")
        smtp.login(*ALICE)
        assert smtp.sendmail(ALICE[0], [ALICE[0]], MESSAGE) == {}
    [stored] = inbox(tls_server)
    assert b"with ESMTPSA id" in stored
    assert strip_trace(stored) == MESSAGE


def test_implicit_tls_submission(tls_server: TLSPymailProcess) -> None:
    """The implicit-TLS listener takes AUTH at once and does not offer STARTTLS."""
    with smtplib.SMTP_SSL("127.0.0.1", tls_server.ports["submission_tls"], timeout=30,
                          context=tls_server.client_context()) as smtp:
        smtp.ehlo("client.example")
        assert smtp.has_extn("auth") and not smtp.has_extn("starttls")
        smtp.login(*ALICE)
        assert smtp.sendmail(ALICE[0], [ALICE[0]], MESSAGE) == {}
    [stored] = inbox(tls_server)
    assert strip_trace(stored) == MESSAGE


def test_swaks_starttls_on_mx(tls_server: TLSPymailProcess) -> None:
    """swaks --tls delivers over STARTTLS on the MX port (protocol ESMTPS in Received)."""
    result = subprocess.run(
        [tool("swaks"), "--server", "127.0.0.1", "--port", str(tls_server.ports["smtp"]),
         "--tls", "--from", "someone@remote.example", "--to", ALICE[0],
         "--header", "Subject: swaks tls"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    deadline = time.monotonic() + 10
    while not (stored := inbox(tls_server)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert f"by {HOSTNAME} (pymail) with ESMTPS id".encode() in stored[0]
