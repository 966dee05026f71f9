"""Tests for pymail.relay.client against pymail's own SMTP server, in memory."""

from __future__ import annotations

from relay_support import make_peer, run_transaction
from twisted.trial.unittest import SynchronousTestCase

from pymail.relay.client import (
    OutboundMessage,
    OutboundRecipient,
    SMTPClient,
    SMTPClientError,
    dot_stuff,
    parse_reply,
)
from pymail.testing import ThreadlessReactor

MESSAGE = b"Subject: hi\r\n\r\n.leading dot\r\nbody\r\n"


def outbound(*recipients: str, message: bytes = MESSAGE, **kw: object) -> OutboundMessage:
    return OutboundMessage("alice@example.com",
                           tuple(OutboundRecipient(r) for r in recipients), message, **kw)  # type: ignore[arg-type]


class ClientTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.client = SMTPClient(ThreadlessReactor(), "mx.example.com")

    def test_delivers_with_per_recipient_results(self) -> None:
        """Each recipient gets its own reply; accepted ones get the final 250."""
        peer = make_peer()
        [result], _ = run_transaction(
            self.client, peer, outbound("carol@remote.example", "nobody@remote.example"))
        self.assertEqual([r.code for r in result.replies], [250, 550])
        self.assertEqual(result.replies[1].enhanced, "5.1.1")
        [stored] = peer.inbox("carol@remote.example")
        # Byte for byte after the peer's two trace headers, dots unstuffed.
        self.assertTrue(stored.endswith(MESSAGE))
        self.assertEqual(stored.count(b"\r\nReceived: ") + stored.startswith(b"Received"), 1)

    def test_all_recipients_refused(self) -> None:
        """With no recipient accepted, no message is sent and every reply is reported."""
        peer = make_peer()
        [result], _ = run_transaction(self.client, peer, outbound("x@remote.example"))
        self.assertEqual([r.code for r in result.replies], [550])
        self.assertEqual(peer.inbox("carol@remote.example"), [])

    def test_size_limit_of_peer(self) -> None:
        """A message bigger than the peer's SIZE is a permanent 5.3.4 failure, not sent."""
        peer = make_peer(max_message_size=1024)
        [failure], _ = run_transaction(
            self.client, peer, outbound("carol@remote.example", message=b"x" * 2000 + b"\r\n"))
        error = failure.value
        self.assertIsInstance(error, SMTPClientError)
        self.assertEqual((error.reply.code, error.reply.enhanced), (552, "5.3.4"))
        self.assertFalse(error.try_next_host)

    def test_smtputf8_passed_on(self) -> None:
        """A UTF-8 envelope goes out with SMTPUTF8 to a peer that offers it."""
        peer = make_peer()
        [result], _ = run_transaction(
            self.client, peer,
            OutboundMessage("jörg@example.com", (OutboundRecipient("carol@remote.example"),),
                            MESSAGE, smtputf8=True))
        self.assertEqual([r.code for r in result.replies], [250])

    def test_greeting_refusal_tries_next_host(self) -> None:
        """A 554 greeting fails the attempt with try_next_host set."""
        peer = make_peer()

        class Refusing(type(peer.factory.buildProtocol(None))):  # type: ignore[misc]
            def connectionMade(self) -> None:
                self._client = "x"
                self.transport.write(b"554 5.3.2 go away\r\n")  # type: ignore[union-attr]

        peer.factory.buildProtocol = lambda addr: Refusing(peer.factory)  # type: ignore[method-assign]
        [failure], _ = run_transaction(self.client, peer, outbound("carol@remote.example"))
        self.assertTrue(failure.value.try_next_host)
        self.assertEqual(failure.value.reply.code, 554)

    def test_dot_stuffing(self) -> None:
        """Lines starting with a dot are doubled and the terminator appended."""
        self.assertEqual(dot_stuff(b".a\r\nb\r\n.\r\n"), b"..a\r\nb\r\n..\r\n.\r\n")
        self.assertEqual(dot_stuff(b"no newline"), b"no newline\r\n.\r\n")

    def test_parse_multiline_reply(self) -> None:
        """Multi-line replies keep each line's text; the enhanced code is taken out."""
        reply = parse_reply([b"250-mx Hello", b"250-PIPELINING", b"250 2.0.0 SIZE 10"])
        self.assertEqual((reply.code, reply.enhanced), (250, "2.0.0"))
        self.assertEqual(reply.text, "mx Hello\nPIPELINING\nSIZE 10")


class _IOSimTLS:
    """
    TLS for ``twisted.test.iosim``, which pretends to negotiate (the
    handshake itself is Twisted's business; this tests the STARTTLS
    dialogue, the EHLO after it and what each side then believes).
    """

    def __init__(self, accept: bool = True) -> None:
        self.creator = self
        self.accept = accept

    def iosimVerify(self, other: object) -> bool:
        return self.accept


def _iosim_tls(hostname: str, verify: bool) -> _IOSimTLS:
    return _IOSimTLS()


class TLSClientTests(SynchronousTestCase):
    def test_opportunistic_starttls(self) -> None:
        """A peer offering STARTTLS gets the message over TLS (certificate not checked)."""
        peer = make_peer(tls=_IOSimTLS())
        client = SMTPClient(ThreadlessReactor(), "mx.example.com", client_tls=_iosim_tls)
        [result], _ = run_transaction(client, peer, outbound("carol@remote.example"))
        self.assertTrue(result.tls)
        [stored] = peer.inbox("carol@remote.example")
        self.assertIn(b"with ESMTPS id", stored)

    def test_required_tls_missing(self) -> None:
        """A smarthost that offers no STARTTLS is not sent to when TLS is required."""
        client = SMTPClient(ThreadlessReactor(), "mx.example.com", client_tls=_iosim_tls,
                            require_tls=True)
        [failure], _ = run_transaction(client, make_peer(), outbound("carol@remote.example"))
        self.assertEqual(failure.value.reply.enhanced, "4.7.5")

    def test_smarthost_auth(self) -> None:
        """With a user name, the client logs in with AUTH PLAIN (over TLS) before MAIL."""
        from relay_support import REMOTE_USERS

        from pymail.testing import memory_portal

        peer = make_peer(tls=_IOSimTLS(), mode="submission", cleartext_auth="tls",
                         portal=memory_portal(REMOTE_USERS)[0])
        client = SMTPClient(ThreadlessReactor(), "mx.example.com", client_tls=_iosim_tls,
                            require_tls=True, username="carol@remote.example", password="x")
        [result], _ = run_transaction(
            client, peer, OutboundMessage("carol@remote.example",
                                          (OutboundRecipient("dave@remote.example"),), MESSAGE))
        self.assertEqual([r.code for r in result.replies], [250])
        [stored] = peer.inbox("dave@remote.example")
        self.assertIn(b"with ESMTPSA id", stored)
        bad = SMTPClient(ThreadlessReactor(), "mx.example.com", client_tls=_iosim_tls,
                         username="carol@remote.example", password="wrong")
        [failure], _ = run_transaction(bad, peer, outbound("dave@remote.example"))
        self.assertEqual((failure.value.reply.code, failure.value.reply.enhanced),
                         (554, "5.7.8"))
