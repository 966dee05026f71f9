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

from typing import Any

from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import LoginFailed
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime, ITCPTransport
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger
from twisted.python.failure import Failure

from pymail.errors import StorageError
from pymail.imap import mailboxes, selected
from pymail.imap.commands import (
    Command,
    Login,
    no_args,
    parse_authenticate,
    parse_login,
)
from pymail.imap.dispatch import (
    ANY_STATE,
    NOT_AUTHENTICATED,
    CommandSpec,
    CommandTable,
    Reply,
    State,
)
from pymail.imap.errors import CommandFailed, no, reply_for_storage_error
from pymail.imap.parser import Cursor, ParseError
from pymail.imap.reader import LiteralReader
from pymail.imap.responses import ResponseWriter
from pymail.imap.session import RecentTracker, SelectedMailbox
from pymail.interfaces import IAccount, IMailStore

log = Logger()


class IMAPServerProtocol(LiteralReader):
    """
    One IMAP connection.

    :ivar state: the RFC 3501 connection state.
    :ivar account: the logged-in account (an :class:`IAccount`), or None.
    :ivar selected: the selected mailbox's session view, or None.
    :ivar writer: where responses go.
    """

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
    ) -> None:
        self.portal = portal
        self.reactor = reactor
        self.hostname = hostname
        self.table = table
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
        return " ".join(self.table.capabilities)

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
        if self._running:
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


async def handle_login(conn: IMAPServerProtocol, cmd: Command) -> Reply | None:
    args = cmd.args
    assert isinstance(args, Login)
    user = args.user.decode("utf-8", "replace")
    try:
        _, avatar, logout = await conn.portal.login(
            UsernamePassword(args.user, args.password), None, IAccount
        )
    except LoginFailed:
        log.info("IMAP login failed for {user!r}", user=user)
        raise no("invalid user name or password", "AUTHENTICATIONFAILED") from None
    if conn.state is not State.NOT_AUTHENTICATED:
        # The connection went away while the portal was thinking.
        logout()
        return None
    conn.account = avatar
    conn._avatar_logout = logout
    conn.state = State.AUTHENTICATED
    log.info("IMAP login for {user!r}", user=conn.account.address)
    return Reply("LOGIN completed", "CAPABILITY " + conn.capabilities())


async def handle_authenticate(conn: IMAPServerProtocol, cmd: Command) -> Reply | None:
    raise no("unsupported authentication mechanism; use LOGIN", "CANNOT")


def default_table() -> CommandTable:
    """Every command pymail's IMAP server knows, and its capabilities."""
    table = CommandTable()
    table.add_capabilities(["LITERAL+"])
    table.update(
        {
            "CAPABILITY": CommandSpec(no_args, handle_capability, ANY_STATE),
            "NOOP": CommandSpec(no_args, handle_noop, ANY_STATE),
            "LOGOUT": CommandSpec(no_args, handle_logout, ANY_STATE),
            "LOGIN": CommandSpec(parse_login, handle_login, NOT_AUTHENTICATED),
            "AUTHENTICATE": CommandSpec(
                parse_authenticate, handle_authenticate, NOT_AUTHENTICATED
            ),
        }
    )
    table.update(mailboxes.COMMANDS)
    table.update(selected.COMMANDS)
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
    ) -> None:
        self.portal = portal
        self.reactor = reactor
        self.hostname = hostname
        self.max_literal_size = max_literal_size
        self.max_line_length = max_line_length
        self.preauth_timeout = preauth_timeout
        self.idle_timeout = idle_timeout
        self.table = default_table()
        self.recent = RecentTracker()

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
        )
        proto.factory = self
        return proto
