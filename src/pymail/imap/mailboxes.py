"""
Commands of the authenticated state (RFC 3501 section 6.3): SELECT,
EXAMINE, CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE, LIST, LSUB,
STATUS and APPEND.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from pymail.errors import MailboxExists, NoSuchMailbox, StorageError
from pymail.imap.commands import (
    Append,
    Command,
    ListArgs,
    MailboxArg,
    Status,
    parse_append,
    parse_list,
    parse_mailbox,
    parse_rename,
    parse_status,
)
from pymail.imap.dispatch import AUTHENTICATED, CommandSpec, Reply, State
from pymail.imap.errors import no, reply_for_storage_error
from pymail.imap.responses import astring, encode_mailbox
from pymail.imap.session import SelectedMailbox
from pymail.interfaces import SYSTEM_FLAGS, IMailbox

if TYPE_CHECKING:
    from pymail.imap.server import IMAPServerProtocol

#: The hierarchy delimiter (see pymail.storage.base.check_mailbox_name).
DELIMITER = "."

_SYSTEM_FLAG_LIST = "\\Answered \\Flagged \\Deleted \\Seen \\Draft"


async def _open(conn: IMAPServerProtocol, name: str, *, trycreate: bool = False) -> IMailbox:
    try:
        mailbox: IMailbox = await conn.store.get_mailbox(name)
    except StorageError as e:
        raise reply_for_storage_error(e, trycreate=trycreate) from None
    return mailbox


async def handle_select(conn: IMAPServerProtocol, cmd: Command) -> Reply | None:
    args = cmd.args
    assert isinstance(args, MailboxArg)
    readonly = cmd.name == "EXAMINE"
    # RFC 3501 6.3.1: a SELECT, even a failing one, deselects first.
    conn.deselect()
    mailbox = await _open(conn, args.mailbox)
    if conn.state is not State.AUTHENTICATED:
        return None  # logged out meanwhile
    view = SelectedMailbox(mailbox, readonly, conn.recent_tracker)
    conn.selected = view
    conn.state = State.SELECTED
    infos = mailbox.messages()
    keywords: set[str] = set()
    first_unseen = 0
    for seq, info in enumerate(infos, 1):
        if info.flags:
            keywords.update(info.flags)
        if not first_unseen and "\\Seen" not in info.flags:
            first_unseen = seq
    keywords -= SYSTEM_FLAGS
    extra = "".join(" " + k for k in sorted(keywords))
    w = conn.writer
    w.untagged(f"FLAGS ({_SYSTEM_FLAG_LIST}{extra})".encode("utf-8", "replace"))
    if readonly:
        w.untagged(b"OK [PERMANENTFLAGS ()] read-only mailbox")
    else:
        # The storage interface stores keywords, so clients may create them.
        w.untagged(f"OK [PERMANENTFLAGS ({_SYSTEM_FLAG_LIST} \\*)] flags allowed".encode())
    w.untagged(b"%d EXISTS" % view.exists)
    w.untagged(b"%d RECENT" % len(view.recent))
    if first_unseen:
        w.untagged(b"OK [UNSEEN %d] first unseen message" % first_unseen)
    w.untagged(b"OK [UIDVALIDITY %d] UIDs valid" % mailbox.uidvalidity())
    w.untagged(b"OK [UIDNEXT %d] predicted next UID" % mailbox.uidnext())
    if readonly:
        return Reply("EXAMINE completed", "READ-ONLY")
    return Reply("SELECT completed", "READ-WRITE")


async def handle_create(conn: IMAPServerProtocol, cmd: Command) -> Reply | None:
    args = cmd.args
    assert isinstance(args, MailboxArg)
    name = args.mailbox.rstrip(DELIMITER) if len(args.mailbox) > 1 else args.mailbox
    if name.upper() == "INBOX":
        raise no("INBOX always exists", "ALREADYEXISTS")
    existing = set(conn.store.list_mailboxes())
    # RFC 3501 6.3.3: create the superior levels the name needs.
    levels = name.split(DELIMITER)
    for depth in range(1, len(levels)):
        parent = DELIMITER.join(levels[:depth])
        if parent and parent not in existing and parent.upper() != "INBOX":
            try:
                await conn.store.create_mailbox(parent)
            except MailboxExists:
                pass
            except StorageError as e:
                raise reply_for_storage_error(e) from None
    try:
        await conn.store.create_mailbox(name)
    except StorageError as e:
        raise reply_for_storage_error(e) from None
    return None


async def handle_unsupported(conn: IMAPServerProtocol, cmd: Command) -> Reply | None:
    raise no(f"{cmd.name} is not supported by this server's storage yet", "CANNOT")


async def handle_subscribe(conn: IMAPServerProtocol, cmd: Command) -> Reply | None:
    # Every folder counts as subscribed (LSUB lists them all).
    return None


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """A LIST pattern as a regex: ``*`` matches anything, ``%`` stops at the delimiter."""
    out = []
    for ch in pattern:
        if ch == "*":
            out.append(".*")
        elif ch == "%":
            out.append("[^" + re.escape(DELIMITER) + "]*")
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out), re.DOTALL)


def list_matches(names: list[str], reference: str, pattern: str) -> list[tuple[str, bool]]:
    """
    ``(name, selectable)`` for each folder matching ``reference + pattern``;
    levels that only exist as parents of real folders are listed as not
    selectable (``\\Noselect``).
    """
    regex = pattern_regex(reference + pattern)
    inbox_regex = re.compile(regex.pattern, re.DOTALL | re.IGNORECASE)
    existing = set(names)
    candidates = dict.fromkeys(names, True)
    for name in names:
        levels = name.split(DELIMITER)
        for depth in range(1, len(levels)):
            parent = DELIMITER.join(levels[:depth])
            if parent not in existing:
                candidates.setdefault(parent, False)
    out = []
    for name, selectable in candidates.items():
        matcher = inbox_regex if name == "INBOX" else regex
        if matcher.fullmatch(name):
            out.append((name, selectable))
    out.sort(key=lambda item: (item[0] != "INBOX", item[0]))
    return out


async def handle_list(conn: IMAPServerProtocol, cmd: Command) -> Reply | None:
    args = cmd.args
    assert isinstance(args, ListArgs)
    kind = b"LSUB" if cmd.name == "LSUB" else b"LIST"
    if not args.pattern:
        # RFC 3501 6.3.8: the delimiter and the root of the reference.
        root = args.reference.split(DELIMITER, 1)[0] + DELIMITER if args.reference else ""
        conn.writer.untagged(
            kind + b' (\\Noselect) "." ' + astring(encode_mailbox(root))
        )
        return None
    names = conn.store.list_mailboxes()
    for name, selectable in list_matches(names, args.reference, args.pattern):
        attributes = b"()" if selectable else b"(\\Noselect)"
        conn.writer.untagged(kind + b" " + attributes + b' "." ' + astring(encode_mailbox(name)))
    return None


async def handle_status(conn: IMAPServerProtocol, cmd: Command) -> Reply | None:
    args = cmd.args
    assert isinstance(args, Status)
    mailbox = await _open(conn, args.mailbox)
    infos = mailbox.messages()
    values = []
    for item in args.items:
        if item == "MESSAGES":
            value = len(infos)
        elif item == "RECENT":
            floor = conn.recent_tracker.claimed_up_to(mailbox)
            value = sum(1 for info in infos if info.uid > floor)
        elif item == "UIDNEXT":
            value = mailbox.uidnext()
        elif item == "UIDVALIDITY":
            value = mailbox.uidvalidity()
        else:
            value = sum(1 for info in infos if "\\Seen" not in info.flags)
        values.append(b"%s %d" % (item.encode("ascii"), value))
    conn.writer.untagged(
        b"STATUS " + astring(encode_mailbox(args.mailbox)) + b" (" + b" ".join(values) + b")"
    )
    return None


async def handle_append(conn: IMAPServerProtocol, cmd: Command) -> Reply | None:
    args = cmd.args
    assert isinstance(args, Append)
    mailbox = await _open(conn, args.mailbox, trycreate=True)
    if not args.message:
        raise no("APPEND of an empty message")
    try:
        await mailbox.append(args.message, args.flags, args.date)
    except ValueError as e:
        raise no(f"APPEND refused: {e}") from None
    except NoSuchMailbox as e:
        raise reply_for_storage_error(e, trycreate=True) from None
    return None


COMMANDS = {
    "SELECT": CommandSpec(parse_mailbox, handle_select, AUTHENTICATED),
    "EXAMINE": CommandSpec(parse_mailbox, handle_select, AUTHENTICATED),
    "CREATE": CommandSpec(parse_mailbox, handle_create, AUTHENTICATED),
    "DELETE": CommandSpec(parse_mailbox, handle_unsupported, AUTHENTICATED),
    "RENAME": CommandSpec(parse_rename, handle_unsupported, AUTHENTICATED),
    "SUBSCRIBE": CommandSpec(parse_mailbox, handle_subscribe, AUTHENTICATED),
    "UNSUBSCRIBE": CommandSpec(parse_mailbox, handle_subscribe, AUTHENTICATED),
    "LIST": CommandSpec(parse_list, handle_list, AUTHENTICATED),
    "LSUB": CommandSpec(parse_list, handle_list, AUTHENTICATED),
    "STATUS": CommandSpec(parse_status, handle_status, AUTHENTICATED),
    "APPEND": CommandSpec(parse_append, handle_append, AUTHENTICATED),
}
