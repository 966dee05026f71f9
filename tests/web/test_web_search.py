"""Search across every folder: results name their folder; sender and subject come from the index."""

from __future__ import annotations

import re

from twisted.trial.unittest import SynchronousTestCase

from web_support import make_world, message


def results(html: str) -> list[tuple[str, str]]:
    """(folder, subject) of each result row."""
    return re.findall(r'<td class="folder"><a href="[^"]*">([^<]*)</a></td>.*?'
                      r'<td class="subject"><a href="[^"]*">([^<]*)</a>', html)


class SearchAllTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.world = make_world()
        self.browser = self.world.browser()
        self.browser.sign_in("alice@example.org")
        store = self.world.stores.open_store("alice@example.org", "/nonexistent")
        store.create_mailbox("Projects")
        self.world.reactor.advance(0)
        self.world.deliver("alice@example.org", message("Budget in the inbox", "x",
                                                        sender="carol@corp.example"))
        self.projects = self.world.mailbox("alice@example.org", "Projects")
        self.projects.append(message("Budget for projects", "y", sender="dave@corp.example"),
                             ())
        self.projects.append(message("Unrelated", "budget in the text only"), ())
        self.world.reactor.advance(0)

    def test_results_from_every_folder_name_their_folder(self) -> None:
        """A search of every folder finds matches in INBOX and Projects, each labelled."""
        page = self.browser.get("/search?folder=&field=subject&q=BUDGET").text
        self.assertIn("Search all folders", page)
        self.assertEqual(results(page), [("INBOX", "Budget in the inbox"),
                                         ("Projects", "Budget for projects")])
        self.assertIn('href="/mail/Projects/1"', page)
        self.assertEqual(
            results(self.browser.get("/search?folder=&field=from&q=corp.example").text),
            [("INBOX", "Budget in the inbox"), ("Projects", "Budget for projects")])
        self.assertEqual(
            results(self.browser.get("/search?folder=&field=text&q=only").text),
            [("Projects", "Unrelated")])

    def test_sender_and_subject_search_does_not_open_messages(self) -> None:
        """Once the folders were listed, a sender or subject search reads no message file."""
        for name in ("INBOX", "Projects"):
            self.browser.get(f"/mail/{name}")  # the list computes the index's summaries
        opened: list[int] = []
        for name in ("INBOX", "Projects"):
            box = self.world.mailbox("alice@example.org", name)
            read = box.read
            box.read = lambda uid, read=read: opened.append(uid) or read(uid)  # type: ignore[method-assign]
        page = self.browser.get("/search?folder=&field=subject&q=budget").text
        self.assertEqual(len(results(page)), 2)
        self.browser.get("/search?folder=&field=from&q=dave")
        self.assertEqual(opened, [])
        self.browser.get("/search?folder=&field=text&q=budget")
        self.assertNotEqual(opened, [])  # the text search does read them: the probe works

    def test_search_form_offers_all_folders(self) -> None:
        """The search box's folder choice has the current folder and "All folders"."""
        page = self.browser.get("/mail/Projects").text
        self.assertIn('<option value="Projects">Projects</option>'
                      '<option value="">All folders</option>', page)


class MaildirIndexSearchTests(SynchronousTestCase):
    def test_summaries_come_from_the_maildir_index(self) -> None:
        """Over Maildir, a later process's subject search reads the index, not the messages."""
        from twisted.internet.defer import Deferred, succeed

        from pymail.storage.maildir import MaildirStoreFactory
        from pymail.testing import ThreadlessReactor
        from pymail.web.messages import SEARCH_BATCH, FolderOrder, SummaryCache, search

        data = self.mktemp()
        count = SEARCH_BATCH * 2 + 7  # several batches

        def inbox() -> object:
            store = MaildirStoreFactory(ThreadlessReactor()).open_store("alice@example.org",
                                                                        data)
            return self.successResultOf(store.get_mailbox("INBOX"))

        def subjects(box: object) -> list[int]:
            found = self.successResultOf(Deferred.fromCoroutine(search(
                box, FolderOrder().newest_first(box), "subject", "number 1",  # type: ignore[arg-type]
                SummaryCache(), lambda: succeed(None))))
            return sorted(row.info.uid for row in found)

        box = inbox()
        for n in range(count):
            self.successResultOf(box.append(message(f"number {n}", "x"), ()))  # type: ignore[attr-defined]
        expected = [n + 1 for n in range(count) if str(n).startswith("1")]
        self.assertEqual(subjects(box), expected)  # computes and keeps the summaries
        again = inbox()  # as a restarted server would open it
        opened: list[int] = []
        read = again.read  # type: ignore[attr-defined]
        again.read = lambda uid: opened.append(uid) or read(uid)  # type: ignore[attr-defined]
        self.assertEqual(subjects(again), expected)
        self.assertEqual(opened, [])


class SearchBoxTests(SynchronousTestCase):
    def test_results_page_keeps_the_search_as_sent(self) -> None:
        """On the results page the search box still holds the words, the field and the scope."""
        browser = make_world().browser()
        browser.sign_in("alice@example.org")
        page = browser.get("/search?folder=&field=subject&q=%22quoted%22").text
        self.assertIn('<option value="" selected>All folders</option>', page)
        self.assertIn('<option value="subject" selected>subject</option>', page)
        self.assertIn('value="&quot;quoted&quot;"><button>Search</button>', page)
        page = browser.get("/search?folder=INBOX&field=text&q=x").text
        self.assertIn('<option value="">All folders</option>', page)
        self.assertIn('<option value="text" selected>text</option>', page)


class SearchCostTests(SynchronousTestCase):
    """One search request cannot pin the reactor or ask for unbounded work."""

    def test_text_search_returns_to_the_reactor_every_few_megabytes(self) -> None:
        """Large messages make a text search pause well before a batch of 100 is read."""
        from twisted.internet.defer import Deferred, succeed

        from pymail.web.messages import SEARCH_PAUSE_BYTES, FolderOrder, SummaryCache, search

        world = make_world()
        box = world.mailbox("alice@example.org")
        big = "word " * (SEARCH_PAUSE_BYTES // 5 + 1)
        for n in range(6):
            box.append(message(f"big {n}", big), ())
        world.reactor.advance(0)
        pauses: list[None] = []

        def pause() -> object:
            pauses.append(None)
            return succeed(None)

        found = self.successResultOf(Deferred.fromCoroutine(search(
            box, FolderOrder().newest_first(box), "text", "nothing like this", SummaryCache(),
            pause)))
        self.assertEqual(found, [])
        self.assertGreaterEqual(len(pauses), 5)  # about one per message this size

    def test_overlong_query_is_refused(self) -> None:
        """A query past MAX_QUERY characters gets 400 saying the limit; a long one still works."""
        from pymail.web.messages import MAX_QUERY

        world = make_world()
        browser = world.browser()
        browser.sign_in("alice@example.org")
        reply = browser.get("/search?folder=&field=text&q=" + "a" * (MAX_QUERY + 1))
        self.assertEqual(reply.status, 400)
        self.assertIn(f"at most {MAX_QUERY} characters", reply.text)
        ok = browser.get("/search?folder=&field=text&q=" + ".*" * (MAX_QUERY // 2))
        self.assertEqual(ok.status, 200)


class SearchLifetimeTests(SynchronousTestCase):
    """A long search stops when its browser leaves, and one account runs one at a time."""

    def setUp(self) -> None:
        from pymail.web.messages import SEARCH_BATCH

        self.world = make_world()
        self.browser = self.world.browser()
        self.browser.sign_in("alice@example.org")
        self.box = self.world.mailbox("alice@example.org")
        self.total = SEARCH_BATCH * 3
        for n in range(self.total):
            self.box.append(message(f"m {n}", "plain text"), ())
        self.world.reactor.advance(0)
        self.opened: list[int] = []
        read = self.box.read
        self.box.read = lambda uid: self.opened.append(uid) or read(uid)  # type: ignore[method-assign]

    def start_search(self) -> tuple[object, object]:
        """Send a text search and leave it at its first pause; the channel and transport."""
        channel, transport = self.browser.connect()
        cookie = "; ".join(f"{k}={v}" for k, v in self.browser.cookies.items())
        channel.dataReceived(b"GET /search?folder=&field=text&q=absent HTTP/1.1\r\n"
                             b"Host: 127.0.0.1:8080\r\nCookie: " + cookie.encode() + b"\r\n\r\n")
        return channel, transport

    def test_search_stops_when_the_browser_goes(self) -> None:
        """Once the connection is lost the search reads no further message."""
        from twisted.internet.error import ConnectionDone
        from twisted.python.failure import Failure

        from pymail.web.messages import SEARCH_BATCH

        channel, _ = self.start_search()
        self.assertEqual(len(set(self.opened)), SEARCH_BATCH)  # up to its first pause
        channel.connectionLost(Failure(ConnectionDone("tab closed")))  # type: ignore[attr-defined]
        self.world.reactor.advance(0)
        self.assertEqual(len(set(self.opened)), SEARCH_BATCH)  # it read no more
        self.assertEqual(self.browser.get("/search?folder=&field=subject&q=m").status, 200)

    def test_one_search_at_a_time_per_account(self) -> None:
        """A second search while one is running gets 429; after it ends, searching works."""
        other = self.world.browser()
        other.sign_in("alice@example.org")
        _, transport = self.start_search()
        self.assertEqual(transport.value(), b"")  # type: ignore[attr-defined]
        busy = other.get("/search?folder=INBOX&field=subject&q=m")  # (runs the first on)
        self.assertEqual(busy.status, 429)
        self.assertIn("still running", busy.text)
        self.assertIn(b"200 OK", transport.value())  # type: ignore[attr-defined]
        self.assertEqual(len(set(self.opened)), self.total)
        self.assertEqual(other.get("/search?folder=INBOX&field=subject&q=m").status, 200)
