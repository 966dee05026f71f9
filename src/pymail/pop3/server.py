"""
pymail's POP3 server (RFC 1939, with CAPA and response codes from RFC 2449
and RFC 3206).

The protocol is pymail's own, on :class:`twisted.internet.protocol.Protocol`,
not a subclass of ``twisted.mail.pop3.POP3``.  Measured against what pymail
needs, the stock class keeps only its greeting: it converts LF to CRLF in
messages that already are CRLF (``\\r\\r\\n`` on the wire), misses dot-stuffing
of a first line and across file chunks, sends a RETR in many small writes
over several reactor turns (the Nagle/delayed-ACK stall), sends no reply at
all when a message vanished under it, drops the connection (and any
pipelined commands after it) on an over-long line, lets USER/PASS run in the
TRANSACTION state, crashes on a wrong argument count (``b"".join`` of a
``str``), has a synchronous ``sync()`` where pymail's storage is
asynchronous, and logs through ``twisted.python.log``.  Every ``do_`` method
and the reader would be overridden, leaving its APOP, AUTH, LAST and RPOP
reachable through a prefix-string dispatch.  So: an explicit command table,
a line reader that keeps pipelined commands in order, one write per batch of
responses, and a push producer for flow control.

STLS (RFC 2595) and AUTH (RFC 5034, PLAIN and LOGIN with an initial
response) are in the command table when the factory has TLS and whenever
clear-text passwords are allowed on the connection (``[security]
cleartext_auth``: over TLS always; without TLS from loopback by default).
Logins go through :class:`pymail.auth.throttle.LoginThrottle` when the
factory has one.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from typing import Any, BinaryIO, ClassVar, TypeVar

import attrs
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import LoginFailed, UnhandledCredentials
from twisted.internet.interfaces import ISSLTransport
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IPushProducer,
    IReactorTime,
    ITCPTransport,
)
from twisted.internet.protocol import Protocol, ServerFactory, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from pymail.auth import sasl
from pymail.auth.throttle import LoginThrottle
from pymail.errors import NoSuchMessage, StorageError
from pymail.interfaces import IAccount
from pymail.pop3 import replies
from pymail.direct import send_now, through_relays
from pymail.pop3.framing import (
    Stuffer,
    TopCutter,
    message_top,
    multiline,
    multiline_lines,
    multiline_listing,
)
from pymail.pop3.mailbox import (
    PROCESS_LOCKS,
    Maildrop,
    MaildropLock,
    MaildropLocks,
    MessageNumberError,
    uidl_for_key,
)

log = Logger()

_T = TypeVar("_T")

_KEYWORD = re.compile(rb"[A-Za-z]{1,8}")
_NUMBER = re.compile(rb"[0-9]{1,10}")
#: ``replies.RETR_FOLLOWS`` as a bytes %-format, filled in per RETR.
_RETR_STATUS = replies.line(replies.RETR_FOLLOWS, size="%d")


class State(enum.Enum):
    """The session states of RFC 1939 section 3."""

    AUTHORIZATION = "AUTHORIZATION"
    TRANSACTION = "TRANSACTION"
    UPDATE = "UPDATE"

    # Members are compared by identity, so the identity hash is enough, and
    # it is C code: Enum's own hashes the name in Python, once per command
    # (the state check in the command table's frozensets).
    __hash__ = object.__hash__


class _SyntaxError(Exception):
    """The arguments do not fit the command; the reply shows its syntax."""


@attrs.frozen
class Command:
    """
    One entry of the command table.

    :ivar handler: called with the server and the raw text after the
        keyword and its space; returns a Deferred when the reply comes
        later (commands after it wait, in order).
    :ivar states: where the command is allowed.
    :ivar syntax: shown when the arguments are wrong.
    """

    name: bytes
    handler: Callable[[POP3Server, bytes], Deferred[None] | None]
    states: frozenset[State]
    syntax: str


_AUTHORIZATION = frozenset({State.AUTHORIZATION})
_TRANSACTION = frozenset({State.TRANSACTION})
_ANY = _AUTHORIZATION | _TRANSACTION


def _printable(value: bytes) -> str:
    """Client text made safe for a log line (no control characters)."""
    text = value.decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def _no_args(args: bytes) -> None:
    if args.split():
        raise _SyntaxError()


def _number(token: bytes) -> int:
    if not _NUMBER.fullmatch(token):
        raise _SyntaxError()
    return int(token)


def _numbers(args: bytes, least: int, most: int) -> list[int]:
    if least <= 1 <= most and _NUMBER.fullmatch(args):
        # "RETR 17", "DELE 17" as clients send them, without split() and a list.
        return [int(args)]
    parts = args.split()
    if not least <= len(parts) <= most:
        raise _SyntaxError()
    return [_number(p) for p in parts]


@implementer(IPushProducer)
class POP3Server(Protocol):
    """
    One POP3 session.

    Pipelining (RFC 2449 section 6.6): every complete line received is
    handled in order; while a command waits for something (login, the
    UPDATE state) later lines wait in the buffer.  Replies are collected and
    written with one ``writeSequence`` per batch, so a whole RETR leaves in
    one write whether or not the client pipelines.  The server is a push
    producer for its transport: while the client does not read, commands
    wait, and past :attr:`MAX_PENDING` buffered octets the server stops
    reading.
    """

    #: RFC 2449 section 4 allows clients 255 octets per command line,
    #: CRLF included; longer lines get ``-ERR`` and are skipped.
    MAX_LINE_LENGTH: ClassVar[int] = 255
    #: Consecutive failed commands before the server gives up on a client.
    MAX_ERRORS: ClassVar[int] = 10
    #: Unprocessed input past which the server stops reading.
    MAX_PENDING: ClassVar[int] = 64 * 1024
    #: Replies collected past this size are written at once (flow control).
    FLUSH_SIZE: ClassVar[int] = 64 * 1024
    #: How much of a message RETR/TOP reads from storage at a time; each
    #: chunk leaves in one write.  TOP of a message up to this size reads
    #: it whole.
    CHUNK_SIZE: ClassVar[int] = 64 * 1024
    #: RETR of a message up to this size reads it whole (one ``os.read``
    #: through :class:`~pymail.interfaces.ISizedRead`) and writes it with
    #: the batch; a bigger one is streamed.  Streaming costs a buffered file,
    #: a CRLF search per chunk and a write per chunk: for mail of 64 KiB to
    #: 1 MiB about twice the CPU of one read.
    WHOLE_MAX: ClassVar[int] = 1024 * 1024
    #: Octets of one message sent in one reactor turn when the transport
    #: does not push back; then other connections get a turn.
    MAX_BURST: ClassVar[int] = 1024 * 1024
    #: Read-ahead (:meth:`_read_ahead`): after a RETR that follows the
    #: previous one in order (the first RETR 1 of a session counts), the
    #: next message, if no bigger than this, is read and framed after the
    #: reply has left, while the client reads it.
    READ_AHEAD_MAX: ClassVar[int] = 128 * 1024

    commands: ClassVar[dict[bytes, Command]]

    def __init__(
        self,
        portal: Portal,
        reactor: IReactorTime,
        hostname: str,
        timeout: float,
        locks: MaildropLocks,
        *,
        tls: Any = None,
        throttle: LoginThrottle | None = None,
        cleartext_auth: str = "loopback",
    ) -> None:
        self._portal = portal
        self._reactor = reactor
        self._hostname = hostname
        self._timeout = timeout
        self._locks = locks
        self._state = State.AUTHORIZATION
        self._buffer = b""
        self._pos = 0
        self._discarding = False
        self._out: list[bytes] = []
        self._out_size = 0
        self._processing = False
        self._waiting = False
        self._write_paused = False
        self._reading_paused = False
        self._closing = False
        self._closed = False
        self._errors = 0
        self._timer: IDelayedCall | None = None
        self._user: bytes | None = None
        self._address: str | None = None
        self._maildrop: Maildrop | None = None
        self._lock: MaildropLock | None = None
        self._logout: Callable[[], object] | None = None
        self._tls = tls
        self._tls_active = False
        self._throttle = throttle
        self._cleartext_auth = cleartext_auth
        self._sasl: sasl.Exchange | None = None
        self._stream: _MessageStream | None = None
        self._socket_transport: Any = None
        # Read-ahead: the last message number retrieved, the one to read
        # ahead once the reply is out (0: none), and what was read.
        self._last_retr = 0
        self._ahead_next = 0
        self._ahead: _ReadAhead | None = None

    @property
    def _channel(self) -> Any:
        """
        The transport, as what it is: an ITransport that is also an
        IConsumer and IPushProducer (TCP, TLS, and StringTransport in tests).
        """
        return self.transport

    @property
    def state(self) -> State:
        """The RFC 1939 state the session is in."""
        return self._state

    @property
    def authenticated(self) -> bool:
        """Whether the client has logged in (for the pre-login timeout)."""
        return self._state is not State.AUTHORIZATION

    @property
    def tls_active(self) -> bool:
        """Whether the session runs over TLS (implicit, or after STLS)."""
        return self._tls_active

    def _peer_host(self) -> str | None:
        peer = self.transport.getPeer() if self.transport else None
        host = getattr(peer, "host", None)
        return str(host) if host is not None else None

    def _cleartext_ok(self) -> bool:
        return sasl.cleartext_allowed(
            self._cleartext_auth, self._tls_active, sasl.is_loopback(self._peer_host())
        )

    # -- connection ---------------------------------------------------------

    def connectionMade(self) -> None:
        # Implicit TLS (port 995): the transport is the TLS layer.
        self._tls_active = ISSLTransport.providedBy(self.transport)
        if ITCPTransport.providedBy(self.transport):
            # Responses are written whole, so small segments are replies
            # the client waits for: never hold them back (Nagle).
            self._channel.setTcpNoDelay(True)
        self._channel.registerProducer(self, True)
        self._socket_transport = through_relays(self.transport)
        self._restart_timer()
        log.info("POP3 connection from {peer}", peer=self._peer())
        self._send(replies.line(replies.GREETING, hostname=self._hostname))
        self._flush()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._closed = True
        self._stop_timer()
        if self._stream is not None:
            self._stream.file.close()
            self._stream = None
        if self._state is not State.UPDATE:
            # No QUIT: RFC 1939 section 6, nothing is removed.  In UPDATE
            # the commit in progress ends the session when it is done.
            self._end_session()
        log.info(
            "POP3 connection from {peer} closed ({address})",
            peer=self._peer(),
            address=self._address or "not logged in",
        )

    def _peer(self) -> str:
        peer: IAddress | None = self.transport.getPeer() if self.transport else None
        host, port = getattr(peer, "host", None), getattr(peer, "port", None)
        return f"{host}:{port}" if host is not None else str(peer)

    def _end_session(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        if self._logout is not None:
            logout, self._logout = self._logout, None
            logout()
        self._maildrop = None
        self._ahead = None

    # -- IPushProducer: the transport tells us when the client stops reading

    def pauseProducing(self) -> None:
        self._write_paused = True
        # A slow download is not an idle client.
        self._stop_timer()

    def resumeProducing(self) -> None:
        if not self._write_paused:
            return
        self._write_paused = False
        if not self._closing and not self._closed and self._state is not State.UPDATE:
            self._restart_timer()
        if self._stream is not None:
            self._pump()
        else:
            self._process()

    def stopProducing(self) -> None:
        pass

    # -- reading ----------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        end = len(data) - 1
        if (
            0 < end < self.MAX_LINE_LENGTH
            and data.find(b"\n") == end
            and not self._buffer
            and self._sasl is None
            and not (self._processing or self._discarding or self._waiting
                     or self._write_paused or self._closing or self._closed)
        ):
            # The usual client that waits for each reply: one whole command
            # line and nothing before it is handled without the buffer.
            if data[end - 1] == 0x0D:
                end -= 1
            self._one_line(data[:end])
            return
        self._compact()
        self._buffer += data
        self._process()

    def _one_line(self, line: bytes) -> None:
        """:meth:`_process` for a single line that came alone."""
        self._processing = True
        try:
            self._run(line)
        finally:
            self._processing = False
        self._flush()
        if self._ahead_next:
            self._read_ahead()

    def _run(self, line: bytes) -> None:
        """Dispatch one command line; an answer still to come holds the input."""
        self._restart_timer()
        result = self._dispatch(line)
        if result is not None:
            self._waiting = True
            result.addBoth(self._command_done)

    def _can_process(self) -> bool:
        return not (self._waiting or self._write_paused or self._closing or self._closed)

    def _process(self) -> None:
        if self._processing:
            return
        self._processing = True
        try:
            while self._can_process():
                line = self._next_line()
                if line is None:
                    break
                self._run(line)
                if self._out_size >= self.FLUSH_SIZE:
                    self._flush()
        finally:
            self._processing = False
            self._compact()
        self._flush()
        self._update_reading()
        if self._ahead_next and not self._buffer:
            self._read_ahead()

    def _next_line(self) -> bytes | None:
        """
        The next whole command line without its line end, or ``None``.

        Lines are taken from ``_buffer`` at ``_pos`` and the buffer is
        compacted once per batch, so a burst of pipelined commands costs
        linear, not quadratic, copying.
        """
        # RFC 5034 section 4: AUTH responses are not held to 255 octets.
        limit = self.MAX_LINE_LENGTH if self._sasl is None else sasl.MAX_RESPONSE_OCTETS * 2
        while True:
            start = self._pos
            end = self._buffer.find(b"\n", start)
            if self._discarding:
                # The rest of an over-long line, already answered.
                if end == -1:
                    self._buffer, self._pos = b"", 0
                    return None
                self._pos = end + 1
                self._discarding = False
                continue
            if end == -1:
                if len(self._buffer) - start >= limit:
                    self._buffer, self._pos = b"", 0
                    self._discarding = True
                    self._sasl = None
                    self._fail(replies.LINE_TOO_LONG, limit=limit)
                return None
            self._pos = end + 1
            if end - start + 1 > limit:
                self._sasl = None
                self._fail(replies.LINE_TOO_LONG, limit=limit)
                if not self._can_process():
                    return None
                continue
            # CRLF is the line end; a bare LF is accepted from lax clients.
            if end > start and self._buffer[end - 1] == 0x0D:
                end -= 1
            return self._buffer[start:end]

    def _compact(self) -> None:
        if self._pos:
            self._buffer = self._buffer[self._pos :]
            self._pos = 0

    def _update_reading(self) -> None:
        if self._closed or self._closing or self.transport is None:
            return
        pending = len(self._buffer) - self._pos
        if pending > self.MAX_PENDING and not self._reading_paused:
            self._reading_paused = True
            self._channel.pauseProducing()
        elif pending <= self.MAX_PENDING and self._reading_paused:
            self._reading_paused = False
            self._channel.resumeProducing()

    def _command_done(self, result: object) -> None:
        self._waiting = False
        if isinstance(result, Failure):
            log.failure("POP3 command failed unexpectedly", result)
            self._server_error(replies.INTERNAL_ERROR)
        self._process()

    # -- writing ------------------------------------------------------------

    def _send(self, *pieces: bytes) -> None:
        self._out.extend(pieces)
        self._out_size += sum(map(len, pieces))

    def _flush(self) -> None:
        if self._out and not self._closed:
            send_now(self._channel, self._out, self._socket_transport, self._out_size)
        self._out = []
        self._out_size = 0
        if self._closing and not self._closed and not self._channel.disconnecting:
            self._channel.unregisterProducer()
            self._channel.loseConnection()

    def _ok(self, template: str, **fields: object) -> None:
        self._errors = 0
        self._send(replies.line(template, **fields))

    def _ok_pieces(self, pieces: list[bytes]) -> None:
        self._errors = 0
        self._send(*pieces)

    def _fail(self, template: str, **fields: object) -> None:
        """A reply to the client's mistake; too many in a row end the session."""
        self._errors += 1
        if self._errors >= self.MAX_ERRORS:
            reply = template.format(**fields)
            self._send(replies.line(replies.TOO_MANY_ERRORS, reply=reply))
            log.info("POP3 client {peer} sent too many bad commands", peer=self._peer())
            self._close_after_flush()
        else:
            self._send(replies.line(template, **fields))

    def _server_error(self, template: str, **fields: object) -> None:
        """A ``-ERR`` that is not the client's fault."""
        self._send(replies.line(template, **fields))

    def _close_after_flush(self) -> None:
        self._closing = True
        self._stop_timer()

    # -- the autologout timer (RFC 1939 section 3) ---------------------------

    def _restart_timer(self) -> None:
        # Moving a pending call later only notes the delay (no heap work),
        # as in the SMTP server.
        if self._timer is not None and self._timer.active():
            self._timer.reset(self._timeout)
        else:
            self._timer = self._reactor.callLater(self._timeout, self._timed_out)

    def _stop_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _timed_out(self) -> None:
        # RFC 1939 section 3: close without a response and without entering
        # UPDATE.  Abort: a client idle this long is not reading replies.
        self._timer = None
        log.info("POP3 autologout of {peer}", peer=self._peer())
        self._closing = True
        self._channel.abortConnection()

    # -- dispatch -----------------------------------------------------------

    def _dispatch(self, line: bytes) -> Deferred[None] | None:
        if self._sasl is not None:
            return self._sasl_response(line)
        keyword, _, args = line.partition(b" ")
        # Clients send upper case: the table is tried as sent first.
        command = self.commands.get(keyword)
        if command is not None:
            name = keyword
        elif not line.strip():
            self._fail(replies.EMPTY_COMMAND)
            return None
        else:
            name = keyword.upper()
            command = self.commands.get(name)
        if command is None:
            if _KEYWORD.fullmatch(keyword):
                self._fail(replies.UNKNOWN_COMMAND, command=name.decode("ascii"))
            else:
                self._fail(replies.UNKNOWN_COMMAND_UNPRINTABLE)
            return None
        if self._state not in command.states:
            self._fail(replies.WRONG_STATE, command=name.decode("ascii"), state=self._state.value)
            return None
        try:
            return command.handler(self, args)
        except _SyntaxError:
            self._fail(replies.SYNTAX, syntax=command.syntax)
        except MessageNumberError as e:
            self._fail(replies.BAD_MESSAGE_NUMBER, reason=str(e))
        except Exception:
            log.failure("POP3 {command} failed unexpectedly", command=name.decode("ascii"))
            self._server_error(replies.INTERNAL_ERROR)
        return None

    def capabilities(self) -> list[bytes]:
        """
        The CAPA list (RFC 2449 section 5), the same in every state.
        AUTH-RESP-CODE (RFC 3206): failed logins answer ``-ERR [AUTH]``.
        """
        caps = [b"TOP", b"UIDL"]
        if self._state is State.AUTHORIZATION:
            if self._tls is not None and not self._tls_active:
                caps.append(b"STLS")
            mechanisms = sasl.mechanisms(
                self._cleartext_auth, self._tls_active, sasl.is_loopback(self._peer_host()),
                scram=self._scram() is not None,
            )
            if self._cleartext_ok():
                caps.append(b"USER")
            if mechanisms:
                caps.append(b"SASL " + b" ".join(mechanisms))
        caps += [b"RESP-CODES", b"AUTH-RESP-CODE", b"PIPELINING", b"IMPLEMENTATION pymail"]
        return caps

    @property
    def _drop(self) -> Maildrop:
        assert self._maildrop is not None, "TRANSACTION state without a maildrop"
        return self._maildrop

    # -- commands -----------------------------------------------------------

    def do_capa(self, args: bytes) -> None:
        _no_args(args)
        self._ok_pieces(multiline_lines(replies.line(replies.CAPA_FOLLOWS), self.capabilities()))

    def do_stls(self, args: bytes) -> None:
        _no_args(args)
        if self._tls is None:
            self._fail(replies.STLS_UNAVAILABLE)
            return
        if self._tls_active:
            self._fail(replies.STLS_ALREADY)
            return
        if self._user is not None:
            self._fail(replies.STLS_AFTER_USER)
            return
        self._ok(replies.STLS_BEGIN)
        self._flush()
        # RFC 2595 section 4: anything the client sent after STLS, before
        # the handshake, is discarded (no plaintext command injection).
        self._buffer, self._pos, self._discarding = b"", 0, False
        self._channel.startTLS(self._tls.creator)
        self._tls_active = True
        log.info("POP3 STLS from {peer}", peer=self._peer())

    def do_user(self, args: bytes) -> None:
        name = args.strip()
        if not name:
            raise _SyntaxError()
        if not self._cleartext_ok():
            self._fail(replies.CLEARTEXT_REFUSED)
            return
        if b"\x00" in name:
            self._fail(replies.BAD_USER_NAME)
            return
        self._user = name
        self._ok(replies.USER_ACCEPTED)

    def do_pass(self, args: bytes) -> Deferred[None] | None:
        # RFC 1939: the password may contain spaces; it is all of the rest.
        if self._user is None:
            self._fail(replies.PASS_WITHOUT_USER)
            return None
        if not args:
            raise _SyntaxError()
        user, self._user = self._user, None
        if not self._cleartext_ok():
            self._fail(replies.CLEARTEXT_REFUSED)
            return None
        return Deferred.fromCoroutine(self._login(UsernamePassword(user, args)))

    def do_auth(self, args: bytes) -> Deferred[None] | None:
        parts = args.split()
        allowed = self._cleartext_ok()
        scram = self._scram()
        if not parts:
            # RFC 1734 habit kept by many servers: bare AUTH lists mechanisms.
            names = [sasl.SCRAM_SHA_256] if scram is not None else []
            names += list(sasl.CLEARTEXT_MECHANISMS) if allowed else []
            self._ok_pieces(multiline_lines(replies.line(replies.AUTH_LIST), names))
            return None
        if len(parts) > 2:
            raise _SyntaxError()
        is_scram = parts[0].upper() == sasl.SCRAM_SHA_256 and scram is not None
        if not allowed and not is_scram:
            self._fail(replies.CLEARTEXT_REFUSED)
            return None
        initial = parts[1] if len(parts) == 2 else None
        try:
            exchange = sasl.start(parts[0], initial, scram=scram)
        except sasl.UnknownMechanism:
            self._fail(replies.AUTH_UNKNOWN_MECHANISM)
            return None
        except sasl.SASLError as e:
            self._fail(replies.AUTH_MALFORMED, reason=str(e))
            return None
        return self._sasl_step(exchange)

    def _scram(self) -> sasl.ScramLookup | None:
        """The SCRAM credential lookup of the portal, None if SCRAM is not offered."""
        return sasl.scram_source(self._portal)

    def _sasl_step(self, exchange: sasl.Exchange) -> Deferred[None] | None:
        step = exchange.step
        if isinstance(step, sasl.Challenge):
            self._sasl = exchange
            self._send(b"+ " + step.encoded + b"\r\n")
            return None
        self._sasl = None
        return Deferred.fromCoroutine(self._login(step.credentials))

    def _sasl_response(self, line: bytes) -> Deferred[None] | None:
        exchange = self._sasl
        assert exchange is not None
        try:
            exchange.respond(line)
        except sasl.Cancelled:
            self._sasl = None
            self._fail(replies.AUTH_CANCELLED)
            return None
        except sasl.SASLError as e:
            self._sasl = None
            self._fail(replies.AUTH_MALFORMED, reason=str(e))
            return None
        return self._sasl_step(exchange)

    async def _login(self, credentials: Any) -> None:
        user = credentials.username
        shown = _printable(user)
        try:
            if self._throttle is not None:
                _interface, avatar, logout = await self._throttle.login(
                    self._portal, credentials, IAccount, peer=self._peer_host(), service="pop3"
                )
            else:
                _interface, avatar, logout = await self._portal.login(
                    credentials, None, IAccount
                )
        except UnhandledCredentials:
            log.failure("POP3 login impossible: no checker takes username/password")
            self._server_error(replies.LOGIN_UNAVAILABLE)
            return
        except LoginFailed:
            log.info("POP3 login failed for {user} from {peer}", user=shown, peer=self._peer())
            self._fail(replies.AUTH_FAILED)
            return
        except Exception:
            log.failure("POP3 login for {user} failed unexpectedly", user=shown)
            self._server_error(replies.LOGIN_UNAVAILABLE)
            return
        if self._closed:
            logout()
            return
        account = IAccount(avatar)
        address = str(account.address)
        lock = self._locks.acquire(address)
        if lock is None:
            logout()
            log.info("POP3 maildrop of {address} in use", address=address)
            self._server_error(replies.IN_USE)
            return
        try:
            mailbox = await account.store.get_mailbox("INBOX")
        except Exception:
            lock.release()
            logout()
            log.failure("POP3 cannot open the INBOX of {address}", address=address)
            self._server_error(replies.MAILDROP_UNAVAILABLE)
            return
        if self._closed:
            lock.release()
            logout()
            return
        self._address, self._lock, self._logout = address, lock, logout
        self._maildrop = Maildrop.snapshot(mailbox)
        self._state = State.TRANSACTION
        count, octets = self._maildrop.stat()
        log.info(
            "POP3 login of {address} from {peer}, {count} messages",
            address=address,
            peer=self._peer(),
            count=count,
        )
        self._ok(replies.LOGGED_IN, count=count, octets=octets)

    def do_quit(self, args: bytes) -> Deferred[None] | None:
        _no_args(args)
        if self._state is State.AUTHORIZATION:
            self._ok(replies.SIGNING_OFF)
            self._close_after_flush()
            return None
        return Deferred.fromCoroutine(self._update())

    async def _update(self) -> None:
        self._state = State.UPDATE
        self._stop_timer()
        try:
            removed = await self._drop.commit()
        except Exception:
            log.failure("POP3 UPDATE for {address} failed", address=self._address)
            self._server_error(replies.UPDATE_FAILED)
        else:
            log.info(
                "POP3 logout of {address}, {count} messages deleted",
                address=self._address,
                count=len(removed),
            )
            if removed:
                self._ok(replies.SIGNING_OFF_DELETED, count=len(removed))
            else:
                self._ok(replies.SIGNING_OFF)
        finally:
            self._end_session()
        self._close_after_flush()
        if self._closed:
            # The client went away during UPDATE; nothing is left to send.
            self._out = []

    def do_stat(self, args: bytes) -> None:
        _no_args(args)
        count, octets = self._drop.stat()
        self._ok(replies.STAT, count=count, octets=octets)

    def do_list(self, args: bytes) -> None:
        numbers = _numbers(args, 0, 1)
        if numbers:
            info = self._drop.info(numbers[0])
            self._ok(replies.LIST_ONE, number=numbers[0], size=info.size)
            return
        count, octets = self._drop.stat()
        status = replies.line(replies.LIST_FOLLOWS, count=count, octets=octets)
        self._ok_pieces(
            multiline_listing(status, [f"{n} {m.size}\r\n" for n, m in self._drop.listing()])
        )

    def do_uidl(self, args: bytes) -> None:
        numbers = _numbers(args, 0, 1)
        if numbers:
            self._ok(replies.UIDL_ONE, number=numbers[0], uidl=self._drop.uidl(numbers[0]))
            return
        lines = [f"{n} {uidl_for_key(m.key)}\r\n" for n, m in self._drop.listing()]
        self._ok_pieces(multiline_listing(replies.line(replies.UIDL_FOLLOWS), lines))

    def do_retr(self, args: bytes) -> Deferred[None] | None:
        (number,) = _numbers(args, 1, 1)
        size = self._drop.info(number).size
        ahead, self._ahead = self._ahead, None
        sequential = number == self._last_retr + 1
        self._last_retr = number
        if sequential:
            self._ahead_next = number + 1
        if ahead is not None and ahead.number == number:
            self._ok_pieces(ahead.pieces)
            return None
        return self._send_message(number, size, _RETR_STATUS % size, None)

    def _read_ahead(self) -> None:
        """
        Read and frame the message :attr:`_ahead_next` names, for a client
        that retrieves messages in order (poplib, fetchmail and getmail
        all do) and waits for each reply: the next RETR then finds its
        reply ready, and the storage read and the stuffing check, which
        would delay that reply, happen while the client is still reading
        this one.  Called once a reply is on its way and no command waits.
        Only the very next RETR uses it (any other RETR drops it), and only
        a message no bigger than :attr:`READ_AHEAD_MAX`; a message that
        cannot be read now is left to that RETR, which reports the error.
        """
        number, self._ahead_next = self._ahead_next, 0
        drop = self._maildrop
        if (
            drop is None
            or self._state is not State.TRANSACTION
            or self._waiting
            or self._stream is not None
            or self._write_paused
            or self._closing
            or self._closed
        ):
            return
        try:
            size = drop.info(number).size
            if size > self.READ_AHEAD_MAX:
                return
            message = drop.read(number)
        except (MessageNumberError, NoSuchMessage, StorageError, OSError):
            return
        self._ahead = _ReadAhead(number, multiline(_RETR_STATUS % size, message))

    def do_top(self, args: bytes) -> Deferred[None] | None:
        number, lines = _numbers(args, 2, 2)
        size = self._drop.info(number).size
        return self._send_message(number, size, replies.line(replies.TOP_FOLLOWS), lines)

    def _send_message(
        self, number: int, size: int, status: bytes, top: int | None
    ) -> Deferred[None] | None:
        """
        A message (or with ``top``, its top) as a multi-line response.  One
        no bigger than :attr:`WHOLE_MAX` (for TOP, than a chunk: it may need
        only the first lines) is read whole and goes out with the other
        replies of the batch; a bigger one is streamed (:meth:`_start_stream`).
        """
        if size > (self.WHOLE_MAX if top is None else self.CHUNK_SIZE):
            cutter = TopCutter(top) if top is not None else None
            return self._start_stream(number, status, cutter)
        message = self._read(number)
        if message is not None:
            if top is not None:
                message = message_top(message, top)
            self._ok_pieces(multiline(status, message))
        return None

    def _read(self, number: int) -> bytes | None:
        """The message, or ``None`` when it cannot be read (replied already)."""
        return self._from_storage(number, self._drop.read)

    def _open(self, number: int) -> BinaryIO | None:
        """The message as a stream, or ``None`` when it cannot be read (replied already)."""
        return self._from_storage(number, self._drop.open)

    def _from_storage(self, number: int, get: Callable[[int], _T]) -> _T | None:
        try:
            return get(number)
        except NoSuchMessage:
            self._server_error(replies.MESSAGE_GONE, number=number)
        except (StorageError, OSError):
            log.failure(
                "POP3 cannot read message {number} of {address}",
                number=number,
                address=self._address,
            )
            self._server_error(replies.STORAGE_FAILED, number=number)
        return None

    # -- streaming a message (RETR, TOP) ---------------------------------------

    def _start_stream(
        self, number: int, status: bytes, cutter: TopCutter | None
    ) -> Deferred[None] | None:
        """
        Send a message as a multi-line response, a chunk at a time.  Returns
        ``None`` when it was sent whole at once (the usual small message),
        else a Deferred that fires when the last chunk is out; commands
        after it wait until then.
        """
        file = self._open(number)
        if file is None:
            return None
        self._ok_pieces([status])
        self._stream = _MessageStream(file, Stuffer(), cutter, number)
        self._pump()
        if self._stream is None:
            return None
        done: Deferred[None] = Deferred()
        self._stream.done = done
        return done

    def _pump(self) -> None:
        """Send chunks of the message until done, paused, or a burst is out."""
        stream = self._stream
        sent = 0
        while stream is not None and not (self._write_paused or self._closed):
            try:
                chunk = stream.file.read(self.CHUNK_SIZE)
            except (StorageError, OSError):
                # Mid-response there is no way to say -ERR: drop the client,
                # which then knows the message was not received whole.
                log.failure("POP3 read of message {number} of {address} failed",
                            number=stream.number, address=self._address)
                self._finish_stream()
                self._out = []
                self._out_size = 0
                self._channel.abortConnection()
                return
            end = not chunk
            if stream.cutter is not None:
                chunk = stream.cutter.feed(chunk)
                end = end or stream.cutter.done
            if chunk:
                self._send(stream.stuffer.feed(chunk))
            if end:
                self._send(stream.stuffer.end())
                self._finish_stream()
                return
            sent += len(chunk)
            if self._out_size >= self.FLUSH_SIZE:
                self._flush()
            if sent >= self.MAX_BURST and not self._write_paused:
                self._flush()
                self._reactor.callLater(0, self._pump)
                return
        self._flush()

    def _finish_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is None:
            return
        stream.file.close()
        if stream.done is not None:
            stream.done.callback(None)

    def do_dele(self, args: bytes) -> None:
        (number,) = _numbers(args, 1, 1)
        self._drop.delete(number)
        self._ok(replies.DELETED, number=number)

    def do_noop(self, args: bytes) -> None:
        _no_args(args)
        self._ok(replies.NOOP)

    def do_rset(self, args: bytes) -> None:
        _no_args(args)
        self._drop.reset()
        count, octets = self._drop.stat()
        self._ok(replies.RSET_DONE, count=count, octets=octets)

    commands = {
        c.name: c
        for c in [
            Command(b"CAPA", do_capa, _ANY, "CAPA"),
            Command(b"STLS", do_stls, _AUTHORIZATION, "STLS"),
            Command(b"AUTH", do_auth, _AUTHORIZATION, "AUTH mechanism [initial-response]"),
            Command(b"USER", do_user, _AUTHORIZATION, "USER name"),
            Command(b"PASS", do_pass, _AUTHORIZATION, "PASS password"),
            Command(b"QUIT", do_quit, _ANY, "QUIT"),
            Command(b"STAT", do_stat, _TRANSACTION, "STAT"),
            Command(b"LIST", do_list, _TRANSACTION, "LIST [msg]"),
            Command(b"UIDL", do_uidl, _TRANSACTION, "UIDL [msg]"),
            Command(b"RETR", do_retr, _TRANSACTION, "RETR msg"),
            Command(b"TOP", do_top, _TRANSACTION, "TOP msg lines"),
            Command(b"DELE", do_dele, _TRANSACTION, "DELE msg"),
            Command(b"NOOP", do_noop, _TRANSACTION, "NOOP"),
            Command(b"RSET", do_rset, _TRANSACTION, "RSET"),
        ]
    }


@attrs.define
class _ReadAhead:
    """A RETR reply framed ahead of the command (see :meth:`POP3Server._read_ahead`)."""

    number: int
    pieces: list[bytes]


@attrs.define
class _MessageStream:
    """A RETR or TOP response being sent."""

    file: BinaryIO
    stuffer: Stuffer
    cutter: TopCutter | None
    number: int
    done: Deferred[None] | None = None


class POP3Factory(ServerFactory):
    """
    Builds :class:`POP3Server` sessions.

    :param portal: logs users in as :class:`~pymail.interfaces.IAccount`.
    :param reactor: the clock for the autologout timer.
    :param hostname: shown in the greeting.
    :param timeout: the autologout timer in seconds; RFC 1939 section 3 asks
        for at least 10 minutes.
    :param locks: the maildrop locks; every listener of one process must
        share them, so the default is the process-wide
        :data:`~pymail.pop3.mailbox.PROCESS_LOCKS`.
    :param tls: a :class:`pymail.tls.ServerTLS` to offer STLS with, or
        ``None``.
    :param throttle: failed-login throttling, or ``None`` for none.
    :param cleartext_auth: ``[security] cleartext_auth``: where USER/PASS
        and AUTH are allowed without TLS (``"tls"``, ``"loopback"``,
        ``"always"``).
    """

    # The listener logs its own start ("[smtp] listening on ..."); the
    # per-factory "Starting factory" lines add nothing.
    noisy = False

    protocol = POP3Server  # type: ignore[assignment]

    def __init__(
        self,
        portal: Portal,
        reactor: IReactorTime,
        hostname: str,
        *,
        timeout: float = 600.0,
        locks: MaildropLocks | None = None,
        tls: Any = None,
        throttle: LoginThrottle | None = None,
        cleartext_auth: str = "loopback",
    ) -> None:
        self.portal = portal
        self.reactor = reactor
        self.hostname = hostname
        self.timeout = timeout
        self.locks = locks if locks is not None else PROCESS_LOCKS
        self.tls = tls
        self.throttle = throttle
        self.cleartext_auth = cleartext_auth

    def buildProtocol(self, addr: Any) -> POP3Server:
        server = POP3Server(self.portal, self.reactor, self.hostname, self.timeout, self.locks,
                            tls=self.tls, throttle=self.throttle,
                            cleartext_auth=self.cleartext_auth)
        server.factory = self
        return server
