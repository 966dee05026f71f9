"""Tests for pymail.relay.runner: routing to the queue, retries, bounces, restart."""

from __future__ import annotations

import email
import email.policy
from typing import Any

from relay_support import FakeClient, envelope, ok
from twisted.trial.unittest import SynchronousTestCase

from pymail.relay.client import SMTPClientError
from pymail.relay.mx import FakeResolver, MXResolver
from pymail.relay.queue import Spool
from pymail.relay.runner import QueueRunner, RetryPolicy, parse_duration
from pymail.smtp.delivery import LocalDelivery, QueuedCopy
from pymail.smtp.replies import Reply
from pymail.storage.memory import MemoryStoreFactory
from pymail.testing import MemoryDirectory, ThreadlessReactor

MESSAGE = b"From: alice@example.com\r\nSubject: hello\r\n\r\nbody\r\n"

DNS = FakeResolver(
    mx={"remote.example": [(10, "mx1.remote.example"), (20, "mx2.remote.example")],
        "null.example": [(0, "")]},
    addresses={"mx1.remote.example": ["192.0.2.1"], "mx2.remote.example": ["192.0.2.2"],
               "other.example": ["192.0.2.3"]},
    failures={"servfail.example": "SERVFAIL"},
)


def temp(text: str = "try later") -> Reply:
    return Reply(451, "4.3.0", text)


def perm(text: str = "no such user") -> Reply:
    return Reply(550, "5.1.1", text)


class RunnerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = ThreadlessReactor()
        self.reactor.advance(1_800_000_000)
        self.path = self.mktemp()
        self.client = FakeClient()
        self.stores = MemoryStoreFactory()
        self.directory = MemoryDirectory(
            domains={"example.com"}, users={"alice@example.com"},
            aliases={"fwd@example.com": ["alice@example.com", "ext@remote.example"],
                     "@example.com": ["alice@example.com"]},
        )
        self.runner = self.make_runner()
        self.runner.startService()
        self.addCleanup(self.stop)

    def stop(self) -> None:
        if self.runner.running:
            self.runner.stopService()

    def make_runner(self) -> QueueRunner:
        ids = iter(f"N{i}" for i in range(1000))
        runner = QueueRunner(
            spool=Spool(self.path, self.reactor), mx=MXResolver(DNS, lambda items: None),
            client=self.client, reactor=self.reactor, hostname="mx.example.com",
            queue_ids=lambda: next(ids),
            policy=RetryPolicy((60, 300), lifetime=3600, delay_warning=0),
        )
        self.delivery = LocalDelivery(self.directory, self.stores, "/data", queue=runner)
        runner.inject = self.delivery.inject
        return runner

    def submit(self, queue_id: str, *recipients: str, sender: str = "alice@example.com",
               **kw: Any) -> None:
        env = envelope(queue_id, sender, *recipients, **kw)
        copies = self.successResultOf(
            self.delivery.deliver(list(recipients), MESSAGE, envelope=env))
        self.assertEqual(copies, [QueuedCopy(queue_id, tuple(recipients))])

    def inbox(self) -> list[bytes]:
        mailbox = self.stores.open_store("alice@example.com", "/data")._mailboxes.get("INBOX")
        return [] if mailbox is None else [mailbox.read(i.uid) for i in mailbox.messages()]

    def test_delivered_and_removed(self) -> None:
        """A message accepted by the first MX is sent once and leaves the queue."""
        self.client.script = [[ok()]]
        self.submit("Q1", "bob@remote.example")
        self.reactor.advance(0)
        [(name, address, out)] = self.client.calls
        self.assertEqual((name, address, out.message), ("mx1.remote.example", "192.0.2.1",
                                                        MESSAGE))
        self.assertEqual(self.runner.spool.ids(), [])
        self.assertEqual(self.inbox(), [])

    def test_failover_to_second_mx(self) -> None:
        """A connection failure at the first MX moves on to the second."""
        self.client.script = [SMTPClientError(temp("refused"), try_next_host=True), [ok()]]
        self.submit("Q1", "bob@remote.example")
        self.reactor.advance(0)
        self.assertEqual([c[0] for c in self.client.calls],
                         ["mx1.remote.example", "mx2.remote.example"])
        self.assertEqual(self.runner.spool.ids(), [])

    def test_temporary_failure_retried_on_schedule(self) -> None:
        """A 4xx keeps the recipient queued and retries after the schedule's waits."""
        self.client.script = [[temp()], SMTPClientError(temp(), try_next_host=True),
                              [temp()], [ok()]]
        self.submit("Q1", "bob@remote.example")
        self.reactor.advance(0)
        entry = self.runner.spool.read_envelope_now("Q1")
        self.assertEqual((entry.attempts, entry.next_attempt - self.reactor.seconds()), (1, 60))
        self.assertIn("451 4.3.0", entry.recipients[0].reply)
        self.reactor.advance(59)
        self.assertEqual(len(self.client.calls), 1)
        self.reactor.advance(1)  # second attempt: both MX fail
        self.assertEqual(len(self.client.calls), 3)
        self.reactor.advance(300)
        self.assertEqual(len(self.client.calls), 4)
        self.assertEqual(self.runner.spool.ids(), [])
        self.assertEqual(self.inbox(), [])

    def test_permanent_failure_bounces(self) -> None:
        """A 5xx bounces to the (local) sender with an RFC 3464 report, per recipient."""
        self.client.script = [[ok(), perm("no such user: carol")]]
        self.submit("Q1", "bob@remote.example", "carol@remote.example", envid="E1",
                    ret="HDRS")
        self.reactor.advance(0)
        self.assertEqual(self.runner.spool.ids(), [])
        [notice] = self.inbox()
        parsed = email.message_from_bytes(notice, policy=email.policy.default)
        self.assertEqual(parsed.get_content_type(), "multipart/report")
        self.assertEqual(parsed["Auto-Submitted"], "auto-replied")
        human, status, original = parsed.iter_parts()
        report = status.as_bytes().decode()
        self.assertIn("Final-Recipient: rfc822; carol@remote.example", report)
        self.assertNotIn("bob@remote.example", report)
        self.assertIn("Action: failed", report)
        self.assertIn("Status: 5.1.1", report)
        self.assertIn("Diagnostic-Code: smtp; 550 5.1.1 no such user: carol", report)
        self.assertIn("Original-Envelope-Id: E1", report)
        self.assertIn("Remote-MTA: dns; mx1.remote.example", report)
        # RET=HDRS: only the header section comes back.
        self.assertEqual(original.get_content_type(), "text/rfc822-headers")
        self.assertNotIn(b"body", notice.split(b"text/rfc822-headers")[1])

    def test_no_bounce_to_null_sender_or_notify_never(self) -> None:
        """A failure for the null sender, or with NOTIFY=NEVER, sends no notice."""
        self.client.script = [[perm()], [perm()]]
        self.submit("Q1", "bob@remote.example", sender="")
        self.reactor.advance(0)
        env = envelope("Q2", "alice@example.com", "bob@remote.example")
        rcpt = env.recipients[0]
        import attrs

        env = attrs.evolve(env, recipients=(attrs.evolve(rcpt, notify=("NEVER",)),))
        self.successResultOf(self.delivery.deliver(["bob@remote.example"], MESSAGE,
                                                   envelope=env))
        self.reactor.advance(0)
        self.assertEqual(len(self.client.calls), 2)
        self.assertEqual(self.inbox(), [])
        self.assertEqual(self.runner.spool.ids(), [])

    def test_null_mx_and_nxdomain_bounce_at_once(self) -> None:
        """Null MX (5.1.10) and NXDOMAIN (5.1.2) bounce without any connection."""
        self.submit("Q1", "a@null.example", "b@nowhere.example")
        self.reactor.advance(0)
        self.assertEqual(self.client.calls, [])
        [notice] = self.inbox()
        self.assertIn(b"Status: 5.1.10", notice)
        self.assertIn(b"Status: 5.1.2", notice)

    def test_dns_servfail_retried(self) -> None:
        """A SERVFAIL keeps the message queued for a retry."""
        self.submit("Q1", "a@servfail.example")
        self.reactor.advance(0)
        entry = self.runner.spool.read_envelope_now("Q1")
        self.assertEqual(entry.pending()[0].reply[:9], "451 4.4.3")
        self.assertEqual(self.inbox(), [])

    def test_lifetime_expiry_bounces(self) -> None:
        """Past the queue lifetime a still-failing recipient bounces with the last reply."""
        self.client.script = [[temp("busy")]] * 100
        self.submit("Q1", "bob@remote.example")
        for _ in range(20):
            self.reactor.advance(300)
        self.assertEqual(self.runner.spool.ids(), [])
        [notice] = self.inbox()
        self.assertIn(b"Status: 4.4.7", notice)
        self.assertIn(b"Action: failed", notice)
        self.assertIn(b"Diagnostic-Code: smtp; 451 4.3.0 busy", notice)

    def test_delay_warning_once(self) -> None:
        """With delay warnings on, the sender is told once that the message waits."""
        self.runner.stopService()
        self.runner = self.make_runner()
        self.runner.policy = RetryPolicy((60,), lifetime=3600, delay_warning=100)
        self.runner.startService()
        self.client.script = [[temp()]] * 10
        self.submit("Q1", "bob@remote.example")
        for _ in range(5):
            self.reactor.advance(60)
        [notice] = self.inbox()
        self.assertIn(b"Action: delayed", notice)
        self.assertIn(b"Will-Retry-Until:", notice)

    def test_restart_resumes_queue(self) -> None:
        """After a stop (or crash) mid-attempt, a new runner retries from the spool."""
        self.submit("Q1", "bob@remote.example")
        self.reactor.advance(0)
        self.assertEqual(len(self.client.pending), 1)  # in flight
        self.runner.stopService()
        self.client.script = [[ok()]]
        self.runner = self.make_runner()
        self.runner.startService()
        self.reactor.advance(0)
        self.assertEqual(len(self.client.calls), 2)
        self.assertEqual(self.runner.spool.ids(), [])

    def test_per_domain_concurrency(self) -> None:
        """No more than concurrency_per_domain transactions to one domain at once."""
        self.runner.concurrency_per_domain = 2
        for i in range(4):
            self.submit(f"Q{i}", "bob@remote.example")
        self.reactor.advance(0)
        self.assertEqual(len(self.client.pending), 2)
        self.client.pending.pop(0).callback(
            __import__("pymail.relay.client", fromlist=["x"]).AttemptResult("h", (ok(),)))
        self.assertEqual(len(self.client.pending), 2)

    def test_alias_to_remote_and_catch_all(self) -> None:
        """An alias with a remote target queues it; a catch-all takes unknown local parts."""
        self.assertEqual(self.delivery.check_recipient("<fwd@example.com>"),
                         ["alice@example.com", "ext@remote.example"])
        self.assertEqual(self.delivery.check_recipient("<whoever@example.com>"),
                         ["alice@example.com"])
        self.assertEqual(self.delivery.check_recipient("<postmaster@example.com>"),
                         ["alice@example.com"])

    def test_flush_by_scan(self) -> None:
        """An envelope changed on disk (pymail queue flush) is picked up by the scan."""
        self.client.script = [[temp()], [ok()]]
        self.submit("Q1", "bob@remote.example")
        self.reactor.advance(0)
        entry = self.runner.spool.read_envelope_now("Q1")
        entry.next_attempt = 0
        self.runner.spool.rewrite_now(entry)
        import os

        os.utime(self.runner.spool.envelope_path("Q1"), (1, 1))
        self.runner.scan()
        self.reactor.advance(0)
        self.assertEqual(len(self.client.calls), 2)
        self.assertEqual(self.runner.spool.ids(), [])

    def test_parse_duration(self) -> None:
        """Durations take s, m, h and d suffixes."""
        self.assertEqual([parse_duration(t) for t in ("90", "30s", "5m", "2h", "1d")],
                         [90, 30, 300, 7200, 86400])
        self.assertRaises(ValueError, parse_duration, "soon")
