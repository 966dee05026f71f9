"""Compose, reply, reply-all and forward through the submission policy; header injection."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from pymail.web.compose import ComposeError, check_form
from web_support import make_world, message, parse_mail


class CheckFormTests(SynchronousTestCase):
    def test_line_breaks_in_header_fields_are_refused(self) -> None:
        """CR or LF in To, Cc, Bcc or Subject is header injection and refused."""
        for field in ("to", "cc", "bcc", "subject"):
            for evil in ("x\r\nBcc: victim@example.org", "x\nBcc: v@example.org", "x\rY"):
                values = {"to": "bob@example.org", "cc": "", "bcc": "", "subject": "s"}
                values[field] = ("bob@example.org, " if field != "subject" else "") + evil
                with self.assertRaises(ComposeError, msg=f"{field}: {evil!r}") as caught:
                    check_form(values["to"], values["cc"], values["bcc"], values["subject"], "b")
                self.assertIn("line break", str(caught.exception))

    def test_bad_addresses_are_refused(self) -> None:
        """An address that does not parse, and an empty recipient list, are refused."""
        for to in ("not an address", "a@", "@b.example", ""):
            with self.assertRaises(ComposeError, msg=to):
                check_form(to, "", "", "s", "b")


class SendTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.world = make_world()
        self.alice = self.world.browser()
        self.alice.sign_in("alice@example.org")
        self.csrf = self.alice.csrf()

    def send(self, **fields: str) -> object:
        form = {"csrf": self.csrf, "to": "", "cc": "", "bcc": "", "subject": "", "body": ""}
        form.update(fields)
        files = fields.pop("_files", None)  # type: ignore[call-overload]
        return self.alice.post_multipart("/compose", form, files or [])

    def test_message_arrives_and_is_filed_in_sent(self) -> None:
        """A sent message is in Bob's INBOX and, byte for byte, in Alice's Sent (\\Seen)."""
        reply = self.alice.post_multipart("/compose", {
            "csrf": self.csrf, "to": "Bob <bob@example.org>", "cc": "", "bcc": "carol@example.org",
            "subject": "Plans for Friday", "body": "Lunch at one?\nBring the slides."},
            [("slides.pdf", "application/pdf", b"%PDF-1.4 slides"),
             ("notes.txt", "", b"plain notes\n")])
        self.assertEqual(reply.status, 200, reply.text)
        self.assertIn("Your message was sent", reply.text)
        bob = self.world.mailbox("bob@example.org")
        carol = self.world.mailbox("carol@example.org")
        sent = self.world.mailbox("alice@example.org", "Sent")
        delivered = bob.read(bob.messages()[0].uid)
        self.assertEqual(carol.read(carol.messages()[0].uid), delivered)
        composed = sent.read(sent.messages()[0].uid)
        self.assertEqual(sent.messages()[0].flags, {"\\Seen"})
        # Delivered copies are the Sent copy plus the trace headers of submission.
        trace, _, rest = delivered.partition(b"\r\nFrom: ")
        self.assertEqual(b"From: " + rest, composed)
        self.assertRegex(trace.decode(), r"^Return-Path: <alice@example.org>\r\nReceived: from "
                         r"webmail \(\[127\.0\.0\.1\]\)\r\n\tby mail\.example\.org \(pymail\) "
                         r"with HTTP id [0-9A-F]{12}; .*$")
        parsed = parse_mail(delivered)
        self.assertEqual(parsed["From"], "alice@example.org")
        self.assertEqual(parsed["To"], "bob@example.org")
        self.assertIsNone(parsed["Bcc"])
        self.assertEqual(parsed["Subject"], "Plans for Friday")
        self.assertEqual(parsed.get_body(("plain",)).get_content(),
                         "Lunch at one?\r\nBring the slides.\r\n")
        parts = {p.get_filename(): (p.get_content_type(), p.get_payload(decode=True))
                 for p in parsed.iter_attachments()}
        self.assertEqual(parts, {"slides.pdf": ("application/pdf", b"%PDF-1.4 slides"),
                                 "notes.txt": ("text/plain", b"plain notes\n")})
        self.assertTrue(delivered.endswith(b"\r\n"))
        self.assertNotIn(b"\n", delivered.replace(b"\r\n", b""))

    def test_injection_in_subject_sends_nothing(self) -> None:
        """A subject with CRLF is refused with 400 and nothing is delivered or filed."""
        reply = self.alice.post_multipart("/compose", {
            "csrf": self.csrf, "to": "bob@example.org", "cc": "", "bcc": "",
            "subject": "hi\r\nBcc: carol@example.org", "body": "x"})
        self.assertEqual(reply.status, 400)
        self.assertIn("Subject must be a single line", reply.text)
        self.assertEqual(len(self.world.mailbox("bob@example.org").messages()), 0)
        self.assertEqual(len(self.world.mailbox("carol@example.org").messages()), 0)

    def test_unknown_local_recipient_is_refused_by_the_policy(self) -> None:
        """The submission policy's refusal is shown and nothing is sent to anyone."""
        reply = self.alice.post_multipart("/compose", {
            "csrf": self.csrf, "to": "bob@example.org, nobody@example.org", "cc": "",
            "bcc": "", "subject": "s", "body": "b"})
        self.assertEqual(reply.status, 400)
        self.assertIn("Not sent:", reply.text)
        self.assertIn("nobody@example.org", reply.text)
        self.assertEqual(len(self.world.mailbox("bob@example.org").messages()), 0)

    def test_reply_all_and_forward(self) -> None:
        """Reply-all goes to everyone, threads and sets \\Answered; forward attaches."""
        original = message("Team sync", "Agenda attached.", sender="carol@example.org",
                           extra="Cc: bob@example.org\r\n")
        uid = self.world.deliver("alice@example.org", original)
        form = self.alice.get(f"/compose?reply=INBOX/{uid}&mode=all").text
        self.assertIn('name="to" value="carol@example.org"', form)
        self.assertIn('name="cc" value="bob@example.org"', form)
        self.assertIn('value="Re: Team sync"', form)
        self.assertIn("&gt; Agenda attached.", form)
        self.alice.post_multipart("/compose", {
            "csrf": self.csrf, "to": "carol@example.org", "cc": "bob@example.org", "bcc": "",
            "subject": "Re: Team sync", "body": "Sounds good.", "reply": f"INBOX/{uid}",
            "mode": "all"})
        carol = self.world.mailbox("carol@example.org")
        answer = parse_mail(carol.read(carol.messages()[0].uid))
        self.assertEqual(answer["In-Reply-To"], parse_mail(original)["Message-ID"])
        self.assertIn("\\Answered", self.world.mailbox("alice@example.org").info(uid).flags)
        self.alice.post_multipart("/compose", {
            "csrf": self.csrf, "to": "bob@example.org", "cc": "", "bcc": "",
            "subject": "Fwd: Team sync", "body": "FYI", "reply": f"INBOX/{uid}",
            "mode": "forward"})
        bob = self.world.mailbox("bob@example.org")
        forwarded = parse_mail(bob.read(bob.messages()[-1].uid))
        attached = [p for p in forwarded.iter_attachments()]
        self.assertEqual([p.get_content_type() for p in attached], ["message/rfc822"])
        inner = attached[0].get_content()
        self.assertEqual(inner["Subject"], "Team sync")
        self.assertEqual(inner.get_content(), "Agenda attached.\r\n")


class HostileOriginalTests(SynchronousTestCase):
    def test_reply_to_a_message_with_encoded_line_breaks_in_its_header(self) -> None:
        """Replying to a From/Subject whose encoded words hide CR LF fills one-line fields."""
        world = make_world()
        browser = world.browser()
        browser.sign_in("alice@example.org")
        hostile = (b"From: =?utf-8?q?Eve=0D=0ABcc=3A_x=40example=2Enet?= <eve@example.net>\r\n"
                   b"Cc: =?utf-8?q?=0D=0A?= <carol@example.org>\r\n"
                   b"To: alice@example.org\r\n"
                   b"Subject: =?utf-8?q?Hi=0D=0ABcc=3A_x=40example=2Enet?=\r\n"
                   b"Message-ID: <m1@example.net>\r\n\r\nBody.\r\n")
        uid = world.deliver("alice@example.org", hostile)
        page = browser.get(f"/compose?reply=INBOX%2F{uid}&mode=all")
        self.assertEqual(page.status, 200, page.text[:300])
        self.assertIn('name="to" value="eve@example.net"', page.text)
        self.assertIn('name="cc" value="carol@example.org"', page.text)
        self.assertIn('name="subject" value="Re: Hi Bcc: x@example.net"', page.text)


class FakeQueue:
    """An outbound queue that keeps what it is given."""

    def __init__(self) -> None:
        self.submitted: list[tuple[object, list[tuple[str, object]], bytes]] = []

    def submit(self, envelope: object, remote: list[tuple[str, object]], message: bytes) -> object:
        from twisted.internet.defer import succeed

        self.submitted.append((envelope, remote, message))
        return succeed(None)


class RelayTests(SynchronousTestCase):
    def test_remote_recipients_go_to_the_relay_queue(self) -> None:
        """With a relay queue, a remote recipient is queued once and a local one delivered."""
        world = make_world()
        queue = FakeQueue()
        world.delivery.queue = queue  # type: ignore[assignment]
        alice = world.browser()
        alice.sign_in("alice@example.org")
        reply = alice.post_multipart("/compose", {
            "csrf": alice.csrf(), "to": "friend@remote.example, bob@example.org", "cc": "",
            "bcc": "", "subject": "Both", "body": "One local, one remote."})
        self.assertEqual(reply.status, 200, reply.text)
        self.assertIn("1 remote recipient(s) queued", reply.text)
        self.assertEqual(len(queue.submitted), 1)
        envelope, remote, data = queue.submitted[0]
        self.assertEqual([r for r, _ in remote], ["friend@remote.example"])
        self.assertEqual(str(envelope.sender), "alice@example.org")  # type: ignore[attr-defined]
        bob = world.mailbox("bob@example.org")
        self.assertEqual(bob.read(bob.messages()[0].uid), data)

    def test_remote_recipient_without_relay_sends_nothing(self) -> None:
        """Without a relay queue a remote recipient is refused and nobody gets the message."""
        world = make_world()
        alice = world.browser()
        alice.sign_in("alice@example.org")
        reply = alice.post_multipart("/compose", {
            "csrf": alice.csrf(), "to": "bob@example.org, friend@remote.example", "cc": "",
            "bcc": "", "subject": "x", "body": "y"})
        self.assertEqual(reply.status, 400)
        self.assertIn("Outbound relay is not enabled", reply.text)
        self.assertEqual(len(world.mailbox("bob@example.org").messages()), 0)
