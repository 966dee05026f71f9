"""Tests for pymail.smtp.delivery: recipient policy and durable delivery."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from smtp_support import SlowStoreFactory
from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase

from pymail.address import Address
from pymail.errors import StorageError
from pymail.smtp import replies as R
from pymail.smtp.delivery import LocalDelivery, QueuedCopy, StoredCopy
from pymail.smtp.replies import ReplyError
from pymail.storage.memory import MemoryStoreFactory
from pymail.testing import MemoryDirectory


def directory() -> MemoryDirectory:
    return MemoryDirectory(
        domains={"example.com"},
        users={"alice@example.com", "bob@example.com"},
        aliases={"team@example.com": ["alice@example.com", "bob@example.com"]},
    )


class RecipientPolicyTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.policy = LocalDelivery(directory(), MemoryStoreFactory(), "/data")

    def refusal(self, address: str, **kw: str) -> R.Reply:
        with self.assertRaises(ReplyError) as info:
            self.policy.check_recipient(Address.parse(address), **kw)
        return info.exception.reply

    def test_local_user_and_alias(self) -> None:
        """A local user resolves to itself, a +tag to the user, an alias to its members."""
        self.assertEqual(self.policy.check_recipient("<alice@example.com>"), ["alice@example.com"])
        self.assertEqual(
            self.policy.check_recipient(Address.parse("<alice+x@EXAMPLE.com>")),
            ["alice@example.com"],
        )
        self.assertEqual(
            self.policy.check_recipient(Address.parse("<team@example.com>")),
            ["alice@example.com", "bob@example.com"],
        )

    def test_unknown_local_user(self) -> None:
        """An unknown local address is 550 5.1.1."""
        reply = self.refusal("<carol@example.com>")
        self.assertEqual((reply.code, reply.enhanced), (550, "5.1.1"))
        self.assertIn("carol@example.com", reply.text)

    def test_relay_denied_without_auth(self) -> None:
        """A non-local domain from an unauthenticated client is 554 5.7.1."""
        self.assertEqual(
            self.refusal("<x@elsewhere.example>"),
            R.RELAY_DENIED.format(address="x@elsewhere.example"),
        )

    def test_outbound_relay_disabled_with_auth(self) -> None:
        """A non-local domain from an authenticated user is the outbound-relay 550 5.7.1."""
        reply = self.refusal("<x@elsewhere.example>", authenticated_as="alice@example.com")
        self.assertEqual(reply, R.OUTBOUND_RELAY_DISABLED.format(address="x@elsewhere.example"))

    def test_routed_remote_address_refused(self) -> None:
        """Percent hacks and source routes to other domains are refused even when authenticated."""
        for address in ("<a%b@elsewhere.example>", "<@relay.example:a@elsewhere.example>"):
            reply = self.refusal(address, authenticated_as="alice@example.com")
            self.assertEqual(
                reply.text,
                R.ROUTED_ADDRESS_DENIED.format(address=address[1:-1].split(":")[-1]).text,
            )

    def test_string_that_does_not_parse(self) -> None:
        """A string recipient that does not parse is 501 5.1.3."""
        with self.assertRaises(ReplyError) as info:
            self.policy.check_recipient("<not an address>")
        self.assertEqual(info.exception.reply.code, 501)


class SenderPolicyTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.policy = LocalDelivery(directory(), MemoryStoreFactory(), "/data")

    def test_anyone_on_mx(self) -> None:
        """Without authentication any sender, even <>, is accepted."""
        self.policy.check_sender(Address.parse("<bob@example.com>"))
        self.policy.check_sender(Address.null())

    def test_authenticated_sender_must_own_address(self) -> None:
        """An authenticated user may use their address, a +tag, or an alias that includes them."""
        self.policy.check_sender(
            Address.parse("<ALICE@example.com>"), authenticated_as="alice@example.com"
        )
        self.policy.check_sender(
            Address.parse("<alice+x@example.com>"), authenticated_as="alice@example.com"
        )
        self.policy.check_sender(
            Address.parse("<team@example.com>"), authenticated_as="alice@example.com"
        )
        for foreign in ("<bob@example.com>", "<nobody@example.com>", "<alice@elsewhere.example>"):
            with self.assertRaises(ReplyError) as info:
                self.policy.check_sender(
                    Address.parse(foreign), authenticated_as="alice@example.com"
                )
            self.assertEqual(
                (info.exception.reply.code, info.exception.reply.enhanced), (553, "5.7.1")
            )


class DeliverTests(SynchronousTestCase):
    def test_deliver_to_each_inbox_once(self) -> None:
        """Each account gets one copy in INBOX; the result lists the stored copies."""
        stores = MemoryStoreFactory()
        policy = LocalDelivery(directory(), stores, "/data")
        d = policy.deliver(["alice@example.com", "bob@example.com", "Alice@example.com"], b"m\r\n")
        self.assertEqual(
            self.successResultOf(d),
            [
                StoredCopy("alice@example.com", "INBOX", 1),
                StoredCopy("bob@example.com", "INBOX", 1),
            ],
        )
        inbox = self.successResultOf(
            stores.open_store("bob@example.com", "/data").get_mailbox("INBOX")
        )
        self.assertEqual(inbox.read(1), b"m\r\n")

    def test_fires_only_after_every_append(self) -> None:
        """The Deferred waits for every append, and fails if any failed, after all settle."""
        slow = SlowStoreFactory()
        policy = LocalDelivery(directory(), slow, "/data")
        d: Deferred[list[StoredCopy]] = policy.deliver(
            ["alice@example.com", "bob@example.com"], b"m\r\n"
        )
        [(_, first), (_, second)] = slow.mailbox.appends
        first.errback(StorageError("disk full"))
        self.assertNoResult(d)
        second.callback(7)
        self.failureResultOf(d, StorageError)

    def test_nothing_to_deliver(self) -> None:
        """No accounts is an immediate empty success."""
        policy = LocalDelivery(directory(), MemoryStoreFactory(), "/data")
        self.assertEqual(self.successResultOf(policy.deliver([], b"m\r\n")), [])


class RoutingTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.stores = MemoryStoreFactory()
        d = directory()
        d.aliases["fwd@example.com"] = ["bob@example.com", "x@remote.example"]
        self.policy = LocalDelivery(d, self.stores, "/data")

    def test_provides_interface(self) -> None:
        """LocalDelivery provides IMessageDelivery."""
        from zope.interface.verify import verifyObject

        from pymail.interfaces import IMessageDelivery

        verifyObject(IMessageDelivery, self.policy)

    def test_tag_kept_in_delivered_to(self) -> None:
        """A +tag recipient's copy starts with Delivered-To naming the tagged address."""
        from pymail.address import Envelope, EnvelopeRecipient

        rcpt = Address.parse("<alice+lists@example.com>")
        env = Envelope("Q1", Address.parse("<x@y.example>"),
                       (EnvelopeRecipient(rcpt, ("alice@example.com",)),
                        EnvelopeRecipient(Address.parse("<bob@example.com>"),
                                          ("bob@example.com",))))
        self.successResultOf(self.policy.deliver(["alice@example.com", "bob@example.com"],
                                                 b"m\r\n", envelope=env))
        alice = self.successResultOf(
            self.stores.open_store("alice@example.com", "/data").get_mailbox("INBOX"))
        bob = self.successResultOf(
            self.stores.open_store("bob@example.com", "/data").get_mailbox("INBOX"))
        self.assertEqual(alice.read(1), b"Delivered-To: alice+lists@example.com\r\nm\r\n")
        self.assertEqual(bob.read(1), b"m\r\n")

    def test_loop_detected(self) -> None:
        """More Received headers than max_received is refused with 554 5.4.6."""
        policy = LocalDelivery(directory(), self.stores, "/data", max_received=3)
        looping = b"Received: x\r\n" * 4 + b"\r\nReceived: in the body\r\n"
        failure = self.failureResultOf(policy.deliver(["alice@example.com"], looping),
                                       ReplyError)
        self.assertEqual((failure.value.reply.code, failure.value.reply.enhanced),
                         (554, "5.4.6"))
        self.successResultOf(policy.deliver(["alice@example.com"], b"Received: x\r\n" * 3))

    def test_remote_alias_target_without_queue(self) -> None:
        """An alias with a remote target routes there; without a queue it cannot be stored."""
        self.assertEqual(self.policy.check_recipient("<fwd@example.com>"),
                         ["bob@example.com", "x@remote.example"])
        self.failureResultOf(self.policy.deliver(["x@remote.example"], b"m\r\n"), ReplyError)

    def test_routed_targets_are_not_looked_up_again(self) -> None:
        """Targets from check_recipient are delivered as routed at RCPT, not looked up again."""
        local, remote = self.policy.check_recipient("<fwd@example.com>")
        queued: list[list[str]] = []

        class Queue:
            def submit(self, envelope: object, params: list[tuple[str, object]],
                       message: bytes) -> Deferred[None]:
                queued.append([target for target, _ in params])
                return succeed(None)

        from pymail.address import Envelope, EnvelopeRecipient

        # A directory that has forgotten everything: a further look-up would
        # make bob@example.com remote and x@remote.example unknown.
        policy = LocalDelivery(MemoryDirectory(), self.stores, "/data", queue=Queue())
        env = Envelope("Q1", Address.parse("<x@y.example>"),
                       (EnvelopeRecipient(Address.parse("<fwd@example.com>"), (local, remote)),))
        copies = self.successResultOf(policy.deliver([local, remote], b"m\r\n", envelope=env))
        self.assertEqual(copies, [StoredCopy("bob@example.com", "INBOX", 1),
                                  QueuedCopy("Q1", ("x@remote.example",))])
        self.assertEqual(queued, [["x@remote.example"]])


_HEADER_LINES = st.lists(st.sampled_from([
    b"Received: x", b"received:x", b"RECEIVED \t: y", b"ReCeIvEd\t:", b"X-Received: z",
    b" Received: folded", b"Receivedx: no", b"Received", b"Subject: Received: no", b"",
]))


@given(head=_HEADER_LINES, body=_HEADER_LINES)
def test_count_received_counts_header_fields_only(head: list[bytes], body: list[bytes]) -> None:
    """count_received counts the Received fields of the header section, in any letter case."""
    import re

    from pymail.smtp.delivery import count_received

    message = b"".join(line + b"\r\n" for line in head) + b"\r\n" + b"\r\n".join(body)
    end = message.find(b"\r\n\r\n")
    head = message if end < 0 else message[: end + 2]
    reference = len(re.findall(rb"(?im)^received[ \t]*:", head))
    assert count_received(message) == reference
