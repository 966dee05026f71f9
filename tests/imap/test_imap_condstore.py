"""
Tests for CONDSTORE and QRESYNC (RFC 7162), over the memory and the mbox
backends (``backend``: what ``setup`` builds the server on).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from imap_harness import Client, MboxServer, Server

from pymail.imap.condstore import missing_uid_ranges
from pymail.imap.parser import SequenceSet

Backend = Callable[[], Server]


@pytest.fixture(params=["memory", "mbox"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "mbox":
        return lambda: MboxServer(str(tmp_path), condstore=True)
    return lambda: Server(condstore=True)


def setup(backend: Backend, count: int = 4) -> tuple[Server, Client]:
    server = backend()
    for _ in range(count):
        server.deliver()
    return server, server.connect().login()


def modseq_of(server: Server, uid: int) -> int:
    return server.mailbox().info(uid).modseq


def test_select_condstore_reports_highestmodseq(backend: Backend) -> None:
    """SELECT (CONDSTORE) says HIGHESTMODSEQ and turns MODSEQ on in flag updates."""
    server, client = setup(backend, 2)
    response = client.cmd("a SELECT INBOX (CONDSTORE)")
    top = server.mailbox().highestmodseq()
    assert b"* OK [HIGHESTMODSEQ %d] highest\r\n" % top in response
    store = client.lines("b STORE 1 +FLAGS (\\Seen)")
    assert store == [
        b"* 1 FETCH (FLAGS (\\Seen \\Recent) MODSEQ (%d))" % modseq_of(server, 1),
        b"b OK STORE completed",
    ]
    assert client.lines("c STATUS INBOX (HIGHESTMODSEQ)")[0] == (
        b"* STATUS INBOX (HIGHESTMODSEQ %d)" % server.mailbox().highestmodseq()
    )


def test_fetch_changedsince_and_modseq_item(backend: Backend) -> None:
    """FETCH (CHANGEDSINCE n) returns only messages changed after n, with their MODSEQ."""
    server, client = setup(backend, 4)
    client.select()
    since = server.mailbox().highestmodseq()
    client.cmd("a STORE 2,4 +FLAGS.SILENT (\\Flagged)")
    assert client.lines(f"b FETCH 1:* (FLAGS) (CHANGEDSINCE {since})") == [
        b"* 2 FETCH (FLAGS (\\Flagged \\Recent) MODSEQ (%d))" % modseq_of(server, 2),
        b"* 4 FETCH (FLAGS (\\Flagged \\Recent) MODSEQ (%d))" % modseq_of(server, 4),
        b"b OK FETCH completed",
    ]
    assert client.lines("c UID FETCH 3 MODSEQ") == [
        b"* 3 FETCH (UID 3 MODSEQ (%d))" % modseq_of(server, 3), b"c OK UID FETCH completed"
    ]
    assert client.cmd("d FETCH 1 FLAGS (CHANGEDSINCE 1 VANISHED)").startswith(b"d BAD")


def test_store_unchangedsince_refuses_changed_messages(backend: Backend) -> None:
    """STORE (UNCHANGEDSINCE n) leaves messages changed after n alone and names them MODIFIED."""
    server, client = setup(backend, 3)
    client.select()
    client.cmd("x ENABLE CONDSTORE")
    before = server.mailbox().highestmodseq()
    other = server.connect().login()
    other.select()
    other.cmd("a STORE 2 +FLAGS (\\Answered)")
    response = client.lines(f"b STORE 1:3 (UNCHANGEDSINCE {before}) +FLAGS.SILENT (\\Seen)")
    assert response[-1] == b"b OK [MODIFIED 2] conditional STORE failed for some messages"
    assert "\\Seen" not in server.mailbox().info(2).flags
    assert "\\Seen" in server.mailbox().info(1).flags
    assert "\\Seen" in server.mailbox().info(3).flags


def test_search_modseq(backend: Backend) -> None:
    """SEARCH MODSEQ n finds messages changed at or after n and names the highest MODSEQ."""
    server, client = setup(backend, 3)
    client.select()
    since = server.mailbox().highestmodseq() + 1
    client.cmd("a STORE 3 +FLAGS.SILENT (\\Seen)")
    assert client.lines(f"b UID SEARCH MODSEQ {since}") == [
        b"* SEARCH 3 (MODSEQ %d)" % modseq_of(server, 3), b"b OK UID SEARCH completed"
    ]


def test_qresync_select_reports_vanished_and_changed(backend: Backend) -> None:
    """After changes by another session, SELECT (QRESYNC ...) sends VANISHED (EARLIER) and FETCH."""
    server, client = setup(backend, 5)
    mailbox = server.mailbox()
    validity = mailbox.uidvalidity()
    known = mailbox.highestmodseq()
    other = server.connect().login()
    other.select()
    other.cmd("a STORE 2,4 +FLAGS.SILENT (\\Deleted)")
    other.cmd("b EXPUNGE")
    other.cmd("c UID STORE 5 +FLAGS.SILENT (\\Flagged)")
    other.cmd("d LOGOUT")
    client.cmd("e ENABLE QRESYNC")
    lines = client.lines(f"f SELECT INBOX (QRESYNC ({validity} {known} 1:5))")
    assert b"* VANISHED (EARLIER) 2,4" in lines
    assert b"* 3 FETCH (UID 5 FLAGS (\\Flagged) MODSEQ (%d))" % modseq_of(server, 5) in lines
    assert not any(re.match(rb"\* \d+ FETCH \(UID [13] ", line) for line in lines)
    assert lines[-1] == b"f OK [READ-WRITE] SELECT completed"


def test_qresync_select_with_wrong_uidvalidity_sends_nothing_extra(backend: Backend) -> None:
    """A stale UIDVALIDITY gets a plain SELECT: the client must resync fully."""
    _, client = setup(backend, 2)
    client.cmd("a ENABLE QRESYNC")
    lines = client.lines("b SELECT INBOX (QRESYNC (1 1))")
    assert not any(b"VANISHED" in line or b"FETCH" in line for line in lines)


def test_qresync_needs_enable(backend: Backend) -> None:
    """SELECT with QRESYNC parameters before ENABLE QRESYNC is a BAD."""
    _, client = setup(backend, 1)
    assert client.cmd("a SELECT INBOX (QRESYNC (1 1))").startswith(b"a BAD")


def test_qresync_expunges_are_vanished_and_uid_fetch_vanished(backend: Backend) -> None:
    """With QRESYNC on, expunges are told as VANISHED and UID FETCH (... VANISHED) works."""
    server, client = setup(backend, 4)
    client.cmd("a ENABLE QRESYNC")
    client.select()
    since = server.mailbox().highestmodseq()
    client.cmd("b STORE 2:3 +FLAGS.SILENT (\\Deleted)")
    assert client.lines("c EXPUNGE") == [b"* VANISHED 2:3", b"c OK EXPUNGE completed"]
    assert client.lines(f"d UID FETCH 1:4 (FLAGS) (CHANGEDSINCE {since} VANISHED)") == [
        b"* VANISHED (EARLIER) 2:3",
        b"d OK UID FETCH completed",
    ]
    # Selecting another mailbox says the old one is CLOSED (RFC 7162 3.2.11).
    assert client.lines("e SELECT INBOX")[0] == b"* OK [CLOSED] previous mailbox closed"


def test_missing_uid_ranges_is_linear_in_ranges() -> None:
    """The vanished set of a huge UID range is computed from gaps, not by counting."""
    assert missing_uid_ranges([2, 3, 7], SequenceSet(((1, 4294967295),)), 10) == [
        (1, 1), (4, 6), (8, 10)
    ]
    assert missing_uid_ranges([1, 2], None, 2) == []
    assert missing_uid_ranges([], SequenceSet(((5, None),)), 0) == []
