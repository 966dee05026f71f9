"""Tests for pymail.smtp.server in submission mode: AUTH and sender rules."""

from __future__ import annotations

import base64
from typing import Any

from smtp_support import dot_stuff, make_server, strip_trace_headers
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from pymail.smtp import replies as R


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def submission():  # type: ignore[no-untyped-def]
    h = make_server(mode="submission")
    h.replies()
    h.ehlo()
    return h


class AuthTests(SynchronousTestCase):
    def test_ehlo_offers_auth(self) -> None:
        """EHLO on submission lists AUTH PLAIN LOGIN."""
        h = make_server(mode="submission")
        h.replies()
        h.send(b"EHLO c.example.org\r\n")
        self.assertEqual(h.replies()[-1], "250 AUTH PLAIN LOGIN")

    def test_plain_with_initial_response(self) -> None:
        """AUTH PLAIN with a good initial response gets 235 2.7.0."""
        h = submission()
        h.send(b"AUTH PLAIN " + b64(b"\0alice@example.com\0alice-secret") + b"\r\n")
        self.assertEqual(h.codes(), ["235 2.7.0"])

    def test_plain_with_challenge(self) -> None:
        """AUTH PLAIN without initial response gets an empty 334, then the response."""
        h = submission()
        h.send(b"AUTH PLAIN\r\n")
        self.assertEqual(h.replies(), ["334 "])
        h.send(b64(b"alice@example.com\0alice@example.com\0alice-secret") + b"\r\n")
        self.assertEqual(h.codes(), ["235 2.7.0"])

    def test_plain_bad_password(self) -> None:
        """A wrong password gets 535 5.7.8, and MAIL still needs AUTH."""
        h = submission()
        h.send(b"AUTH PLAIN " + b64(b"\0alice@example.com\0wrong") + b"\r\n")
        h.send(b"MAIL FROM:<alice@example.com>\r\n")
        self.assertEqual(h.codes(), ["535 5.7.8", "530 5.7.0"])

    def test_plain_other_authzid_refused(self) -> None:
        """Authorising as another user than the one authenticated is refused."""
        h = submission()
        h.send(b"AUTH PLAIN " + b64(b"bob@example.com\0alice@example.com\0alice-secret") + b"\r\n")
        self.assertEqual(h.codes(), ["535 5.7.8"])

    def test_plain_malformed(self) -> None:
        """A PLAIN response without two NULs, or bad base64, gets 501 5.5.2."""
        h = submission()
        h.send(b"AUTH PLAIN " + b64(b"alice-secret") + b"\r\nAUTH PLAIN not*base64\r\n")
        self.assertEqual(h.codes(), ["501 5.5.2", "501 5.5.2"])

    def test_login(self) -> None:
        """AUTH LOGIN asks Username: and Password: in base64 and logs in."""
        h = submission()
        h.send(b"AUTH LOGIN\r\n")
        self.assertEqual(h.replies(), ["334 VXNlcm5hbWU6"])
        h.send(b64(b"bob@example.com") + b"\r\n")
        self.assertEqual(h.replies(), ["334 UGFzc3dvcmQ6"])
        h.send(b64(b"bob-secret") + b"\r\n")
        self.assertEqual(h.codes(), ["235 2.7.0"])

    def test_login_with_initial_username_and_bad_password(self) -> None:
        """AUTH LOGIN with the user name inline asks for the password; a bad one gets 535."""
        h = submission()
        h.send(b"AUTH LOGIN " + b64(b"bob@example.com") + b"\r\n")
        self.assertEqual(h.replies(), ["334 UGFzc3dvcmQ6"])
        h.send(b64(b"nope") + b"\r\n")
        self.assertEqual(h.codes(), ["535 5.7.8"])

    def test_cancel(self) -> None:
        """'*' cancels an AUTH exchange with 501."""
        h = submission()
        h.send(b"AUTH LOGIN\r\n*\r\nNOOP\r\n")
        self.assertEqual(h.codes(), ["334", "501 5.0.0", "250 2.0.0"])

    def test_unknown_mechanism(self) -> None:
        """An unknown mechanism gets 504 5.5.4."""
        h = submission()
        h.send(b"AUTH CRAM-MD5\r\n")
        self.assertEqual(h.codes(), ["504 5.5.4"])

    def test_auth_twice(self) -> None:
        """AUTH after a successful AUTH gets 503 5.5.1."""
        h = submission()
        h.login()
        h.send(b"AUTH PLAIN " + b64(b"\0alice@example.com\0alice-secret") + b"\r\n")
        self.assertEqual(h.codes(), ["503 5.5.1"])

    def test_auth_needs_ehlo(self) -> None:
        """AUTH before EHLO gets 503 5.5.1."""
        h = make_server(mode="submission")
        h.replies()
        h.send(b"AUTH PLAIN\r\n")
        self.assertEqual(h.codes(), ["503 5.5.1"])

    def test_credentials_not_logged(self) -> None:
        """Neither the password nor the AUTH payload reaches the log."""
        events: list[dict[str, object]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        h = submission()
        token = b64(b"\0alice@example.com\0alice-secret")
        h.send(b"AUTH PLAIN " + token + b"\r\n")
        h.send(b"AUTH LOGIN\r\n" + b64(b"x@example.com") + b"\r\n" + b64(b"pw-typo") + b"\r\n")
        text = repr(events)
        self.assertTrue(any(e.get("mail_event") == "auth" for e in events))
        for secret in ("alice-secret", token.decode(), "pw-typo", b64(b"pw-typo").decode()):
            self.assertNotIn(secret, text)

    def test_checker_error_is_temporary(self) -> None:
        """A checker that fails unexpectedly gives 454 4.7.0 and is logged."""

        @implementer(ICredentialsChecker)
        class Broken:
            credentialInterfaces = (IUsernamePassword,)

            def requestAvatarId(self, credentials: object) -> Deferred[bytes]:
                raise OSError("database down")

        h = submission()
        portal = h.factory.portal
        assert portal is not None
        h.factory.portal = Portal(portal.realm, [Broken()])
        h.send(b"AUTH PLAIN " + b64(b"\0alice@example.com\0alice-secret") + b"\r\n")
        self.assertEqual(h.codes(), ["454 4.7.0"])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)


class SubmissionTransactionTests(SynchronousTestCase):
    def test_mail_before_auth(self) -> None:
        """MAIL before AUTH on submission gets 530 5.7.0."""
        h = submission()
        h.send(b"MAIL FROM:<alice@example.com>\r\n")
        self.assertEqual(h.codes(), ["530 5.7.0"])

    def test_foreign_sender(self) -> None:
        """A sender the user does not own gets 553 5.7.1; the null sender too."""
        h = submission()
        h.login()
        h.send(b"MAIL FROM:<bob@example.com>\r\nMAIL FROM:<>\r\n")
        replies = h.replies()
        self.assertEqual(
            replies[0],
            "553 5.7.1 Sender address <bob@example.com> is not owned by the authenticated"
            " user alice@example.com",
        )
        self.assertTrue(replies[1].startswith("553 5.7.1"))

    def test_own_tagged_and_alias_senders(self) -> None:
        """The user's address, a +tag of it, and an alias resolving to it are accepted."""
        h = submission()
        h.directory.aliases["info@example.com"] = ["alice@example.com"]
        h.login()
        for sender in (b"Alice@Example.com", b"alice+lists@example.com", b"info@example.com"):
            h.send(b"MAIL FROM:<" + sender + b"> AUTH=<>\r\nRSET\r\n")
            self.assertEqual(h.codes(), ["250 2.1.0", "250 2.0.0"], sender)

    def test_remote_recipient_outbound_relay_disabled(self) -> None:
        """A remote recipient from an authenticated user gets the outbound-relay 550 5.7.1."""
        h = submission()
        h.login()
        h.send(b"MAIL FROM:<alice@example.com>\r\nRCPT TO:<friend@elsewhere.example>\r\n")
        replies = h.replies()
        self.assertEqual(
            replies[-1:],
            R.OUTBOUND_RELAY_DISABLED.format(address="friend@elsewhere.example").lines(),
        )
        self.assertIn("Outbound relay is not enabled", replies[-1])

    def test_date_and_message_id_added(self) -> None:
        """A submitted message without Date and Message-ID gets both, after the trace headers."""
        h = submission()
        h.login()
        h.send(b"MAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n")
        body = b"From: alice@example.com\r\nSubject: hi\r\n\r\nhello\r\n"
        h.send(dot_stuff(body))
        queue_id = h.replies()[-1].rsplit(" ", 1)[1]
        [stored] = h.inbox("bob@example.com")
        self.assertIn(b"with ESMTPA id " + queue_id.encode(), stored)
        self.assertEqual(
            strip_trace_headers(stored),
            b"Date: Fri, 15 Jan 2027 08:00:00 +0000\r\n"
            b"Message-ID: <" + queue_id.encode() + b"@mx.example.com>\r\n" + body,
        )

    def test_existing_date_and_message_id_kept(self) -> None:
        """Date and Message-ID already present (any case) are not added again."""
        h = submission()
        h.login()
        h.send(b"MAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n")
        body = b"date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMESSAGE-ID: <x@y>\r\n\r\nDate: body\r\n"
        h.send(dot_stuff(body))
        [stored] = h.inbox("bob@example.com")
        self.assertEqual(strip_trace_headers(stored), body)

    def test_logout_on_connection_lost(self) -> None:
        """The avatar's logout runs when the connection goes."""
        h = submission()
        h.login()
        calls: list[bool] = []
        h.protocol._logout = lambda: calls.append(True)
        h.protocol.connectionLost(None)
        self.assertEqual(calls, [True])


class _TLSStringTransport:
    """Wraps a StringTransport with startTLS, which then marks it ISSLTransport."""

    @staticmethod
    def install(h: Any) -> list[object]:
        from zope.interface import directlyProvides

        from twisted.internet.interfaces import ISSLTransport

        started: list[object] = []

        def start_tls(creator: object) -> None:
            started.append(creator)
            directlyProvides(h.transport, ISSLTransport)

        h.transport.startTLS = start_tls
        return started


class StartTLSTests(SynchronousTestCase):
    def server(self, **kw: Any) -> Any:
        tls = FakeServerTLS()
        h = make_server(mode="submission", tls=tls, **kw)
        h.replies()
        return h, _TLSStringTransport.install(h), tls

    def test_starttls_offered_only_with_tls(self) -> None:
        """EHLO offers STARTTLS when the factory has TLS, and never on a plain factory."""
        h, _, _ = self.server()
        h.send(b"EHLO c.example.org\r\n")
        self.assertIn("250-STARTTLS", h.replies())
        plain = make_server(mode="submission")
        plain.replies()
        plain.send(b"EHLO c.example.org\r\nSTARTTLS\r\n")
        lines = plain.replies()
        self.assertFalse(any("STARTTLS" in line for line in lines[:-1]))
        self.assertEqual(lines[-1][:9], "502 5.5.1")

    def test_starttls_discards_pipelined_input_and_resets(self) -> None:
        """Commands sent after STARTTLS in the same packet are dropped; EHLO is needed again."""
        h, started, tls = self.server()
        h.send(b"EHLO c.example.org\r\n")
        h.replies()
        h.send(b"STARTTLS\r\nMAIL FROM:<alice@example.com>\r\n")
        self.assertEqual(h.replies(), ["220 2.0.0 Ready to start TLS"])
        self.assertEqual(started, [tls.creator])
        h.send(b"MAIL FROM:<alice@example.com>\r\n")
        self.assertEqual(h.codes(), ["503 5.5.1"])
        h.send(b"EHLO c.example.org\r\n")
        lines = h.replies()
        self.assertNotIn("250-STARTTLS", lines)
        self.assertIn("250 AUTH PLAIN LOGIN", lines)
        h.send(b"STARTTLS\r\n")
        self.assertEqual(h.codes(), ["503 5.5.1"])

    def test_starttls_ready_reply_is_written_before_tls_starts(self) -> None:
        """The 220 reaches the transport before startTLS, so it leaves in clear text."""
        h, _, _ = self.server()
        h.send(b"EHLO c.example.org\r\n")
        h.replies()
        seen_at_start: list[bytes] = []

        def start_tls(creator: object) -> None:
            seen_at_start.append(h.transport.value())

        h.transport.startTLS = start_tls
        h.send(b"STARTTLS\r\n")
        self.assertEqual(seen_at_start, [b"220 2.0.0 Ready to start TLS\r\n"])

    def test_auth_needs_tls_when_policy_says_so(self) -> None:
        """With cleartext_auth='tls', AUTH is hidden and refused (538 5.7.11) until STARTTLS."""
        h, _, _ = self.server(cleartext_auth="tls")
        h.send(b"EHLO c.example.org\r\n")
        self.assertFalse(any("AUTH" in line for line in h.replies()))
        h.send(b"AUTH PLAIN AGFsaWNlQGV4YW1wbGUuY29tAGFsaWNlLXNlY3JldA==\r\n")
        self.assertEqual(h.codes(), ["538 5.7.11"])
        h.send(b"STARTTLS\r\n")
        h.replies()
        h.send(b"EHLO c.example.org\r\n")
        h.replies()
        h.login()

    def test_loopback_may_auth_in_clear(self) -> None:
        """With cleartext_auth='loopback', a client on 127.0.0.1 may AUTH without TLS."""
        h = make_server(mode="submission", cleartext_auth="loopback", peer="127.0.0.1")
        h.replies()
        h.ehlo()
        h.login()
        remote = make_server(mode="submission", cleartext_auth="loopback")
        remote.replies()
        remote.ehlo()
        remote.send(b"AUTH PLAIN AGFsaWNlQGV4YW1wbGUuY29tAGFsaWNlLXNlY3JldA==\r\n")
        self.assertEqual(remote.codes(), ["538 5.7.11"])


class FakeServerTLS:
    """Stands in for pymail.tls.ServerTLS: only ``creator`` is used by STARTTLS."""

    creator = object()


class ThrottleTests(SynchronousTestCase):
    def test_failed_auth_is_throttled(self) -> None:
        """With a throttle, a failed AUTH is answered only after the padding delay."""
        from pymail.auth.throttle import LoginThrottle

        h = make_server(mode="submission")
        h.factory.throttle = LoginThrottle(h.clock, failure_min=0.4, delay=0.5)
        h.replies()
        h.ehlo()
        h.send(b"AUTH PLAIN " + base64.b64encode(b"\0alice@example.com\0wrong") + b"\r\n")
        self.assertEqual(h.replies(), [])
        h.clock.advance(0.4)
        h.clock.advance(0.5)
        self.assertEqual(h.codes(), ["535 5.7.8"])
        h.login()
