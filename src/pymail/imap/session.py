"""
The selected-mailbox view of one IMAP session.

The session keeps its own ordered list of UIDs: the client's map of
message sequence numbers.  Changes made by anyone (other sessions, SMTP
delivery, other programs found by ``refresh()``) arrive through
:class:`~pymail.interfaces.IMailboxListener` and are queued; they reach the
client as untagged EXISTS / RECENT / FETCH / EXPUNGE only when
:meth:`SelectedMailbox.updates` is called, and EXPUNGE only where RFC 3501
section 7.4.1 allows it, so sequence numbers always match what the client
was told.
"""

from __future__ import annotations

import bisect
import weakref
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime

import attrs
from twisted.logger import Logger
from zope.interface import implementer

from pymail.errors import NoSuchMessage
from pymail.imap.cache import DerivedCache
from pymail.imap.errors import bad
from pymail.imap.parser import SequenceSet
from pymail.interfaces import IMailbox, IMailboxListener, MailboxChange, MessageInfo

log = Logger()


@attrs.define
class RecentTracker:
    """
    Which messages of each mailbox a session has already seen as
    ``\\Recent`` (RFC 3501 section 2.3.2), kept per process: for each live
    mailbox object, the UIDVALIDITY and the highest UID claimed so far.
    A message is recent for exactly one session: the first one to select
    the mailbox (read-write) or to be told of the message while selected.
    """

    _marks: weakref.WeakKeyDictionary[object, tuple[int, int]] = attrs.Factory(
        weakref.WeakKeyDictionary
    )

    def claimed_up_to(self, mailbox: IMailbox) -> int:
        """The highest UID of ``mailbox`` some session has already claimed."""
        mark = self._marks.get(mailbox)
        if mark is None or mark[0] != mailbox.uidvalidity():
            return 0
        return mark[1]

    def claim(self, mailbox: IMailbox, uid: int) -> None:
        """Mark every UID up to ``uid`` as seen by a session."""
        if uid > self.claimed_up_to(mailbox):
            self._marks[mailbox] = (mailbox.uidvalidity(), uid)


@implementer(IMailboxListener)
class SelectedMailbox:
    """
    A mailbox as one session sees it.

    :ivar mailbox: the storage mailbox.
    :ivar readonly: selected with EXAMINE (or the store refused writes).
    :ivar uids: the UIDs the client knows, in sequence-number order.
    :ivar recent: UIDs that are ``\\Recent`` in this session.
    :ivar condstore: CONDSTORE is on (RFC 7162 section 3.1): flag updates
        carry ``MODSEQ``.
    :ivar qresync: QRESYNC is on (RFC 7162 section 3.2): expunges are
        reported as ``VANISHED``.
    :ivar on_change: called after each change arrives (IDLE pushes then).
    :ivar cache: the process's :class:`~pymail.imap.cache.DerivedCache`
        (ENVELOPE, BODYSTRUCTURE, SEARCH headers), or a private one.
    """

    def __init__(
        self, mailbox: IMailbox, readonly: bool, tracker: RecentTracker,
        cache: DerivedCache | None = None,
    ) -> None:
        self.mailbox = mailbox
        self.cache = cache if cache is not None else DerivedCache()
        self.readonly = readonly
        self._tracker = tracker
        # Shared with other sessions in the same state: replaced, never changed
        # in place (see DerivedCache.shared_uids).
        self.uids: list[int] = self.cache.shared_uids(mailbox)
        floor = tracker.claimed_up_to(mailbox)
        self.recent: set[int] = {uid for uid in self.uids if uid > floor}
        if not readonly and self.uids:
            tracker.claim(mailbox, self.uids[-1])
        self._pending_added: list[int] = []
        self._pending_flags: set[int] = set()
        self._pending_expunged: set[int] = set()
        self._flag_cache: dict[frozenset[str], bytes] = {}
        self.condstore = False
        self.qresync = False
        self.on_change: Callable[[], None] | None = None
        #: INTERNALDATE strings already rendered (see pymail.imap.fetch).
        self.date_cache: dict[datetime, bytes] = {}
        mailbox.add_listener(self)

    def close(self) -> None:
        """Stop listening; the session no longer has this mailbox selected."""
        self.mailbox.remove_listener(self)

    # -- IMailboxListener ------------------------------------------------------

    def mailbox_changed(self, mailbox: IMailbox, change: MailboxChange) -> None:
        if change.kind == "added":
            self._pending_added.extend(change.uids)
            floor = self._tracker.claimed_up_to(mailbox)
            mine = [uid for uid in change.uids if uid > floor]
            if mine:
                self.recent.update(mine)
                if not self.readonly:
                    # EXAMINE sees \Recent but must not take it away (RFC 3501 6.3.2).
                    self._tracker.claim(mailbox, max(mine))
        elif change.kind == "flags":
            self._pending_flags.update(change.uids)
        elif change.kind == "expunged":
            self._pending_expunged.update(change.uids)
        else:
            log.warn("ignoring unknown mailbox change {kind!r}", kind=change.kind)
            return
        if self.on_change is not None:
            self.on_change()

    # -- sequence numbers ------------------------------------------------------

    @property
    def exists(self) -> int:
        return len(self.uids)

    def seq_of(self, uid: int) -> int | None:
        """The sequence number of ``uid`` in the client's view, if it has one."""
        i = bisect.bisect_left(self.uids, uid)
        if i < len(self.uids) and self.uids[i] == uid:
            return i + 1
        return None

    def resolve(self, sequence: SequenceSet, uid_mode: bool) -> Sequence[int]:
        """
        The 0-based indexes into :attr:`uids` a sequence set names, ascending
        and without duplicates.  UIDs that do not exist are ignored (RFC 3501
        section 6.4.8); ``n:*`` always includes the last message.

        :raises CommandFailed: a message sequence number beyond the mailbox.
        """
        uids = self.uids
        n = len(uids)
        spans: list[tuple[int, int]] = []
        for first, last in sequence.ranges:
            if uid_mode:
                if not n:
                    return ()
                top = uids[-1]
                a = top if first is None else first
                b = top if last is None else last
                lo, hi = (a, b) if a <= b else (b, a)
                spans.append((bisect.bisect_left(uids, lo), bisect.bisect_right(uids, hi)))
            else:
                star = first is None or last is None
                a = n if first is None else first
                b = n if last is None else last
                lo, hi = (a, b) if a <= b else (b, a)
                if star:
                    hi = min(hi, n)
                    if not n:
                        continue
                if hi > n:
                    raise bad(
                        f"message sequence number {hi} does not exist (mailbox has {n} messages)"
                    )
                spans.append((lo - 1, hi))
        if len(spans) == 1:
            return range(*spans[0])
        indexes: set[int] = set()
        for lo, hi in spans:
            indexes.update(range(lo, hi))
        return sorted(indexes)

    # -- rendering -------------------------------------------------------------

    def flags_of(self, info: MessageInfo) -> bytes:
        """The FLAGS list of a message for this session, ``\\Recent`` included."""
        return self.render_flags(info.flags, info.uid)

    def render_flags(self, flags: frozenset[str], uid: int) -> bytes:
        """The FLAGS list ``flags`` of message ``uid``, ``\\Recent`` added if it is."""
        cached = self._flag_cache.get(flags)
        if cached is None:
            if len(self._flag_cache) > 1000:
                self._flag_cache.clear()
            cached = ("(" + " ".join(sorted(flags)) + ")").encode("utf-8", "replace")
            self._flag_cache[flags] = cached
        if uid in self.recent:
            return cached[:-1] + (b" \\Recent)" if len(cached) > 2 else b"\\Recent)")
        return cached

    def derived(
        self, uid: int, name: str, compute: Callable[[bytes], bytes], message: bytes | None
    ) -> bytes:
        """
        The wire form of a value derived from message ``uid`` (ENVELOPE,
        BODYSTRUCTURE), kept by the storage backend's ``cached()`` so it is
        computed once per message, not once per FETCH, and in memory by
        :attr:`cache`.
        """
        return self.cache.get(self.mailbox, uid, name, compute, message)

    # -- reporting changes -----------------------------------------------------

    def forget_flag_updates(self, uids: Iterable[int]) -> None:
        """The client was just told these messages' flags (STORE, FETCH)."""
        self._pending_flags.difference_update(uids)

    def has_pending(self) -> bool:
        return bool(self._pending_added or self._pending_flags or self._pending_expunged)

    def updates(self, allow_expunge: bool, with_uid: bool = False) -> list[bytes]:
        """
        The untagged responses that bring the client up to date, applying
        them to the view.  With ``allow_expunge`` false, expunged messages
        stay in the view (and keep their sequence numbers) until a later
        call allows EXPUNGE responses.

        :param with_uid: add ``UID n`` to flag updates (during UID commands).
        """
        lines: list[bytes] = []
        if allow_expunge and self._pending_expunged:
            gone = self._pending_expunged
            self._pending_expunged = set()
            positions = _positions(self.uids, gone)
            if self.qresync:
                # RFC 7162 3.2.10: VANISHED replaces EXPUNGE once QRESYNC is on.
                if positions:
                    known = [self.uids[i] for i in positions]
                    lines.append(b"* VANISHED " + uid_set_bytes(known) + b"\r\n")
            else:
                # Highest first, so every number is still valid when the client reads it.
                for pos in reversed(positions):
                    lines.append(b"* %d EXPUNGE\r\n" % (pos + 1))
            if positions:
                messages = self.mailbox.messages()
                left = len(self.uids) - len(positions)
                if left == len(messages) and (not left or messages[-1].uid == self._last_kept(
                        positions)):
                    self.uids = self.cache.shared_uids(self.mailbox)
                else:
                    self.uids = [uid for uid in self.uids if uid not in gone]
            self.recent.difference_update(gone)
            self._pending_flags.difference_update(gone)
        if self._pending_added:
            added = sorted(set(self._pending_added))
            self._pending_added = []
            last = self.uids[-1] if self.uids else 0
            new = []
            for uid in added:
                if uid <= last:
                    continue
                try:
                    self.mailbox.info(uid)
                except NoSuchMessage:
                    # Came and went before the client heard of it.
                    self._pending_expunged.discard(uid)
                    self.recent.discard(uid)
                    continue
                new.append(uid)
            if new:
                messages = self.mailbox.messages()
                if (len(self.uids) + len(new) == len(messages)
                        and messages[-1].uid == new[-1]):
                    # Caught up with the folder: take the list every such
                    # session shares instead of copying ours (a push to
                    # 10,000 idlers on a big folder was 10,000 copies).
                    self.uids = self.cache.shared_uids(self.mailbox)
                else:
                    self.uids = self.uids + new
                lines.append(b"* %d EXISTS\r\n" % len(self.uids))
                lines.append(b"* %d RECENT\r\n" % len(self.recent))
        if self._pending_flags:
            changed = sorted(self._pending_flags - self._pending_expunged)
            self._pending_flags = set()
            for uid in changed:
                seq = self.seq_of(uid)
                if seq is None:
                    continue
                try:
                    info = self.mailbox.info(uid)
                except NoSuchMessage:
                    continue
                lines.append(self.flag_update(seq, info, with_uid or self.qresync))
        self._share_uids()
        return lines

    def _last_kept(self, positions: list[int]) -> int:
        """The highest UID of the view once the messages at ``positions`` are gone."""
        removed = set(positions)
        for i in range(len(self.uids) - 1, -1, -1):
            if i not in removed:
                return self.uids[i]
        return 0

    def _share_uids(self) -> None:
        # The same count and highest UID as the folder means the same UIDs
        # (DerivedCache.shared_uids): take the shared list, drop our copy.
        messages = self.mailbox.messages()
        uids = self.uids
        if len(uids) == len(messages) and (not uids or uids[-1] == messages[-1].uid):
            self.uids = self.cache.shared_uids(self.mailbox)

    def flag_update(self, seq: int, info: MessageInfo, with_uid: bool) -> bytes:
        """An untagged FETCH telling the client a message's flags (and MODSEQ)."""
        items = b"UID %d " % info.uid if with_uid else b""
        items += b"FLAGS " + self.flags_of(info)
        if self.condstore:
            items += b" MODSEQ (%d)" % info.modseq
        return b"* %d FETCH (%s)\r\n" % (seq, items)

    def drop_pending(self) -> None:
        """Forget queued changes (the mailbox is being deselected)."""
        self._pending_added = []
        self._pending_flags = set()
        self._pending_expunged = set()


def _positions(uids: list[int], wanted: set[int]) -> list[int]:
    """The indexes of ``wanted`` UIDs in the ascending list ``uids`` (a binary search each)."""
    out = []
    for uid in sorted(wanted):
        i = bisect.bisect_left(uids, uid)
        if i < len(uids) and uids[i] == uid:
            out.append(i)
    return out


def uid_set_bytes(uids: Iterable[int]) -> bytes:
    """Ascending UIDs as a compact sequence set: ``1:3,7,9:10``."""
    out: list[bytes] = []
    ordered = sorted(uids)
    if not ordered:
        return b""
    start = prev = ordered[0]
    for uid in ordered[1:]:
        if uid == prev + 1:
            prev = uid
            continue
        out.append(b"%d" % start if start == prev else b"%d:%d" % (start, prev))
        start = prev = uid
    out.append(b"%d" % start if start == prev else b"%d:%d" % (start, prev))
    return b",".join(out)
