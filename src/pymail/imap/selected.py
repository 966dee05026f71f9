"""
Commands of the selected state (RFC 3501 section 6.4): CHECK, CLOSE,
EXPUNGE, SEARCH, FETCH, STORE, COPY and their UID forms.

All of them work on the session's own sequence-number map
(:class:`~pymail.imap.session.SelectedMailbox`); untagged updates caused by
others are written by the dispatcher after the handler, with EXPUNGE held
back after FETCH, STORE and SEARCH.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pymail.errors import NoSuchMessage, StorageError
from pymail.imap.commands import (
    Command,
    Copy,
    Fetch,
    Search,
    Store,
    no_args,
    parse_copy,
    parse_fetch,
    parse_search,
    parse_store,
)
from pymail.imap.dispatch import SELECTED, CommandSpec, Reply
from pymail.imap.errors import bad, no, reply_for_storage_error
from pymail.imap.fetch import FetchItem, renderer
from pymail.imap.parser import SequenceSet
from pymail.imap.search import CHARSETS, Candidate, compile_key
from pymail.imap.session import SelectedMailbox
from pymail.interfaces import IMailbox

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
    indexes = view.resolve(args.sequence, uid_mode)
    mailbox = view.mailbox
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
    missing = 0
    info_of = mailbox.info
    read = mailbox.read
    add = conn.writer.add
    for index in indexes:
        uid = uids[index]
        try:
            info = info_of(uid)
            message = read(uid) if needs_message else None
        except NoSuchMessage:
            missing += 1
            continue
        parts = [render(view, info, message) for render in renderers]
        if uid in marked and not has_flags:
            parts.append(b"FLAGS " + view.flags_of(info))
        add(b"* %d FETCH (%s)\r\n" % (index + 1, b" ".join(parts)))
    if marked:
        view.forget_flag_updates(marked)
    if missing:
        raise no(f"{missing} of the messages were expunged and could not be fetched", _EXPUNGED)
    return None


async def handle_store(conn: IMAPServerProtocol, cmd: Command) -> Reply | None:
    args = cmd.args
    assert isinstance(args, Store)
    view = _view(conn)
    _require_writable(view, "STORE")
    uid_mode = cmd.name == "UID STORE"
    indexes = view.resolve(args.sequence, uid_mode)
    wanted = [view.uids[i] for i in indexes]
    if not wanted:
        return None
    try:
        result = await view.mailbox.set_flags(wanted, args.flags, args.mode)
    except ValueError as e:
        raise bad(f"STORE: {e}") from None
    view.forget_flag_updates(set(result))
    if not args.silent:
        for uid in wanted:
            flags = result.get(uid)
            seq = view.seq_of(uid)
            if flags is None or seq is None:
                continue
            rendered = view.render_flags(flags, uid)
            if uid_mode:
                conn.writer.add(b"* %d FETCH (UID %d FLAGS %s)\r\n" % (seq, uid, rendered))
            else:
                conn.writer.add(b"* %d FETCH (FLAGS %s)\r\n" % (seq, rendered))
    if len(result) < len(wanted):
        raise no(
            f"{len(wanted) - len(result)} of the messages were expunged; "
            "the others were updated", _EXPUNGED,
        )
    return None


async def handle_copy(conn: IMAPServerProtocol, cmd: Command) -> Reply | None:
    args = cmd.args
    assert isinstance(args, Copy)
    view = _view(conn)
    indexes = view.resolve(args.sequence, cmd.name == "UID COPY")
    try:
        target: IMailbox = await conn.store.get_mailbox(args.mailbox)
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
    lost = 0
    for info in infos:
        try:
            message = source.read(info.uid)
        except NoSuchMessage:
            lost += 1
            continue
        await target.append(message, info.flags, info.internaldate)
    if lost:
        raise no(f"{lost} of the messages were expunged while copying", _EXPUNGED)
    return None


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

    predicate = compile_key(args.key, charset, resolve)
    mailbox = view.mailbox
    found: list[bytes] = []
    for index, uid in enumerate(view.uids):
        try:
            candidate = Candidate(mailbox, mailbox.info(uid), index, uid in view.recent)
            if predicate(candidate):
                found.append(b"%d" % (uid if uid_mode else index + 1))
        except NoSuchMessage:
            continue
    conn.writer.untagged(b" ".join([b"SEARCH"] + found))
    return None


COMMANDS = {
    "CHECK": CommandSpec(no_args, handle_check, SELECTED),
    "CLOSE": CommandSpec(no_args, handle_close, SELECTED),
    "EXPUNGE": CommandSpec(no_args, handle_expunge, SELECTED),
    "SEARCH": CommandSpec(parse_search, handle_search, SELECTED, expunge_ok=False),
    "FETCH": CommandSpec(parse_fetch, handle_fetch, SELECTED, expunge_ok=False),
    "STORE": CommandSpec(parse_store, handle_store, SELECTED, expunge_ok=False),
    "COPY": CommandSpec(parse_copy, handle_copy, SELECTED),
    "UID SEARCH": CommandSpec(parse_search, handle_search, SELECTED, expunge_ok=False),
    "UID FETCH": CommandSpec(parse_fetch, handle_fetch, SELECTED, expunge_ok=False),
    "UID STORE": CommandSpec(parse_store, handle_store, SELECTED, expunge_ok=False),
    "UID COPY": CommandSpec(parse_copy, handle_copy, SELECTED),
}
