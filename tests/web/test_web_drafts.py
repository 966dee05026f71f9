"""Drafts: save the compose form in Drafts, resume and edit it, send it (the draft goes)."""

from __future__ import annotations

import re
from urllib.parse import unquote

from twisted.trial.unittest import SynchronousTestCase

from web_support import make_world, message, parse_mail


class DraftTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.world = make_world(special_use=True)
        self.alice = self.world.browser()
        self.alice.sign_in("alice@example.org")
        self.csrf = self.alice.csrf()
        self.drafts = self.world.mailbox("alice@example.org", "Drafts")

    def post(self, files: list[tuple[str, str, bytes]] | None = None, **fields: str) -> object:
        form = {"csrf": self.csrf, "to": "", "cc": "", "bcc": "", "subject": "", "body": "",
                "action": "send"}
        form.update(fields)
        return self.alice.post_multipart("/compose", form, files or [])

    def save(self, **fields: str) -> str:
        """Save a draft; the draft reference the compose page is redirected to."""
        reply = self.post(action="draft", **fields)
        self.assertEqual(reply.status, 303, reply.text[:500])  # type: ignore[attr-defined]
        location = reply.header("location")  # type: ignore[attr-defined]
        found = re.fullmatch(r"/compose\?draft=([^&]+)&done=saved", location)
        assert found, location
        return unquote(found.group(1))

    def test_saved_draft_is_in_drafts_with_the_draft_flag(self) -> None:
        """A saved form is one message in Drafts flagged \\Draft, Bcc kept, nothing sent."""
        self.save(to="bob@example.org", bcc="carol@example.org", subject="Plan",
                  body="First thoughts.", files=[("plan.txt", "text/plain", b"step 1\n")])
        [info] = self.drafts.messages()
        self.assertEqual(info.flags, {"\\Draft", "\\Seen"})
        saved = parse_mail(self.drafts.read(info.uid))
        self.assertEqual((saved["To"], saved["Bcc"], saved["Subject"]),
                         ("bob@example.org", "carol@example.org", "Plan"))
        self.assertEqual(saved.get_body(("plain",)).get_content(), "First thoughts.\r\n")
        self.assertEqual([(p.get_filename(), p.get_payload(decode=True))
                          for p in saved.iter_attachments()], [("plan.txt", b"step 1\n")])
        self.assertEqual(self.world.mailbox("bob@example.org").messages(), [])

    def test_draft_without_recipients_can_be_saved_but_not_injected(self) -> None:
        """A draft needs no recipient yet; a line break in a header field is still refused."""
        self.save(subject="Just an idea")
        self.assertEqual(len(self.drafts.messages()), 1)
        reply = self.post(action="draft", subject="x\r\nBcc: evil@example.net")
        self.assertEqual(reply.status, 400)  # type: ignore[attr-defined]
        self.assertEqual(len(self.drafts.messages()), 1)

    def test_resume_edit_and_send_removes_the_draft(self) -> None:
        """Resumed, the form holds the draft; saving replaces it; sending removes it."""
        ref = self.save(to="bob@example.org", cc="friend@example.net", bcc="carol@example.org",
                        subject="Plan", body="First thoughts.\nSecond line.",
                        files=[("plan.txt", "text/plain", b"step 1\n"),
                               ("drop.txt", "text/plain", b"not wanted\n")])
        page = self.alice.get(f"/compose?draft={ref}&done=saved").text
        self.assertIn("Draft saved in Drafts.", page)
        self.assertIn('name="to" value="bob@example.org"', page)
        self.assertIn('name="cc" value="friend@example.net"', page)
        self.assertIn('name="bcc" value="carol@example.org"', page)
        self.assertIn('name="subject" value="Plan"', page)
        self.assertIn(">\nFirst thoughts.\nSecond line.</textarea>", page)
        keep = re.findall(r'name="keep" value="([0-9]+)" checked> ([^ <]+)', page)
        self.assertEqual([name for _, name in keep], ["plan.txt", "drop.txt"])
        # Edit: change the subject, keep only plan.txt; the old draft is replaced.
        first_uid = self.drafts.messages()[0].uid
        form = {"draft": ref, "to": "bob@example.org", "bcc": "carol@example.org",
                "subject": "Plan, v2", "body": "Better thoughts.", "keep": keep[0][0]}
        ref2 = self.save(**form)
        [info] = self.drafts.messages()
        self.assertNotEqual(info.uid, first_uid)
        self.assertEqual(parse_mail(self.drafts.read(info.uid))["Subject"], "Plan, v2")
        # Send it: delivered with the kept attachment, Bcc out of the header, draft gone.
        page = self.alice.get(f"/compose?draft={ref2}").text
        keep2 = re.findall(r'name="keep" value="([0-9]+)" checked', page)
        reply = self.post(draft=ref2, to="bob@example.org", bcc="carol@example.org",
                          subject="Plan, v2", body="Better thoughts.", keep=keep2[0])
        self.assertEqual(reply.status, 200, reply.text[:500])  # type: ignore[attr-defined]
        self.assertIn("Your message was sent", reply.text)  # type: ignore[attr-defined]
        self.assertEqual(self.drafts.messages(), [])
        bob = self.world.mailbox("bob@example.org")
        got = parse_mail(bob.read(bob.messages()[0].uid))
        self.assertIsNone(got["Bcc"])
        self.assertIsNone(got["X-Pymail-Reply"])
        self.assertEqual([(p.get_filename(), p.get_payload(decode=True))
                          for p in got.iter_attachments()], [("plan.txt", b"step 1\n")])
        self.assertEqual(len(self.world.mailbox("carol@example.org").messages()), 1)

    def test_resumed_reply_still_answers_the_original(self) -> None:
        """A reply saved as a draft and sent later sets In-Reply-To and \\Answered."""
        uid = self.world.deliver("alice@example.org", message("Lunch?", "Thai?",
                                                              sender="bob@example.org"))
        ref = self.save(to="bob@example.org", subject="Re: Lunch?", body="Yes.",
                        reply=f"INBOX/{uid}", mode="reply")
        page = self.alice.get(f"/compose?draft={ref}").text
        self.assertIn(f'name="reply" value="INBOX/{uid}"', page)
        self.assertIn('name="mode" value="reply"', page)
        reply = self.post(draft=ref, reply=f"INBOX/{uid}", mode="reply", to="bob@example.org",
                          subject="Re: Lunch?", body="Yes.")
        self.assertEqual(reply.status, 200)  # type: ignore[attr-defined]
        bob = self.world.mailbox("bob@example.org")
        self.assertEqual(parse_mail(bob.read(bob.messages()[0].uid))["In-Reply-To"],
                         f"<{abs(hash('Lunch?'))}@x>")
        self.assertIn("\\Answered", self.world.mailbox("alice@example.org").info(uid).flags)

    def test_only_drafts_can_be_resumed_or_removed(self) -> None:
        """A message without \\Draft cannot be opened as a draft, nor removed by sending."""
        uid = self.world.deliver("alice@example.org", message("Keep me"))
        self.assertEqual(self.alice.get(f"/compose?draft=INBOX%2F{uid}").status, 404)
        reply = self.post(draft=f"INBOX/{uid}", to="bob@example.org", subject="x", body="y")
        self.assertEqual(reply.status, 404)  # type: ignore[attr-defined]
        self.assertEqual(len(self.world.mailbox("alice@example.org").messages()), 1)
        self.assertEqual(self.world.mailbox("bob@example.org").messages(), [])

    def test_message_view_offers_edit_for_a_draft(self) -> None:
        """Opening a draft in the Drafts folder shows an Edit draft button."""
        ref = self.save(to="bob@example.org", subject="Later")
        folder, _, uid = ref.partition("/")
        page = self.alice.get(f"/mail/{folder}/{uid}").text
        self.assertIn(f'href="/compose?draft=Drafts%2F{uid}">Edit draft</a>', page)
