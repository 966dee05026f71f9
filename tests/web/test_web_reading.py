"""Folders, the paged list, a message, attachments, actions and search; and IDOR."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from twisted.trial.unittest import SynchronousTestCase

from pymail.web.messages import PAGE_SIZE, FolderOrder, SummaryCache, page_of
from web_support import make_world, message

ATTACHED = (
    b"From: Friend <friend@example.net>\r\nTo: alice@example.org\r\nSubject: files\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n"
    b"--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nSee attached.\r\n"
    b"--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; "
    b"filename=\"report 2026.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    b"JVBERi0xLjQKJcOkw7zDtsOfCg==\r\n"
    b"--b\r\nContent-Type: text/html\r\nContent-Disposition: attachment; filename=\"page.html\"\r\n"
    b"\r\n<script>alert(1)</script>\r\n--b--\r\n"
)


def rows(html: str) -> list[str]:
    return re.findall(r'<tr class="(?:un)?read" data-uid="([0-9]+)"', html)


class ListTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.world = make_world()
        self.browser = self.world.browser()
        self.browser.sign_in("alice@example.org")

    def test_list_is_paged_newest_first(self) -> None:
        """120 messages: page 0 shows the 50 newest, page 2 the 20 oldest."""
        for n in range(120):
            self.world.deliver("alice@example.org", message(f"number {n}"))
        first = self.browser.get("/mail/INBOX")
        self.assertEqual(rows(first.text), [str(u) for u in range(120, 70, -1)])
        self.assertIn("1&ndash;50 of 120", first.text)
        last = self.browser.get("/mail/INBOX?page=2")
        self.assertEqual(rows(last.text), [str(u) for u in range(20, 0, -1)])
        self.assertEqual(rows(self.browser.get("/mail/INBOX?page=99").text), rows(last.text))

    def test_order_follows_internaldate(self) -> None:
        """A message appended with an older INTERNALDATE sorts below newer ones."""
        box = self.world.mailbox("alice@example.org")
        now = datetime(2026, 11, 26, tzinfo=UTC)
        box.append(message("new"), (), now)
        box.append(message("old"), (), now - timedelta(days=3))
        self.world.reactor.advance(0)
        order = FolderOrder().newest_first(box)
        self.assertEqual(order, [1, 2])
        page = page_of(box, order, 0, SummaryCache())
        self.assertEqual([r.summary.subject for r in page.rows], ["new", "old"])
        self.assertEqual(len(page.rows), 2)
        self.assertEqual(PAGE_SIZE, 50)

    def test_folder_list_counts_unread(self) -> None:
        """The folder list shows each folder's unread count, updated on reading."""
        self.world.deliver("alice@example.org", message("a"))
        self.world.deliver("alice@example.org", message("b"))
        self.assertIn('INBOX</a><span class="count">2</span>', self.browser.get("/mail/INBOX").text)
        self.browser.get("/mail/INBOX/1")
        self.assertIn('INBOX</a><span class="count">1</span>', self.browser.get("/mail/INBOX").text)

    def test_summary_escapes_header_text(self) -> None:
        """A subject and sender with markup are shown as text."""
        self.world.deliver("alice@example.org", message(
            "<img src=x onerror=alert(1)>", sender="a@example.net"))
        html = self.browser.get("/mail/INBOX").text
        self.assertIn("&lt;img src=x onerror=alert(1)&gt;", html)
        self.assertNotIn("<img src=x", html)


class MessageTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.world = make_world()
        self.browser = self.world.browser()
        self.browser.sign_in("alice@example.org")
        self.box = self.world.mailbox("alice@example.org")

    def test_view_shows_text_and_marks_seen(self) -> None:
        """Opening a message shows its text part and sets \\Seen."""
        self.world.deliver("alice@example.org", message(body="Line one & <two>"))
        html = self.browser.get("/mail/INBOX/1").text
        self.assertIn('<pre class="text-body">Line one &amp; &lt;two&gt;\n</pre>', html)
        self.assertIn("\\Seen", self.box.info(1).flags)

    def test_attachments_listed_and_downloadable(self) -> None:
        """Attachments are listed; a download has the decoded bytes, the name and nosniff."""
        self.world.deliver("alice@example.org", ATTACHED)
        html = self.browser.get("/mail/INBOX/1").text
        self.assertIn("report 2026.pdf", html)
        self.assertIn("/mail/INBOX/1/part/2/report%202026.pdf", html)
        pdf = self.browser.get("/mail/INBOX/1/part/2/report%202026.pdf")
        self.assertEqual(pdf.body, b"%PDF-1.4\n%\xc3\xa4\xc3\xbc\xc3\xb6\xc3\x9f\n")
        self.assertEqual(pdf.header("content-type"), "application/pdf")
        self.assertEqual(pdf.header("content-disposition"),
                         "attachment; filename=\"report 2026.pdf\"; "
                         "filename*=UTF-8''report%202026.pdf")
        self.assertEqual(pdf.header("x-content-type-options"), "nosniff")
        page = self.browser.get("/mail/INBOX/1/part/3/page.html")
        self.assertEqual(page.header("content-type"), "application/octet-stream")
        self.assertTrue(page.header("content-disposition").startswith("attachment;"))
        self.assertEqual(self.browser.get("/mail/INBOX/1/part/0").status, 404)
        self.assertEqual(self.browser.get("/mail/INBOX/1/part/9").status, 404)

    def test_actions_flag_read_move_delete(self) -> None:
        """Mark unread, flag, move to another folder, delete to Trash, then purge from Trash."""
        for n in range(3):
            self.world.deliver("alice@example.org", message(f"m{n}"))
        csrf = self.browser.csrf()

        def act(folder: str, action: str, uids: list[int], **extra: str) -> None:
            reply = self.browser.post(f"/mail/{folder}/actions", {
                "csrf": csrf, "action": action, "uid": [str(u) for u in uids], **extra})
            self.assertEqual(reply.status, 303, reply.text)

        act("INBOX", "read", [1, 2])
        act("INBOX", "flag", [2])
        act("INBOX", "unread", [1])
        self.assertEqual(self.box.info(1).flags, frozenset())
        self.assertEqual(self.box.info(2).flags, {"\\Seen", "\\Flagged"})
        original = self.box.read(2)
        self.world.stores.open_store("alice@example.org", "").create_mailbox("Work")
        act("INBOX", "move", [2], target="Work")
        work = self.world.mailbox("alice@example.org", "Work")
        self.assertEqual([i.flags for i in work.messages()], [{"\\Seen", "\\Flagged"}])
        self.assertEqual(work.read(work.messages()[0].uid), original)
        self.assertEqual([i.uid for i in self.box.messages()], [1, 3])
        act("INBOX", "delete", [3])
        trash = self.world.mailbox("alice@example.org", "Trash")
        self.assertEqual(len(trash.messages()), 1)
        self.assertEqual([i.uid for i in self.box.messages()], [1])
        act("Trash", "delete", [trash.messages()[0].uid])
        self.assertEqual(len(trash.messages()), 0)

    def test_search_by_sender_subject_and_text(self) -> None:
        """Search finds by From (name or address), Subject and body text, case-insensitively."""
        self.world.deliver("alice@example.org", message("Quarterly report", "numbers inside",
                                                        sender="carol@corp.example"))
        self.world.deliver("alice@example.org", message("Lunch", "Pizza at noon?"))

        def found(field: str, q: str) -> list[str]:
            return rows(self.browser.get(f"/search?folder=INBOX&field={field}&q={q}").text)

        self.assertEqual(found("from", "CORP.example"), ["1"])
        self.assertEqual(found("from", "friend@EXAMPLE.net"), ["2"])
        self.assertEqual(found("from", "friend"), ["2", "1"])
        self.assertEqual(found("subject", "quarterly"), ["1"])
        self.assertEqual(found("text", "pizza"), ["2"])
        self.assertEqual(found("text", "nothing-like-this"), [])
        self.assertEqual(self.browser.get("/search?folder=INBOX&field=body&q=x").status, 400)


class IDORTests(SynchronousTestCase):
    """A user can never reach another user's mail by changing an id."""

    def setUp(self) -> None:
        self.world = make_world()
        self.world.deliver("alice@example.org", ATTACHED)
        self.world.stores.open_store("alice@example.org", "").create_mailbox("Private")
        self.bob = self.world.browser()
        self.bob.sign_in("bob@example.org")

    def test_other_users_uid_is_not_found(self) -> None:
        """Bob asking for UID 1 (Alice's message) gets 404 on every message URL."""
        for path in ("/mail/INBOX/1", "/mail/INBOX/1/html", "/mail/INBOX/1/raw",
                     "/mail/INBOX/1/part/2", "/compose?reply=INBOX/1",
                     "/compose?reply=INBOX/1&mode=forward"):
            reply = self.bob.get(path)
            self.assertEqual(reply.status, 404, path)
            self.assertNotIn("See attached", reply.text)

    def test_other_users_folder_is_not_found(self) -> None:
        """Alice's folder names, and path tricks, do not open anything for Bob."""
        for path in ("/mail/Private", "/mail/..%2Falice%40example.org", "/mail/%2E%2E",
                     "/mail/alice@example.org", "/mail/INBOX%2F..%2F..", "/events/Private"):
            self.assertEqual(self.bob.get(path).status, 404, path)

    def test_actions_cannot_touch_other_users_mail(self) -> None:
        """Bob's actions on UID 1 change nothing in Alice's INBOX."""
        box = self.world.mailbox("alice@example.org")
        csrf = self.bob.csrf()
        for action in ("flag", "delete"):
            self.bob.post("/mail/INBOX/actions", {"csrf": csrf, "action": action, "uid": "1"})
        self.assertEqual(box.info(1).flags, frozenset())
        self.assertEqual(len(box.messages()), 1)

    def test_reply_cannot_forward_other_users_mail(self) -> None:
        """A forged compose POST naming Alice's message sends nothing of it."""
        reply = self.bob.post_multipart("/compose", {
            "csrf": self.bob.csrf(), "to": "bob@example.org", "subject": "x", "body": "y",
            "reply": "INBOX/1", "mode": "forward"})
        self.assertEqual(reply.status, 400)  # Bob has no INBOX/1: back to his form
        self.assertIn("no longer there", reply.text)
        self.assertEqual(len(self.world.mailbox("bob@example.org").messages()), 0)


class FolderOrderTests(SynchronousTestCase):
    def test_order_is_kept_right_across_changes(self) -> None:
        """New mail on top, older INTERNALDATEs sorted in, expunges dropped: as a full sort."""
        world = make_world()
        box = world.mailbox("alice@example.org")
        order = FolderOrder()
        base = datetime(2026, 11, 1, tzinfo=UTC)

        def append(days: int) -> None:
            box.append(message(f"d{days}"), (), base + timedelta(days=days))
            world.reactor.advance(0)

        def full() -> list[int]:
            ranked = sorted(box.messages(), key=lambda i: (i.internaldate, i.uid), reverse=True)
            return [i.uid for i in ranked]

        for days in (1, 2, 3):
            append(days)
        self.assertEqual(order.newest_first(box), full())
        append(5)  # newest: goes on top
        append(5)  # same time, higher UID: on top
        self.assertEqual(order.newest_first(box), full())
        append(0)  # older than everything: a full sort places it
        self.assertEqual(order.newest_first(box), full())
        box.set_flags([2], ["\\Deleted"], "add")
        box.expunge([2])
        append(9)
        world.reactor.advance(0)
        self.assertEqual(order.newest_first(box), full())
        self.assertEqual(order.newest_first(box)[0], 7)
        box.set_flags([3], ["\\Deleted"], "add")
        box.expunge([3])
        append(10)
        append(11)
        world.reactor.advance(0)
        self.assertEqual(order.newest_first(box), full())
        self.assertNotIn(3, order.newest_first(box))
