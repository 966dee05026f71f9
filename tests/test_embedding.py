"""The embedding API: make_service in one's own reactor, as docs/embedding.md shows."""

from __future__ import annotations

import imaplib
import smtplib
from typing import Any

from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from pymail.config import from_mapping
from pymail.directory.passwords import hash_password
from pymail.errors import ListenError
from pymail.service import make_service


def loopback_config(data_dir: str, **sections: Any) -> Any:
    data: dict[str, Any] = {
        "hostname": "embedded.test", "data_dir": data_dir, "domains": ["example.org"],
        "storage": {"backend": "memory"},
    }
    for name in ("smtp", "submission", "imap", "pop3"):
        data[name] = {"listen": ["tcp:0:interface=127.0.0.1"]}
    data.update(sections)
    return from_mapping(data, "<test>")


class EmbeddingTests(TestCase):
    def test_embedded_service_delivers_and_serves(self) -> Any:
        """A service made with make_service accepts SMTP and serves the message over IMAP."""
        config = loopback_config(self.mktemp())
        service = make_service(config, reactor)
        service.components.directory.add_user("amy@example.org", hash_password("pw"))
        service.startService()
        self.addCleanup(service.stopService)
        ports = {s.label: s.port.getHost().port for s in service.listeners()}

        def client() -> bytes:
            with smtplib.SMTP("127.0.0.1", ports["[smtp]"], timeout=10) as smtp:
                smtp.sendmail("x@remote.example", ["amy@example.org"], b"Subject: e\r\n\r\nhi\r\n")
            imap = imaplib.IMAP4("127.0.0.1", ports["[imap]"])
            imap.login("amy@example.org", "pw")
            imap.select("INBOX")
            typ, data = imap.fetch("1", "(BODY.PEEK[])")
            imap.logout()
            return data[0][1]

        d = deferToThread(client)
        d.addCallback(
            lambda message: self.assertTrue(message.endswith(b"Subject: e\r\n\r\nhi\r\n"))
        )
        return d

    def test_bind_reports_port_in_use(self) -> None:
        """bind() raises ListenError naming the listener when its port is taken."""
        first = make_service(loopback_config(self.mktemp()), reactor)
        first.bind()
        self.addCleanup(first.stopService)
        taken = first.listeners()[0].port.getHost().port
        second = make_service(
            loopback_config(self.mktemp(),
                            smtp={"listen": [f"tcp:{taken}:interface=127.0.0.1"]}),
            reactor,
        )
        with self.assertRaises(ListenError) as e:
            second.bind()
        self.assertIn(f"[smtp] listen: 'tcp:{taken}:interface=127.0.0.1': cannot listen",
                      str(e.exception))
        self.assertEqual([s.port for s in second.listeners()], [None] * 4)
