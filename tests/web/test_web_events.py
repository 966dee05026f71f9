"""Live updates: server-sent events from the mailbox listeners IMAP IDLE uses."""

from __future__ import annotations

import json

from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from pymail.interfaces import IMailboxListener
from pymail.web.events import KEEPALIVE_SECONDS, EventStream
from web_support import make_world, message


def events(raw: bytes) -> list[tuple[str, dict[str, object]]]:
    found = []
    for block in raw.decode().split("\n\n"):
        name = data = None
        for line in block.splitlines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
        if name is not None:
            found.append((name, data))
    return found


class EventTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.world = make_world()
        self.browser = self.world.browser()
        self.browser.sign_in("alice@example.org")
        self.box = self.world.mailbox("alice@example.org")

    def test_new_message_is_announced(self) -> None:
        """A delivery to the open folder sends a mailbox event with the new UID and counts."""
        reply, transport = self.browser.open("GET", "/events/INBOX")
        self.assertIn(b"content-type: text/event-stream", transport.value().lower())
        self.world.deliver("alice@example.org", message("live"))
        found = events(transport.value().split(b"\r\n\r\n", 1)[1].replace(b"\r\n", b"\n"))
        self.assertEqual(found[0], ("hello", {"folder": "INBOX", "exists": 0, "unseen": 0}))
        self.assertEqual(found[1], ("mailbox", {"folder": "INBOX", "exists": 1, "unseen": 1,
                                                "kind": "added", "uids": [1]}))

    def test_closed_stream_stops_listening(self) -> None:
        """When the browser goes away the listener is removed from the mailbox."""
        reply, transport = self.browser.open("GET", "/events/INBOX")
        listeners = self.box._view._listeners
        self.assertEqual(len(listeners), 1)
        verifyObject(IMailboxListener, listeners[0])
        stream = listeners[0]
        stream._request.channel.connectionLost(Failure(ConnectionDone("browser closed")))
        self.assertEqual(self.box._view._listeners, [])
        self.world.reactor.advance(KEEPALIVE_SECONDS * 2)

    def test_keepalive_and_sign_out_end(self) -> None:
        """Keep-alives flow; once the session has expired the stream says so and closes."""
        reply, transport = self.browser.open("GET", "/events/INBOX")
        self.world.reactor.advance(KEEPALIVE_SECONDS)
        self.assertIn(b": keep-alive", transport.value())
        self.world.reactor.advance(700)
        self.assertIn(b"event: signedout", transport.value())
        self.assertEqual(self.box._view._listeners, [])

    def test_stream_needs_a_session(self) -> None:
        """Without a session the stream is not opened."""
        reply = self.world.browser().get("/events/INBOX")
        self.assertEqual(reply.status, 303)
        self.assertEqual(self.box._view._listeners, [])


class StreamLimitTests(SynchronousTestCase):
    def test_one_account_cannot_hold_unbounded_streams(self) -> None:
        """Past MAX_STREAMS streams an account (any session) gets 429; closing one frees a slot."""
        from pymail.web.events import MAX_STREAMS

        world = make_world()
        box = world.mailbox("alice@example.org")
        browsers = [world.browser() for _ in range(2)]
        for b in browsers:
            b.sign_in("alice@example.org")
        transports = []
        for n in range(MAX_STREAMS):
            _, transport = browsers[n % 2].open("GET", "/events/INBOX")
            transports.append(transport)
        self.assertEqual(len(box._view._listeners), MAX_STREAMS)
        refused = browsers[0].get("/events/INBOX")
        self.assertEqual(refused.status, 429)
        self.assertIn("live", refused.text)
        self.assertEqual(len(box._view._listeners), MAX_STREAMS)
        bob = world.browser()
        bob.sign_in("bob@example.org")
        self.assertIn(b"text/event-stream", bob.open("GET", "/events/INBOX")[1].value())
        stream = box._view._listeners[0]
        stream._request.channel.connectionLost(Failure(ConnectionDone("tab closed")))
        self.assertIn(b"text/event-stream",
                      browsers[1].open("GET", "/events/INBOX")[1].value())
        self.assertEqual(len(box._view._listeners), MAX_STREAMS)


class EventStreamTests(SynchronousTestCase):
    def test_stream_is_a_listener(self) -> None:
        """EventStream provides IMailboxListener."""
        world = make_world()
        box = world.mailbox("alice@example.org")
        from twisted.web.test.requesthelper import DummyRequest

        request = DummyRequest([b""])
        stream = EventStream(request, box, world.reactor, lambda: True)
        self.assertTrue(verifyObject(IMailboxListener, stream))
