"""
Values derived from messages (ENVELOPE, BODYSTRUCTURE, BODY, the decoded
fields SEARCH looks at), and filling them for many messages at once.

Each value is computed once per message and then kept by the storage
backend (``IMailbox.cached``) and in memory (:mod:`pymail.imap.cache`).
The first FETCH of ENVELOPEs over a folder nobody has fetched from yet
(after a migration, an index rebuild, a folder filled by another program)
must compute all of them.  Done one message at a time on the reactor
thread, that was one index query, one whole-file read and one index
transaction per message: 10,000 messages took 4 to 19 s (most of it
waiting for the disk, with the reactor blocked), against Dovecot's 0.3 s.

:func:`fill_in_batches` does it a batch at a time in the reactor's thread
pool, several batches at once so file reads overlap: one index query per
batch for the values already kept, only the header block read for values
that need no more (ENVELOPE, the SEARCH fields), and one index transaction
per batch for the new values.  It needs a mailbox whose ``read`` may run in
a thread (``threadsafe_read``) and that provides
:class:`~pymail.interfaces.ICachedMany`; with any other mailbox the values
are computed one at a time when rendered, as before.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import attrs
from twisted.internet.defer import Deferred

from pymail.errors import NoSuchMessage
from pymail.imap import bodystructure as bs
from pymail.imap.cache import DerivedCache
from pymail.imap.envelope import envelope, envelope_of_fields, envelope_wire
from pymail.imap.message import header_fields, split_message
from pymail.imap.responses import sexp
from pymail.interfaces import ICachedMany, IMailbox
from pymail.storage.base import open_message

#: Messages per thread-pool job when filling derived values.
FILL_BATCH = 256
#: Jobs in flight at once (their file reads overlap on a cold disk).
FILL_READERS = 3
#: Fewer missing values than this are computed on the reactor thread when
#: rendered: a thread hop costs more than a few header parses.
FILL_MIN_MISSING = 16
#: How much of a message is read looking for the end of its header block;
#: a longer header makes the whole message be read.
HEADER_READ_LIMIT = 256 * 1024
_HEADER_CHUNK = 16 * 1024


@attrs.frozen
class Derivation:
    """
    One kind of derived value.

    :ivar name: the name it is kept under (with a version: bump it on any
        change to ``compute``).
    :ivar compute: the value from the message in wire form.
    :ivar header_only: ``compute`` looks only at the header block, so
        given just the header block (with its empty line) it returns what
        it returns for the whole message.
    :ivar of_fields: for a header-only derivation, the same value from the
        parsed header fields (:func:`pymail.imap.message.header_fields`),
        so values computed together parse the header once.
    """

    name: str
    compute: Callable[[bytes], Any]
    header_only: bool
    of_fields: Callable[[list[tuple[bytes, bytes]]], Any] | None = None


def _envelope(message: bytes) -> bytes:
    return envelope_wire(envelope(message))


def _envelope_of_fields(fields: list[tuple[bytes, bytes]]) -> bytes:
    return envelope_wire(envelope_of_fields(fields))


def _bodystructure(message: bytes) -> bytes:
    return sexp(bs.bodystructure(message, True))


def _body(message: bytes) -> bytes:
    return sexp(bs.bodystructure(message, False))


ENVELOPE = Derivation("imap.envelope.1", _envelope, True, _envelope_of_fields)
BODYSTRUCTURE = Derivation("imap.bodystructure.1", _bodystructure, False)
BODY = Derivation("imap.body.1", _body, False)


def read_header(mailbox: IMailbox, uid: int) -> bytes:
    """
    The start of message ``uid`` up to and including the empty line that
    ends its header block (possibly with some body after it), or the whole
    message when it has no such line or its header is longer than
    :data:`HEADER_READ_LIMIT`.  For a header-only :class:`Derivation`
    this gives the same value as the whole message.

    :raises pymail.errors.NoSuchMessage: the message is gone.
    """
    with open_message(mailbox, uid) as stream:
        data = b""
        while True:
            chunk = stream.read(_HEADER_CHUNK)
            if not chunk:
                return data
            searched_from = max(0, len(data) - 3)
            data += chunk
            # A message that starts with the empty line has an empty header.
            if data.startswith(b"\r\n") or data.find(b"\r\n\r\n", searched_from) >= 0:
                return data
            if len(data) >= HEADER_READ_LIMIT:
                return data + stream.read()


def compute_batch(
    mailbox: IMailbox, uids: Sequence[int], derivations: Sequence[Derivation],
    alongside: Sequence[Derivation] = (),
) -> dict[str, dict[int, Any]]:
    """
    The values of ``derivations`` for ``uids`` (a thread-pool job): those
    the storage keeps, plus the missing ones computed, read with as little
    of each message as they need, and kept in one transaction per name.
    UIDs that are gone are left out.

    :param alongside: header-only derivations also computed (and kept) for
        every message whose header this job reads anyway, never a reason
        to read one: a folder's first ENVELOPE FETCH also fills the fields
        a later SEARCH SUBJECT needs, for a sixth more CPU.
    """
    batch = ICachedMany(mailbox)
    found: dict[str, dict[int, Any]] = {}
    missing: dict[int, list[Derivation]] = {}
    for derivation in derivations:
        have = found[derivation.name] = batch.cached_many(uids, derivation.name)
        for uid in uids:
            if uid not in have:
                missing.setdefault(uid, []).append(derivation)
    extra = [d for d in alongside if d.header_only and d not in derivations]
    computed: dict[str, dict[int, Any]] = {d.name: {} for d in [*derivations, *extra]}
    for uid, wanted in missing.items():
        try:
            if all(d.header_only for d in wanted):
                message = read_header(mailbox, uid)
            else:
                message = mailbox.read(uid)
        except NoSuchMessage:
            continue
        fields = None
        for derivation in [*wanted, *extra]:
            if derivation.of_fields is not None:
                if fields is None:
                    fields = header_fields(split_message(message)[0])
                computed[derivation.name][uid] = derivation.of_fields(fields)
            else:
                computed[derivation.name][uid] = derivation.compute(message)
    for name, values in computed.items():
        if values:
            batch.store_cached(name, values)
            found.setdefault(name, {}).update(values)
    return found


def can_fill(mailbox: IMailbox) -> bool:
    """Whether :func:`fill_in_batches` can use the thread pool for ``mailbox``."""
    return bool(getattr(mailbox, "threadsafe_read", False)) and ICachedMany.providedBy(mailbox)


async def fill_in_batches(
    in_thread: Callable[..., Deferred[Any]], cache: DerivedCache, mailbox: IMailbox,
    batches: Sequence[Sequence[int]], derivations: Sequence[Derivation],
    ready: Callable[[int], None], alongside: Sequence[Derivation] = (),
) -> None:
    """
    Make sure ``cache`` holds ``derivations`` for each batch of UIDs, then
    call ``ready(i)`` for batch ``i``, in order.  A batch whose values are
    all in memory is ready at once; the others are filled by
    :func:`compute_batch` through ``in_thread(f, *args)`` (the reactor's
    thread pool), :data:`FILL_READERS` at a time, with ``alongside`` as
    :func:`compute_batch` takes it.  Values of messages that are gone are
    left for the renderer to find gone.
    """
    threaded = can_fill(mailbox)
    tables = [(d, cache.table(mailbox, d.name)) for d in derivations]
    pending: deque[tuple[int, Deferred[dict[str, dict[int, Any]]] | None]] = deque()
    following = 0

    def start(i: int) -> Deferred[dict[str, dict[int, Any]]] | None:
        uids = batches[i]
        wanted = [d for d, table in tables if any(uid not in table for uid in uids)]
        if not threaded or not wanted:
            return None
        missing = sum(1 for d, table in tables for uid in uids if uid not in table)
        if missing < FILL_MIN_MISSING:
            return None
        return in_thread(compute_batch, mailbox, uids, wanted, alongside)

    try:
        while following < len(batches) or pending:
            while following < len(batches) and len(pending) < FILL_READERS:
                pending.append((following, start(following)))
                following += 1
            i, d = pending.popleft()
            if d is not None:
                for name, values in (await d).items():
                    cache.put_many(mailbox, name, values)
            ready(i)
    finally:
        for _, abandoned in pending:
            if abandoned is not None:
                # Jobs still running after a failure or a lost client.
                abandoned.addErrback(lambda _: None)
