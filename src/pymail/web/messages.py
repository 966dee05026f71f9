"""
Reading mail for the web pages: folder lists with unread counts, pages of
message summaries (newest first), a message taken apart into its text,
HTML and attachments, and search.

A page of the message list never parses more than the 50 messages it
shows: the order comes from :class:`~pymail.interfaces.MessageInfo`
(INTERNALDATE, UID), kept sorted per folder until the folder changes, and
each summary (From, Subject, Date) is derived from the message's header
once and kept with :meth:`IMailbox.cached` where the backend has it (the
folder's index), else in a bounded in-process cache.
"""

from __future__ import annotations

import bisect
import email.policy
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from email.headerregistry import Address as HeaderAddress
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser, BytesParser
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any, TypeVar

import attrs

from pymail.errors import BadMailboxName, NoSuchMailbox, NoSuchMessage
from pymail.interfaces import ICachedMany, IMailbox, IMailStore, MessageInfo

#: Messages on one page of the message list.
PAGE_SIZE = 50

#: The name (and version) of the summary kept in the folder's cache.
SUMMARY_CACHE_NAME = "web.summary.1"

#: Summaries kept in process when the backend has no cache of its own.
LOCAL_CACHE_SIZE = 200_000

#: Longest subject or sender shown in a list row, in characters.
MAX_LIST_TEXT = 200

_T = TypeVar("_T")


@attrs.frozen
class Summary:
    """What a message-list row shows, derived from the header only."""

    sender: str
    sender_address: str
    subject: str
    date: int | None
    multipart_mixed: bool

    @classmethod
    def from_cache(cls, value: Sequence[Any]) -> Summary:
        sender, address, subject, date, mixed = value
        return cls(str(sender), str(address), str(subject), date, bool(mixed))


def _header_text(value: Any) -> str:
    text = " ".join(str(value).split())
    return text[:MAX_LIST_TEXT]


def summarise(message: bytes) -> tuple[str, str, str, int | None, int]:
    """Compute a message's :class:`Summary` (as its cacheable tuple) from its header."""
    end = message.find(b"\r\n\r\n")
    header = message if end < 0 else message[: end + 4]
    parsed = BytesHeaderParser(policy=email.policy.default).parsebytes(header)
    sender = address = ""
    try:
        raw_from = parsed.get("From")
        if raw_from is not None:
            addresses = getattr(raw_from, "addresses", ())
            if addresses:
                first = addresses[0]
                sender = first.display_name or first.addr_spec
                address = first.addr_spec
            else:
                sender = str(raw_from)
    except Exception:  # a malformed header is shown as it came
        sender = str(parsed.get("From", ""))
    try:
        subject = str(parsed.get("Subject", "") or "")
    except Exception:
        subject = ""
    date: int | None = None
    try:
        raw_date = parsed.get("Date")
        if raw_date is not None:
            when = parsedate_to_datetime(str(raw_date))
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            date = int(when.timestamp())
    except Exception:
        date = None
    ctype = parsed.get_content_type() if parsed.get("Content-Type") else "text/plain"
    return (_header_text(sender), _header_text(address), _header_text(subject), date,
            int(ctype == "multipart/mixed"))


@attrs.define
class SummaryCache:
    """
    Summaries of messages: from the backend's own cache
    (:meth:`IMailbox.cached`) when it has one, else from a bounded cache
    here, keyed by folder identity, UIDVALIDITY and UID.
    """

    size: int = LOCAL_CACHE_SIZE
    _local: OrderedDict[tuple[int, int, int], Summary] = attrs.Factory(OrderedDict)

    def summary(self, mailbox: IMailbox, uid: int) -> Summary:
        cached = getattr(mailbox, "cached", None)
        if cached is not None:
            return Summary.from_cache(cached(uid, SUMMARY_CACHE_NAME, summarise))
        key = (id(mailbox), mailbox.uidvalidity(), uid)
        found = self._local.get(key)
        if found is None:
            found = Summary.from_cache(summarise(mailbox.read(uid)))
            self._local[key] = found
            if len(self._local) > self.size:
                self._local.popitem(last=False)
        return found


    def many(self, mailbox: IMailbox, uids: Sequence[int]) -> dict[int, Summary]:
        """
        Summaries of ``uids`` (messages gone meanwhile are left out).  A
        folder with :class:`~pymail.interfaces.ICachedMany` answers with one
        index query, and the summaries it lacked are computed and kept in one
        index transaction, instead of one of each per message.
        """
        if not ICachedMany.providedBy(mailbox):
            found: dict[int, Summary] = {}
            for uid in uids:
                try:
                    found[uid] = self.summary(mailbox, uid)
                except NoSuchMessage:
                    continue
            return found
        batch: Any = mailbox
        have = batch.cached_many(uids, SUMMARY_CACHE_NAME)
        new = {}
        for uid in uids:
            if uid not in have:
                try:
                    new[uid] = summarise(mailbox.read(uid))
                except NoSuchMessage:
                    continue
        if new:
            batch.store_cached(SUMMARY_CACHE_NAME, new)
            have.update(new)
        return {uid: Summary.from_cache(have[uid]) for uid in uids if uid in have}


@attrs.define
class _Order:
    stamp: tuple[int, int, int]
    uids: list[int]


@attrs.define
class FolderOrder:
    """
    The UIDs of each open folder, newest first (by INTERNALDATE, then UID),
    sorted once and kept until the folder gains or loses messages.
    """

    _orders: dict[int, _Order] = attrs.Factory(dict)

    def newest_first(self, mailbox: IMailbox) -> list[int]:
        infos = mailbox.messages()
        stamp = (mailbox.uidvalidity(), mailbox.uidnext(), len(infos))
        order = self._orders.get(id(mailbox))
        if order is not None and order.stamp != stamp:
            order = self._extended(mailbox, order, stamp)
        if order is None or order.stamp != stamp:
            ranked = sorted(infos, key=lambda i: (i.internaldate, i.uid), reverse=True)
            order = _Order(stamp, [i.uid for i in ranked])
        self._orders[id(mailbox)] = order
        return order.uids

    @staticmethod
    def _extended(mailbox: IMailbox, old: _Order, stamp: tuple[int, int, int]) -> _Order | None:
        """
        The common case without a full sort: only new mail arrived (nothing
        expunged), all of it no older than the newest message already
        ordered, so it goes on top.  ``None`` when that is not the case.
        """
        infos = mailbox.messages()
        added = stamp[2] - old.stamp[2]
        if stamp[0] != old.stamp[0] or added <= 0 or not old.uids:
            return None
        first_new = bisect.bisect_left(infos, old.stamp[1], key=lambda i: i.uid)
        if len(infos) - first_new != added:
            return None  # something was expunged as well
        new = infos[first_new:]
        try:
            newest = mailbox.info(old.uids[0])
        except NoSuchMessage:
            return None
        ranked = sorted(new, key=lambda i: (i.internaldate, i.uid), reverse=True)
        if (ranked[-1].internaldate, ranked[-1].uid) < (newest.internaldate, newest.uid):
            return None
        return _Order(stamp, [i.uid for i in ranked] + old.uids)


def unseen_count(mailbox: IMailbox) -> int:
    """Messages without ``\\Seen``."""
    return sum(1 for info in mailbox.messages() if "\\Seen" not in info.flags)


@attrs.frozen
class FolderEntry:
    name: str
    unseen: int
    total: int
    role: str | None


@attrs.define
class UnseenCounts:
    """
    Unread counts per open folder, recounted only when the folder changed
    (its HIGHESTMODSEQ or size moved), so a page of a 100,000-message
    folder does not walk every message for the folder list.
    """

    _counts: dict[int, tuple[tuple[int, int, int], int]] = attrs.Factory(dict)

    def unseen(self, mailbox: IMailbox) -> int:
        stamp = (mailbox.uidvalidity(), mailbox.highestmodseq(), len(mailbox.messages()))
        found = self._counts.get(id(mailbox))
        if found is None or found[0] != stamp:
            found = (stamp, unseen_count(mailbox))
            self._counts[id(mailbox)] = found
        return found[1]


async def folder_list(store: IMailStore, counts: UnseenCounts | None = None
                      ) -> list[FolderEntry]:
    """Every folder with its unread and total counts, INBOX and special-use first."""
    counts = counts if counts is not None else UnseenCounts()
    roles = special_use_roles(store)
    entries = []
    for name in folder_names(store, roles):
        mailbox = await store.get_mailbox(name)
        entries.append(FolderEntry(name, counts.unseen(mailbox), len(mailbox.messages()),
                                   roles.get(name)))
    return entries


def folder_names(store: IMailStore, roles: dict[str, str] | None = None) -> list[str]:
    """
    The folder names in the order the folder list shows: INBOX, special-use,
    the rest.  ``roles``: :func:`special_use_roles` of ``store``, when the
    caller has them already.
    """
    if roles is None:
        roles = special_use_roles(store)
    order = {name: i for i, (name, _) in enumerate(sorted(roles.items(), key=lambda x: x[1]))}
    return sorted(store.list_mailboxes(),
                  key=lambda n: (n.upper() != "INBOX", n not in roles, order.get(n, 0), n))


def special_use_roles(store: IMailStore) -> dict[str, str]:
    """Folder name -> special-use role (``\\Sent``...), for stores that keep them."""
    special_use = getattr(store, "special_use", None)
    return dict(special_use()) if special_use is not None else {}


async def role_folder(store: IMailStore, role: str, default: str) -> IMailbox:
    """
    The folder with a special-use role (``\\Sent``, ``\\Trash``), or the
    folder named ``default``, created if missing.
    """
    for name, found in special_use_roles(store).items():
        if found == role:
            return await store.get_mailbox(name)
    if default not in store.list_mailboxes():
        await store.create_mailbox(default)
    return await store.get_mailbox(default)


@attrs.frozen
class Row:
    info: MessageInfo
    summary: Summary


@attrs.frozen
class Page:
    rows: list[Row]
    number: int
    pages: int
    total: int


def page_of(mailbox: IMailbox, uids: Sequence[int], number: int, summaries: SummaryCache,
            size: int = PAGE_SIZE) -> Page:
    """One page (0 = newest) of ``uids``; messages gone since are skipped."""
    pages = max(1, -(-len(uids) // size))
    number = min(max(0, number), pages - 1)
    rows = []
    for uid in uids[number * size:(number + 1) * size]:
        try:
            rows.append(Row(mailbox.info(uid), summaries.summary(mailbox, uid)))
        except NoSuchMessage:
            continue
    return Page(rows, number, pages, len(uids))


# -- one message ---------------------------------------------------------------------------

@attrs.frozen
class Attachment:
    """A part offered for download; ``index`` is its position in ``walk()`` order."""

    index: int
    filename: str
    content_type: str
    size: int


@attrs.frozen
class ParsedMessage:
    """A message taken apart for display."""

    headers: list[tuple[str, str]]
    text: str | None
    html: str | None
    attachments: list[Attachment]
    inline_images: dict[str, tuple[str, bytes]]
    message: EmailMessage
    #: The shown text part's index (its download link), if there is one.
    text_index: int | None = None
    #: The text was cut at :data:`TEXT_SHOWN_LIMIT` characters.
    text_truncated: bool = False
    #: The HTML part is over :data:`HTML_SHOWN_LIMIT`: listed for download, not shown.
    html_too_long: bool = False


#: Characters of a text part shown on the message page; the rest is one
#: download away (a page of megabytes would stall the browser and the server).
TEXT_SHOWN_LIMIT = 256 * 1024

#: Characters of HTML the page shows (sanitising costs ~0.12 s a MB, twice a
#: view); a longer HTML part is offered as a download instead.
HTML_SHOWN_LIMIT = 2 * 1024 * 1024

#: Header fields shown above a message, in this order.
SHOWN_HEADERS = ("From", "To", "Cc", "Date", "Subject")


def parse(message: bytes) -> EmailMessage:
    """
    Parse a message in wire form.

    A single-part message (the common case, and the cheap attack: megabytes
    of short lines) has only its header parsed; its body becomes the payload
    as one string, as the full parser would make it, without the full
    parser's per-line work (20 MB of empty lines: 0.01 s instead of 3 s).
    """
    end = message.find(b"\r\n\r\n")
    if end >= 0:
        head = BytesHeaderParser(policy=email.policy.default).parsebytes(message[:end + 4])
        if (isinstance(head, EmailMessage) and not head.defects and head.get_payload() == ""
                and head.get_content_maintype() not in ("multipart", "message")):
            head.set_payload(message[end + 4:].decode("ascii", "surrogateescape"))
            return head
    parsed = BytesParser(policy=email.policy.default).parsebytes(message)
    assert isinstance(parsed, EmailMessage)
    return parsed


def _safe_str(get: Callable[[], _T], default: _T) -> _T:
    try:
        return get()
    except Exception:  # malformed MIME: show what can be shown
        return default


def part_filename(part: Message, index: int) -> str:
    """The part's file name, or a made-up one from its type."""
    name = _safe_str(part.get_filename, None)
    if name:
        name = "".join(c for c in str(name) if c.isprintable() and c not in '/\\"')
        name = name.strip(". ") or None
    if not name:
        subtype = part.get_content_subtype()
        extension = {"plain": "txt", "rfc822": "eml", "jpeg": "jpg"}.get(subtype, subtype)
        name = f"part-{index}.{extension}"
    return name[:200]


def _decoded(part: Message) -> bytes:
    payload = _safe_str(lambda: part.get_payload(decode=True), None)
    if isinstance(payload, bytes):
        return payload
    if part.get_content_type() == "message/rfc822" or part.is_multipart():
        return _safe_str(lambda: part.as_bytes(policy=email.policy.SMTP), b"")
    return b""


def _text_of(part: Message) -> str:
    data = _decoded(part)
    charset = part.get_content_charset() or "utf-8"
    try:
        text = data.decode(charset, "replace")
    except LookupError:
        text = data.decode("utf-8", "replace")
    return text.replace("\r\n", "\n")


def walk_parts(message: EmailMessage) -> Iterator[tuple[int, Message]]:
    """Every part with its index; message/rfc822 parts are leaves (downloadable whole)."""
    index = 0
    stack: list[Message] = [message]
    while stack:
        part = stack.pop(0)
        yield index, part
        index += 1
        if part.is_multipart() and part.get_content_type() != "message/rfc822":
            children = part.get_payload()
            if isinstance(children, list):
                stack[0:0] = [c for c in children if isinstance(c, Message)]


def take_apart(message: bytes, text_limit: int | None = TEXT_SHOWN_LIMIT) -> ParsedMessage:
    """
    Find the text and HTML bodies, the attachments and the embedded images.

    :param text_limit: characters of the text kept for showing (None: all,
        as a draft being edited needs).
    """
    parsed = parse(message)
    headers = []
    for name in SHOWN_HEADERS:
        value = _safe_str(lambda n=name: parsed.get(n), None)  # type: ignore[misc]
        if value is not None:
            headers.append((name, " ".join(str(value).split())))
    text: str | None = None
    text_index: int | None = None
    truncated = False
    html: str | None = None
    html_too_long = False
    attachments = []
    images: dict[str, tuple[str, bytes]] = {}
    for index, part in walk_parts(parsed):
        if part.is_multipart() and part.get_content_type() != "message/rfc822":
            continue
        ctype = part.get_content_type()
        disposition = _safe_str(part.get_content_disposition, None)
        content_id = part.get("Content-ID")
        if disposition != "attachment" and ctype == "text/plain" and text is None \
                and not part.get_filename():
            text = _text_of(part)
            text_index = index
            if text_limit is not None and len(text) > text_limit:
                text, truncated = text[:text_limit], True
            continue
        if disposition != "attachment" and ctype == "text/html" and html is None \
                and not html_too_long and not part.get_filename():
            candidate = _text_of(part)
            if len(candidate) <= HTML_SHOWN_LIMIT:
                html = candidate
                continue
            html_too_long = True  # listed below for download
        if content_id and ctype.startswith("image/"):
            images[str(content_id).strip().strip("<>")] = (ctype, _decoded(part))
            if disposition != "attachment":
                continue
        data = _decoded(part)
        attachments.append(Attachment(index, part_filename(part, index), ctype, len(data)))
    return ParsedMessage(headers, text, html, attachments, images, parsed, text_index, truncated,
                         html_too_long)


def attachment_contents(parsed: ParsedMessage, indexes: set[int]
                        ) -> list[tuple[Attachment, bytes]]:
    """
    The attachments of ``parsed`` (from :func:`take_apart`) whose indexes are
    in ``indexes``, with their decoded contents, in one walk of the parts.
    """
    listed = {a.index for a in parsed.attachments} & indexes
    out = []
    for index, part in walk_parts(parsed.message):
        if index in listed:
            data = _decoded(part)
            out.append((Attachment(index, part_filename(part, index), part.get_content_type(),
                                   len(data)), data))
    return out


def attachment(message: bytes, index: int) -> tuple[Attachment, bytes]:
    """
    The part at ``index`` (as listed by :func:`take_apart`) and its decoded content.

    :raises KeyError: no such part, or it is a container.
    """
    for found, part in walk_parts(parse(message)):
        if found == index:
            if part.is_multipart() and part.get_content_type() != "message/rfc822":
                break
            data = _decoded(part)
            return Attachment(index, part_filename(part, index), part.get_content_type(),
                              len(data)), data
    raise KeyError(index)


def header_text(message: EmailMessage, name: str) -> str:
    """
    A header field's decoded text on one line (runs of white space, including
    CR and LF an encoded word may hide, become one space), or ``""``.
    """
    value = _safe_str(lambda: message.get(name, ""), None)
    if value is None:  # the email package could not parse it: the raw text
        value = next((v for n, v in message.raw_items() if n.lower() == name.lower()), "")
    return " ".join(str(value or "").split())


def header_addresses(message: EmailMessage, name: str) -> list[str]:
    """
    The addr-specs in every ``name`` field, read from the raw header: the
    email package refuses (ValueError) an address whose encoded display name
    decodes to a line break, and a hostile message must not break a reply.
    """
    values = [" ".join(str(v).split()) for n, v in message.raw_items()
              if n.lower() == name.lower()]
    return [a for _, a in getaddresses(values) if a and not any(c in a for c in "\r\n\0")]


def reply_addresses(message: EmailMessage, own: str, everyone: bool) -> tuple[str, str]:
    """(To, Cc) of a reply or, with ``everyone``, a reply-all."""
    def addrs(name: str) -> list[str]:
        return header_addresses(message, name)

    to = addrs("Reply-To") or addrs("From")
    cc: list[str] = []
    if everyone:
        seen = {a.lower() for a in to} | {own.lower()}
        for a in addrs("To") + addrs("Cc"):
            if a.lower() not in seen:
                seen.add(a.lower())
                cc.append(a)
    return ", ".join(to), ", ".join(cc)


def format_address(name: str, address: str) -> str:
    """An address field value (``Name <a@b>``), as the email package writes it."""
    local, _, domain = address.rpartition("@")
    return str(HeaderAddress(display_name=name, username=local, domain=domain))


def display_date(timestamp: int | None, fallback: datetime) -> str:
    when = datetime.fromtimestamp(timestamp, UTC) if timestamp is not None else fallback
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


# -- search --------------------------------------------------------------------------------

#: The fields a search can look in.
SEARCH_FIELDS = ("from", "subject", "text")

#: Most results a search returns.
MAX_SEARCH_RESULTS = 200

#: Messages examined between two returns to the reactor.
SEARCH_BATCH = 100

#: Message octets a text search reads between two returns to the reactor
#: (a batch of 100 large messages would otherwise hold it for seconds).
SEARCH_PAUSE_BYTES = 1024 * 1024

#: Longest search text, in characters (a plain substring: no pattern syntax).
MAX_QUERY = 200


async def search(
    mailbox: IMailbox,
    uids: Sequence[int],
    field: str,
    query: str,
    summaries: SummaryCache,
    pause: Callable[[], Any],
    limit: int = MAX_SEARCH_RESULTS,
) -> list[Row]:
    """
    The messages (in ``uids`` order) whose sender, subject or text contains
    ``query`` (case-insensitive), at most ``limit``.  Sender and subject
    come from the folder's index (:meth:`IMailbox.cached`, the summary the
    message list shows), so only a "text" search opens messages.

    :param pause: returns an awaitable that yields to the reactor; it is
        awaited every :data:`SEARCH_BATCH` messages so a long search does
        not stall other users.
    """
    if field not in SEARCH_FIELDS:
        raise ValueError(f"search field must be one of {', '.join(SEARCH_FIELDS)}")
    needle = query.casefold()
    rows: list[Row] = []
    read = 0  # octets read since the last pause
    for start in range(0, len(uids), SEARCH_BATCH):
        if start:
            await pause()
        batch = uids[start:start + SEARCH_BATCH]
        found = summaries.many(mailbox, batch)
        for uid in batch:
            summary = found.get(uid)
            if summary is None:
                continue
            try:
                info = mailbox.info(uid)
                if field == "from":
                    hit = (needle in summary.sender.casefold()
                           or needle in summary.sender_address.casefold())
                elif field == "subject":
                    hit = needle in summary.subject.casefold()
                else:
                    if read >= SEARCH_PAUSE_BYTES:
                        read = 0
                        await pause()
                    data = mailbox.read(uid)
                    read += len(data)
                    hit = needle in _searchable_text(data).casefold()
            except NoSuchMessage:
                continue
            if hit:
                rows.append(Row(info, summary))
                if len(rows) >= limit:
                    return rows
    return rows


@attrs.frozen
class FoundRow:
    """A search result with the folder it is in."""

    folder: str
    row: Row


async def search_all(
    store: IMailStore,
    order: FolderOrder,
    field: str,
    query: str,
    summaries: SummaryCache,
    pause: Callable[[], Any],
) -> list[FoundRow]:
    """
    :func:`search` in every folder of ``store`` (INBOX and special-use
    folders first, as the folder list shows them), at most
    :data:`MAX_SEARCH_RESULTS` in all.
    """
    found: list[FoundRow] = []
    for name in folder_names(store):
        try:
            mailbox = await store.get_mailbox(name)
        except (NoSuchMailbox, BadMailboxName):
            continue  # deleted meanwhile
        rows = await search(mailbox, order.newest_first(mailbox), field, query, summaries,
                            pause, MAX_SEARCH_RESULTS - len(found))
        found.extend(FoundRow(mailbox.name, row) for row in rows)
        if len(found) >= MAX_SEARCH_RESULTS:
            break
    return found


def _searchable_text(message: bytes) -> str:
    """Subject and the decoded text of every text part."""
    parsed = parse(message)
    chunks = [str(_safe_str(lambda: parsed.get("Subject", ""), ""))]
    for _, part in walk_parts(parsed):
        if part.get_content_maintype() == "text":
            chunks.append(_text_of(part))
    return "\n".join(chunks)
