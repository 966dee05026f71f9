"""Drafts: save the compose form in Drafts, resume and edit it, send it (the draft goes)."""

from __future__ import annotations

import re
from html import unescape
from urllib.parse import quote, unquote

from twisted.trial.unittest import SynchronousTestCase

from web_support import make_world, message, parse_mail


class DraftWorld(SynchronousTestCase):
    """Alice signed in, with special-use folders; compose-form helpers."""

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


class DraftTests(DraftWorld):
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


class HostileDraftTests(DraftWorld):
    """Drafts whose headers pymail did not write (an IMAP client APPENDed them with \\Draft)."""

    def append_draft(self, headers: str, body: str = "Draft text.") -> str:
        """APPEND a draft as an IMAP client would; its reference for /compose?draft=."""
        data = (f"From: alice@example.org\r\n{headers}MIME-Version: 1.0\r\n"
                f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n").encode()
        uids: list[int] = []
        self.drafts.append(data, ("\\Draft",)).addCallback(uids.append)
        self.world.reactor.advance(0)
        return f"Drafts/{uids[0]}"

    def test_encoded_line_breaks_in_a_stored_draft_do_not_inject_headers(self) -> None:
        """CR/LF hidden in a stored draft's encoded Subject and To reach no header when sent."""
        ref = self.append_draft(
            "To: =?utf-8?q?Bob=0D=0ABcc=3A_evil=40example=2Enet?= <bob@example.org>\r\n"
            "Subject: =?utf-8?q?Hi=0D=0ABcc=3A_evil=40example=2Enet?=\r\n")
        page = self.alice.get(f"/compose?draft={quote(ref, safe='')}").text
        subject = re.search(r'name="subject" value="([^"]*)"', page)
        to = re.search(r'name="to" value="([^"]*)"', page)
        assert subject and to, page[:500]
        self.assertEqual((subject.group(1), to.group(1)),
                         ("Hi Bcc: evil@example.net", "bob@example.org"))
        reply = self.post(draft=ref, to=to.group(1), subject=unescape(subject.group(1)))
        self.assertEqual(reply.status, 200, reply.text[:500])  # type: ignore[attr-defined]
        bob = self.world.mailbox("bob@example.org")
        got = parse_mail(bob.read(bob.messages()[0].uid))
        self.assertEqual((got["Subject"], got["Bcc"]), ("Hi Bcc: evil@example.net", None))

    def test_kept_attachment_index_must_be_an_ascii_number(self) -> None:
        """A keep field of other Unicode digits is ignored, not a server error."""
        reply = self.post(to="bob@example.org", subject="x", body="y", keep="\u00b2")
        self.assertEqual(reply.status, 200, reply.text[:500])  # type: ignore[attr-defined]

    def test_resumed_forward_names_the_message_it_attaches(self) -> None:
        """A draft forwarding INBOX/1 under another subject shows the real original's subject."""
        uid = self.world.deliver("alice@example.org", message("Your password reset code"))
        ref = self.append_draft(f"To: bob@example.org\r\nSubject: Lunch menu\r\n"
                                f"X-Pymail-Reply: forward INBOX/{uid}\r\n")
        page = self.alice.get(f"/compose?draft={quote(ref, safe='')}").text
        self.assertIn("&ldquo;Your password reset code&rdquo; (in INBOX) is attached", page)
        self.assertNotIn("&ldquo;Lunch menu&rdquo;", page)

    def test_resumed_draft_with_a_dangling_reply_link_drops_it(self) -> None:
        """A draft whose X-Pymail-Reply names no message of the account resumes without it."""
        for target in ("INBOX/999", "..%2Fbob%40example.org%2FINBOX/1", "Nope/1", "INBOX/x"):
            ref = self.append_draft(f"To: bob@example.org\r\nSubject: S\r\n"
                                    f"X-Pymail-Reply: reply {target}\r\n")
            page = self.alice.get(f"/compose?draft={quote(ref, safe='')}")
            self.assertEqual(page.status, 200, target)
            self.assertIn('name="reply" value=""', page.text)
            self.assertIn('name="mode" value=""', page.text)

    def test_reply_whose_original_went_is_still_sent(self) -> None:
        """Sending a reply after its original was deleted sends it, just without threading."""
        uid = self.world.deliver("alice@example.org", message("Lunch?", sender="bob@example.org"))
        inbox = self.world.mailbox("alice@example.org")
        inbox.set_flags([uid], ["\\Deleted"], "add")
        inbox.expunge([uid])
        self.world.reactor.advance(0)
        reply = self.post(to="bob@example.org", subject="Re: Lunch?", body="Yes.",
                          reply=f"INBOX/{uid}", mode="reply")
        self.assertEqual(reply.status, 200, reply.text[:500])  # type: ignore[attr-defined]
        bob = self.world.mailbox("bob@example.org")
        self.assertIsNone(parse_mail(bob.read(bob.messages()[0].uid))["In-Reply-To"])

    def test_forward_whose_original_went_keeps_the_form(self) -> None:
        """Forwarding a message deleted meanwhile is refused on the form, with its text kept."""
        reply = self.post(to="bob@example.org", subject="Fwd: gone", body="See below.",
                          reply="INBOX/42", mode="forward")
        self.assertEqual(reply.status, 400)  # type: ignore[attr-defined]
        self.assertIn("no longer there", reply.text)  # type: ignore[attr-defined]
        self.assertIn("See below.</textarea>", reply.text)  # type: ignore[attr-defined]
        self.assertEqual(self.world.mailbox("bob@example.org").messages(), [])

    def test_another_accounts_draft_cannot_be_resumed_sent_or_removed(self) -> None:
        """Bob naming Alice's draft gets 404 on resume and send; her draft stays."""
        ref = self.append_draft("To: carol@example.org\r\nSubject: Alice's secret plan\r\n")
        bob = self.world.browser()
        bob.sign_in("bob@example.org")
        self.assertEqual(bob.get(f"/compose?draft={quote(ref, safe='')}").status, 404)
        reply = bob.post_multipart("/compose", {
            "csrf": bob.csrf(), "draft": ref, "to": "bob@example.org", "subject": "x",
            "body": "y", "action": "send"}, [])
        self.assertEqual(reply.status, 404)
        self.assertEqual(len(self.drafts.messages()), 1)
        self.assertEqual(self.world.mailbox("bob@example.org").messages(), [])


class LongDraftTests(SynchronousTestCase):
    def test_resumed_draft_keeps_a_text_longer_than_the_page_shows(self) -> None:
        """A draft's text over TEXT_SHOWN_LIMIT characters comes back whole, not cut for display."""
        from email.message import EmailMessage

        from pymail.web.drafts import resume
        from pymail.web.messages import TEXT_SHOWN_LIMIT

        text = "".join(f"line {n} of a long draft\n" for n in range(TEXT_SHOWN_LIMIT // 10))
        assert len(text) > TEXT_SHOWN_LIMIT
        draft = EmailMessage()
        draft["To"] = "bob@example.org"
        draft["Subject"] = "long"
        draft.set_content(text)
        self.assertEqual(resume(draft.as_bytes()).body, text[:-1])
