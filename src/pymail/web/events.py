"""
Live updates: a server-sent event stream per open folder page, fed by the
same :class:`~pymail.interfaces.IMailboxListener` notifications that IMAP
IDLE uses, so a message delivered over SMTP (or changed over IMAP) shows
up in the browser without a reload.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import attrs
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.web.server import Request as IRequest
from zope.interface import implementer

from pymail.interfaces import IMailbox, IMailboxListener, MailboxChange
from pymail.web.messages import unseen_count

#: Seconds between keep-alive comments (proxies drop silent streams).
KEEPALIVE_SECONDS = 20.0

#: How long the browser waits before reconnecting a dropped stream (ms).
RETRY_MS = 3000

#: Most streams one account may hold open at once (all its sessions
#: together): one per open folder tab, with room to spare.  Each holds a
#: connection and a mailbox listener, so without a bound one signed-in user
#: could hold thousands.
MAX_STREAMS = 20


def event(name: str, data: object) -> bytes:
    """One server-sent event (the data is JSON on one line)."""
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


@implementer(IMailboxListener)
@attrs.define(eq=False)
class EventStream:
    """
    Writes a ``mailbox`` event to one HTTP response for every change of
    one folder, and a keep-alive comment every :data:`KEEPALIVE_SECONDS`.

    :ivar still_valid: asked at every keep-alive; when it says no (the
        session ended or expired) the stream is closed.
    """

    _request: IRequest
    _mailbox: IMailbox
    _clock: IReactorTime
    _still_valid: Callable[[], bool]
    _timer: IDelayedCall | None = None
    closed: bool = False

    def start(self) -> None:
        request = self._request
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-accel-buffering", b"no")
        request.write(f"retry: {RETRY_MS}\n\n".encode())
        request.write(event("hello", self._state()))
        self._mailbox.add_listener(self)
        request.notifyFinish().addBoth(lambda _: self.stop())
        self._schedule()

    def _state(self) -> dict[str, object]:
        return {"folder": self._mailbox.name, "exists": len(self._mailbox.messages()),
                "unseen": unseen_count(self._mailbox)}

    def _schedule(self) -> None:
        self._timer = self._clock.callLater(KEEPALIVE_SECONDS, self._keepalive)

    def _keepalive(self) -> None:
        self._timer = None
        if self.closed:
            return
        if not self._still_valid():
            self._request.write(event("signedout", {}))
            self.stop()
            self._request.finish()
            return
        self._request.write(b": keep-alive\n\n")
        self._schedule()

    def mailbox_changed(self, mailbox: IMailbox, change: MailboxChange) -> None:
        if self.closed:
            return
        data = self._state()
        data.update(kind=change.kind, uids=list(change.uids))
        self._request.write(event("mailbox", data))

    def stop(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._mailbox.remove_listener(self)
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
