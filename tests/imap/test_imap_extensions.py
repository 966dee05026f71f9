"""
Tests for IDLE, UIDPLUS, MOVE, UNSELECT, NAMESPACE, ID, ENABLE, ESEARCH and the
LIST extensions.
"""

from __future__ import annotations

from typing import Any

from imap_harness import SIMPLE, Client, Server

from pymail.storage.memory import MemoryStoreFactory


def selected(count: int = 3, **options: Any) -> tuple[Server, Client]:
    server = Server(**options)
    for _ in range(count):
        server.deliver()
    client = server.connect().login()
    client.select()
    return server, client


# -- IDLE ----------------------------------------------------------------------


def test_idle_pushes_new_mail_at_once() -> None:
    """A message delivered while a client idles is pushed as EXISTS without any command."""
    server, client = selected(1)
    assert client.cmd("a IDLE") == b"+ idling\r\n"
    server.deliver()
    assert client.read() == b"* 2 EXISTS\r\n* 2 RECENT\r\n"
    assert client.cmd("DONE") == b"a OK IDLE terminated\r\n"


def test_idle_pushes_flags_and_expunges_by_another_session() -> None:
    """Another session's STORE and EXPUNGE reach an idling client as FETCH and EXPUNGE."""
    server, client = selected(3)
    other = server.connect().login()
    other.select()
    client.cmd("a IDLE")
    other.cmd("b STORE 2 +FLAGS (\\Flagged)")
    assert client.read() == b"* 2 FETCH (FLAGS (\\Flagged \\Recent))\r\n"
    other.cmd("c STORE 3 +FLAGS (\\Deleted)")
    client.read()
    other.cmd("d EXPUNGE")
    assert client.read() == b"* 3 EXPUNGE\r\n"
    assert client.cmd("DONE") == b"a OK IDLE terminated\r\n"
    assert client.lines("e FETCH 1:* (UID)") == [
        b"* 1 FETCH (UID 1)", b"* 2 FETCH (UID 2)", b"e OK FETCH completed"
    ]


def test_idle_polls_for_changes_by_other_programs() -> None:
    """While anyone idles on a mailbox it is refreshed every half second, once for all sessions."""
    server, client = selected(1)
    mailbox = server.mailbox()
    calls: list[int] = []
    real_refresh = mailbox.refresh

    def counting_refresh() -> Any:
        calls.append(1)
        return real_refresh()

    mailbox.refresh = counting_refresh  # type: ignore[method-assign]
    second = server.connect().login()
    second.select()
    client.cmd("a IDLE")
    second.cmd("b IDLE")
    server.clock.advance(0.5)
    assert len(calls) == 1
    server.clock.advance(0.5)
    assert len(calls) == 2
    client.cmd("DONE")
    second.cmd("DONE")
    assert server.factory.poller.watched == 0
    server.clock.advance(5)
    assert len(calls) == 2


def test_idle_ended_by_other_than_done_is_bad() -> None:
    """Anything but DONE ends IDLE with a tagged BAD and the connection stays usable."""
    _, client = selected(1)
    client.cmd("a IDLE")
    assert client.cmd("b NOOP") == b"a BAD expected DONE to end IDLE\r\n"
    assert client.cmd("c NOOP") == b"c OK NOOP completed\r\n"


def test_idle_pipelined_done_and_command() -> None:
    """IDLE, DONE and a command sent in one packet are answered in order."""
    _, client = selected(1)
    response = client.send(b"a IDLE\r\nDONE\r\nb NOOP\r\n")
    assert response == b"+ idling\r\na OK IDLE terminated\r\nb OK NOOP completed\r\n"


def test_connection_lost_while_idling_stops_polling() -> None:
    """A client that disconnects mid-IDLE leaves no poller or listener behind."""
    server, client = selected(1)
    client.cmd("a IDLE")
    client.lose()
    assert server.factory.poller.watched == 0
    server.deliver()  # no listener left to write to a closed connection


def test_idle_in_authenticated_state_and_timeout() -> None:
    """IDLE works without a selected mailbox; the 30-minute autologout still applies."""
    server = Server()
    client = server.connect().login()
    assert client.cmd("a IDLE") == b"+ idling\r\n"
    server.clock.advance(1799)
    assert not client.closed
    server.clock.advance(2)
    assert client.read() == b"* BYE Autologout; idle for too long\r\n"
    assert client.closed


# -- UIDPLUS, MOVE, UNSELECT ------------------------------------------------------


def test_uid_expunge_removes_only_the_named_messages() -> None:
    """UID EXPUNGE leaves other \\Deleted messages alone (RFC 4315)."""
    server, client = selected(3)
    client.cmd("a STORE 1:3 +FLAGS.SILENT (\\Deleted)")
    assert client.lines("b UID EXPUNGE 2") == [b"* 2 EXPUNGE", b"b OK UID EXPUNGE completed"]
    assert [i.uid for i in server.mailbox().messages()] == [1, 3]


def test_move_reports_copyuid_then_expunges() -> None:
    """MOVE sends COPYUID in an untagged OK, then EXPUNGE; the message is in the target only."""
    server, client = selected(3)
    client.cmd("a CREATE Archive")
    validity = server.mailbox("Archive").uidvalidity()
    assert client.lines("b MOVE 2:3 Archive") == [
        b"* OK [COPYUID %d 2:3 1:2] moved" % validity,
        b"* 3 EXPUNGE",
        b"* 2 EXPUNGE",
        b"b OK MOVE completed",
    ]
    assert [i.uid for i in server.mailbox().messages()] == [1]
    assert server.mailbox("Archive").read(1) == SIMPLE
    assert client.lines("c UID MOVE 1 Nope")[0].startswith(b"c NO [TRYCREATE]")


def test_move_leaves_other_deleted_messages() -> None:
    """MOVE expunges only the moved messages, not others flagged \\Deleted."""
    server, client = selected(2)
    client.cmd("a CREATE Trash")
    client.cmd("b STORE 1 +FLAGS.SILENT (\\Deleted)")
    client.cmd("c MOVE 2 Trash")
    assert [i.uid for i in server.mailbox().messages()] == [1]


def test_unselect_does_not_expunge() -> None:
    """UNSELECT leaves the selected state without expunging."""
    server, client = selected(1)
    client.cmd("a STORE 1 +FLAGS.SILENT (\\Deleted)")
    assert client.lines("b UNSELECT") == [b"b OK UNSELECT completed"]
    assert len(server.mailbox().messages()) == 1
    assert client.cmd("c FETCH 1 FLAGS").startswith(b"c BAD")


# -- NAMESPACE, ID, ENABLE -------------------------------------------------------


def test_namespace_id_enable() -> None:
    """NAMESPACE names one personal namespace; ID names pymail; ENABLE lists what it turned on."""
    client = Server(condstore=True).connect()
    assert client.lines('a ID ("name" "test" "version" NIL)')[0].startswith(
        b'* ID ("name" "pymail" "version" '
    )
    client.login()
    assert client.lines("b NAMESPACE") == [
        b'* NAMESPACE (("" ".")) NIL NIL', b"b OK NAMESPACE completed"
    ]
    assert client.lines("c ENABLE QRESYNC X-UNKNOWN") == [
        b"* ENABLED QRESYNC", b"c OK ENABLE completed"
    ]
    assert client.proto.enabled == {"CONDSTORE", "QRESYNC"}
    assert client.lines("d ENABLE CONDSTORE") == [b"* ENABLED", b"d OK ENABLE completed"]


def test_enable_condstore_not_offered_enables_nothing() -> None:
    """Without CONDSTORE on offer, ENABLE CONDSTORE enables nothing and MODSEQ is BAD."""
    _, client = selected(1)
    assert client.lines("a ENABLE CONDSTORE")[0] == b"* ENABLED"
    assert client.cmd("b FETCH 1 MODSEQ").startswith(b"b BAD MODSEQ needs CONDSTORE")


# -- ESEARCH ---------------------------------------------------------------------


def test_esearch_return_options() -> None:
    """SEARCH RETURN (...) answers ESEARCH with MIN, MAX, COUNT and ALL (RFC 4731)."""
    _, client = selected(5)
    client.cmd("a STORE 2,4:5 +FLAGS.SILENT (\\Seen)")
    assert client.lines("b UID SEARCH RETURN (MIN MAX COUNT) SEEN") == [
        b'* ESEARCH (TAG "b") UID MIN 2 MAX 5 COUNT 3', b"b OK UID SEARCH completed"
    ]
    assert client.lines("c SEARCH RETURN () SEEN") == [
        b'* ESEARCH (TAG "c") ALL 2,4:5', b"c OK SEARCH completed"
    ]
    assert client.lines("d SEARCH RETURN (COUNT) DRAFT") == [
        b'* ESEARCH (TAG "d") COUNT 0', b"d OK SEARCH completed"
    ]
    assert client.cmd("e SEARCH RETURN (BOGUS) ALL").startswith(b"e BAD")


# -- LIST extensions ---------------------------------------------------------------


def special_server() -> Server:
    server = Server()
    server.stores = MemoryStoreFactory(special_use_folders=True)
    from pymail.testing import memory_portal

    server.portal, server.directory, _ = memory_portal(server.users, server.stores)
    from pymail.imap.server import IMAPFactory

    server.factory = IMAPFactory(server.portal, server.clock, "imap.example.org")
    return server


def test_list_shows_special_use_and_children() -> None:
    """LIST marks special-use folders with their role and every folder with (No)Children."""
    server = special_server()
    client = server.connect().login()
    client.cmd("a CREATE Archive.2024")
    assert client.lines('b LIST "" %') == [
        b'* LIST (\\HasNoChildren) "." INBOX',
        b'* LIST (\\HasChildren \\Archive) "." Archive',
        b'* LIST (\\HasNoChildren \\Drafts) "." Drafts',
        b'* LIST (\\HasNoChildren \\Junk) "." Junk',
        b'* LIST (\\HasNoChildren \\Sent) "." Sent',
        b'* LIST (\\HasNoChildren \\Trash) "." Trash',
        b"b OK LIST completed",
    ]
    assert client.lines('c LIST (SPECIAL-USE) "" *') == [
        b'* LIST (\\HasChildren \\Archive) "." Archive',
        b'* LIST (\\HasNoChildren \\Drafts) "." Drafts',
        b'* LIST (\\HasNoChildren \\Junk) "." Junk',
        b'* LIST (\\HasNoChildren \\Sent) "." Sent',
        b'* LIST (\\HasNoChildren \\Trash) "." Trash',
        b"c OK LIST completed",
    ]


def test_list_extended_subscribed_recursivematch_and_status() -> None:
    """LIST-EXTENDED selects subscriptions (with CHILDINFO) and LIST-STATUS adds STATUS lines."""
    server = Server()
    server.deliver()
    client = server.connect().login()
    client.cmd("a CREATE Work.Projects")
    client.cmd("b SUBSCRIBE Work.Projects")
    client.cmd("c SUBSCRIBE Gone")
    assert client.lines('d LIST (SUBSCRIBED RECURSIVEMATCH) "" %') == [
        b'* LIST (\\NonExistent \\HasNoChildren \\Subscribed) "." Gone',
        b'* LIST (\\HasChildren) "." Work ("CHILDINFO" ("SUBSCRIBED"))',
        b"d OK LIST completed",
    ]
    assert client.lines('e LIST "" (INBOX Work) RETURN (SUBSCRIBED STATUS (MESSAGES UIDNEXT))') == [
        b'* LIST (\\HasNoChildren) "." INBOX',
        b"* STATUS INBOX (MESSAGES 1 UIDNEXT 2)",
        b'* LIST (\\HasChildren) "." Work',
        b"* STATUS Work (MESSAGES 0 UIDNEXT 1)",
        b"e OK LIST completed",
    ]
    assert client.cmd('f LIST (BOGUS) "" *').startswith(b"f BAD")
    assert client.cmd('g LIST "" * RETURN (STATUS (NOPE))').startswith(b"g BAD")


def test_appendlimit_refuses_bigger_literal() -> None:
    """APPENDLIMIT is advertised and a bigger APPEND literal is refused unread with TOOBIG."""
    server = Server(max_literal_size=2048)
    client = server.connect().login()
    assert b"APPENDLIMIT=2048" in client.cmd("a CAPABILITY")
    assert client.cmd("b APPEND INBOX {4096}").startswith(b"b NO [TOOBIG]")
    assert client.cmd("c NOOP") == b"c OK NOOP completed\r\n"
