"""
The arguments of each IMAP command as typed values, and their grammar
(RFC 3501 section 9).  Each ``parse_*`` function takes a cursor placed
right after the command name and reads the arguments, including the SP
before them; the dispatcher checks that nothing follows.
"""

from __future__ import annotations

from datetime import datetime

import attrs

from pymail.imap.fetch import FetchItem, parse_fetch_items
from pymail.imap.parser import Cursor, ParseError, SequenceSet
from pymail.imap.responses import decode_mailbox
from pymail.imap.search import Key, parse_search_keys

_STATUS_ITEMS = ("MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN")


@attrs.frozen
class Command:
    """
    One parsed command.

    :ivar tag: the client's tag.
    :ivar name: the command name upper-cased; ``"UID FETCH"`` etc. for UID
        commands.
    :ivar args: the typed arguments (one of the classes below), or None.
    """

    tag: bytes
    name: str
    args: object = None


@attrs.frozen
class Login:
    user: bytes
    password: bytes = attrs.field(repr=False)


@attrs.frozen
class MailboxArg:
    """SELECT, EXAMINE, CREATE, DELETE, SUBSCRIBE, UNSUBSCRIBE."""

    mailbox: str


@attrs.frozen
class Rename:
    old: str
    new: str


@attrs.frozen
class ListArgs:
    """LIST and LSUB: reference name and pattern (decoded from modified UTF-7)."""

    reference: str
    pattern: str


@attrs.frozen
class Status:
    mailbox: str
    items: tuple[str, ...]


@attrs.frozen
class Append:
    mailbox: str
    flags: tuple[str, ...]
    date: datetime | None
    message: bytes = attrs.field(repr=False)


@attrs.frozen
class Fetch:
    sequence: SequenceSet
    items: tuple[FetchItem, ...]


@attrs.frozen
class Store:
    """
    :ivar mode: ``"replace"``, ``"add"`` or ``"remove"``.
    """

    sequence: SequenceSet
    mode: str
    silent: bool
    flags: tuple[str, ...]


@attrs.frozen
class Copy:
    sequence: SequenceSet
    mailbox: str


@attrs.frozen
class Search:
    charset: str | None
    key: Key


@attrs.frozen
class Authenticate:
    mechanism: str
    initial: bytes | None


def no_args(cur: Cursor) -> None:
    return None


def mailbox_name(cur: Cursor) -> str:
    """A mailbox astring in modified UTF-7, as text; INBOX in any case is INBOX."""
    raw = cur.astring()
    try:
        name = decode_mailbox(raw)
    except ValueError as e:
        raise ParseError(str(e)) from None
    return "INBOX" if name.upper() == "INBOX" else name


def parse_login(cur: Cursor) -> Login:
    cur.sp()
    user = cur.astring()
    cur.sp()
    return Login(user, cur.astring())


def parse_authenticate(cur: Cursor) -> Authenticate:
    cur.sp()
    mechanism = cur.atom().decode("ascii").upper()
    initial = None
    if not cur.at_end():
        cur.sp()
        initial = cur.atom()
    return Authenticate(mechanism, initial)


def parse_mailbox(cur: Cursor) -> MailboxArg:
    cur.sp()
    return MailboxArg(mailbox_name(cur))


def parse_rename(cur: Cursor) -> Rename:
    cur.sp()
    old = mailbox_name(cur)
    cur.sp()
    return Rename(old, mailbox_name(cur))


def parse_list(cur: Cursor) -> ListArgs:
    cur.sp()
    reference = cur.astring()
    cur.sp()
    pattern = cur.list_mailbox()
    try:
        return ListArgs(decode_mailbox(reference), decode_mailbox(pattern))
    except ValueError as e:
        raise ParseError(str(e)) from None


def parse_status(cur: Cursor) -> Status:
    cur.sp()
    mailbox = mailbox_name(cur)
    cur.sp()
    items = [i.decode("ascii").upper() for i in cur.parenthesised("atom")]
    if not items:
        raise ParseError("STATUS needs at least one item")
    for item in items:
        if item not in _STATUS_ITEMS:
            raise ParseError(
                f"unknown STATUS item {item!r} (known: {' '.join(_STATUS_ITEMS)})"
            )
    return Status(mailbox, tuple(items))


def parse_append(cur: Cursor) -> Append:
    cur.sp()
    mailbox = mailbox_name(cur)
    cur.sp()
    flags: list[str] = []
    if cur.peek() == b"(":
        flags = cur.flag_list()
        cur.sp()
    when = None
    if cur.peek() == b'"':
        when = cur.date_time()
        cur.sp()
    if cur.peek() != b"{":
        raise cur.fail("the message as a literal")
    return Append(mailbox, tuple(flags), when, cur.literal())


def parse_fetch(cur: Cursor) -> Fetch:
    cur.sp()
    sequence = cur.sequence_set()
    cur.sp()
    return Fetch(sequence, tuple(parse_fetch_items(cur)))


def parse_store(cur: Cursor) -> Store:
    cur.sp()
    sequence = cur.sequence_set()
    cur.sp()
    mode = "replace"
    if cur.accept(b"+"):
        mode = "add"
    elif cur.accept(b"-"):
        mode = "remove"
    cur.expect(b"FLAGS")
    silent = cur.accept(b".SILENT")
    cur.sp()
    if cur.peek() == b"(":
        flags = cur.flag_list()
    else:
        flags = [cur.flag()]
        while not cur.at_end():
            cur.sp()
            flags.append(cur.flag())
    return Store(sequence, mode, silent, tuple(flags))


def parse_copy(cur: Cursor) -> Copy:
    cur.sp()
    sequence = cur.sequence_set()
    cur.sp()
    return Copy(sequence, mailbox_name(cur))


def parse_search(cur: Cursor) -> Search:
    cur.sp()
    charset, key = parse_search_keys(cur)
    return Search(charset, key)
