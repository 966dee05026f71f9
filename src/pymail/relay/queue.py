"""
The outbound queue: a durable on-disk spool of messages waiting to leave
the server, and the values that describe them.

Layout, below ``<data_dir>/queue/``::

    <id>.msg     the message, wire form (CRLF), exactly as it will be sent
    <id>.json    its envelope (:class:`QueuedMessage`), UTF-8 JSON

The envelope file is the commit marker: a message is queued once its
``.json`` exists.  :meth:`Spool.add` writes the ``.msg`` file and fsyncs it,
writes the envelope to a temporary name, fsyncs it, renames it into place
and fsyncs the directory, and only then fires, so the SMTP server's 250
comes after the message is on stable storage.  Concurrent additions share
one worker run and one directory fsync (group commit).  A ``.msg`` without
its ``.json`` is what a crash before the acknowledgement leaves; it was
never acknowledged and :meth:`Spool.load` removes it.

Envelope updates (after each delivery attempt) are rewritten the same way
(temporary file, fsync, rename, directory fsync), so a ``kill -9`` at any
point leaves either the old or the new envelope: a recipient may be tried
twice, never forgotten.

No pickle: the envelope format is documented in docs/relay.md and is
versioned by its ``format`` key.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from pymail.storage.fsutil import fsync_dir

log = Logger()

#: The ``format`` value of every envelope this version writes.
ENVELOPE_FORMAT = "pymail-queue-1"

#: Recipient states.
QUEUED = "queued"
DELIVERED = "delivered"
FAILED = "failed"

MESSAGE_SUFFIX = ".msg"
ENVELOPE_SUFFIX = ".json"


class QueueError(Exception):
    """The spool could not be read or written; the text says which file and why."""


@attrs.define
class QueuedRecipient:
    """
    One envelope recipient of a queued message and how far it got.

    :ivar address: the recipient, ``local@domain`` (the domain in A-label
        form; the local part may be UTF-8 when ``smtputf8`` is set).
    :ivar state: :data:`QUEUED`, :data:`DELIVERED` or :data:`FAILED`.
    :ivar notify: the RFC 3461 NOTIFY keywords (``SUCCESS``, ``FAILURE``,
        ``DELAY`` or ``NEVER``), or ``None`` when the client gave none.
    :ivar orcpt: the RFC 3461 ORCPT value (``rfc822;addr``), or ``None``.
    :ivar reply: the last reply about this recipient, as text.
    :ivar remote: the host that gave the last reply (``mx.example.net
        [192.0.2.1]``), or ``""``.
    """

    address: str
    state: str = QUEUED
    notify: tuple[str, ...] | None = None
    orcpt: str | None = None
    reply: str = ""
    remote: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "state": self.state,
            "notify": list(self.notify) if self.notify is not None else None,
            "orcpt": self.orcpt,
            "reply": self.reply,
            "remote": self.remote,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> QueuedRecipient:
        notify = data.get("notify")
        return cls(
            address=str(data["address"]),
            state=str(data.get("state", QUEUED)),
            notify=tuple(notify) if notify is not None else None,
            orcpt=data.get("orcpt"),
            reply=str(data.get("reply", "")),
            remote=str(data.get("remote", "")),
        )

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2].lower()


@attrs.define
class QueuedMessage:
    """
    The envelope of one queued message (the ``.json`` file).

    :ivar queue_id: the id given at acceptance (also in the logs and in the
        message's Received header).
    :ivar sender: the reverse-path, ``""`` for the null sender (a bounce).
    :ivar created: when the message was queued (seconds since the epoch).
    :ivar next_attempt: when the runner should next try (seconds).
    :ivar attempts: delivery attempts so far.
    :ivar client: the address of the client that handed it over, or
        ``"local"`` for a bounce made here.
    :ivar ret: the RFC 3461 RET value (``FULL`` or ``HDRS``) or ``None``.
    :ivar envid: the RFC 3461 ENVID, or ``None``.
    :ivar smtputf8: the message needs SMTPUTF8 (RFC 6531) to be relayed.
    :ivar body: the BODY parameter given (``7BIT``, ``8BITMIME``) or ``None``.
    :ivar size: the size of the ``.msg`` file in octets.
    :ivar delay_warned: a delay notification was sent already.
    """

    queue_id: str
    sender: str
    recipients: list[QueuedRecipient]
    created: float
    next_attempt: float
    attempts: int = 0
    client: str = "local"
    ret: str | None = None
    envid: str | None = None
    smtputf8: bool = False
    body: str | None = None
    size: int = 0
    delay_warned: bool = False

    def pending(self) -> list[QueuedRecipient]:
        """The recipients still to be tried."""
        return [r for r in self.recipients if r.state == QUEUED]

    def to_json(self) -> bytes:
        data = {
            "format": ENVELOPE_FORMAT,
            "id": self.queue_id,
            "sender": self.sender,
            "created": self.created,
            "next_attempt": self.next_attempt,
            "attempts": self.attempts,
            "client": self.client,
            "ret": self.ret,
            "envid": self.envid,
            "smtputf8": self.smtputf8,
            "body": self.body,
            "size": self.size,
            "delay_warned": self.delay_warned,
            "recipients": [r.to_json() for r in self.recipients],
        }
        return (json.dumps(data, ensure_ascii=False, indent=1) + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes) -> QueuedMessage:
        """:raises ValueError: not an envelope this version understands."""
        data = json.loads(raw.decode("utf-8"))
        if not isinstance(data, dict) or data.get("format") != ENVELOPE_FORMAT:
            raise ValueError(f"not a {ENVELOPE_FORMAT} envelope")
        return cls(
            queue_id=str(data["id"]),
            sender=str(data["sender"]),
            recipients=[QueuedRecipient.from_json(r) for r in data["recipients"]],
            created=float(data["created"]),
            next_attempt=float(data["next_attempt"]),
            attempts=int(data.get("attempts", 0)),
            client=str(data.get("client", "local")),
            ret=data.get("ret"),
            envid=data.get("envid"),
            smtputf8=bool(data.get("smtputf8", False)),
            body=data.get("body"),
            size=int(data.get("size", 0)),
            delay_warned=bool(data.get("delay_warned", False)),
        )


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _write_synced(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


@attrs.define
class Spool:
    """
    The queue directory.  Blocking methods (``*_now``) do file I/O and are
    run in the reactor's thread pool by the asynchronous ones; the CLI calls
    them directly.

    :ivar path: the queue directory (created if missing).
    """

    path: str
    _reactor: Any = None
    _batch: list[tuple[QueuedMessage, bytes, Deferred[None]]] = attrs.Factory(list)
    _writing: bool = False

    def __attrs_post_init__(self) -> None:
        os.makedirs(self.path, mode=0o700, exist_ok=True)

    def message_path(self, queue_id: str) -> str:
        return os.path.join(self.path, queue_id + MESSAGE_SUFFIX)

    def envelope_path(self, queue_id: str) -> str:
        return os.path.join(self.path, queue_id + ENVELOPE_SUFFIX)

    # Asynchronous API (reactor thread) --------------------------------------

    def _in_thread(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        return deferToThreadPool(self._reactor, self._reactor.getThreadPool(), f, *args)

    def add(self, entry: QueuedMessage, message: bytes) -> Deferred[None]:
        """
        Queue ``message`` durably; fires when it would survive a crash.

        :raises QueueError: (in the Deferred) it could not be written;
            nothing is left that would be delivered.
        """
        d: Deferred[None] = Deferred()
        entry.size = len(message)
        self._batch.append((entry, message, d))
        if not self._writing:
            self._write_next_batch()
        return d

    def _write_next_batch(self) -> None:
        batch, self._batch = self._batch, []
        if not batch:
            self._writing = False
            return
        self._writing = True
        work = self._in_thread(self._add_now, [(e, m) for e, m, _ in batch])

        def done(result: object) -> None:
            # Start the next group before firing: callbacks may add more.
            self._write_next_batch()
            for _, _, d in batch:
                if isinstance(result, BaseException):
                    d.errback(result)
                else:
                    d.callback(None)

        def failed(failure: Any) -> None:
            done(failure.value)

        work.addCallbacks(done, failed)

    def rewrite(self, entry: QueuedMessage) -> Deferred[None]:
        """Replace the envelope of a queued message durably."""
        return self._in_thread(self.rewrite_now, entry)

    def remove(self, queue_id: str) -> Deferred[None]:
        """Remove a message (delivered, bounced or deleted)."""
        return self._in_thread(self.remove_now, queue_id)

    def read_message(self, queue_id: str) -> Deferred[bytes]:
        return self._in_thread(self.read_message_now, queue_id)

    # Blocking API -----------------------------------------------------------

    def _add_now(self, batch: list[tuple[QueuedMessage, bytes]]) -> None:
        written: list[str] = []
        try:
            for entry, message in batch:
                msg_path = self.message_path(entry.queue_id)
                _write_synced(msg_path, message)
                written.append(msg_path)
                tmp = os.path.join(self.path, f".{entry.queue_id}{ENVELOPE_SUFFIX}.tmp")
                _write_synced(tmp, entry.to_json())
                written.append(tmp)
            for entry, _ in batch:
                tmp = os.path.join(self.path, f".{entry.queue_id}{ENVELOPE_SUFFIX}.tmp")
                os.replace(tmp, self.envelope_path(entry.queue_id))
            fsync_dir(self.path)
        except OSError as e:
            for path in written:
                try:
                    os.unlink(path)
                except OSError:
                    pass
            for entry, _ in batch:
                try:
                    os.unlink(self.envelope_path(entry.queue_id))
                except OSError:
                    pass
            raise QueueError(f"cannot write to the queue {self.path}: {e.strerror}") from None

    def rewrite_now(self, entry: QueuedMessage) -> None:
        if not os.path.exists(self.message_path(entry.queue_id)):
            return  # deleted meanwhile (pymail queue delete): do not resurrect
        tmp = os.path.join(self.path, f".{entry.queue_id}{ENVELOPE_SUFFIX}.tmp")
        _write_synced(tmp, entry.to_json())
        os.replace(tmp, self.envelope_path(entry.queue_id))
        fsync_dir(self.path)

    def remove_now(self, queue_id: str) -> None:
        # The envelope first: without it the message is no longer queued.
        for path in (self.envelope_path(queue_id), self.message_path(queue_id)):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        fsync_dir(self.path)

    def read_message_now(self, queue_id: str) -> bytes:
        with open(self.message_path(queue_id), "rb") as f:
            return f.read()

    def read_envelope_now(self, queue_id: str) -> QueuedMessage:
        """:raises QueueError: missing or unreadable."""
        path = self.envelope_path(queue_id)
        try:
            with open(path, "rb") as f:
                return QueuedMessage.from_json(f.read())
        except FileNotFoundError:
            raise QueueError(f"no queued message {queue_id}") from None
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise QueueError(f"{path}: unreadable envelope: {e}") from None

    def ids(self) -> list[str]:
        """The ids of the queued messages (those with an envelope), sorted."""
        return sorted(
            name[: -len(ENVELOPE_SUFFIX)]
            for name in os.listdir(self.path)
            if name.endswith(ENVELOPE_SUFFIX) and not name.startswith(".")
        )

    def entries(self) -> Iterator[QueuedMessage]:
        """Every readable envelope; unreadable ones are logged and skipped."""
        for queue_id in self.ids():
            try:
                yield self.read_envelope_now(queue_id)
            except QueueError as e:
                log.error("Skipping a queue entry: {error}", error=str(e))

    def load(self) -> list[QueuedMessage]:
        """
        Every queued message, after removing what a crash left half-written
        (a ``.msg`` or temporary file without an envelope: never acknowledged).
        """
        names = set(os.listdir(self.path))
        removed = False
        for name in names:
            if name.startswith(".") and name.endswith(".tmp"):
                os.unlink(os.path.join(self.path, name))
                removed = True
            elif name.endswith(MESSAGE_SUFFIX):
                base = name[: -len(MESSAGE_SUFFIX)]
                if base + ENVELOPE_SUFFIX not in names:
                    os.unlink(os.path.join(self.path, name))
                    removed = True
        if removed:
            fsync_dir(self.path)
        return list(self.entries())
