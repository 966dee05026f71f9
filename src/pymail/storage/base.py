"""
What every backend's mailbox shares: the in-memory view of the folder (the
ordered messages, a UID index, MODSEQ) and the listeners.

The view is changed only in the reactor thread, by :meth:`MailboxView.apply_*`,
and each change is told to the listeners right after it is applied, so a
session reading :meth:`messages` in a listener sees the change.
"""

from __future__ import annotations

import bisect
import contextlib
import gc
import io
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, BinaryIO, TypeVar

import attrs

# Registers the 'imap4-utf-7' codec (RFC 3501 section 5.1.3) used for
# folder names on disk by Maildir++ and version-1 subscription files.
import twisted.mail.imap4  # noqa: F401
from twisted.logger import Logger

from pymail.errors import BadMailboxName, NoSuchMessage
from pymail.interfaces import (
    SYSTEM_FLAGS,
    IMailbox,
    IMailboxListener,
    IMessageStream,
    MailboxChange,
    MessageInfo,
)
from pymail.storage.fsutil import to_crlf

_T = TypeVar("_T")

log = Logger()


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """
    The cyclic garbage collector paused for a bulk load (a folder's 100,000
    messages become a few hundred thousand objects, none of them garbage):
    otherwise its collections walk them again and again, about a fifth of
    the load's time.  Reference counting still frees everything; the
    collector's state is restored afterwards (it stays off if it was off).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def normalise_flags(flags: Iterable[str]) -> frozenset[str]:
    """
    System flags in their canonical case (``\\seen`` -> ``\\Seen``); keywords
    as given.  ``\\Recent`` is a session property and is dropped.

    :raises ValueError: a flag that is empty, starts with a backslash but is
        not a system flag, or contains a character IMAP atoms may not hold.
    """
    canonical = {f.lower(): f for f in SYSTEM_FLAGS}
    out = set()
    for flag in flags:
        if flag.startswith("\\"):
            low = flag.lower()
            if low == "\\recent":
                continue
            if low not in canonical:
                raise ValueError(f"unknown system flag {flag!r}")
            out.add(canonical[low])
        else:
            if not flag or any(c in flag for c in '(){ %*"\\]') or not flag.isprintable():
                raise ValueError(f"invalid keyword {flag!r}")
            out.add(flag)
    return frozenset(out)


def apply_flag_mode(old: frozenset[str], flags: frozenset[str], mode: str) -> frozenset[str]:
    """The flags after a STORE of ``flags`` in ``mode`` (add, remove, replace)."""
    if mode == "add":
        return old | flags
    if mode == "remove":
        return old - flags
    if mode == "replace":
        return flags
    raise ValueError(f"flag mode must be add, remove or replace, not {mode!r}")


def check_mailbox_name(name: str) -> str:
    """
    Return a folder name unchanged if it is acceptable, else raise.

    Refused: empty names, control characters, ``/`` and ``\\`` (path
    separators on disk), a component that is empty, ``.`` or ``..``, and
    names over 255 characters.  ``.`` separates hierarchy levels.

    :raises BadMailboxName: with the reason.
    """
    if not name:
        raise BadMailboxName("mailbox name is empty")
    if len(name) > 255:
        raise BadMailboxName("mailbox name is longer than 255 characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise BadMailboxName("mailbox name contains a control character")
    if "/" in name or "\\" in name:
        raise BadMailboxName("mailbox name contains '/' or '\\'")
    for part in name.split("."):
        if part in ("", ".", ".."):
            raise BadMailboxName(
                f"mailbox name {name!r} has an empty level (hierarchy delimiter is '.')"
            )
    return name


#: :meth:`MailboxView.lookup` walks the whole view instead of searching per
#: UID when asked for at least 1/this of its messages.
_LOOKUP_SCAN_RATIO = 8


class LazyInfos(Sequence[MessageInfo]):
    """
    A folder's messages as loaded from an index: one row per message, made
    into a :class:`MessageInfo` the first time it is asked for (the made
    object then takes the row's place).  Opening a 100,000-message folder
    then makes no objects; SELECT reads the UIDs and flags straight from the
    rows (:meth:`uids`, :meth:`flag_sets`).

    The view changes it in place like a list (``[pos] = info``,
    :meth:`append`, :meth:`insert`).

    :param rows: the rows, ascending by UID; a row is anything but a
        ``MessageInfo`` (the list is taken as it is, not copied).
    :param make: a row -> its ``MessageInfo``.
    :param uid_of: a row -> its UID.
    :param flags_of: a row -> its flags.
    """

    __slots__ = ("_items", "_make", "_uid_of", "_flags_of")

    def __init__(self, rows: list[Any], make: Callable[[Any], MessageInfo],
                 uid_of: Callable[[Any], int],
                 flags_of: Callable[[Any], frozenset[str]]) -> None:
        self._items = rows
        self._make = make
        self._uid_of = uid_of
        self._flags_of = flags_of

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, pos: Any) -> Any:
        if isinstance(pos, slice):
            return [self[i] for i in range(*pos.indices(len(self._items)))]
        item = self._items[pos]
        if type(item) is not MessageInfo:
            item = self._items[pos] = self._make(item)
        return item

    def __iter__(self) -> Iterator[MessageInfo]:
        items, make = self._items, self._make
        for pos, item in enumerate(items):
            if type(item) is not MessageInfo:
                item = items[pos] = make(item)
            yield item

    def __setitem__(self, pos: int, info: MessageInfo) -> None:
        self._items[pos] = info

    def __eq__(self, other: object) -> bool:
        # Equal to a list (or another LazyInfos) of the same messages, as the
        # list the view held before.
        if isinstance(other, LazyInfos):
            other = list(other)
        return isinstance(other, list) and list(self) == other

    __hash__ = None  # type: ignore[assignment]

    def append(self, info: MessageInfo) -> None:
        self._items.append(info)

    def insert(self, pos: int, info: MessageInfo) -> None:
        self._items.insert(pos, info)

    def uids(self) -> list[int]:
        """Every UID, ascending (a new list), without making any MessageInfo."""
        uid_of = self._uid_of
        return [item.uid if type(item) is MessageInfo else uid_of(item) for item in self._items]

    def flag_sets(self) -> Iterator[frozenset[str]]:
        """Each message's flags in order, without making any MessageInfo."""
        flags_of = self._flags_of
        for item in self._items:
            yield item.flags if type(item) is MessageInfo else flags_of(item)


@attrs.define
class MailboxView:
    """
    The ordered messages of one folder and the listeners told of changes.

    Messages are found by UID with a binary search of the ascending UID
    list (no per-UID dict: about 5 MB less for 100,000 messages).
    """

    _mailbox: IMailbox
    _infos: list[MessageInfo] | LazyInfos = attrs.Factory(list)
    _uids: list[int] = attrs.Factory(list)
    _listeners: list[IMailboxListener] = attrs.Factory(list)
    highestmodseq: int = 1

    def messages(self) -> Sequence[MessageInfo]:
        return self._infos

    def _position(self, uid: int) -> int:
        """The index of ``uid`` in the view, or -1."""
        uids = self._uids
        pos = bisect.bisect_left(uids, uid)
        if pos < len(uids) and uids[pos] == uid:
            return pos
        return -1

    def info(self, uid: int) -> MessageInfo:
        pos = self._position(uid)
        if pos < 0:
            raise NoSuchMessage(f"no message with UID {uid}")
        return self._infos[pos]

    def __contains__(self, uid: int) -> bool:
        return self._position(uid) >= 0

    def lookup(self, uids: Iterable[int]) -> list[MessageInfo]:
        """
        The messages of those of ``uids`` that are in the view, in the order
        given (UIDs not in the view are left out).  One pass over the view
        when the request is a large part of it (a STORE 1:*), else a binary
        search per UID.
        """
        wanted = uids if isinstance(uids, (list, tuple)) else list(uids)
        infos, all_uids = self._infos, self._uids
        if len(wanted) * _LOOKUP_SCAN_RATIO >= len(all_uids):
            by_uid = dict(zip(all_uids, infos, strict=True))
            return [by_uid[u] for u in wanted if u in by_uid]
        out = []
        count = len(all_uids)
        bisect_left = bisect.bisect_left
        for uid in wanted:
            pos = bisect_left(all_uids, uid)
            if pos < count and all_uids[pos] == uid:
                out.append(infos[pos])
        return out

    def next_modseq(self) -> int:
        self.highestmodseq += 1
        return self.highestmodseq

    def add_listener(self, listener: IMailboxListener) -> None:
        if listener not in self._listeners:
            self._listeners.append(listener)

    def remove_listener(self, listener: IMailboxListener) -> None:
        try:
            self._listeners.remove(listener)
        except ValueError:
            pass

    def _tell(self, change: MailboxChange) -> None:
        for listener in list(self._listeners):
            try:
                listener.mailbox_changed(self._mailbox, change)
            except Exception:
                log.failure("mailbox listener {listener!r} failed", listener=listener)

    def load(self, infos: Iterable[MessageInfo], uids: list[int] | None = None,
             highestmodseq: int = 0) -> None:
        """
        Replace the whole view (used when a folder is first opened).

        :param uids: the UIDs of ``infos`` in the same order, strictly
            ascending, when the caller has them (then ``infos`` must be a
            list or a :class:`LazyInfos`, which the view takes as it is: no
            copy, no order check).
        :param highestmodseq: the folder's recorded HIGHESTMODSEQ: the view's
            is at least this; with ``uids`` it is also taken as the highest
            MODSEQ among ``infos`` (not computed).
        """
        with paused_gc():
            if uids is not None and isinstance(infos, (list, LazyInfos)):
                self._infos, self._uids = infos, uids
                top = highestmodseq
            else:
                self._infos = list(infos)
                self._uids = [i.uid for i in self._infos]
                if any(a >= b for a, b in zip(self._uids, self._uids[1:], strict=False)):
                    self._infos.sort(key=lambda i: i.uid)
                    self._uids = [i.uid for i in self._infos]
                top = 0
            if self._infos and not top:
                top = max(i.modseq for i in self._infos)
            self.highestmodseq = max(self.highestmodseq, top, highestmodseq)

    def apply_added(self, infos: Iterable[MessageInfo]) -> None:
        added = []
        for info in infos:
            if info.uid in self:
                continue
            info = MessageInfo(info.uid, info.key, info.flags, info.internaldate, info.size,
                               self.next_modseq())
            if not self._uids or info.uid > self._uids[-1]:
                self._infos.append(info)
                self._uids.append(info.uid)
            else:
                pos = bisect.bisect_left(self._uids, info.uid)
                self._infos.insert(pos, info)
                self._uids.insert(pos, info.uid)
            added.append(info.uid)
        if added:
            self._tell(MailboxChange("added", tuple(sorted(added))))

    def apply_flags(self, new_flags: dict[int, frozenset[str]]) -> dict[int, frozenset[str]]:
        changed = []
        result = {}
        infos, all_uids = self._infos, self._uids
        count = len(all_uids)
        bisect_left = bisect.bisect_left
        modseq = self.highestmodseq
        # The hot loop of a STORE 1:* (one new MessageInfo per changed message).
        for uid, flags in new_flags.items():
            pos = bisect_left(all_uids, uid)
            if pos >= count or all_uids[pos] != uid:
                continue
            old = infos[pos]
            result[uid] = flags
            if old.flags == flags:
                continue
            modseq += 1
            infos[pos] = MessageInfo(uid, old.key, flags, old.internaldate, old.size, modseq)
            changed.append(uid)
        self.highestmodseq = modseq
        if changed:
            self._tell(MailboxChange("flags", tuple(sorted(changed))))
        return result

    def apply_expunged(self, uids: Iterable[int]) -> list[int]:
        gone = sorted(u for u in set(uids) if u in self)
        if not gone:
            return []
        drop = set(gone)
        self._infos = [i for i in self._infos if i.uid not in drop]
        self._uids = [i.uid for i in self._infos]
        self.next_modseq()
        self._tell(MailboxChange("expunged", tuple(gone)))
        return gone


def encode_folder_name(name: str) -> str:
    """A folder name as it is stored in a file name: modified UTF-7, as Dovecot writes it."""
    return name.encode("imap4-utf-7").decode("ascii")


def decode_folder_name(name: str) -> str:
    """
    The folder a file name stores, refusing anything that is not exactly
    what pymail (or Dovecot) would write for it: the codec is lenient, and
    a name that does not round-trip would open a different file.

    :raises ValueError: the name is not canonical modified UTF-7.
    :raises UnicodeError: the name is not modified UTF-7 at all.
    """
    decoded = name.encode("ascii").decode("imap4-utf-7")
    if encode_folder_name(decoded) != name:
        raise ValueError(f"{name!r} is not canonical modified UTF-7")
    return decoded


class ViewBacked:
    """
    The ``IMailbox`` methods every backend answers from its
    :class:`MailboxView` (``self._view``), written once.  The defaults for
    keywords (any number, those in use) and :meth:`cached` (a dict in
    ``self._cache`` that the backend clears when messages change) suit a
    backend without a persistent index; Maildir overrides them.
    """

    _view: MailboxView
    _cache: dict[tuple[int, str], Any]

    def read(self, uid: int) -> bytes:
        raise NotImplementedError

    def keywords(self) -> frozenset[str]:
        return keywords_of(self._view.messages())

    def accepts_new_keywords(self) -> bool:
        return True

    def cached(self, uid: int, name: str, compute: Callable[[bytes], _T]) -> _T:
        key = (uid, name)
        try:
            return self._cache[key]  # type: ignore[no-any-return]
        except KeyError:
            value = self._cache[key] = compute(self.read(uid))
            return value

    def highestmodseq(self) -> int:
        return self._view.highestmodseq

    def messages(self) -> Sequence[MessageInfo]:
        return self._view.messages()

    def info(self, uid: int) -> MessageInfo:
        return self._view.info(uid)

    def add_listener(self, listener: IMailboxListener) -> None:
        self._view.add_listener(listener)

    def remove_listener(self, listener: IMailboxListener) -> None:
        self._view.remove_listener(listener)


def canonical_name(name: str) -> str:
    """``INBOX`` in any case is ``INBOX``; other names are case-sensitive."""
    return "INBOX" if name.upper() == "INBOX" else name


def is_below(name: str, parent: str) -> bool:
    """Whether ``name`` lies below ``parent`` in the ``.`` hierarchy."""
    return name.startswith(parent + ".")


def rename_plan(existing: Iterable[str], old: str, new: str) -> list[tuple[str, str]]:
    """
    The (from, to) pairs a RENAME of ``old`` to ``new`` moves: the folder
    itself and every folder below it, parents first.  Names are checked;
    INBOX moves alone (its "children" are ordinary folders).

    :raises BadMailboxName: a name is not acceptable, ``new`` is INBOX, or
        ``new`` lies below ``old``.
    """
    old, new = canonical_name(old), canonical_name(new)
    check_mailbox_name(old)
    check_mailbox_name(new)
    if new == "INBOX":
        raise BadMailboxName("cannot rename a folder to INBOX")
    if new == old or is_below(new, old):
        raise BadMailboxName(f"cannot rename {old!r} to {new!r}, a name below itself")
    if old == "INBOX":
        return [("INBOX", new)]
    pairs = [(old, new)]
    for name in sorted(existing):
        if is_below(name, old):
            pairs.append((name, new + name[len(old):]))
    for _, target in pairs:
        check_mailbox_name(target)
    return pairs


def check_role(role: str) -> str:
    """:raises ValueError: ``role`` is not an RFC 6154 special-use role."""
    from pymail.interfaces import SPECIAL_USE_ROLES

    if role not in SPECIAL_USE_ROLES:
        raise ValueError(f"unknown special-use role {role!r}")
    return role


# -- Dovecot's ``subscriptions`` file -------------------------------------
#
# Version 2 (Dovecot 2.2+): a header line ``V<TAB>2``, an empty line, then
# one folder per line with the hierarchy levels separated by TAB, in UTF-8.
# Dovecot escapes control characters inside a level; pymail's names never
# hold any (check_mailbox_name refuses them), so nothing needs escaping and
# a line with an escape is read as-is.  Version 1
# (older Dovecot, Courier): one folder per line with the namespace
# separator ('.'), names in modified UTF-7.

SUBSCRIPTIONS_HEADER = b"V\t2\n\n"


def encode_subscriptions(names: Iterable[str]) -> bytes:
    """The bytes of a version-2 subscriptions file."""
    body = b"".join(name.replace(".", "\t").encode("utf-8") + b"\n" for name in sorted(set(names)))
    return SUBSCRIPTIONS_HEADER + body


def decode_subscriptions(data: bytes) -> list[str]:
    """Folder names from a subscriptions file of version 1 or 2."""
    names: list[str] = []
    if data.startswith(b"V\t"):
        _, _, rest = data.partition(b"\n\n")
        for line in rest.split(b"\n"):
            if line:
                name = line.decode("utf-8", "replace").replace("\t", ".")
                names.append(canonical_name(name))
        return sorted(set(names))
    for line in data.split(b"\n"):
        line = line.strip()
        if not line:
            continue
        try:
            name = line.decode("ascii").encode("ascii").decode("imap4-utf-7")
        except (UnicodeError, ValueError):
            name = line.decode("utf-8", "replace")
        names.append(canonical_name(name))
    return sorted(set(names))


def encode_roles(roles: dict[str, str]) -> bytes:
    """pymail's special-use file: ``<role> TAB <folder>`` per line."""
    return b"".join(
        f"{role}\t{name}\n".encode() for name, role in sorted(roles.items(), key=lambda x: x[1])
    )


def decode_roles(data: bytes) -> dict[str, str]:
    """Folder -> role from :func:`encode_roles` output; bad lines are skipped."""
    roles = {}
    for line in data.decode("utf-8", "replace").split("\n"):
        role, tab, name = line.partition("\t")
        if tab and name:
            try:
                roles[name] = check_role(role)
            except ValueError:
                continue
    return roles


def uids_of(infos: Iterable[MessageInfo]) -> list[int]:
    """The UIDs of ``infos`` in order; from a LazyInfos' rows, no MessageInfo made."""
    if isinstance(infos, LazyInfos):
        return infos.uids()
    return [info.uid for info in infos]


def flag_sets_of(infos: Iterable[MessageInfo]) -> Iterable[frozenset[str]]:
    """The flags of ``infos`` in order; from a LazyInfos' rows, no MessageInfo made."""
    if isinstance(infos, LazyInfos):
        return infos.flag_sets()
    return (info.flags for info in infos)


def keywords_of(infos: Iterable[MessageInfo]) -> frozenset[str]:
    """The keywords used by any of these messages."""
    # A SELECT asks for these: from the rows when the folder came from its index.
    flag_sets = set(flag_sets_of(infos))
    out: set[str] = set()
    for flags in flag_sets:
        for flag in flags:
            if not flag.startswith("\\"):
                out.add(flag)
    return frozenset(out)


#: How much of a file :class:`CRLFStream` reads at a time by default.
STREAM_CHUNK_SIZE = 64 * 1024


class CRLFStream(io.RawIOBase):
    """
    A file in on-disk form (LF) read as wire form (CRLF), a chunk at a time,
    byte for byte what :func:`pymail.storage.fsutil.to_crlf` gives for the
    whole file: a CRLF already there is kept, a bare CR stays bare.  A CR at
    the end of a chunk is held back until the next chunk shows whether an
    LF follows it.
    """

    def __init__(self, raw: BinaryIO, chunk_size: int = STREAM_CHUNK_SIZE) -> None:
        super().__init__()
        self._raw = raw
        self._chunk_size = chunk_size
        self._held = b""
        self._pending = b""
        self._eof = False

    def readable(self) -> bool:
        return True

    def _fill(self) -> None:
        while not self._pending and not self._eof:
            data = self._raw.read(self._chunk_size)
            if not data:
                self._eof = True
                self._pending, self._held = self._held, b""
                return
            data = self._held + data
            if data.endswith(b"\r"):
                data, self._held = data[:-1], b"\r"
            else:
                self._held = b""
            self._pending = to_crlf(data)

    def read(self, size: int | None = -1) -> bytes:
        """
        Up to ``size`` bytes, at most about one file chunk's worth (all of
        the rest when ``size`` is -1 or None); ``b""`` at the end.
        """
        if size is None or size < 0:
            return self.readall()
        self._fill()
        if size >= len(self._pending):
            data, self._pending = self._pending, b""
            return data
        data, self._pending = self._pending[:size], self._pending[size:]
        return data

    def readall(self) -> bytes:
        pieces = []
        while chunk := self.read(2 * self._chunk_size):
            pieces.append(chunk)
        return b"".join(pieces)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._raw.close()
        super().close()


def open_message(mailbox: IMailbox, uid: int) -> BinaryIO:
    """
    The message in wire form as a readable stream: the mailbox's own
    :meth:`~pymail.interfaces.IMessageStream.open_message` when it provides
    :class:`~pymail.interfaces.IMessageStream`, else the whole message from
    :meth:`~pymail.interfaces.IMailbox.read` in a ``BytesIO``.

    :raises pymail.errors.NoSuchMessage: the message is gone.
    """
    if IMessageStream.providedBy(mailbox):
        return IMessageStream(mailbox).open_message(uid)  # type: ignore[no-any-return]
    return io.BytesIO(mailbox.read(uid))
