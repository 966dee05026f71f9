"""
CONDSTORE and QRESYNC (RFC 7162): what a reconnecting client needs to
resynchronise cheaply.

The FETCH/STORE/SEARCH modifiers live with their commands (in
:mod:`pymail.imap.selected`); this module has what they share: turning
CONDSTORE on, and the ``VANISHED (EARLIER)`` and changed-flags responses
of ``SELECT ... (QRESYNC ...)`` and ``UID FETCH ... (CHANGEDSINCE n
VANISHED)``.

pymail keeps no record of which UIDs were expunged when, so ``VANISHED
(EARLIER)`` names every UID in the client's set that no longer exists,
whenever it went; RFC 7162 section 3.2.5.2 allows a server to send more
than the UIDs expunged since the client's mod-sequence.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pymail.imap.commands import QresyncParams
from pymail.imap.errors import bad
from pymail.imap.parser import SequenceSet
from pymail.imap.session import SelectedMailbox

if TYPE_CHECKING:
    from pymail.imap.server import IMAPServerProtocol

CAPABILITIES = ("CONDSTORE", "QRESYNC")


def need_condstore(conn: IMAPServerProtocol, why: str) -> None:
    """
    Turn CONDSTORE on for the session, as using any of its features does
    (RFC 7162 section 3.1).

    :raises CommandFailed: this server does not offer CONDSTORE.
    """
    if "CONDSTORE" not in conn.table.capabilities:
        raise bad(f"{why} needs CONDSTORE, which this server does not offer")
    if "CONDSTORE" not in conn.enabled:
        conn.enable(["CONDSTORE"])


def missing_uid_ranges(
    uids: Sequence[int], wanted: SequenceSet | None, top: int
) -> list[tuple[int, int]]:
    """
    The UIDs of ``wanted`` (all of ``1:top`` when None) that are not in
    ``uids`` (ascending), as ascending ``(first, last)`` ranges; ``*``
    stands for ``top``.  Linear in the ranges and the UIDs, never in the
    size of the set asked about.
    """
    if top < 1:
        return []
    spans = []
    for first, last in (wanted.ranges if wanted is not None else ((1, None),)):
        a = top if first is None else first
        b = top if last is None else last
        lo, hi = min(a, b), min(max(a, b), top)
        if lo <= hi:
            spans.append((lo, hi))
    spans.sort()
    merged: list[tuple[int, int]] = []
    for lo, hi in spans:
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    gaps: list[tuple[int, int]] = []
    for lo, hi in merged:
        i = bisect.bisect_left(uids, lo)
        cur = lo
        while i < len(uids) and uids[i] <= hi:
            if uids[i] > cur:
                gaps.append((cur, uids[i] - 1))
            cur = uids[i] + 1
            i += 1
        if cur <= hi:
            gaps.append((cur, hi))
    return gaps


def ranges_bytes(ranges: list[tuple[int, int]]) -> bytes:
    return b",".join(b"%d" % a if a == b else b"%d:%d" % (a, b) for a, b in ranges)


def vanished_earlier(
    view: SelectedMailbox, wanted: SequenceSet | None
) -> list[bytes]:
    """``* VANISHED (EARLIER) ...`` for the UIDs of ``wanted`` that are gone."""
    gaps = missing_uid_ranges(view.uids, wanted, view.mailbox.uidnext() - 1)
    if not gaps:
        return []
    return [b"* VANISHED (EARLIER) " + ranges_bytes(gaps) + b"\r\n"]


def changed_since(
    view: SelectedMailbox, modseq: int, indexes: Sequence[int] | None = None
) -> list[bytes]:
    """``* n FETCH (UID u FLAGS (...) MODSEQ (m))`` for messages changed after ``modseq``."""
    lines = []
    mailbox = view.mailbox
    uids = view.uids
    for index in indexes if indexes is not None else range(len(uids)):
        uid = uids[index]
        info = mailbox.info(uid)
        if info.modseq > modseq:
            lines.append(view.flag_update(index + 1, info, True))
    return lines


def qresync_select(view: SelectedMailbox, params: QresyncParams) -> list[bytes]:
    """
    What ``SELECT ... (QRESYNC (...))`` adds after the usual responses
    (RFC 7162 section 3.2.5): nothing when the UIDVALIDITY changed (the
    client must then resync fully), else the vanished UIDs and the
    messages whose flags changed after the client's mod-sequence.
    """
    if params.uidvalidity != view.mailbox.uidvalidity():
        return []
    lines = vanished_earlier(view, params.known_uids)
    indexes = None
    if params.known_uids is not None:
        indexes = view.resolve(params.known_uids, True)
    lines.extend(changed_since(view, params.modseq, indexes))
    view.forget_flag_updates(view.uids)
    return lines
