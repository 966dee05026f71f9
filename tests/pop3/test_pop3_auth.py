"""Tests for POP3 STLS, AUTH (RFC 5034), the clear-text policy and login throttling."""

from __future__ import annotations

import base64
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from pymail.auth.throttle import LoginThrottle
from pymail.pop3.mailbox import FileMaildropLocks, MaildropLocks
from pymail.pop3.server import POP3Factory, State
from pymail.testing import memory_portal

ALICE = "alice@example.org"
PASSWORD = "s3cret-Pa55"


class TLSTransport(StringTransport):
    """A StringTransport that records startTLS."""

    def __init__(self, host: str) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", host, 40000))
        self.tls_started: list[Any] = []

    def startTLS(self, creator: Any) -> None:
        self.tls_started.append(creator)


class FakeTLS:
    """Stands in for pymail.tls.ServerTLS: only ``creator`` is used by the protocol."""

    creator = object()


FAKE_TLS = FakeTLS()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class AuthTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.portal, _, self.stores = memory_portal({ALICE: PASSWORD})

    def connect(self, host: str = "203.0.113.9", tls: Any = FAKE_TLS, policy: str = "loopback",
                throttle: LoginThrottle | None = None) -> Any:
        factory = POP3Factory(self.portal, self.clock, "mail.example.org", locks=MaildropLocks(),
                              tls=tls, cleartext_auth=policy, throttle=throttle)
        server = factory.buildProtocol(None)
        transport = TLSTransport(host)
        server.makeConnection(transport)
        transport.clear()

        def cmd(line: str) -> bytes:
            server.dataReceived(line.encode() + b"\r\n")
            out = transport.value()
            transport.clear()
            return out

        return server, transport, cmd

    def test_cleartext_refused_off_loopback_without_tls(self) -> None:
        """USER, PASS and AUTH from a remote address without TLS get -ERR [AUTH]."""
        server, _, cmd = self.connect()
        self.assertTrue(cmd(f"USER {ALICE}").startswith(b"-ERR [AUTH]"))
        token = b64(b"\0" + ALICE.encode() + b"\0" + PASSWORD.encode())
        self.assertTrue(cmd(f"AUTH PLAIN {token}").startswith(b"-ERR [AUTH]"))
        self.assertIs(server.state, State.AUTHORIZATION)

    def test_capa_without_tls_offers_stls_but_no_login(self) -> None:
        """Off loopback without TLS, CAPA offers STLS and neither USER nor SASL."""
        _, _, cmd = self.connect()
        capa = cmd("CAPA").split(b"\r\n")
        self.assertIn(b"STLS", capa)
        self.assertNotIn(b"USER", capa)
        self.assertFalse([c for c in capa if c.startswith(b"SASL")])

    def test_stls_upgrades_and_allows_login(self) -> None:
        """STLS answers +OK, starts TLS, drops pipelined plaintext, then USER/PASS work."""
        server, transport, cmd = self.connect()
        reply = cmd("STLS\r\nUSER injected")
        self.assertEqual(reply, b"+OK begin TLS negotiation\r\n")
        self.assertEqual(transport.tls_started, [FakeTLS.creator])
        self.assertTrue(server.tls_active)
        capa = cmd("CAPA").split(b"\r\n")
        self.assertNotIn(b"STLS", capa)
        self.assertIn(b"SASL PLAIN LOGIN", capa)
        self.assertEqual(cmd(f"PASS {PASSWORD}"), b"-ERR send USER first\r\n")
        self.assertTrue(cmd(f"USER {ALICE}").startswith(b"+OK"))
        self.assertTrue(cmd(f"PASS {PASSWORD}").startswith(b"+OK maildrop has 0"))
        self.assertTrue(server.authenticated)

    def test_stls_twice_and_without_tls_configured(self) -> None:
        """A second STLS, or STLS with no certificate configured, gets -ERR."""
        _, _, cmd = self.connect()
        cmd("STLS")
        self.assertEqual(cmd("STLS"), b"-ERR TLS is already active\r\n")
        _, transport, cmd = self.connect(tls=None)
        self.assertEqual(cmd("STLS"), b"-ERR TLS is not configured on this server\r\n")
        self.assertEqual(transport.tls_started, [])

    def test_auth_plain_with_initial_response(self) -> None:
        """AUTH PLAIN with an initial response logs in from loopback."""
        server, _, cmd = self.connect(host="127.0.0.1")
        token = b64(b"\0" + ALICE.encode() + b"\0" + PASSWORD.encode())
        self.assertTrue(cmd(f"AUTH PLAIN {token}").startswith(b"+OK maildrop has"))
        self.assertIs(server.state, State.TRANSACTION)

    def test_auth_plain_with_empty_challenge(self) -> None:
        """AUTH PLAIN without an initial response gets an empty '+ ' challenge first."""
        _, _, cmd = self.connect(host="127.0.0.1")
        self.assertEqual(cmd("AUTH PLAIN"), b"+ \r\n")
        token = b64(b"\0" + ALICE.encode() + b"\0" + PASSWORD.encode())
        self.assertTrue(cmd(token).startswith(b"+OK"))

    def test_auth_login_exchange(self) -> None:
        """AUTH LOGIN asks Username: and Password: in base64."""
        _, _, cmd = self.connect(host="127.0.0.1")
        self.assertEqual(cmd("AUTH LOGIN"), b"+ " + base64.b64encode(b"Username:") + b"\r\n")
        self.assertEqual(cmd(b64(ALICE.encode())),
                         b"+ " + base64.b64encode(b"Password:") + b"\r\n")
        self.assertTrue(cmd(b64(PASSWORD.encode())).startswith(b"+OK"))

    def test_auth_wrong_password(self) -> None:
        """A wrong password over AUTH gets -ERR [AUTH] and the session stays usable."""
        server, _, cmd = self.connect(host="127.0.0.1")
        token = b64(b"\0" + ALICE.encode() + b"\0wrong")
        self.assertEqual(cmd(f"AUTH PLAIN {token}"), b"-ERR [AUTH] authentication failed\r\n")
        self.assertTrue(cmd("NOOP").startswith(b"-ERR NOOP is not allowed"))
        self.assertIs(server.state, State.AUTHORIZATION)

    def test_auth_bad_input(self) -> None:
        """Malformed base64, NUL in names, unknown mechanisms and '*' get -ERR, no login."""
        server, _, cmd = self.connect(host="127.0.0.1")
        self.assertEqual(cmd("AUTH PLAIN !!!notbase64"),
                         b"-ERR authentication response is not valid base64\r\n")
        two_parts = b64(b"a" + bytes(1) + b"b")
        self.assertEqual(cmd(f"AUTH PLAIN {two_parts}"),
                         b"-ERR PLAIN response must be authzid NUL authcid NUL password\r\n")
        self.assertEqual(cmd("AUTH CRAM-MD5"), b"-ERR unsupported authentication mechanism\r\n")
        cmd("AUTH LOGIN")
        self.assertEqual(cmd("*"), b"-ERR authentication cancelled\r\n")
        cmd("AUTH LOGIN")
        self.assertEqual(cmd(b64(b"ali\r\nce")),
                         b"-ERR user name must not contain NUL, CR or LF\r\n")
        self.assertEqual(cmd("USER a\x00b"), b"-ERR user name must not contain NUL\r\n")
        self.assertIs(server.state, State.AUTHORIZATION)
        self.assertTrue(cmd("CAPA").startswith(b"+OK"))

    def test_overlong_sasl_response_ends_exchange(self) -> None:
        """An over-long AUTH response is refused and the next line is a command again."""
        _, _, cmd = self.connect(host="127.0.0.1")
        cmd("AUTH LOGIN")
        self.assertTrue(cmd("A" * 10000).startswith(b"-ERR command line too long"))
        self.assertTrue(cmd("CAPA").startswith(b"+OK capability list"))

    def test_bare_auth_lists_mechanisms(self) -> None:
        """AUTH without arguments lists the mechanisms allowed on this connection."""
        _, _, cmd = self.connect(host="127.0.0.1")
        self.assertEqual(cmd("AUTH"),
                         b"+OK supported SASL mechanisms follow\r\nPLAIN\r\nLOGIN\r\n.\r\n")

    def test_policy_tls_refuses_loopback_too(self) -> None:
        """With cleartext_auth = 'tls' even loopback must use STLS first."""
        _, _, cmd = self.connect(host="127.0.0.1", policy="tls")
        self.assertTrue(cmd(f"USER {ALICE}").startswith(b"-ERR [AUTH]"))

    def test_throttled_failure_is_padded_and_blocks(self) -> None:
        """Through the throttle a failure answers after the padding; then the address is blocked."""
        throttle = LoginThrottle(self.clock, failure_min=0.4, delay=0.0, block_after=2)
        server, transport, cmd = self.connect(host="127.0.0.1", throttle=throttle)
        cmd(f"USER {ALICE}")
        self.assertEqual(cmd("PASS wrong"), b"")
        self.clock.advance(0.39)
        self.assertEqual(transport.value(), b"")
        self.clock.advance(0.02)
        self.assertEqual(transport.value(), b"-ERR [AUTH] authentication failed\r\n")
        transport.clear()
        cmd(f"USER {ALICE}")
        cmd("PASS wrong")
        self.clock.advance(1)
        transport.clear()
        # Blocked now: the right password fails too.
        cmd(f"USER {ALICE}")
        cmd(f"PASS {PASSWORD}")
        self.clock.advance(1)
        self.assertEqual(transport.value(), b"-ERR [AUTH] authentication failed\r\n")
        self.assertIs(server.state, State.AUTHORIZATION)


class FileLockTests(SynchronousTestCase):
    def test_file_locks_exclude_other_instances(self) -> None:
        """Two FileMaildropLocks on one directory (as two processes) exclude each other."""
        directory = self.mktemp()
        first = FileMaildropLocks(directory=directory)
        second = FileMaildropLocks(directory=directory)
        held = first.acquire("Alice@example.org")
        self.assertIsNotNone(held)
        self.assertIsNone(second.acquire("alice@example.org"))
        self.assertIsNone(first.acquire("alice@example.org"))
        assert held is not None
        held.release()
        again = second.acquire("alice@example.org")
        self.assertIsNotNone(again)
        assert again is not None
        again.release()
        again.release()
