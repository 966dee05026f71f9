"""
Commands of the selected state (RFC 3501 section 6.4): CHECK, CLOSE,
EXPUNGE, SEARCH, FETCH, STORE, COPY and their UID forms.

All of them work on the session's own sequence-number map
(:class:`~pymail.imap.session.SelectedMailbox`); untagged updates caused by
others are written by the dispatcher after the handler, with EXPUNGE held
back after FETCH, STORE and SEARCH.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from itertools import islice
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool

from pymail.errors import NoSuchMessage, StorageError
from pymail.imap.commands import (
    Command,
    Copy,
    Expunge,
    Fetch,
    Search,
    Store,
    no_args,
    parse_copy,
    parse_fetch,
    parse_search,
    parse_store,
    parse_uid_expunge,
)
from pymail.imap.condstore import need_condstore, vanished_earlier
from pymail.imap.dispatch import SELECTED, CommandSpec, Reply
from pymail.imap.errors import bad, no, reply_for_storage_error
from pymail.imap.derive import (
    ENVELOPE,
    FILL_BATCH,
    FILL_MIN_MISSING,
    Derivation,
    can_fill,
    fill_in_batches,
)
from pymail.imap.fetch import FetchItem, Section, derivation, renderer
from pymail.imap.parser import SequenceSet
from pymail.imap.search import (
    CHARSETS,
    SEARCH_FIELDS,
    Candidate,
    compile_key,
    uses_cached_fields,
    uses_modseq,
)
from pymail.imap.responses import string
from pymail.imap.session import SelectedMailbox, uid_set_bytes
from pymail.interfaces import IMailbox, ISizedRead, MessageInfo

if TYPE_CHECKING:
    from pymail.imap.server import IMAPServerProtocol

_EXPUNGED = "EXPUNGEISSUED"


def _view(conn: IMAPServerProtocol) -> SelectedMailbox:
    view = conn.selected
    assert view is not None
    return view


def _require_writable(view: SelectedMailbox, what: str) -> None:
    if view.readonly:
        raise no(f"{what} is not allowed: the mailbox is read-only (EXAMINE)", "READ-ONLY")


async def handle_check(conn: IMAPServerProtocol, cmd: Command) -> Reply | None:
    await _view(conn).mailbox.refresh()
    return None


async def handle_close(conn: IMAPServerProtocol, cmd: Command) -> Reply | None:
    view = _view(conn)
    # RFC 3501 6.4.2: expunge silently, then leave the selected state.
    conn.deselect()
    if not view.readonly:
        await view.mailbox.expunge()
    return None


async def handle_expunge(conn: IMAPServerProtocol, cmd: Command) -> Reply | None:
    view = _view(conn)
    _require_writable(view, "EXPUNGE")
    if isinstance(cmd.args, Expunge):
        # UID EXPUNGE (RFC 4315 2.1): only the named messages, if \Deleted.
        indexes = view.resolve(cmd.args.sequence, True)
        await view.mailbox.expunge([view.uids[i] for i in indexes])
    else:
        await view.mailbox.expunge()
    return None


async def handle_fetch(conn: IMAPServerProtocol, cmd: Command) -> Reply | None:
    args = cmd.args
    assert isinstance(args, Fetch)
    view = _view(conn)
    uid_mode = cmd.name == "UID FETCH"
    items = list(args.items)
    if uid_mode and not any(item.name == "UID" for item in items):
        items.insert(0, FetchItem("UID"))
    if args.changedsince is not None or any(item.name == "MODSEQ" for item in items):
        need_condstore(conn, "MODSEQ")
        if not any(item.name == "MODSEQ" for item in items):
            items.append(FetchItem("MODSEQ"))
    if args.vanished:
        if not uid_mode or not view.qresync:
            raise bad("the VANISHED modifier needs UID FETCH and ENABLE QRESYNC (RFC 7162 3.2.6)")
        for line in vanished_earlier(view, args.sequence):
            conn.writer.add(line)
    indexes = view.resolve(args.sequence, uid_mode)
    mailbox = view.mailbox
    if args.changedsince is not None:
        since = args.changedsince

        def changed(index: int) -> bool:
            try:
                return mailbox.info(view.uids[index]).modseq > since
            except NoSuchMessage:
                return False

        indexes = [i for i in indexes if changed(i)]
    uids = view.uids
    marked: set[int] = set()
    if not view.readonly and any(item.sets_seen for item in items):
        unseen = []
        for index in indexes:
            try:
                if "\\Seen" not in mailbox.info(uids[index]).flags:
                    unseen.append(uids[index])
            except NoSuchMessage:
                pass
        if unseen:
            result = await mailbox.set_flags(unseen, ["\\Seen"], "add")
            marked = set(result)
    renderers = [renderer(item) for item in items]
    needs_message = any(item.needs_message for item in items)
    has_flags = any(item.name == "FLAGS" for item in items)
    info_of = mailbox.info
    writer = conn.writer
    missing = 0

    # The whole message as the last item (BODY[], BODY.PEEK[], RFC822) is
    # written as its own chunk, not copied into the response line.
    last = items[-1]
    tail: bytes | None = None
    if last.name == "RFC822":
        tail = b"RFC822"
    elif last.name == "BODY[]" and last.section == Section() and last.partial is None:
        tail = b"BODY[]"
    if tail is not None:
        renderers.pop()

    def render(index: int, message: bytes | None) -> None:
        nonlocal missing
        uid = uids[index]
        try:
            info = info_of(uid)
            parts = [draw(view, info, message) for draw in renderers]
        except NoSuchMessage:
            missing += 1
            return
        flags = b""
        if uid in marked and not has_flags:
            flags = b" FLAGS " + view.flags_of(info)
        if tail is None:
            writer.add(b"* %d FETCH (%s%s)\r\n" % (index + 1, b" ".join(parts), flags))
            return
        body = message or b""
        parts.append(tail)
        writer.add(b"* %d FETCH (%s {%d}\r\n" % (index + 1, b" ".join(parts), len(body)))
        writer.add(body)
        writer.add(flags + b")\r\n")

    derivations = [d for d in map(derivation, items) if d is not None]
    if not needs_message and derivations and can_fill(mailbox) and len(indexes) >= FILL_MIN_MISSING:
        await _render_filled(conn, view, indexes, derivations, render)
    elif not needs_message:
        for index in indexes:
            render(index, None)
    else:
        missing += await _fetch_with_messages(conn, view, indexes, render)
    if marked:
        view.forget_flag_updates(marked)
    if missing:
        raise no(f"{missing} of the messages were expunged and could not be fetched", _EXPUNGED)
    return None


def _in_thread(conn: IMAPServerProtocol) -> Callable[..., Deferred[object]]:
    """Runs ``f(*args)`` in the reactor's thread pool."""
    reactor = conn.reactor

    def in_thread(f: Callable[..., object], *args: object) -> Deferred[object]:
        return deferToThreadPool(
            reactor,  # type: ignore[arg-type]
            reactor.getThreadPool(),  # type: ignore[attr-defined]
            f, *args,
        )

    return in_thread


async def _render_filled(
    conn: IMAPServerProtocol, view: SelectedMailbox, indexes: Sequence[int],
    derivations: Sequence[Derivation], render: Callable[[int, bytes | None], None],
) -> None:
    """
    Render ``indexes`` a batch at a time, each batch once the derived
    values it shows are in memory: values not computed yet (a folder's
    first FETCH of ENVELOPEs) are filled in the thread pool
    (:func:`pymail.imap.derive.fill_in_batches`), not one by one here.
    """
    chunks = [indexes[i : i + FILL_BATCH] for i in range(0, len(indexes), FILL_BATCH)]
    uids = view.uids

    def ready(n: int) -> None:
        for index in chunks[n]:
            render(index, None)
        conn.writer.flush()

    # The headers read for ENVELOPE also give what SEARCH SUBJECT/FROM/...
    # looks at: a client's first search then finds them computed.
    alongside = [SEARCH_FIELDS] if ENVELOPE in derivations else []
    await fill_in_batches(_in_thread(conn), view.cache, view.mailbox,
                          [[uids[i] for i in chunk] for chunk in chunks], derivations, ready,
                          alongside)


#: Messages read per batch when a FETCH needs message bytes, and the bytes
#: after which a batch ends early: the next batch is read (in the thread
#: pool, where the backend allows) while this one is written.
FETCH_BATCH_MESSAGES = 128
FETCH_BATCH_BYTES = 4 * 1024 * 1024
#: Batches read at once in the thread pool (file opens overlap).
FETCH_READERS = 3


def _read_batch(mailbox: IMailbox, wanted: list[tuple[int, int]]) -> list[bytes | None]:
    """
    The messages ``(uid, wire size)`` in wire form, None for those gone;
    with one system call each where the mailbox offers it (``ISizedRead``).
    """
    out: list[bytes | None] = []
    sized = ISizedRead(mailbox, None)
    read = mailbox.read
    for uid, size in wanted:
        try:
            if sized is not None and size >= 0:
                out.append(sized.read_sized(uid, size))
            else:
                out.append(read(uid))
        except NoSuchMessage:
            out.append(None)
    return out


async def _fetch_with_messages(
    conn: IMAPServerProtocol, view: SelectedMailbox, indexes: Sequence[int],
    render: Callable[[int, bytes | None], None],
) -> int:
    """
    Render the messages of ``indexes`` in batches: the next batch is read
    while this one is written (in the reactor's thread pool when the
    mailbox says its ``read`` is thread-safe, ``threadsafe_read``), and the
    transport's back-pressure is respected, so memory stays bounded.
    Returns how many messages were gone.
    """
    mailbox = view.mailbox
    uids = view.uids
    threaded = bool(getattr(mailbox, "threadsafe_read", False))
    reactor = conn.reactor
    infos = mailbox.info

    sizes: dict[int, int] = {}

    def batches() -> Iterator[list[int]]:
        batch: list[int] = []
        size = 0
        for index in indexes:
            batch.append(index)
            try:
                sizes[index] = infos(uids[index]).size
                size += sizes[index]
            except NoSuchMessage:
                pass
            if len(batch) >= FETCH_BATCH_MESSAGES or size >= FETCH_BATCH_BYTES:
                yield batch
                batch, size = [], 0
        if batch:
            yield batch

    def start(batch: list[int]) -> Deferred[list[bytes | None]]:
        wanted = [(uids[i], sizes.pop(i, -1)) for i in batch]
        if threaded:
            return deferToThreadPool(
                reactor,  # type: ignore[arg-type]
                reactor.getThreadPool(),  # type: ignore[attr-defined]
                _read_batch, mailbox, wanted,
            )
        return succeed(_read_batch(mailbox, wanted))

    missing = 0
    throttle = conn.start_streaming()
    pending = batches()
    reading: deque[tuple[list[int], Deferred[list[bytes | None]]]] = deque()
    try:
        for batch in islice(pending, FETCH_READERS if threaded else 1):
            reading.append((batch, start(batch)))
        while reading:
            batch, d = reading.popleft()
            messages = await d
            if conn.writer.closed:
                break  # the client went away: stop reading
            following = next(pending, None)
            if following is not None:
                reading.append((following, start(following)))
            for index, message in zip(batch, messages, strict=True):
                if message is None:
                    missing += 1
                else:
                    render(index, message)
            conn.writer.flush()
            if throttle is not None:
                await throttle.drained()
    finally:
        conn.stop_streaming(throttle)
        for _, abandoned in reading:
            # Reads still running after a failure or a lost client: their
            # outcome no longer matters (and must not be logged as unhandled).
            abandoned.addErrback(lambda _: None)
    return missing


async def handle_store(conn: IMAPServerProtocol, cmd: Command) -> Reply | None:
    args = cmd.args
    assert isinstance(args, Store)
    view = _view(conn)
    _require_writable(view, "STORE")
    uid_mode = cmd.name == "UID STORE"
    indexes = view.resolve(args.sequence, uid_mode)
    uids = view.uids
    modified: list[int] = []
    if args.unchangedsince is not None:
        # RFC 7162 3.1.3: leave alone what changed after the client's MODSEQ.
        need_condstore(conn, "UNCHANGEDSINCE")
        mailbox = view.mailbox
        keep = []
        for index in indexes:
            try:
                if mailbox.info(uids[index]).modseq > args.unchangedsince:
                    modified.append(uids[index])
                    continue
            except NoSuchMessage:
                pass
            keep.append(index)
        indexes = keep
    wanted = [uids[i] for i in indexes]
    if not wanted:
        return _modified_reply(view, modified, uid_mode)
    try:
        result = await view.mailbox.set_flags(wanted, args.flags, args.mode)
    except ValueError as e:
        raise bad(f"STORE: {e}") from None
    view.forget_flag_updates(set(result))
    if not args.silent or view.condstore:
        conn.writer.add(b"".join(_store_responses(view, uids, indexes, result, args.silent,
                                                  uid_mode)))
    if modified:
        return _modified_reply(view, modified, uid_mode)
    if len(result) < len(wanted):
        raise no(
            f"{len(wanted) - len(result)} of the messages were expunged; "
            "the others were updated", _EXPUNGED,
        )
    return None


def _store_responses(
    view: SelectedMailbox, uids: list[int], indexes: Sequence[int],
    result: dict[int, frozenset[str]], silent: bool, uid_mode: bool,
) -> Iterator[bytes]:
    """
    The untagged FETCH of each message STORE changed (RFC 3501 6.4.6), or
    with CONDSTORE its MODSEQ (RFC 7162 3.1.3, also after .SILENT).
    ``indexes`` are the places in ``uids``, the session's UID list the
    sequence set was resolved in, of the messages STORE was asked to change.
    """
    mailbox = view.mailbox
    # Nothing renumbers the view while flags are set, as a rule (changes by
    # others wait for the dispatcher): then a message's sequence number is
    # its place in the list, else it is looked up.
    same = view.uids is uids
    render = view.render_flags
    for index in indexes:
        uid = uids[index]
        flags = result.get(uid)
        seq = index + 1 if same else view.seq_of(uid)
        if flags is None or seq is None:
            continue
        if view.condstore:
            try:
                info = mailbox.info(uid)
            except NoSuchMessage:
                continue
            if silent:
                yield b"* %d FETCH (%sMODSEQ (%d))\r\n" % (
                    seq, b"UID %d " % uid if uid_mode else b"", info.modseq)
            else:
                yield view.flag_update(seq, info, uid_mode)
            continue
        if uid_mode:
            yield b"* %d FETCH (UID %d FLAGS %s)\r\n" % (seq, uid, render(flags, uid))
        else:
            yield b"* %d FETCH (FLAGS %s)\r\n" % (seq, render(flags, uid))


def _modified_reply(view: SelectedMailbox, modified: list[int], uid_mode: bool) -> Reply | None:
    if not modified:
        return None
    if uid_mode:
        which = uid_set_bytes(modified)
    else:
        which = uid_set_bytes(s for s in (view.seq_of(u) for u in modified) if s is not None)
    return Reply("conditional STORE failed for some messages", "MODIFIED " + which.decode())


async def _copy(
    conn: IMAPServerProtocol, view: SelectedMailbox, sequence: SequenceSet, uid_mode: bool,
    mailbox_name: str,
) -> tuple[IMailbox, list[int], list[int]]:
    """Copy messages; returns the target and the source and new UIDs, in order."""
    indexes = view.resolve(sequence, uid_mode)
    try:
        target: IMailbox = await conn.store.get_mailbox(mailbox_name)
    except StorageError as e:
        raise reply_for_storage_error(e, trycreate=True) from None
    source = view.mailbox
    infos = []
    for index in indexes:
        try:
            infos.append(source.info(view.uids[index]))
        except NoSuchMessage:
            # RFC 2180 4.4.1: copy nothing if any message is gone.
            raise no("some of the messages were expunged; nothing copied", _EXPUNGED) from None
    copied: list[int] = []
    new: list[int] = []
    for info in infos:
        try:
            message = source.read(info.uid)
        except NoSuchMessage:
            raise no(
                f"{len(infos) - len(copied)} of the messages were expunged while copying",
                _EXPUNGED,
            ) from None
        new.append(await target.append(message, info.flags, info.internaldate))
        copied.append(info.uid)
    return target, copied, new


def copyuid(target: IMailbox, copied: list[int], new: list[int]) -> str | None:
    """The COPYUID response code (RFC 4315 section 3)."""
    if not copied:
        return None
    return f"COPYUID {target.uidvalidity()} {_uid_list(copied)} {_uid_list(new)}"


def _uid_list(uids: list[int]) -> str:
    # The two sets must pair up in order, so ranges only where both ascend.
    return uid_set_bytes(uids).decode() if uids == sorted(uids) else ",".join(map(str, uids))


async def handle_copy(conn: IMAPServerProtocol, cmd: Command) -> Reply | None:
    args = cmd.args
    assert isinstance(args, Copy)
    view = _view(conn)
    target, copied, new = await _copy(
        conn, view, args.sequence, cmd.name == "UID COPY", args.mailbox
    )
    return Reply(f"{cmd.name} completed", copyuid(target, copied, new))


async def handle_move(conn: IMAPServerProtocol, cmd: Command) -> Reply | None:
    args = cmd.args
    assert isinstance(args, Copy)
    view = _view(conn)
    _require_writable(view, "MOVE")
    target, copied, new = await _copy(
        conn, view, args.sequence, cmd.name == "UID MOVE", args.mailbox
    )
    if not copied:
        return None
    code = copyuid(target, copied, new)
    if code:
        # RFC 6851 4.3: COPYUID in an untagged OK before the expunges.
        conn.writer.untagged(b"OK [" + code.encode() + b"] moved")
    source = view.mailbox
    if target is not source:
        await source.set_flags(copied, ["\\Deleted"], "add")
        await source.expunge(copied)
    return None


def infos_in_view(mailbox: IMailbox, uids: Sequence[int]) -> Sequence[MessageInfo | None]:
    """
    The MessageInfo of each of a session's ``uids`` (ascending), None for
    those gone: one walk over the folder's list instead of a lookup each.
    """
    messages = mailbox.messages()
    if len(messages) == len(uids) and (not uids or messages[-1].uid == uids[-1]):
        # Same count and same highest UID: the same messages (UIDs only grow).
        return messages
    out: list[MessageInfo | None] = []
    j = 0
    n = len(messages)
    for uid in uids:
        while j < n and messages[j].uid < uid:
            j += 1
        out.append(messages[j] if j < n and messages[j].uid == uid else None)
    return out


async def handle_search(conn: IMAPServerProtocol, cmd: Command) -> Reply | None:
    args = cmd.args
    assert isinstance(args, Search)
    view = _view(conn)
    charset = (args.charset or "US-ASCII").upper()
    if charset not in CHARSETS:
        raise no(f"unsupported charset {args.charset!r}", "BADCHARSET (" + " ".join(CHARSETS) + ")")
    uid_mode = cmd.name == "UID SEARCH"

    def resolve(sequence: SequenceSet, uid_set: bool) -> set[int]:
        return set(view.resolve(sequence, uid_set))

    with_modseq = uses_modseq(args.key)
    if with_modseq:
        need_condstore(conn, "SEARCH MODSEQ")
    predicate = compile_key(args.key, charset, resolve)
    mailbox = view.mailbox
    uids = view.uids
    cache = view.cache
    table = None
    if uses_cached_fields(args.key):
        if can_fill(mailbox) and len(uids) >= FILL_MIN_MISSING:
            # A folder's first SEARCH SUBJECT: headers read in the thread pool.
            chunks = [uids[i : i + FILL_BATCH] for i in range(0, len(uids), FILL_BATCH)]
            await fill_in_batches(_in_thread(conn), cache, mailbox, chunks, [SEARCH_FIELDS],
                                  lambda n: None)
        table = cache.table(mailbox, SEARCH_FIELDS.name)
    found: list[int] = []
    top_modseq = 0
    recent = view.recent
    for index, (uid, info) in enumerate(zip(uids, infos_in_view(mailbox, uids), strict=True)):
        if info is None:
            continue  # expunged by another session; its EXPUNGE waits (RFC 3501 7.4.1)
        try:
            if predicate(Candidate(mailbox, info, index, uid in recent, cache, table)):
                found.append(uid if uid_mode else index + 1)
                if info.modseq > top_modseq:
                    top_modseq = info.modseq
        except NoSuchMessage:
            continue
    if args.returns is not None:
        modseq = top_modseq if with_modseq else None
        conn.writer.untagged(esearch(cmd.tag, uid_mode, args.returns, found, modseq))
        return None
    line = b" ".join([b"SEARCH"] + [b"%d" % n for n in found])
    if with_modseq and found:
        # RFC 7162 3.1.5: the highest MODSEQ of the messages found.
        line += b" (MODSEQ %d)" % top_modseq
    conn.writer.untagged(line)
    return None


def esearch(
    tag: bytes, uid_mode: bool, returns: tuple[str, ...], found: list[int],
    modseq: int | None,
) -> bytes:
    """An ESEARCH response (RFC 4731 section 3.1); ``RETURN ()`` means ALL."""
    out = [b"ESEARCH (TAG " + string(tag) + b")"]
    if uid_mode:
        out.append(b"UID")
    options = returns or ("ALL",)
    if found:
        if "MIN" in options:
            out.append(b"MIN %d" % found[0])
        if "MAX" in options:
            out.append(b"MAX %d" % found[-1])
        if "ALL" in options:
            out.append(b"ALL " + uid_set_bytes(found))
    if "COUNT" in options:
        out.append(b"COUNT %d" % len(found))
    if modseq is not None and found:
        out.append(b"MODSEQ %d" % modseq)
    return b" ".join(out)


COMMANDS = {
    "CHECK": CommandSpec(no_args, handle_check, SELECTED),
    "CLOSE": CommandSpec(no_args, handle_close, SELECTED),
    "EXPUNGE": CommandSpec(no_args, handle_expunge, SELECTED),
    "SEARCH": CommandSpec(parse_search, handle_search, SELECTED, expunge_ok=False),
    "FETCH": CommandSpec(parse_fetch, handle_fetch, SELECTED, expunge_ok=False),
    "STORE": CommandSpec(parse_store, handle_store, SELECTED, expunge_ok=False),
    "COPY": CommandSpec(parse_copy, handle_copy, SELECTED),
    "MOVE": CommandSpec(parse_copy, handle_move, SELECTED),
    "UID MOVE": CommandSpec(parse_copy, handle_move, SELECTED),
    "UID EXPUNGE": CommandSpec(parse_uid_expunge, handle_expunge, SELECTED),
    "UID SEARCH": CommandSpec(parse_search, handle_search, SELECTED, expunge_ok=False),
    "UID FETCH": CommandSpec(parse_fetch, handle_fetch, SELECTED, expunge_ok=False),
    "UID STORE": CommandSpec(parse_store, handle_store, SELECTED, expunge_ok=False),
    "UID COPY": CommandSpec(parse_copy, handle_copy, SELECTED),
}
CAPABILITIES = ("UIDPLUS", "MOVE", "ESEARCH")
