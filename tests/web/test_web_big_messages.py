"""
A huge message cannot stall the server: taking it apart runs in the thread
pool, and the text shown of it is bounded while its download stays whole.
"""

from __future__ import annotations

import email.policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from pymail.testing import ThreadlessReactor
from pymail.web.app import MAX_PARSES
from pymail.web.messages import (
    HTML_SHOWN_LIMIT,
    TEXT_SHOWN_LIMIT,
    attachment,
    parse,
    take_apart,
)
from web_support import make_world, message, parse_response

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "corpus" / "cpython-email"

#: Megabytes of empty lines, the reviewer's case scaled down for a unit test.
EMPTY_LINES = 1024 * 1024

BIG_HEAD = (b"From: Friend <friend@example.net>\r\nTo: alice@example.org\r\n"
            b"Subject: Huge\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"\r\n")


class HeldPool:
    """A thread pool whose work waits until the test runs it, as a busy worker would."""

    def __init__(self) -> None:
        self.held: list[tuple[Any, Any, tuple[Any, ...], dict[str, Any]]] = []

    def callInThreadWithCallback(self, onResult: Any, func: Any, *args: Any, **kw: Any) -> None:
        self.held.append((onResult, func, args, kw))

    def callInThread(self, func: Any, *args: Any, **kw: Any) -> None:
        self.callInThreadWithCallback(lambda ok, result: None, func, *args, **kw)

    def run_all(self) -> None:
        while self.held:
            onResult, func, args, kw = self.held.pop(0)
            onResult(True, func(*args, **kw))


class HeldReactor(ThreadlessReactor):
    """A ThreadlessReactor whose pool holds work while ``holding`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.held_pool = HeldPool()
        self.holding = False

    def getThreadPool(self) -> Any:
        return self.held_pool if self.holding else super().getThreadPool()


class OffTheReactorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = HeldReactor()
        self.world = make_world(reactor=self.reactor)
        self.big = self.world.deliver("alice@example.org",
                                      BIG_HEAD + b"\r\n" * EMPTY_LINES)
        self.world.deliver("bob@example.org", message("Small one"))
        self.alice = self.world.browser()
        self.alice.sign_in("alice@example.org")
        self.bob = self.world.browser()
        self.bob.sign_in("bob@example.org")

    def request(self, path: str) -> Any:
        channel, transport = self.alice.connect()
        cookie = "; ".join(f"{k}={v}" for k, v in self.alice.cookies.items())
        channel.dataReceived(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
                             f"Cookie: {cookie}\r\n\r\n".encode())
        self.reactor.advance(0)
        return transport

    def test_viewing_a_huge_message_parses_it_in_the_pool(self) -> None:
        """The message page waits on the pool, and another user's page is answered meanwhile."""
        self.reactor.holding = True
        transport = self.request(f"/mail/INBOX/{self.big}")
        self.assertEqual(transport.value(), b"")  # nothing parsed on the reactor
        self.assertEqual(len(self.reactor.held_pool.held), 1)
        listing = self.bob.get("/mail/INBOX")
        self.assertEqual(listing.status, 200)
        self.assertIn("Small one", listing.text)
        self.reactor.holding = False
        self.reactor.held_pool.run_all()
        self.reactor.advance(0)
        reply = parse_response(transport.value())
        self.assertEqual(reply.status, 200)
        self.assertIn("Huge", reply.text)

    def test_at_most_max_parses_messages_are_taken_apart_at_once(self) -> None:
        """Views beyond MAX_PARSES wait their turn instead of filling the shared pool."""
        self.reactor.holding = True
        transports = [self.request(f"/mail/INBOX/{self.big}") for _ in range(MAX_PARSES + 2)]
        self.assertEqual(len(self.reactor.held_pool.held), MAX_PARSES)
        while self.reactor.held_pool.held:
            self.reactor.held_pool.run_all()
            self.reactor.advance(0)
        self.reactor.holding = False
        self.assertEqual([parse_response(t.value()).status for t in transports],
                         [200] * (MAX_PARSES + 2))

    def test_downloads_frame_and_replies_also_wait_on_the_pool(self) -> None:
        """Part downloads, the HTML frame and a reply's form parse the message in the pool too."""
        for path in (f"/mail/INBOX/{self.big}/part/0", f"/mail/INBOX/{self.big}/html",
                     f"/compose?reply=INBOX/{self.big}",
                     f"/compose?reply=INBOX/{self.big}&mode=forward"):
            self.reactor.holding = True
            transport = self.request(path)
            self.assertEqual(transport.value(), b"", path)
            self.assertTrue(self.reactor.held_pool.held, path)
            self.reactor.holding = False
            self.reactor.held_pool.run_all()
            self.reactor.advance(0)
            self.assertEqual(parse_response(transport.value()).status, 200, path)


class BoundedTextTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.world = make_world()
        self.alice = self.world.browser()
        self.alice.sign_in("alice@example.org")

    def test_huge_text_is_shown_truncated_and_downloads_whole(self) -> None:
        """Text over the limit is cut with a link, and that link gives every byte back."""
        line = b"0123456789 abcdefghij ABCDEFGHIJ \xc3\xa9t\xc3\xa9\r\n"
        body = line * (3 * TEXT_SHOWN_LIMIT // len(line))
        raw = BIG_HEAD + body
        uid = self.world.deliver("alice@example.org", raw)
        page = self.alice.get(f"/mail/INBOX/{uid}")
        self.assertEqual(page.status, 200)
        self.assertLess(len(page.body), TEXT_SHOWN_LIMIT * 2)
        self.assertIn("0123456789 abcdefghij", page.text)
        link = f"/mail/INBOX/{uid}/part/0"
        self.assertIn(f'href="{link}"', page.text)
        self.assertIn("shortened", page.text)
        whole = self.alice.get(link)
        self.assertEqual(whole.status, 200)
        self.assertEqual(whole.body, body)
        self.assertEqual(self.alice.get(f"/mail/INBOX/{uid}/raw").body, raw)

    def test_text_within_the_limit_is_shown_whole(self) -> None:
        """A message under the limit shows all its text and no shortening notice."""
        uid = self.world.deliver("alice@example.org", message("Short", "All of it."))
        page = self.alice.get(f"/mail/INBOX/{uid}")
        self.assertIn("All of it.", page.text)
        self.assertNotIn("shortened", page.text)


class QuickParseTests(SynchronousTestCase):
    def test_quick_parse_matches_the_full_parser_on_the_corpus(self) -> None:
        """Every corpus message parses to the same headers, structure and decoded parts."""
        files = sorted(CORPUS.glob("*.txt"))
        self.assertGreater(len(files), 40)
        quick = 0
        for path in files:
            wire = path.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            full = BytesParser(policy=email.policy.default).parsebytes(wire)
            ours = parse(wire)
            quick += not ours.is_multipart() and ours.get_content_maintype() != "message"
            self.assertEqual(ours.items(), full.items(), path.name)
            self.assertEqual(ours.as_bytes(), full.as_bytes(), path.name)
            theirs = [(p.get_content_type(), p.get_payload(decode=True)) for p in full.walk()]
            mine = [(p.get_content_type(), p.get_payload(decode=True)) for p in ours.walk()]
            self.assertEqual(mine, theirs, path.name)
        self.assertGreater(quick, 10)  # the quick path was taken, not only the fallback

    def test_huge_single_part_text_is_taken_apart_quickly(self) -> None:
        """Megabytes of empty lines in a single part come back whole from take_apart."""
        body = b"\r\n" * EMPTY_LINES
        parsed = take_apart(BIG_HEAD + body)
        self.assertTrue(parsed.text_truncated)
        self.assertEqual(parsed.text, "\n" * TEXT_SHOWN_LIMIT)
        self.assertEqual(attachment(BIG_HEAD + body, 0)[1], body)


class BoundedHTMLTests(SynchronousTestCase):
    def test_huge_html_is_offered_for_download_not_rendered(self) -> None:
        """HTML over the limit is an attachment that downloads whole; the text is shown."""
        world = make_world()
        alice = world.browser()
        alice.sign_in("alice@example.org")
        html = b"<p>big</p>\r\n" * (HTML_SHOWN_LIMIT // 10)
        raw = (b"From: Friend <friend@example.net>\r\nTo: alice@example.org\r\n"
               b"Subject: Big HTML\r\nMIME-Version: 1.0\r\n"
               b'Content-Type: multipart/alternative; boundary="b"\r\n\r\n'
               b"--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThe short text.\r\n"
               b"--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + html
               + b"\r\n--b--\r\n")
        uid = world.deliver("alice@example.org", raw)
        page = alice.get(f"/mail/INBOX/{uid}")
        self.assertEqual(page.status, 200)
        self.assertIn("The short text.", page.text)
        self.assertIn("too long to show", page.text)
        self.assertNotIn("<iframe", page.text)
        link = f"/mail/INBOX/{uid}/part/2"
        self.assertIn(link, page.text)
        whole = alice.get(link)
        self.assertEqual(whole.status, 200)
        self.assertEqual(whole.body, html)
