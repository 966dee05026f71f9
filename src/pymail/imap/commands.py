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

_STATUS_ITEMS = ("MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ")
#: ESEARCH RETURN options (RFC 4731).
RETURN_OPTIONS = ("MIN", "MAX", "ALL", "COUNT")


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
class QresyncParams:
    """SELECT's ``(QRESYNC (uidvalidity modseq [known-uids [seq-match]]))`` (RFC 7162 3.2.5)."""

    uidvalidity: int
    modseq: int
    known_uids: SequenceSet | None = None
    seq_match: tuple[SequenceSet, SequenceSet] | None = None


@attrs.frozen
class Select:
    """SELECT and EXAMINE, with CONDSTORE / QRESYNC parameters (RFC 7162)."""

    mailbox: str
    condstore: bool = False
    qresync: QresyncParams | None = None


@attrs.frozen
class Rename:
    old: str
    new: str


@attrs.frozen
class ListArgs:
    """
    LIST and LSUB: reference name and patterns (decoded from modified
    UTF-7), with LIST-EXTENDED's selection and return options (RFC 5258).

    :ivar returns: ``(option, value)``; STATUS has the item names as value.
    :ivar extended: the command used any LIST-EXTENDED syntax.
    """

    reference: str
    patterns: tuple[str, ...]
    selection: tuple[str, ...] = ()
    returns: tuple[tuple[str, object], ...] = ()
    extended: bool = False

    @property
    def pattern(self) -> str:
        return self.patterns[0]


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
    """
    :ivar changedsince: the CHANGEDSINCE modifier (RFC 7162 3.1.4).
    :ivar vanished: the VANISHED modifier (RFC 7162 3.2.6, UID FETCH only).
    """

    sequence: SequenceSet
    items: tuple[FetchItem, ...]
    changedsince: int | None = None
    vanished: bool = False


@attrs.frozen
class Store:
    """
    :ivar mode: ``"replace"``, ``"add"`` or ``"remove"``.
    """

    sequence: SequenceSet
    mode: str
    silent: bool
    flags: tuple[str, ...]
    unchangedsince: int | None = None


@attrs.frozen
class Copy:
    sequence: SequenceSet
    mailbox: str


@attrs.frozen
class Search:
    """
    :ivar returns: ESEARCH ``RETURN (...)`` options (RFC 4731), or None
        for a plain SEARCH response; ``()`` means ``ALL``.
    """

    charset: str | None
    key: Key
    returns: tuple[str, ...] | None = None


@attrs.frozen
class Expunge:
    """UID EXPUNGE (RFC 4315)."""

    sequence: SequenceSet


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


def _mod_sequence(cur: Cursor) -> int:
    """A mod-sequence-value: up to 2^63 - 1 (RFC 7162 section 7)."""
    return cur.number64()


def parse_select(cur: Cursor) -> Select:
    cur.sp()
    name = mailbox_name(cur)
    condstore = False
    qresync = None
    if cur.at_end():
        return Select(name)
    cur.sp()
    cur.expect(b"(")
    while True:
        param = cur.atom().upper()
        if param == b"CONDSTORE":
            condstore = True
        elif param == b"QRESYNC":
            cur.sp()
            cur.expect(b"(")
            uidvalidity = cur.nz_number()
            cur.sp()
            modseq = _mod_sequence(cur)
            known = None
            match = None
            if cur.accept(b" "):
                if cur.peek() != b"(":
                    known = cur.sequence_set()
                    cur.accept(b" ")
                if cur.accept(b"("):
                    seqs = cur.sequence_set()
                    cur.sp()
                    uids = cur.sequence_set()
                    cur.expect(b")")
                    match = (seqs, uids)
            cur.expect(b")")
            qresync = QresyncParams(uidvalidity, modseq, known, match)
        else:
            raise ParseError(f"unknown SELECT parameter {param.decode('ascii')!r}")
        if cur.accept(b")"):
            break
        cur.sp()
    return Select(name, condstore, qresync)


def parse_rename(cur: Cursor) -> Rename:
    cur.sp()
    old = mailbox_name(cur)
    cur.sp()
    return Rename(old, mailbox_name(cur))


#: LIST-EXTENDED selection options pymail knows (RFC 5258 3.1, RFC 6154 5.1).
LIST_SELECTION = ("SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE")
#: LIST-EXTENDED return options (RFC 5258 3.2, RFC 5819, RFC 6154 5.1).
LIST_RETURN = ("SUBSCRIBED", "CHILDREN", "STATUS", "SPECIAL-USE")


def parse_list(cur: Cursor) -> ListArgs:
    cur.sp()
    selection: list[str] = []
    extended = False
    if cur.peek() == b"(":
        extended = True
        selection = [o.decode("ascii").upper() for o in cur.parenthesised("atom")]
        for option in selection:
            if option not in LIST_SELECTION:
                raise ParseError(f"unknown LIST selection option {option!r}")
        if "RECURSIVEMATCH" in selection and len(selection) == 1:
            raise ParseError("RECURSIVEMATCH needs another selection option (RFC 5258 3.1)")
        cur.sp()
    reference = cur.astring()
    cur.sp()
    if cur.peek() == b"(":
        extended = True
        patterns = cur.parenthesised("list_mailbox")
        if not patterns:
            raise ParseError("LIST needs at least one pattern")
    else:
        patterns = [cur.list_mailbox()]
    returns: list[tuple[str, object]] = []
    if not cur.at_end():
        cur.sp()
        cur.expect(b"RETURN")
        cur.sp()
        extended = True
        cur.expect(b"(")
        while not cur.accept(b")"):
            if returns:
                cur.sp()
            option = cur.atom().decode("ascii").upper()
            if option not in LIST_RETURN:
                raise ParseError(f"unknown LIST return option {option!r}")
            value: object = None
            if option == "STATUS":
                cur.sp()
                items = tuple(i.decode("ascii").upper() for i in cur.parenthesised("atom"))
                _check_status_items(items)
                value = items
            returns.append((option, value))
    try:
        return ListArgs(
            decode_mailbox(reference), tuple(decode_mailbox(p) for p in patterns),
            tuple(selection), tuple(returns), extended,
        )
    except ValueError as e:
        raise ParseError(str(e)) from None


def _check_status_items(items: tuple[str, ...] | list[str]) -> None:
    if not items:
        raise ParseError("STATUS needs at least one item")
    for item in items:
        if item not in _STATUS_ITEMS:
            raise ParseError(
                f"unknown STATUS item {item!r} (known: {' '.join(_STATUS_ITEMS)})"
            )


def parse_status(cur: Cursor) -> Status:
    cur.sp()
    mailbox = mailbox_name(cur)
    cur.sp()
    items = [i.decode("ascii").upper() for i in cur.parenthesised("atom")]
    _check_status_items(items)
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
    items = tuple(parse_fetch_items(cur))
    changedsince = None
    vanished = False
    if not cur.at_end():
        cur.sp()
        cur.expect(b"(")
        while True:
            name = cur.atom().upper()
            if name == b"CHANGEDSINCE":
                cur.sp()
                changedsince = _mod_sequence(cur)
            elif name == b"VANISHED":
                vanished = True
            else:
                raise ParseError(f"unknown FETCH modifier {name.decode('ascii')!r}")
            if cur.accept(b")"):
                break
            cur.sp()
        if vanished and changedsince is None:
            raise ParseError("VANISHED needs CHANGEDSINCE (RFC 7162 3.2.6)")
    return Fetch(sequence, items, changedsince, vanished)


def parse_store(cur: Cursor) -> Store:
    cur.sp()
    sequence = cur.sequence_set()
    cur.sp()
    unchangedsince = None
    if cur.accept(b"("):
        cur.expect(b"UNCHANGEDSINCE")
        cur.sp()
        unchangedsince = _mod_sequence(cur)
        cur.expect(b")")
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
    return Store(sequence, mode, silent, tuple(flags), unchangedsince)


def parse_copy(cur: Cursor) -> Copy:
    cur.sp()
    sequence = cur.sequence_set()
    cur.sp()
    return Copy(sequence, mailbox_name(cur))


def parse_search(cur: Cursor) -> Search:
    cur.sp()
    returns = None
    if cur.peek_upper(7) == b"RETURN ":
        cur.pos += 7
        options = [o.decode("ascii").upper() for o in cur.parenthesised("atom")]
        for option in options:
            if option not in RETURN_OPTIONS:
                raise ParseError(
                    f"unknown SEARCH RETURN option {option!r} "
                    f"(known: {' '.join(RETURN_OPTIONS)})"
                )
        returns = tuple(dict.fromkeys(options))
        cur.sp()
    charset, key = parse_search_keys(cur)
    return Search(charset, key, returns)


def parse_uid_expunge(cur: Cursor) -> Expunge:
    cur.sp()
    return Expunge(cur.sequence_set())
