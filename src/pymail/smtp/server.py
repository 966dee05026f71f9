"""
pymail's ESMTP server protocol (RFC 5321), for the MX port and for
submission (RFC 6409) with AUTH PLAIN and LOGIN (RFC 4954).

Built on :class:`~twisted.protocols.basic.LineReceiver`: commands are
lines, the DATA body is read in raw mode by
:class:`~pymail.smtp.data.DataReader`.  Commands are processed strictly one
at a time: while one waits for an asynchronous answer (a directory lookup,
a login, the durable store), the protocol pauses and later pipelined lines
stay buffered, so replies always come in command order (RFC 2920).

Policy (who may send what to whom, where mail goes) is not decided here
but by the delivery policy (:mod:`pymail.smtp.delivery`); errors it raises
carry their reply.  Anything unexpected is logged with ``log.failure`` and
answered ``451 4.3.0``; a client never sees a traceback.
"""

from __future__ import annotations

import base64
import binascii
import functools
import itertools
import random
import re
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import attrs
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import LoginFailed
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableProtocol,
    IReactorTime,
    ISSLTransport,
    ITCPTransport,
    ITransport,
)
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from pymail import maillog
from pymail.auth import sasl
from pymail.auth.throttle import LoginThrottle
from pymail.address import (
    Address,
    AddressError,
    Envelope,
    EnvelopeRecipient,
    split_path,
    xtext_decode,
)
from pymail.interfaces import IAccount
from pymail.direct import send_now, through_relays
from pymail.smtp import replies as R
from pymail.smtp.data import ChunkCollector, DataReader
from pymail.smtp.delivery import IDeliveryPolicy, QueuedCopy, StoredCopy
from pymail.smtp.replies import Reply, ReplyError
from pymail.storage.fsutil import CRLFMessage

MX = "mx"
SUBMISSION = "submission"

#: Where clear-text AUTH is allowed (``[security] cleartext_auth``).
CLEARTEXT_AUTH_POLICIES = ("tls", "loopback", "always")

#: RFC 3461 section 4.1: NOTIFY keywords.
_NOTIFY_KEYWORDS = frozenset({"SUCCESS", "FAILURE", "DELAY"})
#: RFC 3461 section 4.4: the longest ENVID, 100 octets.
MAX_ENVID = 100

#: RFC 5321 section 4.5.3.1.4: a command line, CRLF included.
COMMAND_LINE_LIMIT = 512
#: MAIL and RCPT may carry ESMTP parameters, each of which may lengthen
#: the line (RFC 5321 section 4.5.3.1.4, RFC 1870 section 6).
PARAMETER_LINE_LIMIT = 1024
#: RFC 4954 section 4: AUTH lines and responses may be 12288 octets.
AUTH_LINE_LIMIT = 12288

#: Octets a client may pipeline while a command waits for its answer before
#: the server stops reading from its socket.
HOLD_BUFFER_LIMIT = 64 * 1024

_LINE_LIMITS = {"AUTH": AUTH_LINE_LIMIT, "MAIL": PARAMETER_LINE_LIMIT, "RCPT": PARAMETER_LINE_LIMIT}

_HELO_NAME = re.compile(r"[A-Za-z0-9._-]+\Z|\[[A-Za-z0-9.:]+\]\Z")
_PARAM_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*\Z")
_HEADER_NAME = re.compile(rb"([!-9;-~]+)[ \t]*:")


@attrs.define
class QueueIdGenerator:
    """
    Makes queue ids: 48 bits of milliseconds, a 16-bit counter and 16
    random bits, in base32hex, so ids sort by time within a process, never
    repeat within one, and are unlikely to repeat across nodes.
    """

    _reactor: IReactorTime
    # random.randbytes: no system call per id (os.urandom made one); the
    # generator is reseeded in forked children.
    _random: Callable[[int], bytes] = random.randbytes
    _counter: itertools.count[int] = attrs.field(factory=itertools.count)

    def __call__(self) -> str:
        millis = int(self._reactor.seconds() * 1000) & 0xFFFF_FFFF_FFFF
        value = (
            millis << 32
            | (next(self._counter) & 0xFFFF) << 16
            | int.from_bytes(self._random(2), "big")
        )
        # The base32hex of those 80 bits (RFC 4648 section 7: 16 digits, no
        # padding), ten bits at a time: base64.b32hexencode is pure Python
        # and took twice as long.
        pairs = _BASE32HEX_PAIRS
        return "".join([pairs[value >> shift & 0x3FF] for shift in _PAIR_SHIFTS])


#: Every pair of base32hex digits, indexed by the ten bits they stand for.
_BASE32HEX_PAIRS = [a + b for a in "0123456789ABCDEFGHIJKLMNOPQRSTUV"
                    for b in "0123456789ABCDEFGHIJKLMNOPQRSTUV"]
_PAIR_SHIFTS = (70, 60, 50, 40, 30, 20, 10, 0)


class SMTPFactory(ServerFactory):
    """
    Makes :class:`SMTPServer` protocols for one listener.

    :param hostname: this server's name (greeting, Received, Message-ID).
    :param delivery: the policy (:class:`~pymail.smtp.delivery.LocalDelivery`).
    :param reactor: the clock for timeouts and dates.
    :param max_message_size: the SIZE limit, in octets.
    :param mode: ``"mx"`` (port 25: no AUTH) or ``"submission"`` (AUTH
        required before MAIL; the sender must belong to the user).
    :param portal: logs submission users in; required for submission.
    :param max_recipients: accepted recipients per message (RFC 5321
        section 4.5.3.1.8 asks for at least 100).
    :param timeout: seconds of client silence before ``421 4.4.2``.
    :param max_errors: error replies before ``421 4.7.0`` and a close.
    :param tls: a :class:`pymail.tls.ServerTLS`; STARTTLS is offered only
        with one.
    :param cleartext_auth: where AUTH works without TLS: ``"tls"``
        (nowhere), ``"loopback"`` (from 127.0.0.0/8 and ::1), ``"always"``.
    :param postmaster: the address ``RCPT TO:<Postmaster>`` (no domain,
        RFC 5321 section 4.1.1.3) goes to.
    :param throttle: failed-login throttling shared with IMAP and POP3
        (:class:`pymail.auth.throttle.LoginThrottle`), or ``None``.
    """

    # The listener logs its own start ("[smtp] listening on ..."); the
    # per-factory "Starting factory" lines add nothing.
    noisy = False

    def __init__(
        self,
        hostname: str,
        delivery: IDeliveryPolicy,
        reactor: IReactorTime,
        *,
        max_message_size: int = 35 * 1024 * 1024,
        mode: str = MX,
        portal: Portal | None = None,
        max_recipients: int = 100,
        timeout: float = 300.0,
        max_errors: int = 20,
        queue_ids: Callable[[], str] | None = None,
        tls: Any = None,
        cleartext_auth: str = "always",
        postmaster: str | None = None,
        throttle: LoginThrottle | None = None,
    ) -> None:
        if mode not in (MX, SUBMISSION):
            raise ValueError(f"SMTP mode {mode!r} must be 'mx' or 'submission'")
        if mode == SUBMISSION and portal is None:
            raise ValueError("SMTP submission mode needs a portal to log users in")
        self.hostname = hostname
        self.delivery = delivery
        self.reactor = reactor
        self.max_message_size = max_message_size
        self.mode = mode
        self.portal = portal
        self.max_recipients = max_recipients
        self.timeout = timeout
        self.max_errors = max_errors
        self.queue_ids = queue_ids if queue_ids is not None else QueueIdGenerator(reactor)
        if cleartext_auth not in CLEARTEXT_AUTH_POLICIES:
            raise ValueError(f"cleartext_auth {cleartext_auth!r} must be one of "
                             f"{', '.join(CLEARTEXT_AUTH_POLICIES)}")
        self.tls = tls
        self.throttle = throttle
        self.cleartext_auth = cleartext_auth
        self._date_second = -1
        self._date_text = ""
        self.postmaster = (
            postmaster or getattr(delivery, "postmaster", None) or f"postmaster@{hostname}"
        )

    def date_text(self, now: datetime) -> str:
        """``now`` as an RFC 5322 date, formatted once per second."""
        second = int(now.timestamp())
        if second != self._date_second:
            self._date_second = second
            self._date_text = format_datetime(now.replace(microsecond=0))
        return self._date_text

    def buildProtocol(self, addr: IAddress | None) -> SMTPServer:
        return SMTPServer(self)


@attrs.define
class _Transaction:
    """One mail transaction, from MAIL FROM to the end of DATA or RSET."""

    sender: Address
    recipients: list[EnvelopeRecipient] = attrs.Factory(list)
    rcpt_attempted: bool = False
    smtputf8: bool = False
    chunks: ChunkCollector | None = None
    ret: str | None = None
    envid: str | None = None
    body: str | None = None


@implementer(IHalfCloseableProtocol)
class SMTPServer(LineReceiver):
    """
    One SMTP session.  See the module docstring.

    A client may pipeline its commands and then shut down its sending side
    (``shutdown(SHUT_WR)``): every command already received is still
    answered, in order, before the server closes the connection.
    """

    delimiter = b"\r\n"
    MAX_LENGTH = AUTH_LINE_LIMIT
    log = Logger()

    def __init__(self, factory: SMTPFactory) -> None:
        self.factory = factory
        self._helo: str | None = None
        self._esmtp = False
        self._account: Any = None
        self._logout: Callable[[], None] | None = None
        self._transaction: _Transaction | None = None
        self._reader: DataReader | None = None
        self._queue_id = "-"
        self._auth_step: Callable[[bytes], Deferred[None] | None] | None = None
        self._auth_mechanism = ""
        self._errors = 0
        self._busy = False
        self._paused_for_command = False
        self._transport_paused = False
        self._started_tls = False
        self._in_chunk = False
        self._chunk_left = 0
        self._chunk_last = False
        self._chunk_error: Reply | None = None
        self._timeout_call: IDelayedCall | None = None
        self._closing = False
        self._lost = False
        self._discarding = False
        self._discard_cr = False
        self._refeed = False
        self._read_closed = False
        # Replies made while input is being handled wait in _pending and go
        # out together when it is done (one send for a pipelined group, as
        # Twisted's write buffer would make); any other reply goes out at
        # once (see _flush).
        self._input_depth = 0
        self._pending: list[bytes] = []
        self._under: Any = None
        self._received_key: tuple[object, ...] | None = None
        self._received_start = ""
        self._commands: dict[str, Callable[[str], Deferred[Any] | None]] = {
            "EHLO": self._ehlo,
            "HELO": self._helo_command,
            "MAIL": self._mail,
            "RCPT": self._rcpt,
            "DATA": self._data,
            "RSET": self._rset,
            "NOOP": self._noop,
            "QUIT": self._quit,
            "VRFY": self._vrfy,
            "EXPN": self._expn,
            "HELP": self._help,
            "AUTH": self._auth,
            "STARTTLS": self._starttls,
            "BDAT": self._bdat,
        }

    # Connection -------------------------------------------------------------

    @property
    def _transport(self) -> ITransport:
        assert self.transport is not None, "not connected"
        return self.transport

    def connectionMade(self) -> None:
        if ITCPTransport.providedBy(self._transport):
            # Every reply is a complete line the client is waiting for:
            # never hold one back for Nagle's algorithm.
            self._transport.setTcpNoDelay(True)
        peer = self._transport.getPeer()
        self._client = getattr(peer, "host", None) or "unknown"
        self._under = through_relays(self._transport)
        self._reply(R.GREETING.format(hostname=self.factory.hostname))
        self._reset_timeout()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._lost = True
        self._cancel_timeout()
        if self._logout is not None:
            logout, self._logout = self._logout, None
            logout()

    def readConnectionLost(self) -> None:
        """The client sent EOF: answer what it sent, then close."""
        self._read_closed = True
        self._close_if_drained()

    def writeConnectionLost(self) -> None:
        """Nothing to do: the server never half-closes its own side."""

    def _close_if_drained(self) -> None:
        # Whatever is still buffered is an unfinished line or message:
        # with no more input to come it can never be answered.
        if self._read_closed and not self._busy and not self._closing and not self._lost:
            self._hang_up()

    def _close(self, reply: Reply) -> None:
        self._reply(reply, count=False)
        self._hang_up()

    def _hang_up(self) -> None:
        """Send the replies made so far, then close."""
        self._flush()
        self._closing = True
        self._cancel_timeout()
        self._transport.loseConnection()

    def _reset_timeout(self) -> None:
        if self._closing or self._lost:
            return
        # Moving a pending call later is cheap (no heap operation); making
        # and cancelling one per command was not.
        if self._timeout_call is not None and self._timeout_call.active():
            self._timeout_call.reset(self.factory.timeout)
        else:
            self._timeout_call = self.factory.reactor.callLater(
                self.factory.timeout, self._timed_out
            )

    def _cancel_timeout(self) -> None:
        if self._timeout_call is not None and self._timeout_call.active():
            self._timeout_call.cancel()
        self._timeout_call = None

    def _timed_out(self) -> None:
        self._timeout_call = None
        if self._busy:
            # The server, not the client, is being waited for: the client's
            # silence is counted again from the end of the command.
            self._reset_timeout()
            return
        self._close(R.TIMEOUT.format(hostname=self.factory.hostname))

    def _reply(self, reply: Reply, *, count: bool = True) -> None:
        if self._lost or self._closing:
            return
        self._pending.append(reply.to_bytes())
        if not self._input_depth:
            self._flush()
        if count and reply.permanent:
            self._errors += 1
            if self._errors >= self.factory.max_errors:
                closing = R.TOO_MANY_ERRORS.format(hostname=self.factory.hostname)
                maillog.rejected(self._client, None, (), closing, stage="SESSION")
                self._close(closing)

    def _flush(self) -> None:
        """
        Send the replies made so far: straight on the socket when nothing is
        queued before them (no reactor turn, no ``epoll_ctl`` pair per reply;
        see :mod:`pymail.direct`), else through the transport.
        """
        if self._pending and not self._lost:
            pieces, self._pending = self._pending, []
            send_now(self._transport, pieces, self._under)

    # Input ------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._lost or self._closing:
            return
        self._input_depth += 1
        try:
            self._take_input(data)
        finally:
            self._input_depth -= 1
            if not self._input_depth:
                self._flush()

    def _take_input(self, data: bytes) -> None:
        if not self._busy:
            self._reset_timeout()
        if self._discarding and not self._busyReceiving:
            data = self._discard_long_line(data)
            if not data:
                return
        super().dataReceived(data)
        if (self._paused_for_command and not self._transport_paused
                and len(self._buffer) > HOLD_BUFFER_LIMIT):
            self._transport_paused = True
            self._transport.pauseProducing()  # type: ignore[attr-defined]
        # LineReceiver stops after lineLengthExceeded; carry on with the
        # lines that followed the long one.
        while self._refeed and not self._busyReceiving and not self.paused:
            self._refeed = False
            super().dataReceived(b"")

    def _discard_long_line(self, data: bytes) -> bytes:
        if self._discard_cr and data.startswith(b"\n"):
            self._discarding = False
            return data[1:]
        end = data.find(b"\r\n")
        if end < 0:
            self._discard_cr = data.endswith(b"\r")
            return b""
        self._discarding = False
        return data[end + 2 :]

    def lineLengthExceeded(self, line: bytes) -> None:
        end = line.find(b"\r\n")
        if end < 0:
            self._discarding = True
            self._discard_cr = line.endswith(b"\r")
        else:
            self._buffer = line[end + 2 :] + self._buffer
            self._refeed = True
        self._auth_step = None
        reply = R.LINE_TOO_LONG.format(limit=COMMAND_LINE_LIMIT)
        maillog.rejected(self._client, None, (), reply, stage="COMMAND")
        self._reply(reply)

    def lineReceived(self, line: bytes) -> None:
        if self._closing or self._lost:
            return
        try:
            result = self._line(line)
        except Exception:
            self.log.failure(
                "Unexpected error in an SMTP command from {client}", client=self._client
            )
            self._reply(R.LOCAL_ERROR)
            return
        if result is not None:
            self._wait_for(result)

    def rawDataReceived(self, data: bytes) -> None:
        if self._in_chunk:
            return self._chunk_data(data)
        assert self._reader is not None
        rest = self._reader.feed(data)
        if rest is None:
            return
        reader, self._reader = self._reader, None
        try:
            result = self._end_of_data(reader)
        except Exception:
            self.log.failure("Unexpected error ending DATA from {client}", client=self._client)
            self._reply(R.LOCAL_ERROR)
            self._transaction = None
            result = None
        if result is not None:
            self._wait_for(result)
        # Called from LineReceiver's loop: the rest is buffered and read as
        # lines once no command is pending.
        self.setLineMode(rest)

    def _wait_for(self, d: Deferred[Any]) -> None:
        """Hold later input until ``d`` (the current command's work) is done."""
        if d.called and not d.paused and not isinstance(d.result, Failure):
            # Already done (a synchronous backend, its callbacks run): there
            # is nothing to wait for, and no callbacks need adding.
            return
        self._busy = True

        def unexpected(failure: Failure) -> None:
            self.log.failure("Unexpected error in an SMTP command", failure, client=self._client)
            self._reply(R.LOCAL_ERROR)

        def done(_: object) -> None:
            self._busy = False
            self._reset_timeout()
            if self._paused_for_command:
                self._paused_for_command = False
                self.paused = False
                if not self._lost:
                    if self._transport_paused and not self._read_closed:
                        self._transport_paused = False
                        self._transport.resumeProducing()  # type: ignore[attr-defined]
                    self.dataReceived(b"")
                self._close_if_drained()

        d.addErrback(unexpected).addBoth(done)
        if self._busy:
            # Stop taking lines from the buffer (LineReceiver's flag), but
            # keep the socket reading: stopping and restarting it costs two
            # epoll syscalls per message.  The socket is paused only when a
            # client pipelines more than HOLD_BUFFER_LIMIT octets meanwhile.
            self._paused_for_command = True
            self.paused = True

    def _line(self, line: bytes) -> Deferred[Any] | None:
        if self._auth_step is not None:
            step, self._auth_step = self._auth_step, None
            return self._auth_response(step, line)
        if b"\r" in line or b"\n" in line:
            # Strict CRLF for commands too: a bare CR/LF inside a command
            # is never a line break (see pymail.smtp.data).
            self._reply(R.BARE_LINE_ENDING_IN_COMMAND)
            return None
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            self._reply(R.SYNTAX_ERROR.format(usage="commands must be ASCII"))
            return None
        verb, _, arg = text.partition(" ")
        verb = verb.upper()
        limit = _LINE_LIMITS.get(verb, COMMAND_LINE_LIMIT)
        if len(line) + 2 > limit:
            reply = R.LINE_TOO_LONG.format(limit=limit)
            maillog.rejected(self._client, None, (), reply, stage="COMMAND")
            self._reply(reply)
            return None
        handler = self._commands.get(verb)
        if handler is None:
            self._reply(R.UNKNOWN_COMMAND)
            return None
        return handler(arg.strip(" "))

    # Simple commands --------------------------------------------------------

    def _greet(self, arg: str, esmtp: bool) -> bool:
        if not _HELO_NAME.match(arg):
            self._reply(R.BAD_HELO)
            return False
        self._helo = arg
        self._esmtp = esmtp
        self._transaction = None
        return True

    def _helo_command(self, arg: str) -> None:
        if self._greet(arg, esmtp=False):
            self._reply(R.HELO_OK.format(hostname=self.factory.hostname, helo=arg))

    def _ehlo(self, arg: str) -> None:
        if not self._greet(arg, esmtp=True):
            return
        lines = [
            f"{self.factory.hostname} Hello {arg}",
            "PIPELINING",
            f"SIZE {self.factory.max_message_size}",
            "8BITMIME",
            "ENHANCEDSTATUSCODES",
            "SMTPUTF8",
            "DSN",
            "CHUNKING",
        ]
        if self.factory.tls is not None and not self._tls:
            lines.append("STARTTLS")
        if self.factory.mode == SUBMISSION:
            mechanisms = [sasl.SCRAM_SHA_256.decode()] if self._scram() is not None else []
            if self._auth_allowed():
                mechanisms += ["PLAIN", "LOGIN"]
            if mechanisms:
                lines.append("AUTH " + " ".join(mechanisms))
        self._reply(Reply(250, None, "\n".join(lines)))

    @property
    def _tls(self) -> bool:
        """Whether the connection is encrypted (STARTTLS done, or implicit TLS)."""
        if self._started_tls:
            return True
        # Implicit TLS: the TLS layer may sit below protocol wrappers (the
        # connection limiter), so look down the chain of transports.
        transport: Any = self.transport
        for _ in range(5):
            if transport is None:
                return False
            if ISSLTransport.providedBy(transport):
                return True
            transport = getattr(transport, "transport", None)
        return False

    def _scram(self) -> sasl.ScramLookup | None:
        """The portal's SCRAM credential lookup; None: SCRAM-SHA-256 is not offered."""
        return sasl.scram_source(self.factory.portal)

    def _auth_allowed(self) -> bool:
        """Whether AUTH may be used on this connection now (RFC 4954 section 4, RFC 8314)."""
        policy = self.factory.cleartext_auth
        if self._tls or policy == "always":
            return True
        if policy == "loopback":
            return self._client == "::1" or self._client.startswith("127.")
        return False

    def _starttls(self, arg: str) -> None:
        if self.factory.tls is None:
            return self._reply(R.COMMAND_NOT_IMPLEMENTED.format(command="STARTTLS"))
        if arg:
            return self._reply(R.SYNTAX_ERROR.format(usage="STARTTLS (no arguments)"))
        if self._tls:
            return self._reply(R.BAD_SEQUENCE.format(why="TLS already active"))
        if self._helo is None or not self._esmtp:
            return self._reply(R.BAD_SEQUENCE.format(why="Send EHLO first"))
        # Anything pipelined after STARTTLS was sent in clear text and must
        # not be taken as coming over TLS (CVE-2011-0411, RFC 3207 section 4.2).
        self._buffer = b""
        self._reply(R.READY_FOR_TLS)
        # The 220 must leave in clear text, before the TLS layer exists.
        self._flush()
        self._transport.startTLS(self.factory.tls.creator)  # type: ignore[attr-defined]
        self._started_tls = True
        # RFC 3207 section 4.2: forget everything learnt before TLS.
        self._helo = None
        self._esmtp = False
        self._transaction = None

    def _rset(self, arg: str) -> None:
        self._transaction = None
        self._reply(R.OK)

    def _noop(self, arg: str) -> None:
        self._reply(R.OK)

    def _quit(self, arg: str) -> None:
        self._close(R.CLOSING)

    def _vrfy(self, arg: str) -> None:
        if not arg:
            self._reply(R.SYNTAX_ERROR.format(usage="VRFY <address>"))
        else:
            self._reply(R.VRFY_CANNOT)

    def _expn(self, arg: str) -> None:
        self._reply(R.EXPN_DISABLED)

    def _help(self, arg: str) -> None:
        self._reply(R.HELP)

    # Mail transaction -------------------------------------------------------

    @property
    def _authenticated_as(self) -> str | None:
        return None if self._account is None else str(self._account.address)

    def _mail(self, arg: str) -> None:
        if self._helo is None:
            return self._reply(R.HELO_FIRST)
        if self._transaction is not None:
            return self._reply(R.NESTED_MAIL)
        if self.factory.mode == SUBMISSION and self._account is None:
            return self._reply(R.AUTH_REQUIRED)
        if arg[:5].upper() != "FROM:":
            return self._reply(R.SYNTAX_ERROR.format(usage="MAIL FROM:<address> [parameters]"))
        try:
            path, rest = split_path(arg[5:].lstrip(" "))
            params = _parse_parameters(rest)
            smtputf8 = "SMTPUTF8" in params
            sender = Address.parse(path, allow_null=True, smtputf8=smtputf8)
        except AddressError as e:
            return self._reply(R.BAD_SENDER_SYNTAX.format(why=e))
        except ReplyError as e:
            return self._reply(e.reply)
        size = params.pop("SIZE", "")
        body = params.pop("BODY", "")
        if params.pop("SMTPUTF8", None) is not None:
            return self._reply(R.PARAMETER_INVALID.format(name="SMTPUTF8", why="takes no value"))
        ret = params.pop("RET", "")
        envid = params.pop("ENVID", "")
        params.pop("AUTH", None)  # RFC 4954 section 5: may be ignored
        if params:
            return self._reply(R.PARAMETER_UNKNOWN.format(name=next(iter(params))))
        if body != "" and (body or "").upper() not in ("7BIT", "8BITMIME"):
            return self._reply(R.PARAMETER_INVALID.format(name="BODY", why="use 7BIT or 8BITMIME"))
        if ret != "" and (ret or "").upper() not in ("FULL", "HDRS"):
            return self._reply(R.PARAMETER_INVALID.format(name="RET", why="use FULL or HDRS"))
        if envid != "":
            try:
                envid = xtext_decode(envid or "")
            except AddressError as e:
                return self._reply(R.PARAMETER_INVALID.format(name="ENVID", why=e))
            if not envid or len(envid) > MAX_ENVID:
                return self._reply(R.PARAMETER_INVALID.format(
                    name="ENVID", why=f"1 to {MAX_ENVID} characters"))
        if size != "":
            # RFC 1870: SIZE=<digits>, at most 20 of them.
            if size is None or not size.isdigit() or len(size) > 20:
                return self._reply(R.PARAMETER_INVALID.format(name="SIZE", why="not a number"))
            if int(size) > self.factory.max_message_size:
                reply = R.MESSAGE_TOO_BIG_FOR_SIZE.format(limit=self.factory.max_message_size)
                maillog.rejected(self._client, sender, (), reply, stage="MAIL")
                return self._reply(reply)
        try:
            self.factory.delivery.check_sender(sender, authenticated_as=self._authenticated_as)
        except ReplyError as e:
            maillog.rejected(self._client, sender, (), e.reply, stage="MAIL")
            return self._reply(e.reply)
        self._transaction = _Transaction(
            sender,
            smtputf8=smtputf8,
            ret=(ret or "").upper() or None,
            envid=envid or None,
            body=(body or "").upper() or None,
        )
        self._reply(R.SENDER_OK)

    def _rcpt(self, arg: str) -> Deferred[None] | None:
        transaction = self._transaction
        if transaction is None:
            self._reply(R.MAIL_FIRST if self._helo is not None else R.HELO_FIRST)
            return None
        if arg[:3].upper() != "TO:":
            self._reply(R.SYNTAX_ERROR.format(usage="RCPT TO:<address>"))
            return None
        try:
            path, rest = split_path(arg[3:].lstrip(" "))
            params = _parse_parameters(rest)
            if path.lower() == "<postmaster>":
                # RFC 5321 section 4.1.1.3: "Postmaster" without a domain
                # must be accepted.
                path = f"<{self.factory.postmaster}>"
            address = Address.parse(path, smtputf8=transaction.smtputf8)
            notify, orcpt = _dsn_recipient_parameters(params)
        except AddressError as e:
            reply = R.BAD_RECIPIENT_SYNTAX.format(why=e)
            self._reply(reply)
            return None
        except ReplyError as e:
            self._reply(e.reply)
            return None
        if params:
            self._reply(R.PARAMETER_UNKNOWN.format(name=next(iter(params))))
            return None
        transaction.rcpt_attempted = True
        if len(transaction.recipients) >= self.factory.max_recipients:
            self._reply(R.TOO_MANY_RECIPIENTS.format(limit=self.factory.max_recipients))
            return None

        def accepted(targets: list[str]) -> None:
            transaction.recipients.append(
                EnvelopeRecipient(address, tuple(targets), notify, orcpt)
            )
            self._reply(R.RECIPIENT_OK)

        def refused(failure: Failure) -> None:
            if failure.check(ReplyError):
                reply = failure.value.reply
            else:
                self.log.failure("Checking recipient {address} failed", failure, address=address)
                reply = R.DIRECTORY_UNAVAILABLE
            maillog.rejected(self._client, transaction.sender, [address], reply, stage="RCPT")
            self._reply(reply)

        # Called directly rather than through maybeDeferred: a directory
        # answers at once, and then no Deferred is made or waited for.
        try:
            targets = self.factory.delivery.check_recipient(
                address, authenticated_as=self._authenticated_as
            )
        except Exception:
            refused(Failure())
            return None
        if isinstance(targets, Deferred):
            return targets.addCallbacks(accepted, refused)
        accepted(targets)
        return None

    def _data(self, arg: str) -> None:
        if arg:
            return self._reply(R.SYNTAX_ERROR.format(usage="DATA (no arguments)"))
        if self._transaction is None:
            return self._reply(R.MAIL_FIRST if self._helo is not None else R.HELO_FIRST)
        if not self._transaction.recipients:
            if self._transaction.rcpt_attempted:
                return self._reply(R.NO_VALID_RECIPIENTS)
            return self._reply(R.RCPT_FIRST)
        if self._transaction.chunks is not None:
            return self._reply(R.BAD_SEQUENCE.format(why="DATA after BDAT; send BDAT ... LAST"))
        self._queue_id = self.factory.queue_ids()
        self._reader = DataReader(self.factory.max_message_size)
        self._reply(R.START_DATA)
        self.setRawMode()

    # BDAT (RFC 3030) --------------------------------------------------------

    def _bdat(self, arg: str) -> None:
        parts = arg.split(" ")
        if not 1 <= len(parts) <= 2 or not parts[0].isdigit() or len(parts[0]) > 20 or (
            len(parts) == 2 and parts[1].upper() != "LAST"
        ):
            # The chunk's length is unknown, so its octets would be read
            # as commands: close rather than interpret message data.
            maillog.rejected(self._client, None, (), R.BAD_BDAT, stage="BDAT")
            self._close(R.BAD_BDAT)
            return
        self._chunk_left = int(parts[0])
        self._chunk_last = len(parts) == 2
        transaction = self._transaction
        if transaction is None:
            self._chunk_error = R.MAIL_FIRST if self._helo is not None else R.HELO_FIRST
        elif not transaction.recipients:
            self._chunk_error = (
                R.NO_VALID_RECIPIENTS if transaction.rcpt_attempted else R.RCPT_FIRST
            )
        else:
            self._chunk_error = None
            if transaction.chunks is None:
                transaction.chunks = ChunkCollector(self.factory.max_message_size)
                self._queue_id = self.factory.queue_ids()
        self._in_chunk = True
        if self._chunk_left == 0:
            self._end_of_chunk(b"")
        else:
            self.setRawMode()

    def _chunk_data(self, data: bytes) -> None:
        take, rest = data[: self._chunk_left], data[self._chunk_left :]
        self._chunk_left -= len(take)
        transaction = self._transaction
        if self._chunk_error is None and transaction is not None and (
            transaction.chunks is not None
        ):
            transaction.chunks.add(take)
        if self._chunk_left == 0:
            self._end_of_chunk(rest)

    def _end_of_chunk(self, rest: bytes) -> None:
        self._in_chunk = False
        error, self._chunk_error = self._chunk_error, None
        transaction = self._transaction
        result = None
        if error is not None:
            if transaction is not None:
                self._transaction = None  # RFC 3030 section 2: a failed BDAT ends it
            self._reply(error)
        elif transaction is not None and transaction.chunks is not None:
            chunks = transaction.chunks
            if chunks.too_big:
                self._transaction = None
                reply = R.MESSAGE_TOO_BIG.format(limit=self.factory.max_message_size)
                maillog.rejected(self._client, transaction.sender,
                                 [r.address for r in transaction.recipients], reply,
                                 queue_id=self._queue_id, stage="BDAT")
                self._reply(reply)
            elif self._chunk_last:
                try:
                    result = self._end_of_data(chunks)
                except Exception:
                    self.log.failure("Unexpected error ending BDAT from {client}",
                                     client=self._client)
                    self._reply(R.LOCAL_ERROR)
                    self._transaction = None
            else:
                self._reply(R.CHUNK_OK.format(size=chunks.size))
        if result is not None:
            self._wait_for(result)
        self.setLineMode(rest)

    def _end_of_data(self, reader: DataReader | ChunkCollector) -> Deferred[None] | None:
        transaction, self._transaction = self._transaction, None
        assert transaction is not None
        recipients = [r.address for r in transaction.recipients]
        queue_id = self._queue_id
        if reader.too_big:
            reply = R.MESSAGE_TOO_BIG.format(limit=self.factory.max_message_size)
        elif reader.bare_line_ending:
            reply = R.BARE_LINE_ENDING
        elif reader.line_too_long:
            reply = R.TEXT_LINE_TOO_LONG
        else:
            reply = None
        if reply is not None:
            maillog.rejected(
                self._client, transaction.sender, recipients, reply, queue_id=queue_id, stage="DATA"
            )
            self._reply(reply)
            return None
        now = datetime.fromtimestamp(self.factory.reactor.seconds(), UTC)
        trace = self._trace_headers(transaction, queue_id, now)
        if self.factory.mode == SUBMISSION:
            body = reader.message()
            message = trace + self._missing_headers(body, queue_id, now) + body
        else:
            message = reader.message(trace)
        # No bare CR or LF (refused above), and the lines added here end in
        # CRLF: storage may convert it to LF by dropping the CRs.
        message = CRLFMessage(message)
        targets = [t for r in transaction.recipients for t in r.targets]
        envelope = Envelope(
            queue_id=queue_id,
            sender=transaction.sender,
            recipients=tuple(transaction.recipients),
            client=self._client,
            ret=transaction.ret,
            envid=transaction.envid,
            smtputf8=transaction.smtputf8,
            body=transaction.body,
        )
        d = maybeDeferred(
            self.factory.delivery.deliver, targets, message, internaldate=now, envelope=envelope
        )

        def stored(copies: list[StoredCopy | QueuedCopy]) -> None:
            reply = R.QUEUED.format(queue_id=queue_id)
            # One log line per message, naming its local copies.
            maillog.accepted(
                queue_id, self._client, transaction.sender, recipients, len(message), reply,
                stored=[(c.account, c.folder) for c in copies if isinstance(c, StoredCopy)],
            )
            self._reply(reply)

        def failed(failure: Failure) -> None:
            if failure.check(ReplyError) and failure.value.reply.permanent:
                reply = failure.value.reply
                maillog.rejected(self._client, transaction.sender, recipients, reply,
                                 queue_id=queue_id, stage="DATA")
                self._reply(reply)
                return
            if failure.check(ReplyError) and failure.value.reply.is_error:
                reply = failure.value.reply
            else:
                self.log.failure("Storing message {queue_id} failed", failure, queue_id=queue_id)
                reply = R.DELIVERY_FAILED
            maillog.deferred(
                queue_id,
                self._client,
                transaction.sender,
                recipients,
                len(message),
                reply,
                failure.getErrorMessage(),
            )
            self._reply(reply)

        return d.addCallbacks(stored, failed)

    def _trace_headers(self, transaction: _Transaction, queue_id: str, now: datetime) -> bytes:
        """Return-Path and Received (RFC 5321 section 4.4, RFC 3848 protocol names)."""
        # The part up to the queue id is the same for every message of a
        # session until EHLO, STARTTLS or AUTH changes it: made once.
        key = (self._helo, transaction.smtputf8, self._esmtp, self._started_tls,
               self._account is not None)
        if self._received_key != key:
            self._received_key = key
            self._received_start = self._received_prefix(transaction)
        received = f"{self._received_start}{queue_id}"
        if len(transaction.recipients) == 1:
            # Only for a single recipient: naming one of several would tell
            # each what the others (Bcc) were.
            received += f"\r\n\tfor {transaction.recipients[0].address.path}"
        received += f"; {self.factory.date_text(now)}\r\n"
        return f"Return-Path: {transaction.sender.path}\r\n{received}".encode()

    def _received_prefix(self, transaction: _Transaction) -> str:
        """The Received field up to the queue id."""
        protocol = "UTF8SMTP" if transaction.smtputf8 else "ESMTP" if self._esmtp else "SMTP"
        if self._tls:
            protocol += "S"
        if self._account is not None:
            protocol += "A"
        client = self._client
        if ":" in client:
            literal = f"[IPv6:{client}]"
        elif client[:1].isdigit():
            literal = f"[{client}]"
        else:
            literal = client
        return (
            f"Received: from {self._helo} ({literal})\r\n"
            f"\tby {self.factory.hostname} (pymail) with {protocol} id "
        )

    def _missing_headers(self, body: bytes, queue_id: str, now: datetime) -> bytes:
        """Date and Message-ID for a submitted message that lacks them (RFC 6409 section 8)."""
        present = _header_names(body)
        added = b""
        if b"date" not in present:
            added += f"Date: {self.factory.date_text(now)}\r\n".encode()
        if b"message-id" not in present:
            added += f"Message-ID: <{queue_id}@{self.factory.hostname}>\r\n".encode()
        return added

    # AUTH (RFC 4954) --------------------------------------------------------

    def _auth(self, arg: str) -> Deferred[None] | None:
        if self.factory.mode != SUBMISSION or self.factory.portal is None:
            self._reply(R.COMMAND_NOT_IMPLEMENTED.format(command="AUTH"))
            return None
        if not self._esmtp:
            self._reply(R.BAD_SEQUENCE.format(why="Send EHLO first"))
            return None
        if self._account is not None:
            self._reply(R.AUTH_ALREADY)
            return None
        if self._transaction is not None:
            self._reply(R.AUTH_IN_TRANSACTION)
            return None
        mechanism, _, initial = arg.partition(" ")
        mechanism = mechanism.upper()
        initial = initial.strip(" ")
        scram = self._scram()
        if mechanism == sasl.SCRAM_SHA_256.decode() and scram is not None:
            # SCRAM sends no password: allowed without TLS (docs/security.md).
            self._auth_mechanism = mechanism
            exchange = sasl.start(sasl.SCRAM_SHA_256, None, scram=scram)
            step: Callable[[bytes], Deferred[None] | None] = functools.partial(
                self._sasl_step, exchange)
            if not initial:
                self._auth_step = step
                self._reply(R.AUTH_CHALLENGE.format(challenge=""), count=False)
                return None
            return self._auth_response(step, b"" if initial == "=" else initial.encode())
        if not self._auth_allowed():
            self._reply(R.ENCRYPTION_REQUIRED)
            return None
        if mechanism not in ("PLAIN", "LOGIN"):
            self._reply(R.AUTH_UNKNOWN_MECHANISM.format(mechanism=mechanism or "(none)"))
            return None
        self._auth_mechanism = mechanism
        step = self._plain if mechanism == "PLAIN" else self._login_username
        if not initial:
            challenge = "" if mechanism == "PLAIN" else _b64("Username:")
            self._auth_step = step
            self._reply(R.AUTH_CHALLENGE.format(challenge=challenge), count=False)
            return None
        # RFC 4954 section 4: "=" is an empty initial response.
        return self._auth_response(step, b"" if initial == "=" else initial.encode())

    def _auth_response(
        self, step: Callable[[bytes], Deferred[None] | None], line: bytes
    ) -> Deferred[None] | None:
        if line.strip() == b"*":
            self._reply(R.AUTH_CANCELLED)
            return None
        try:
            decoded = base64.b64decode(line.strip(), validate=True)
        except (binascii.Error, ValueError):
            self._reply(R.AUTH_BAD_BASE64)
            return None
        return step(decoded)

    def _plain(self, response: bytes) -> Deferred[None] | None:
        parts = response.split(b"\0")
        if len(parts) != 3 or not parts[1]:
            self._reply(R.AUTH_MALFORMED)
            return None
        authzid, authcid, password = parts
        if authzid and authzid != authcid:
            # Logging in as one user to act as another is not supported.
            self._auth_failed()
            return None
        return self._check_credentials(authcid, password)

    def _sasl_step(self, exchange: sasl.Exchange, response: bytes) -> Deferred[None] | None:
        """One response of a :mod:`pymail.auth.sasl` exchange (SCRAM-SHA-256)."""
        try:
            step = exchange.feed(response)
        except sasl.SASLError:
            self._reply(R.AUTH_SASL_MALFORMED)
            return None
        if isinstance(step, sasl.Challenge):
            self._auth_step = functools.partial(self._sasl_step, exchange)
            challenge = step.encoded.decode("ascii")
            self._reply(R.AUTH_CHALLENGE.format(challenge=challenge), count=False)
            return None
        return self._check(step.credentials)

    def _login_username(self, response: bytes) -> None:
        self._auth_step = lambda password: self._check_credentials(response, password)
        self._reply(R.AUTH_CHALLENGE.format(challenge=_b64("Password:")), count=False)

    def _check_credentials(self, username: bytes, password: bytes) -> Deferred[None]:
        return self._check(UsernamePassword(username, password))

    def _check(self, credentials: Any) -> Deferred[None]:
        portal = self.factory.portal
        assert portal is not None
        if self.factory.throttle is not None:
            d = self.factory.throttle.login(
                portal, credentials, IAccount, peer=self._client, service="submission"
            )
        else:
            d = portal.login(credentials, None, IAccount)

        def logged_in(result: tuple[Any, Any, Callable[[], None]]) -> None:
            _, account, logout = result
            if self._lost:
                logout()
                return
            self._account, self._logout = account, logout
            maillog.auth_succeeded(self._client, self._auth_mechanism, str(account.address))
            self._reply(R.AUTH_OK)

        def refused(failure: Failure) -> None:
            if failure.check(LoginFailed):
                self._auth_failed()
            else:
                self.log.failure("Login through {client} failed", failure, client=self._client)
                self._reply(R.AUTH_TEMPORARY_FAILURE)

        return d.addCallbacks(logged_in, refused)

    def _auth_failed(self) -> None:
        maillog.auth_failed(self._client, self._auth_mechanism)
        self._reply(R.AUTH_FAILED)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("ascii")).decode("ascii")


def _parse_parameters(text: str) -> dict[str, str | None]:
    """
    ESMTP parameters (RFC 5321 section 4.1.2: ``keyword[=value]``,
    space-separated); keywords upper-cased.

    :raises ReplyError: a malformed or repeated parameter.
    """
    params: dict[str, str | None] = {}
    for item in text.split():
        keyword, eq, value = item.partition("=")
        if not _PARAM_KEYWORD.match(keyword) or (eq and not value):
            raise ReplyError(R.PARAMETER_INVALID.format(name=keyword, why="use KEYWORD[=VALUE]"))
        keyword = keyword.upper()
        if keyword in params:
            raise ReplyError(R.PARAMETER_INVALID.format(name=keyword, why="given twice"))
        params[keyword] = value if eq else None
    return params


def _dsn_recipient_parameters(
    params: dict[str, str | None],
) -> tuple[tuple[str, ...] | None, str | None]:
    """
    Take NOTIFY and ORCPT (RFC 3461 sections 4.1, 4.2) out of ``params``.

    :raises ReplyError: a malformed value.
    """
    notify: tuple[str, ...] | None = None
    orcpt: str | None = None
    if "NOTIFY" in params:
        value = (params.pop("NOTIFY") or "").upper()
        keywords = tuple(dict.fromkeys(value.split(",")))
        if keywords != ("NEVER",) and not (keywords and set(keywords) <= _NOTIFY_KEYWORDS):
            raise ReplyError(R.PARAMETER_INVALID.format(
                name="NOTIFY", why="use NEVER or a list of SUCCESS, FAILURE, DELAY"))
        notify = keywords
    if "ORCPT" in params:
        value = params.pop("ORCPT") or ""
        addr_type, semi, xtext = value.partition(";")
        try:
            decoded = xtext_decode(xtext)
        except AddressError as e:
            raise ReplyError(R.PARAMETER_INVALID.format(name="ORCPT", why=e)) from None
        if not semi or not addr_type or not decoded:
            raise ReplyError(R.PARAMETER_INVALID.format(name="ORCPT", why="use type;address"))
        orcpt = f"{addr_type.lower()};{decoded}"
    return notify, orcpt


def _header_names(message: bytes) -> set[bytes]:
    """The lower-cased field names of the header section of ``message``."""
    names = set()
    end = message.find(b"\r\n\r\n")
    # Only the header section is split into lines, not the whole body.
    head = message if end < 0 else message[: end + 2]
    for line in head.split(b"\r\n"):
        if not line:
            break
        if line[:1] in (b" ", b"\t"):
            continue
        match = _HEADER_NAME.match(line)
        if match is None:
            break
        names.add(match.group(1).lower())
    return names
