"""TLS operations on the real process: SIGHUP reloads the certificate; bad files stop start-up."""

from __future__ import annotations

import poplib
import signal
import socket
import ssl
import time
from pathlib import Path

from tls_harness import ALICE, TLSPymailProcess

from harness import run_twistd


def served_subject(port: int) -> str:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        with context.wrap_socket(s) as tls:
            der = tls.getpeercert(binary_form=True)
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    cert = x509.load_der_x509_certificate(der)
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def wait_for_log(server: TLSPymailProcess, text: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in server.log():
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.05)


def test_sighup_reloads_certificate_without_dropping_connections(tmp_path: Path) -> None:
    """After SIGHUP new connections get the new certificate; an open session keeps working."""
    server = TLSPymailProcess(tmp_path, users={ALICE[0]: ALICE[1]})
    server.start()
    try:
        assert served_subject(server.ports["pop3_tls"]) == "mx.test.example"
        pop = poplib.POP3_SSL("127.0.0.1", server.ports["pop3_tls"],
                              context=server.client_context(), timeout=30)
        pop.user(ALICE[0])
        pop.pass_(ALICE[1])
        server.pymail("tls", "selfsigned", "renewed.test.example", "--cert", str(server.cert),
                      "--key", str(server.key), "--force")
        assert server.proc is not None
        server.proc.send_signal(signal.SIGHUP)
        wait_for_log(server, "TLS certificate reloaded")
        assert served_subject(server.ports["pop3_tls"]) == "renewed.test.example"
        assert served_subject(server.ports["imap_tls"]) == "renewed.test.example"
        # The session that started before the reload is still alive.
        assert pop.stat()[0] >= 0
        pop.quit()
        # A broken key on the next reload keeps the current certificate.
        server.key.write_text("garbage")
        server.proc.send_signal(signal.SIGHUP)
        wait_for_log(server, "TLS reload failed")
        assert served_subject(server.ports["pop3_tls"]) == "renewed.test.example"
        assert server.proc.poll() is None
    finally:
        server.stop()


def test_missing_certificate_is_a_clear_startup_error(tmp_path: Path) -> None:
    """A [tls] certificate that does not exist stops start-up with one line naming it."""
    config = tmp_path / "pymail.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\n[smtp]\nlisten = []\n[submission]\nlisten = []\n'
        '[imap]\nlisten = []\n[pop3]\nlisten = ["tcp:0:interface=127.0.0.1"]\n'
        '[tls]\ncertificate = "/nonexistent/cert.pem"\nkey = "/nonexistent/key.pem"\n'
    )
    result = run_twistd(["pymail", "--config", str(config)], cwd=tmp_path)
    assert result.returncode == 1
    assert (f"{config}: [tls] certificate = '/nonexistent/cert.pem': file not found"
            in result.stdout + result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
