"""
TLS with real clients on every protocol: imaplib over implicit TLS (993-style)
and STARTTLS, with LOGINDISABLED before it; and openssl s_client checking the
protocol floor (TLS 1.2) on the implicit and STARTTLS listeners.
"""

from __future__ import annotations

import imaplib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from tls_harness import ALICE, HOSTNAME, TLSPymailProcess, strip_trace, tool


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[TLSPymailProcess]:
    # cleartext_auth = "tls": even loopback clients must use TLS to log in.
    proc = TLSPymailProcess(tmp_path, extra_security='cleartext_auth = "tls"',
                            users={ALICE[0]: ALICE[1]})
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def test_imap_implicit_tls(tls_server: TLSPymailProcess) -> None:
    """IMAP4_SSL on the listen_tls port verifies the certificate and reads mail byte-exact."""
    [sent] = tls_server.deliver(1)
    imap = imaplib.IMAP4_SSL("127.0.0.1", tls_server.ports["imap_tls"],
                             ssl_context=tls_server.client_context())
    try:
        assert imap.sock.version() in ("TLSv1.2", "TLSv1.3")
        assert "LOGINDISABLED" not in imap.capabilities
        imap.login(*ALICE)
        imap.select("INBOX", readonly=True)
        typ, data = imap.fetch("1", "(BODY.PEEK[])")
        assert typ == "OK"
        assert strip_trace(data[0][1]) == sent
    finally:
        imap.logout()


def test_imap_starttls_and_logindisabled(tls_server: TLSPymailProcess) -> None:
    """Before STARTTLS, LOGIN is disabled and refused; after it, LOGIN works."""
    imap = imaplib.IMAP4("127.0.0.1", tls_server.ports["imap"])
    try:
        assert "STARTTLS" in imap.capabilities
        assert "LOGINDISABLED" in imap.capabilities
        with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED|TLS"):
            imap.login(*ALICE)
        imap.starttls(ssl_context=tls_server.client_context())
        assert "LOGINDISABLED" not in imap.capabilities
        typ, _ = imap.login(*ALICE)
        assert typ == "OK"
    finally:
        imap.logout()


def s_client(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("openssl"), "s_client", "-brief", *args],
                          input=stdin, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize(
    "service, starttls",
    [("imap_tls", None), ("pop3_tls", None), ("submission_tls", None),
     ("imap", "imap"), ("pop3", "pop3"), ("smtp", "smtp")],
)
def test_openssl_s_client_handshake(tls_server: TLSPymailProcess, service: str,
                                    starttls: str | None) -> None:
    """openssl s_client completes a verified handshake at TLS 1.2 or better on every listener."""
    args = ["-connect", f"127.0.0.1:{tls_server.ports[service]}", "-CAfile",
            str(tls_server.cert), "-verify_return_error", "-servername", HOSTNAME]
    if starttls:
        args += ["-starttls", starttls]
    result = s_client(*args)
    output = result.stdout + result.stderr
    assert "Verification: OK" in output, output
    assert "Protocol version: TLSv1.2" in output or "Protocol version: TLSv1.3" in output, output


@pytest.mark.parametrize("service", ["imap_tls", "pop3_tls", "submission_tls"])
def test_tls_below_1_2_refused(tls_server: TLSPymailProcess, service: str) -> None:
    """A client limited to TLS 1.1 gets no handshake (TLS 1.2 is the minimum)."""
    # SECLEVEL=0 lets this OpenSSL offer TLS 1.1 at all, so the refusal
    # seen is the server's ("alert protocol version"), not the client's.
    result = s_client("-connect", f"127.0.0.1:{tls_server.ports[service]}", "-tls1_1",
                      "-cipher", "DEFAULT@SECLEVEL=0", "-CAfile", str(tls_server.cert))
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "alert protocol version" in output, output
    assert "Protocol version: TLSv1.1" not in output
