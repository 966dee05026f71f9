"""
pymail's IMAP4rev1 server protocol (RFC 3501).

:class:`IMAPFactory` builds one :class:`IMAPServerProtocol` per connection.
The protocol reads commands with :class:`~pymail.imap.reader.LiteralReader`,
parses them with the grammar in :mod:`pymail.imap.commands`, and runs them
through a :class:`~pymail.imap.dispatch.CommandTable` strictly one at a
time: while a handler waits for storage or the portal, later pipelined
commands stay buffered, unread.

Handlers for each state live in :mod:`pymail.imap.mailboxes` (authenticated
state) and :mod:`pymail.imap.selected` (selected state); the commands valid
in any state and before login are here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from collections.abc import Callable

from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime, ITCPTransport
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from pymail.errors import StorageError
from pymail.imap import access, extensions, idle, mailboxes, selected
from pymail.imap import condstore as condstore_mod
from pymail.imap.cache import DerivedCache
from pymail.imap.commands import (
    Command,
    no_args,
    parse_authenticate,
    parse_login,
)
from pymail.imap.dispatch import (
    ANY_STATE,
    AUTHENTICATED,
    NOT_AUTHENTICATED,
    CommandSpec,
    CommandTable,
    Reply,
    State,
)
from pymail.imap.errors import CommandFailed, reply_for_storage_error
from pymail.imap.idle import RefreshPoller
from pymail.imap.parser import Cursor, ParseError
from pymail.imap.reader import LiteralReader
from pymail.imap.responses import ResponseWriter
from pymail.imap.session import RecentTracker, SelectedMailbox
from pymail.interfaces import IMailStore

if TYPE_CHECKING:
    from pymail.tls import ServerTLS

log = Logger()

#: The most a TCP transport sends per reactor wakeup while a long response
#: streams (Twisted's default is 128 KiB).
STREAM_SEND_LIMIT = 1024 * 1024


@implementer(IPushProducer)
class OutputThrottle:
    """
    Back-pressure for long responses (FETCH of many message bodies): while
    registered as the transport's streaming producer, :meth:`drained` waits
    whenever the transport has more queued than its buffer size, so a
    command never holds more than about one batch of output in memory.
    """

    __slots__ = ("paused", "_waiters")

    def __init__(self) -> None:
        self.paused = False
        self._waiters: list[Deferred[None]] = []

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)

    def stopProducing(self) -> None:
        # The connection is gone: let the command finish (writes are dropped).
        self.resumeProducing()

    def drained(self) -> Deferred[None]:
        """Fires at once, or when the transport asks for more output."""
        d: Deferred[None] = Deferred()
        if self.paused:
            self._waiters.append(d)
        else:
            d.callback(None)
        return d


class IMAPServerProtocol(LiteralReader):
    """
    One IMAP connection.

    :ivar state: the RFC 3501 connection state.
    :ivar account: the logged-in account (an :class:`IAccount`), or None.
    :ivar selected: the selected mailbox's session view, or None.
    :ivar writer: where responses go.
    :ivar enabled: extensions the client turned on with ENABLE (or by
        using them: CONDSTORE).
    :ivar idling: an IDLE command is waiting for DONE.
    :ivar tls: what STARTTLS offers, or None.
    :ivar tls_active: STARTTLS succeeded.
    :ivar after_reply: run once, right after the current command's tagged
        reply is written (STARTTLS starts the handshake there).
    """

    # Slots: an idle logged-in connection is mostly this object, and with
    # more than 30 attributes its __dict__ would not share keys (1.6 KB).
    __slots__ = (
        "portal", "reactor", "hostname", "table", "derived_cache", "recent_tracker",
        "preauth_timeout", "idle_timeout", "state", "account", "selected", "_avatar_logout",
        "_timer", "_running", "writer", "poller", "tls", "tls_active",
        "allow_plaintext_on_loopback", "cleartext_auth", "throttle", "enabled", "idling",
        "after_reply", "_line_waiter",
    )

    def __init__(
        self,
        portal: Portal,
        reactor: IReactorTime,
        hostname: str,
        table: CommandTable,
        recent: RecentTracker,
        *,
        max_literal_size: int,
        max_line_length: int,
        preauth_timeout: float,
        idle_timeout: float,
        poller: RefreshPoller | None = None,
        tls: ServerTLS | None = None,
        allow_plaintext_on_loopback: bool = True,
        cleartext_auth: str | None = None,
        throttle: Any = None,
        derived_cache: DerivedCache | None = None,
    ) -> None:
        super().__init__()
        self.portal = portal
        self.reactor = reactor
        self.hostname = hostname
        self.table = table
        self.derived_cache = derived_cache if derived_cache is not None else DerivedCache()
        self.recent_tracker = recent
        self.max_literal_size = max_literal_size
        self.max_line_length = max_line_length
        self.preauth_timeout = preauth_timeout
        self.idle_timeout = idle_timeout
        self.state = State.NOT_AUTHENTICATED
        self.account: Any = None
        self.selected: SelectedMailbox | None = None
        self._avatar_logout: Any = None
        self._timer: IDelayedCall | None = None
        self._running = False
        self.writer: ResponseWriter
        self.poller = poller if poller is not None else RefreshPoller(reactor)
        self.tls = tls
        self.tls_active = False
        self.allow_plaintext_on_loopback = allow_plaintext_on_loopback
        self.cleartext_auth = cleartext_auth
        self.throttle = throttle
        self.enabled: frozenset[str] = frozenset()
        self.idling = False
        self.after_reply: Callable[[], None] | None = None
        self._line_waiter: Deferred[bytes] | None = None

    # -- connection life -------------------------------------------------------

    def connectionMade(self) -> None:
        super().connectionMade()
        assert self.transport is not None
        if ITCPTransport.providedBy(self.transport):
            # Responses are written whole; never hold one back (Nagle).
            self.transport.setTcpNoDelay(True)
        self.writer = ResponseWriter(self.transport)
        self.writer.untagged(
            b"OK [CAPABILITY " + self.capabilities().encode("ascii") + b"] "
            + self.hostname.encode("utf-8", "replace") + b" pymail ready"
        )
        self.writer.flush()
        self._restart_timer()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.stop_reading()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        waiter, self._line_waiter = self._line_waiter, None
        if waiter is not None:
            self.take_lines(None)
            waiter.callback(b"")
        self.deselect()
        if hasattr(self, "writer"):
            self.writer.close()
        logout, self._avatar_logout = self._avatar_logout, None
        if logout is not None:
            try:
                logout()
            except Exception:
                log.failure("avatar logout failed")
        self.state = State.LOGOUT

    def start_streaming(self) -> OutputThrottle | None:
        """
        Before writing a long response: register an :class:`OutputThrottle`
        with the transport (None when the transport cannot take one).
        End with :meth:`stop_streaming`.
        """
        transport = self.transport
        if transport is None or self.writer.closed or getattr(transport, "producer", None):
            return None
        throttle = OutputThrottle()
        try:
            transport.registerProducer(throttle, True)  # type: ignore[attr-defined]
        except (RuntimeError, AttributeError):
            return None
        if isinstance(getattr(type(transport), "SEND_LIMIT", None), int):
            # A TCP transport sends at most SEND_LIMIT (128 KiB) per wakeup
            # of the reactor; a download of many megabytes then costs a
            # poll and a send per 128 KiB.  This connection's limit only.
            transport.SEND_LIMIT = STREAM_SEND_LIMIT  # type: ignore[attr-defined]
        return throttle

    def stop_streaming(self, throttle: OutputThrottle | None) -> None:
        """Unregister what :meth:`start_streaming` registered."""
        if throttle is not None and self.transport is not None and not self.writer.closed:
            self.transport.unregisterProducer()  # type: ignore[attr-defined]
            throttle.resumeProducing()

    def close(self, bye: bytes | None = None) -> None:
        """Say BYE (if given), send everything queued and drop the connection."""
        if self.writer.closed:
            return
        if bye is not None:
            self.writer.untagged(b"BYE " + bye)
        self.writer.close()
        self.stop_reading()
        self.state = State.LOGOUT
        if self.transport is not None:
            self.transport.loseConnection()

    def capabilities(self) -> str:
        caps = self.table.capabilities
        extra = access.access_capabilities(self)
        return " ".join(caps + extra if extra else caps)

    def logged_in(self, avatar: Any, logout: Callable[[], None]) -> None:
        """Enter the authenticated state as ``avatar``'s account."""
        self.account = avatar
        self._avatar_logout = logout
        self.state = State.AUTHENTICATED
        self._restart_timer()

    def enable(self, names: Iterable[str]) -> list[str]:
        """
        Turn on extensions (RFC 5161); QRESYNC implies CONDSTORE.  Returns
        those newly enabled, in the order asked; unknown names are ignored.
        """
        newly = []
        for name in names:
            name = name.upper()
            if name not in extensions.ENABLEABLE or name not in self.table.capabilities:
                continue
            wanted = ["CONDSTORE", "QRESYNC"] if name == "QRESYNC" else [name]
            for each in wanted:
                if each not in self.enabled:
                    self.enabled = self.enabled | {each}
                    if each == name:
                        newly.append(name)
        if self.selected is not None:
            self.selected.condstore = "CONDSTORE" in self.enabled
            self.selected.qresync = "QRESYNC" in self.enabled
        return newly

    def read_line(self) -> Deferred[bytes]:
        """
        The next input line (without CRLF), read raw instead of as a
        command: IDLE's DONE, AUTHENTICATE's responses.  Reading pauses
        again once the line is taken, until the command finishes.
        """
        waiter: Deferred[bytes] = Deferred()
        self._line_waiter = waiter

        def took(line: bytes) -> None:
            self.take_lines(None)
            self._line_waiter = None
            self.pause_reading()
            waiter.callback(line)

        self.take_lines(took)
        self.resume_reading()
        return waiter

    def push_updates(self) -> None:
        """Send the selected mailbox's pending changes now (while idling)."""
        if self.selected is None or self.writer.closed:
            return
        lines = self.selected.updates(True)
        if lines:
            for line in lines:
                self.writer.add(line)
            self.writer.flush()

    @property
    def store(self) -> IMailStore:
        """The logged-in account's mail store."""
        return self.account.store  # type: ignore[no-any-return]

    def deselect(self) -> None:
        """Leave the selected state (if in it) without telling the client anything."""
        view, self.selected = self.selected, None
        if view is not None:
            view.drop_pending()
            view.close()
        if self.state is State.SELECTED:
            self.state = State.AUTHENTICATED

    # -- timeouts --------------------------------------------------------------

    def _restart_timer(self) -> None:
        if self.state is State.NOT_AUTHENTICATED and self._timer is not None:
            # The pre-login limit is absolute: commands do not extend it.
            return
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        if self.state is State.LOGOUT:
            return
        timeout = (
            self.preauth_timeout if self.state is State.NOT_AUTHENTICATED else self.idle_timeout
        )
        self._timer = self.reactor.callLater(timeout, self._timed_out)

    def _timed_out(self) -> None:
        self._timer = None
        if self._running and not self.idling and self.state is not State.NOT_AUTHENTICATED:
            # A command is still working (slow storage); check again later.
            self._restart_timer()
            return
        log.info("IMAP client timed out in state {state}", state=self.state.value)
        self.close(b"Autologout; idle for too long")

    # -- reader hooks ----------------------------------------------------------

    def send_raw(self, data: bytes) -> None:
        self.writer.add(data)
        self.writer.flush()

    def literal_limit(self) -> int:
        # Before login only LOGIN's small literals make sense: an anonymous
        # client must not make the server buffer megabytes.
        if self.state is State.NOT_AUTHENTICATED:
            return min(self.max_literal_size, self.max_line_length)
        return self.max_literal_size

    def literal_too_big(self, tag: bytes | None, size: int, synchronising: bool) -> None:
        text = f"literal of {size} octets is too big (max {self.literal_limit()})"
        if synchronising and tag is not None:
            self.writer.tagged(tag, "NO", text, "TOOBIG")
            self.writer.flush()
        else:
            self.close(b"[TOOBIG] " + text.encode("ascii"))

    def line_too_long(self, tag: bytes | None) -> None:
        text = f"line too long (max {self.max_line_length} octets)"
        if tag is not None:
            self.writer.tagged(tag, "BAD", text)
        else:
            self.writer.untagged(b"BAD " + text.encode("ascii"))
        self.close(b"Line too long")

    def command_received(self, command: bytes) -> None:
        self._restart_timer()
        cur = Cursor(command)
        tag = None
        try:
            tag = cur.tag()
            cur.sp()
            name = cur.atom().upper().decode("ascii")
            if name == "UID":
                cur.sp()
                name = "UID " + cur.atom().upper().decode("ascii")
        except ParseError as e:
            if tag is None:
                self.writer.untagged(b"BAD missing command tag")
            else:
                self.writer.tagged(tag, "BAD", f"invalid command line: {e}")
            self.writer.flush()
            return
        spec = self.table.get(name)
        if spec is None:
            self.writer.tagged(tag, "BAD", f"unknown command {name!r}")
            self.writer.flush()
            return
        if self.state not in spec.states:
            self.writer.tagged(
                tag, "BAD", f"{name} is not allowed in the {self.state.value} state"
            )
            self.writer.flush()
            return
        try:
            args = spec.parse(cur)
            cur.end()
        except ParseError as e:
            self.writer.tagged(tag, "BAD", f"{name}: {e}")
            self.writer.flush()
            return
        except Exception:
            log.failure("parsing IMAP command {name} failed", name=name)
            self.writer.tagged(tag, "BAD", f"{name}: could not parse the arguments", "SERVERBUG")
            self.writer.flush()
            return
        self._running = True
        done = Deferred.fromCoroutine(self._run(spec, Command(tag, name, args)))
        if not done.called:
            self.writer.flush()
            if self._line_waiter is None:
                self.pause_reading()
            done.addBoth(self._resume)

    def _resume(self, result: object) -> None:
        if self.state is not State.LOGOUT:
            self.resume_reading()

    async def _run(self, spec: CommandSpec, cmd: Command) -> None:
        """Run one command and write its untagged updates and tagged reply."""
        status, text, code = "OK", f"{cmd.name} completed", None
        try:
            reply = await spec.handler(self, cmd)
            if reply is not None:
                text, code = reply.text, reply.code
        except CommandFailed as e:
            status, text, code = e.status, e.text, e.code
        except StorageError as e:
            failed = reply_for_storage_error(e)
            status, text, code = failed.status, failed.text, failed.code
        except Exception:
            log.failure("IMAP command {name} failed", name=cmd.name)
            status, text, code = "NO", f"{cmd.name} failed: internal server error", "SERVERBUG"
        self._running = False
        if self.writer.closed:
            return
        if self.selected is not None:
            for line in self.selected.updates(spec.expunge_ok, cmd.name.startswith("UID ")):
                self.writer.add(line)
        self.writer.tagged(cmd.tag, status, text, code)
        if self.state is State.LOGOUT:
            self.close()
            return
        self.writer.flush()
        self._restart_timer()
        after, self.after_reply = self.after_reply, None
        if after is not None and status == "OK":
            after()


# -- commands valid in any state, and before login ----------------------------


async def handle_capability(conn: IMAPServerProtocol, cmd: Command) -> Reply | None:
    conn.writer.untagged(b"CAPABILITY " + conn.capabilities().encode("ascii"))
    return None


async def handle_noop(conn: IMAPServerProtocol, cmd: Command) -> Reply | None:
    if conn.selected is not None:
        await conn.selected.mailbox.refresh()
    return None


async def handle_logout(conn: IMAPServerProtocol, cmd: Command) -> Reply | None:
    conn.writer.untagged(b"BYE " + conn.hostname.encode("utf-8", "replace") + b" logging out")
    conn.deselect()
    conn.state = State.LOGOUT
    return None


def default_table(*, condstore: bool = False) -> CommandTable:
    """Every command pymail's IMAP server knows, and its capabilities."""
    table = CommandTable()
    table.add_capabilities(["LITERAL+", "SASL-IR", "IDLE"])
    table.update(
        {
            "CAPABILITY": CommandSpec(no_args, handle_capability, ANY_STATE),
            "NOOP": CommandSpec(no_args, handle_noop, ANY_STATE),
            "LOGOUT": CommandSpec(no_args, handle_logout, ANY_STATE),
            "LOGIN": CommandSpec(parse_login, access.handle_login, NOT_AUTHENTICATED),
            "AUTHENTICATE": CommandSpec(
                parse_authenticate, access.handle_authenticate, NOT_AUTHENTICATED
            ),
            "STARTTLS": CommandSpec(no_args, access.handle_starttls, NOT_AUTHENTICATED),
            "IDLE": CommandSpec(no_args, idle.handle_idle, AUTHENTICATED),
        }
    )
    table.update(mailboxes.COMMANDS)
    table.update(selected.COMMANDS)
    table.update(extensions.COMMANDS)
    table.add_capabilities(extensions.CAPABILITIES)
    table.add_capabilities(mailboxes.CAPABILITIES)
    table.add_capabilities(selected.CAPABILITIES)
    if condstore:
        table.add_capabilities(condstore_mod.CAPABILITIES)
    return table


class IMAPFactory(ServerFactory):
    """
    Builds IMAP server connections.

    :param portal: logs users in; avatars are :class:`~pymail.interfaces.IAccount`.
    :param reactor: for timeouts.
    :param hostname: named in the greeting.
    :param max_literal_size: larger literals are refused before being read.
    :param max_line_length: a longer command line closes the connection.
    :param preauth_timeout: seconds without a command before login.
    :param idle_timeout: seconds without a command after login (RFC 3501
        section 5.4: at least 30 minutes).
    :param tls: the certificate STARTTLS offers; with it, passwords are
        refused in the clear (LOGINDISABLED) until TLS is on.
    :param allow_plaintext_on_loopback: let loopback clients log in
        without TLS even when ``tls`` is given.
    :param idle_poll_interval: seconds between looks for changes made by
        other programs while a client idles (0: never look).
    :param condstore: offer CONDSTORE and QRESYNC (RFC 7162).  Only for
        storage whose MODSEQs survive a restart (or whose UIDVALIDITY
        changes when they do not): a client resyncing against MODSEQs that
        went backwards would silently miss changes.
    :param cleartext_auth: the ``[security] cleartext_auth`` policy
        (``"tls"``, ``"loopback"``, ``"always"``); when given it decides
        instead of ``allow_plaintext_on_loopback``.
    :param throttle: a :class:`pymail.auth.throttle.LoginThrottle` that
        slows repeated failed logins, or None.
    """

    noisy = False  # the listener logs its own start

    def __init__(
        self,
        portal: Portal,
        reactor: IReactorTime,
        hostname: str,
        *,
        max_literal_size: int = 64 * 1024 * 1024,
        max_line_length: int = 64 * 1024,
        preauth_timeout: float = 60.0,
        idle_timeout: float = 1800.0,
        tls: ServerTLS | None = None,
        allow_plaintext_on_loopback: bool = True,
        idle_poll_interval: float = idle.POLL_INTERVAL,
        condstore: bool = False,
        cleartext_auth: str | None = None,
        throttle: Any = None,
    ) -> None:
        self.portal = portal
        self.reactor = reactor
        self.hostname = hostname
        self.max_literal_size = max_literal_size
        self.max_line_length = max_line_length
        self.preauth_timeout = preauth_timeout
        self.idle_timeout = idle_timeout
        self.tls = tls
        self.allow_plaintext_on_loopback = allow_plaintext_on_loopback
        self.cleartext_auth = cleartext_auth
        self.throttle = throttle
        self.table = default_table(condstore=condstore)
        # RFC 7889: the biggest APPEND accepted, same for every folder.
        self.table.add_capabilities([f"APPENDLIMIT={max_literal_size}"])
        self.recent = RecentTracker()
        #: Rendered ENVELOPEs etc., shared by every connection (pymail.imap.cache).
        self.derived_cache = DerivedCache()
        self.poller = RefreshPoller(reactor, idle_poll_interval)

    def buildProtocol(self, addr: object) -> IMAPServerProtocol:
        proto = IMAPServerProtocol(
            self.portal,
            self.reactor,
            self.hostname,
            self.table,
            self.recent,
            max_literal_size=self.max_literal_size,
            max_line_length=self.max_line_length,
            preauth_timeout=self.preauth_timeout,
            idle_timeout=self.idle_timeout,
            poller=self.poller,
            tls=self.tls,
            allow_plaintext_on_loopback=self.allow_plaintext_on_loopback,
            cleartext_auth=self.cleartext_auth,
            throttle=self.throttle,
            derived_cache=self.derived_cache,
        )
        proto.factory = self
        return proto
