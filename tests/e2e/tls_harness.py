"""
A pymail process with TLS: a self-signed test certificate (made with
``pymail tls selfsigned``), ``[tls]`` configured and implicit-TLS listeners
for submission, IMAP and POP3 beside the plain ones.
"""

from __future__ import annotations

import smtplib
import ssl
from pathlib import Path

from harness import PymailProcess, corpus_messages, free_port, strip_trace, tool, wire

HOSTNAME = "mx.test.example"
ALICE = ("alice@localhost", "alice-pw")
IMPLICIT = {"submission": "submission_tls", "imap": "imap_tls", "pop3": "pop3_tls"}

class TLSPymailProcess(PymailProcess):
    """:class:`PymailProcess` plus a test certificate and implicit-TLS listeners."""

    def __init__(self, root: Path, extra_security: str = "",
                 users: dict[str, str] | None = None) -> None:
        super().__init__(root, users=users)
        self.cert = root / "cert.pem"
        self.key = root / "key.pem"
        self.pymail("tls", "selfsigned", HOSTNAME, "--cert", str(self.cert), "--key",
                    str(self.key))
        text = self.config_path.read_text()
        for section, name in IMPLICIT.items():
            port = free_port()
            self.ports[name] = port
            plain = f"[{section}]\nlisten = [\"tcp:{self.ports[section]}:interface=127.0.0.1\"]"
            assert plain in text, plain
            text = text.replace(
                plain, plain + f'\nlisten_tls = ["tcp:{port}:interface=127.0.0.1"]'
            )
        text += f'\n[tls]\ncertificate = "{self.cert}"\nkey = "{self.key}"\n'
        if extra_security:
            text += "\n[security]\n" + extra_security + "\n"
        self.config_path.write_text(text)

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts only the test certificate."""
        return ssl.create_default_context(cafile=str(self.cert))

    def deliver(self, count: int, to: str = ALICE[0], start: int = 0) -> list[bytes]:
        """Send ``count`` corpus messages (from ``start``) over SMTP; returns them in wire form."""
        sent = []
        with smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=30) as smtp:
            for path in corpus_messages()[start:start + count]:
                message = wire(path.read_bytes())
                assert smtp.sendmail("sender@remote.example", [to], message) == {}
                sent.append(message)
        return sent


__all__ = ["ALICE", "HOSTNAME", "TLSPymailProcess", "strip_trace", "tool"]
