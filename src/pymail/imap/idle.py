"""
IDLE (RFC 2177): the client waits; the server pushes EXISTS, EXPUNGE (or
VANISHED) and FETCH FLAGS as changes happen, until the client sends DONE.

Changes made through this process (SMTP delivery, another session's
APPEND, STORE or EXPUNGE) reach the session at once through the mailbox
listener.  Changes made by other programs (a Maildir written by procmail
or Dovecot's LDA) are found by :class:`RefreshPoller`, which calls
``mailbox.refresh()`` on a timer while anyone idles on that mailbox, one
timer per mailbox however many sessions idle on it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from pymail.imap.commands import Command
from pymail.imap.dispatch import Reply
from pymail.imap.errors import bad
from pymail.interfaces import IMailbox

if TYPE_CHECKING:
    from pymail.imap.server import IMAPServerProtocol

log = Logger()

#: Seconds between looks for changes by other programs while idling.
POLL_INTERVAL = 0.5


@attrs.define
class RefreshPoller:
    """
    Refreshes each mailbox somebody idles on, every ``interval`` seconds.

    :ivar interval: seconds between refreshes; 0 turns polling off.
    """

    _reactor: IReactorTime
    interval: float = POLL_INTERVAL
    _loops: dict[int, tuple[IMailbox, LoopingCall, int]] = attrs.Factory(dict)

    def watch(self, mailbox: IMailbox) -> None:
        """One more session idles on ``mailbox``."""
        if self.interval <= 0:
            return
        key = id(mailbox)
        entry = self._loops.get(key)
        if entry is not None:
            self._loops[key] = (mailbox, entry[1], entry[2] + 1)
            return
        loop = LoopingCall(self._refresh, mailbox)
        loop.clock = self._reactor
        self._loops[key] = (mailbox, loop, 1)
        loop.start(self.interval, now=False).addErrback(
            lambda f: log.failure("IDLE refresh loop stopped", f)
        )

    def unwatch(self, mailbox: IMailbox) -> None:
        """A session stopped idling on ``mailbox``."""
        key = id(mailbox)
        entry = self._loops.get(key)
        if entry is None:
            return
        if entry[2] > 1:
            self._loops[key] = (mailbox, entry[1], entry[2] - 1)
            return
        del self._loops[key]
        if entry[1].running:
            entry[1].stop()

    @property
    def watched(self) -> int:
        """How many mailboxes are being polled."""
        return len(self._loops)

    def _refresh(self, mailbox: IMailbox) -> Deferred[None]:
        d: Deferred[None] = mailbox.refresh()

        def failed(f: object) -> None:
            # Keep polling: a file system hiccup must not end push for good.
            log.warn("refreshing {name} while idling failed: {f}", name=mailbox.name, f=f)

        return d.addErrback(failed)


async def handle_idle(conn: IMAPServerProtocol, cmd: Command) -> Reply | None:
    view = conn.selected
    if view is not None:
        for line in view.updates(True):
            conn.writer.add(line)
    conn.writer.add(b"+ idling\r\n")
    conn.writer.flush()
    if view is not None:
        view.on_change = conn.push_updates
        conn.poller.watch(view.mailbox)
    conn.idling = True
    try:
        line = await conn.read_line()
    finally:
        conn.idling = False
        if view is not None:
            view.on_change = None
            conn.poller.unwatch(view.mailbox)
    if line.upper() != b"DONE":
        raise bad("expected DONE to end IDLE")
    return Reply("IDLE terminated")
