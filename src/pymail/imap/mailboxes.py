"""
Commands of the authenticated state (RFC 3501 section 6.3): SELECT,
EXAMINE, CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE, LIST, LSUB,
STATUS and APPEND; with LIST-EXTENDED (RFC 5258), LIST-STATUS (RFC 5819),
SPECIAL-USE (RFC 6154), CHILDREN (RFC 3348), APPENDLIMIT (RFC 7889) and
APPENDUID (UIDPLUS, RFC 4315).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, cast

from pymail.errors import MailboxExists, NoSuchMailbox, StorageError
from pymail.imap.commands import (
    Append,
    Command,
    ListArgs,
    MailboxArg,
    Rename,
    Select,
    Status,
    parse_append,
    parse_list,
    parse_mailbox,
    parse_rename,
    parse_select,
    parse_status,
)
from pymail.imap.condstore import need_condstore, qresync_select
from pymail.imap.dispatch import AUTHENTICATED, CommandSpec, Reply, State
from pymail.imap.errors import bad, no, reply_for_storage_error
from pymail.imap.responses import astring, encode_mailbox
from pymail.imap.session import SelectedMailbox
from pymail.interfaces import SYSTEM_FLAGS, IMailbox
from pymail.storage.base import flag_sets_of

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
    assert isinstance(args, Select)
    readonly = cmd.name == "EXAMINE"
    if args.qresync is not None and "QRESYNC" not in conn.enabled:
        # RFC 7162 3.2.5: QRESYNC parameters need ENABLE QRESYNC first.
        raise bad("the QRESYNC parameter needs ENABLE QRESYNC first")
    if args.condstore:
        need_condstore(conn, "SELECT (CONDSTORE)")
    # RFC 3501 6.3.1: a SELECT, even a failing one, deselects first.
    if conn.selected is not None and "QRESYNC" in conn.enabled:
        # RFC 7162 3.2.11: tell the client the old mailbox is closed.
        conn.writer.untagged(b"OK [CLOSED] previous mailbox closed")
    conn.deselect()
    mailbox = await _open(conn, args.mailbox)
    if conn.state is not State.AUTHENTICATED:
        return None  # logged out meanwhile
    view = SelectedMailbox(mailbox, readonly, conn.recent_tracker, conn.derived_cache)
    view.condstore = "CONDSTORE" in conn.enabled
    view.qresync = "QRESYNC" in conn.enabled
    conn.selected = view
    conn.state = State.SELECTED
    infos = mailbox.messages()
    # A folder opened from its index gives the flags without making a
    # MessageInfo per message (pymail.storage.base.LazyInfos).
    flag_sets = flag_sets_of(infos)
    first_unseen = 0
    for seq, flags in enumerate(flag_sets, 1):
        if "\\Seen" not in flags:
            first_unseen = seq
            break
    keywords = set(mailbox.keywords()) - SYSTEM_FLAGS
    extra = "".join(" " + k for k in sorted(keywords))
    w = conn.writer
    w.untagged(f"FLAGS ({_SYSTEM_FLAG_LIST}{extra})".encode("utf-8", "replace"))
    if readonly:
        w.untagged(b"OK [PERMANENTFLAGS ()] read-only mailbox")
    else:
        # \* only where the folder can still take new keywords (Maildir: 26).
        star = " \\*" if mailbox.accepts_new_keywords() else ""
        w.untagged(
            f"OK [PERMANENTFLAGS ({_SYSTEM_FLAG_LIST}{extra}{star})] flags allowed".encode(
                "utf-8", "replace"
            )
        )
    w.untagged(b"%d EXISTS" % view.exists)
    w.untagged(b"%d RECENT" % len(view.recent))
    if first_unseen:
        w.untagged(b"OK [UNSEEN %d] first unseen message" % first_unseen)
    w.untagged(b"OK [UIDVALIDITY %d] UIDs valid" % mailbox.uidvalidity())
    w.untagged(b"OK [UIDNEXT %d] predicted next UID" % mailbox.uidnext())
    if "CONDSTORE" in conn.table.capabilities:
        w.untagged(b"OK [HIGHESTMODSEQ %d] highest" % mailbox.highestmodseq())
    if args.qresync is not None:
        for line in qresync_select(view, args.qresync):
            w.add(line)
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


async def handle_delete(conn: IMAPServerProtocol, cmd: Command) -> Reply | None:
    args = cmd.args
    assert isinstance(args, MailboxArg)
    if args.mailbox == "INBOX":
        raise no("INBOX cannot be deleted", "CANNOT")
    names = conn.store.list_mailboxes()
    prefix = args.mailbox + DELIMITER
    if any(n.startswith(prefix) for n in names) and args.mailbox not in names:
        # RFC 3501 6.3.4: a \Noselect level with children cannot be deleted.
        raise no(f"{args.mailbox!r} only exists as the parent of other folders", "CANNOT")
    if conn.selected is not None and conn.selected.mailbox.name == args.mailbox:
        conn.deselect()
    try:
        await conn.store.delete_mailbox(args.mailbox)
    except StorageError as e:
        raise reply_for_storage_error(e) from None
    return None


async def handle_rename(conn: IMAPServerProtocol, cmd: Command) -> Reply | None:
    args = cmd.args
    assert isinstance(args, Rename)
    try:
        await conn.store.rename_mailbox(args.old, args.new)
    except StorageError as e:
        raise reply_for_storage_error(e) from None
    return None


async def handle_subscribe(conn: IMAPServerProtocol, cmd: Command) -> Reply | None:
    args = cmd.args
    assert isinstance(args, MailboxArg)
    try:
        if cmd.name == "SUBSCRIBE":
            await conn.store.subscribe(args.mailbox)
        else:
            await conn.store.unsubscribe(args.mailbox)
    except StorageError as e:
        raise reply_for_storage_error(e) from None
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


def list_matches(
    names: list[str], reference: str, pattern: str, *, parents: bool = True
) -> list[tuple[str, bool]]:
    """
    ``(name, selectable)`` for each folder matching ``reference + pattern``;
    levels that only exist as parents of real folders are listed as not
    selectable (``\\Noselect``).
    """
    regex = pattern_regex(reference + pattern)
    inbox_regex = re.compile(regex.pattern, re.DOTALL | re.IGNORECASE)
    existing = set(names)
    candidates = dict.fromkeys(names, True)
    for name in names if parents else ():
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


def _attributes(
    name: str, selectable: bool, by_subscription: bool, children: set[str],
    roles: dict[str, str], subscribed: set[str] | None,
) -> list[str]:
    attrs_ = []
    if not selectable:
        # A subscription to a folder that is gone is \NonExistent (RFC 5258 3.4);
        # a level that only exists as a parent is \Noselect.
        attrs_.append("\\NonExistent" if by_subscription else "\\Noselect")
    # CHILDREN (RFC 3348) and LIST-EXTENDED (RFC 5258 4): always said.
    attrs_.append("\\HasChildren" if name in children else "\\HasNoChildren")
    if subscribed is not None and name in subscribed:
        attrs_.append("\\Subscribed")
    role = roles.get(name)
    if role:
        attrs_.append(role)
    return attrs_


async def handle_list(conn: IMAPServerProtocol, cmd: Command) -> Reply | None:
    args = cmd.args
    assert isinstance(args, ListArgs)
    lsub = cmd.name == "LSUB"
    kind = b"LSUB" if lsub else b"LIST"
    store = conn.store
    if args.patterns == ("",) and not args.selection and not args.returns:
        # RFC 3501 6.3.8: the delimiter and the root of the reference.
        root = args.reference.split(DELIMITER, 1)[0] + DELIMITER if args.reference else ""
        conn.writer.untagged(
            kind + b' (\\Noselect) "." ' + astring(encode_mailbox(root))
        )
        return None
    names = store.list_mailboxes()
    existing = set(names)
    children = {n.rsplit(DELIMITER, 1)[0] for n in names if DELIMITER in n}
    for n in list(children):
        while DELIMITER in n:
            n = n.rsplit(DELIMITER, 1)[0]
            children.add(n)
    roles = store.special_use()
    selection = set(args.selection)
    returns = dict(args.returns)
    want_subscribed = lsub or "SUBSCRIBED" in selection or "SUBSCRIBED" in returns
    subscribed = set(store.subscriptions()) if want_subscribed else None
    matched: dict[str, bool] = {}
    childinfo: set[str] = set()
    by_subscription = lsub or "SUBSCRIBED" in selection
    for pattern in args.patterns:
        if by_subscription:
            assert subscribed is not None
            pool = sorted(subscribed)
            for name, _ in list_matches(pool, args.reference, pattern, parents=False):
                matched.setdefault(name, name in existing)
            if "RECURSIVEMATCH" in selection:
                # RFC 5258 3.5: parents of subscribed folders, with CHILDINFO.
                regex = pattern_regex(args.reference + pattern)
                for sub in pool:
                    levels = sub.split(DELIMITER)
                    for depth in range(1, len(levels)):
                        parent = DELIMITER.join(levels[:depth])
                        if parent not in subscribed and regex.fullmatch(parent):
                            matched.setdefault(parent, parent in existing)
                            childinfo.add(parent)
        else:
            for name, selectable in list_matches(names, args.reference, pattern):
                matched.setdefault(name, selectable)
    if "SPECIAL-USE" in selection:
        matched = {n: sel for n, sel in matched.items() if n in roles}
    order = sorted(matched, key=lambda n: (n != "INBOX", n))
    status_items = cast("tuple[str, ...] | None", returns.get("STATUS"))
    for name in order:
        selectable = matched[name]
        if lsub:
            attributes = [] if selectable or name in existing else ["\\Noselect"]
        else:
            attributes = _attributes(
                name, selectable, by_subscription, children, roles if (
                    "SPECIAL-USE" in returns or "SPECIAL-USE" in selection or not args.extended
                ) else {}, subscribed,
            )
        extra = b' ("CHILDINFO" ("SUBSCRIBED"))' if name in childinfo else b""
        conn.writer.untagged(
            kind + b" (" + " ".join(attributes).encode() + b') "." '
            + astring(encode_mailbox(name)) + extra
        )
        if status_items and name in existing:
            # LIST-STATUS (RFC 5819): a STATUS response right after the LIST one.
            try:
                mailbox = await store.get_mailbox(name)
            except StorageError:
                continue
            conn.writer.untagged(status_line(conn, name, mailbox, status_items))
    return None


def status_line(
    conn: IMAPServerProtocol, name: str, mailbox: IMailbox, items: tuple[str, ...]
) -> bytes:
    """The ``STATUS name (ITEM n ...)`` response."""
    infos = mailbox.messages()
    values = []
    for item in items:
        if item == "MESSAGES":
            value = len(infos)
        elif item == "RECENT":
            floor = conn.recent_tracker.claimed_up_to(mailbox)
            value = sum(1 for info in infos if info.uid > floor)
        elif item == "UIDNEXT":
            value = mailbox.uidnext()
        elif item == "UIDVALIDITY":
            value = mailbox.uidvalidity()
        elif item == "HIGHESTMODSEQ":
            value = mailbox.highestmodseq()
        else:
            value = sum(1 for info in infos if "\\Seen" not in info.flags)
        values.append(b"%s %d" % (item.encode("ascii"), value))
    return b"STATUS " + astring(encode_mailbox(name)) + b" (" + b" ".join(values) + b")"


async def handle_status(conn: IMAPServerProtocol, cmd: Command) -> Reply | None:
    args = cmd.args
    assert isinstance(args, Status)
    if "HIGHESTMODSEQ" in args.items:
        need_condstore(conn, "STATUS HIGHESTMODSEQ")
    mailbox = await _open(conn, args.mailbox)
    conn.writer.untagged(status_line(conn, args.mailbox, mailbox, args.items))
    return None


async def handle_append(conn: IMAPServerProtocol, cmd: Command) -> Reply | None:
    args = cmd.args
    assert isinstance(args, Append)
    mailbox = await _open(conn, args.mailbox, trycreate=True)
    if not args.message:
        raise no("APPEND of an empty message")
    try:
        uid = await mailbox.append(args.message, args.flags, args.date)
    except ValueError as e:
        raise no(f"APPEND refused: {e}") from None
    except NoSuchMailbox as e:
        raise reply_for_storage_error(e, trycreate=True) from None
    # UIDPLUS (RFC 4315 3).
    return Reply("APPEND completed", f"APPENDUID {mailbox.uidvalidity()} {uid}")


COMMANDS = {
    "SELECT": CommandSpec(parse_select, handle_select, AUTHENTICATED),
    "EXAMINE": CommandSpec(parse_select, handle_select, AUTHENTICATED),
    "CREATE": CommandSpec(parse_mailbox, handle_create, AUTHENTICATED),
    "DELETE": CommandSpec(parse_mailbox, handle_delete, AUTHENTICATED),
    "RENAME": CommandSpec(parse_rename, handle_rename, AUTHENTICATED),
    "SUBSCRIBE": CommandSpec(parse_mailbox, handle_subscribe, AUTHENTICATED),
    "UNSUBSCRIBE": CommandSpec(parse_mailbox, handle_subscribe, AUTHENTICATED),
    "LIST": CommandSpec(parse_list, handle_list, AUTHENTICATED),
    "LSUB": CommandSpec(parse_list, handle_list, AUTHENTICATED),
    "STATUS": CommandSpec(parse_status, handle_status, AUTHENTICATED),
    "APPEND": CommandSpec(parse_append, handle_append, AUTHENTICATED),
}
CAPABILITIES = ("CHILDREN", "SPECIAL-USE", "LIST-EXTENDED", "LIST-STATUS")
