"""Tests for STORE, EXPUNGE, CLOSE, COPY, CHECK and the session's view of concurrent changes."""

from __future__ import annotations

from imap_harness import SIMPLE, Client, Server


def selected(count: int = 3) -> tuple[Server, Client]:
    server = Server()
    for _ in range(count):
        server.deliver()
    client = server.connect().login()
    client.select()
    return server, client


def test_store_add_remove_replace() -> None:
    """STORE +FLAGS, -FLAGS and FLAGS answer the new flags of each message."""
    server, client = selected(2)
    assert client.lines("a STORE 1:2 +FLAGS (\\Seen $Todo)") == [
        b"* 1 FETCH (FLAGS ($Todo \\Seen \\Recent))",
        b"* 2 FETCH (FLAGS ($Todo \\Seen \\Recent))",
        b"a OK STORE completed",
    ]
    assert client.lines("b STORE 2 -FLAGS $Todo") == [
        b"* 2 FETCH (FLAGS (\\Seen \\Recent))",
        b"b OK STORE completed",
    ]
    assert client.lines("c STORE 1 FLAGS (\\Answered)") == [
        b"* 1 FETCH (FLAGS (\\Answered \\Recent))",
        b"c OK STORE completed",
    ]
    assert server.mailbox().info(1).flags == {"\\Answered"}


def test_store_silent_and_uid_store() -> None:
    """.SILENT sends no FETCH; UID STORE includes the UID."""
    server, client = selected(2)
    assert client.lines("a STORE 1 +FLAGS.SILENT (\\Flagged)") == [b"a OK STORE completed"]
    assert "\\Flagged" in server.mailbox().info(1).flags
    assert client.lines("b UID STORE 2 +FLAGS (\\Draft)") == [
        b"* 2 FETCH (UID 2 FLAGS (\\Draft \\Recent))",
        b"b OK UID STORE completed",
    ]


def test_store_invalid_flag_is_bad() -> None:
    """An unknown system flag in STORE is a BAD naming it."""
    _, client = selected(1)
    assert client.cmd("a STORE 1 +FLAGS (\\Bogus)").startswith(b"a BAD STORE: unknown system flag")


def test_expunge_reports_and_renumbers() -> None:
    """EXPUNGE sends one EXPUNGE per removed message and sequence numbers shift."""
    server, client = selected(5)
    client.cmd("a STORE 2,4 +FLAGS.SILENT (\\Deleted)")
    assert client.lines("b EXPUNGE") == [
        b"* 4 EXPUNGE",
        b"* 2 EXPUNGE",
        b"b OK EXPUNGE completed",
    ]
    assert client.lines("c FETCH 1:* UID") == [
        b"* 1 FETCH (UID 1)",
        b"* 2 FETCH (UID 3)",
        b"* 3 FETCH (UID 5)",
        b"c OK FETCH completed",
    ]


def test_close_expunges_silently() -> None:
    """CLOSE removes \\Deleted messages without EXPUNGE responses and deselects."""
    server, client = selected(2)
    client.cmd("a STORE 1 +FLAGS.SILENT (\\Deleted)")
    assert client.lines("b CLOSE") == [b"b OK CLOSE completed"]
    assert [i.uid for i in server.mailbox().messages()] == [2]
    assert client.cmd("c FETCH 1 UID").startswith(b"c BAD")


def test_close_after_examine_does_not_expunge() -> None:
    """CLOSE of a read-only mailbox leaves \\Deleted messages alone."""
    server = Server()
    server.deliver(flags=("\\Deleted",))
    client = server.connect().login()
    client.cmd("a EXAMINE INBOX")
    client.cmd("b CLOSE")
    assert len(server.mailbox().messages()) == 1
    assert client.cmd("c EXPUNGE").startswith(b"c BAD")


def test_copy_keeps_flags_and_date() -> None:
    """COPY appends copies with the same flags and INTERNALDATE."""
    server, client = selected(2)
    client.cmd("a CREATE Archive")
    client.cmd("b STORE 2 +FLAGS.SILENT (\\Flagged)")
    archive = server.mailbox("Archive")
    validity = archive.uidvalidity()
    assert client.lines("c COPY 2 Archive") == [b"c OK [COPYUID %d 2 1] COPY completed" % validity]
    [info] = archive.messages()
    assert info.flags == {"\\Flagged"}
    assert info.internaldate == server.mailbox().info(2).internaldate
    assert archive.read(info.uid) == SIMPLE
    assert client.lines("d UID COPY 1:* Archive") == [
        b"d OK [COPYUID %d 1:2 2:3] UID COPY completed" % validity
    ]
    assert len(archive.messages()) == 3


def test_copy_to_missing_mailbox_says_trycreate() -> None:
    """COPY to a folder that does not exist is NO [TRYCREATE]."""
    _, client = selected(1)
    assert client.cmd("a COPY 1 Nope").startswith(b"a NO [TRYCREATE]")


def test_new_mail_shows_at_noop() -> None:
    """A delivery while selected is reported as EXISTS and RECENT at NOOP."""
    server, client = selected(1)
    server.deliver()
    assert client.lines("a NOOP") == [b"* 2 EXISTS", b"* 2 RECENT", b"a OK NOOP completed"]
    assert client.lines("b NOOP") == [b"b OK NOOP completed"]


def test_new_mail_shows_after_fetch_too() -> None:
    """EXISTS may follow FETCH (only EXPUNGE is held back)."""
    server, client = selected(1)
    server.deliver()
    assert client.lines("a FETCH 1 UID") == [
        b"* 1 FETCH (UID 1)",
        b"* 2 EXISTS",
        b"* 2 RECENT",
        b"a OK FETCH completed",
    ]


def test_flag_change_by_other_session_is_reported() -> None:
    """Another session's STORE shows up as an untagged FETCH FLAGS at NOOP."""
    server, client = selected(2)
    other = server.connect().login()
    other.select()
    other.cmd("a STORE 2 +FLAGS (\\Flagged)")
    assert client.lines("b NOOP") == [
        b"* 2 FETCH (FLAGS (\\Flagged \\Recent))",
        b"b OK NOOP completed",
    ]


def test_expunge_by_other_session_waits_during_fetch_store_search() -> None:
    """An expunge elsewhere is not reported during FETCH, STORE or SEARCH, but is at NOOP."""
    server, client = selected(3)
    other = server.connect().login()
    other.select()
    other.cmd("a STORE 2 +FLAGS.SILENT (\\Deleted)")
    other.cmd("b EXPUNGE")
    client.read()
    fetch = client.lines("c FETCH 3 UID")
    assert fetch == [b"* 3 FETCH (UID 3)", b"c OK FETCH completed"]
    store = client.lines("d STORE 3 +FLAGS (\\Seen)")
    assert store == [b"* 3 FETCH (FLAGS (\\Seen \\Recent))", b"d OK STORE completed"]
    search = client.lines("e SEARCH ALL")
    assert search == [b"* SEARCH 1 3", b"e OK SEARCH completed"]
    uid_fetch = client.lines("f UID FETCH 3 UID")
    assert uid_fetch == [b"* 3 FETCH (UID 3)", b"f OK UID FETCH completed"]
    assert client.lines("g NOOP") == [b"* 2 EXPUNGE", b"g OK NOOP completed"]
    assert client.lines("h FETCH 2 UID") == [b"* 2 FETCH (UID 3)", b"h OK FETCH completed"]


def test_added_then_expunged_elsewhere_is_never_reported() -> None:
    """A message that came and went between two commands produces no responses."""
    server, client = selected(1)
    uid = server.deliver(flags=("\\Deleted",))
    server.mailbox().expunge([uid])
    assert client.lines("a NOOP") == [b"a OK NOOP completed"]


def test_check_refreshes_and_reports() -> None:
    """CHECK reports pending changes like NOOP."""
    server, client = selected(1)
    server.deliver()
    assert client.lines("a CHECK") == [b"* 2 EXISTS", b"* 2 RECENT", b"a OK CHECK completed"]


def test_recent_new_mail_goes_to_one_session() -> None:
    """New mail is \\Recent in only one of two sessions selecting the mailbox."""
    server, first = selected(0)
    second = server.connect().login()
    second.select()
    server.deliver()
    assert first.lines("a NOOP") == [b"* 1 EXISTS", b"* 1 RECENT", b"a OK NOOP completed"]
    assert second.lines("a NOOP") == [b"* 1 EXISTS", b"* 0 RECENT", b"a OK NOOP completed"]


def test_reselect_drops_pending_updates_of_old_mailbox() -> None:
    """SELECT of another mailbox forgets updates queued for the previous one."""
    server, client = selected(1)
    client.cmd("a CREATE Other")
    server.deliver()
    response = client.cmd("b SELECT Other")
    assert b"* 2 EXISTS" not in response
    assert b"* 0 EXISTS" in response


def test_session_view_is_a_mailbox_listener() -> None:
    """SelectedMailbox provides IMailboxListener."""
    from zope.interface.verify import verifyObject

    from pymail.imap.session import RecentTracker, SelectedMailbox
    from pymail.interfaces import IMailboxListener

    view = SelectedMailbox(Server().mailbox(), False, RecentTracker())
    assert verifyObject(IMailboxListener, view)
    view.close()


def test_examine_sees_new_mail_as_recent_without_claiming_it() -> None:
    """An EXAMINE session sees new mail as \\Recent; a later SELECT still gets it."""
    server = Server()
    watcher = server.connect().login()
    watcher.cmd("a EXAMINE INBOX")
    server.deliver()
    assert watcher.lines("b NOOP") == [b"* 1 EXISTS", b"* 1 RECENT", b"b OK NOOP completed"]
    other = server.connect().login()
    assert b"* 1 RECENT" in other.select()
