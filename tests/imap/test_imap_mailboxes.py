"""Tests for the authenticated-state commands: SELECT, CREATE, LIST, STATUS, APPEND..."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from imap_harness import SIMPLE, Server

from pymail.imap.mailboxes import list_matches


def test_select_reports_mailbox_state() -> None:
    """SELECT sends FLAGS, PERMANENTFLAGS, EXISTS, RECENT, UNSEEN, UIDVALIDITY, UIDNEXT."""
    server = Server()
    server.deliver(flags=("\\Seen", "$Work"))
    server.deliver()
    client = server.connect().login()
    validity = server.mailbox().uidvalidity()
    assert client.lines("a SELECT INBOX") == [
        b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Work)",
        b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Work \\*)] "
        b"flags allowed",
        b"* 2 EXISTS",
        b"* 2 RECENT",
        b"* OK [UNSEEN 2] first unseen message",
        b"* OK [UIDVALIDITY %d] UIDs valid" % validity,
        b"* OK [UIDNEXT 3] predicted next UID",
        b"a OK [READ-WRITE] SELECT completed",
    ]


def test_examine_is_read_only_and_keeps_recent() -> None:
    """EXAMINE answers READ-ONLY, refuses STORE and does not take \\Recent away."""
    server = Server()
    server.deliver()
    client = server.connect().login()
    response = client.cmd("a EXAMINE inbox")
    assert b"* OK [PERMANENTFLAGS ()]" in response
    assert b"* 1 RECENT" in response
    assert response.endswith(b"a OK [READ-ONLY] EXAMINE completed\r\n")
    assert client.cmd("b STORE 1 +FLAGS (\\Seen)").startswith(b"b NO [READ-ONLY]")
    assert client.cmd("c FETCH 1 BODY[]").count(b"FLAGS") == 0
    assert "\\Seen" not in server.mailbox().info(1).flags
    other = server.connect().login()
    assert b"* 1 RECENT" in other.select()


def test_recent_goes_to_first_selecting_session_only() -> None:
    """Only the first session to SELECT a mailbox sees its messages as \\Recent."""
    server = Server()
    server.deliver()
    first = server.connect().login()
    assert b"* 1 RECENT" in first.select()
    second = server.connect().login()
    assert b"* 0 RECENT" in second.select()


def test_select_missing_mailbox_is_no_and_deselects() -> None:
    """A failing SELECT answers NO [NONEXISTENT] and leaves no mailbox selected."""
    server = Server()
    client = server.connect().login()
    client.select()
    assert client.cmd("a SELECT Nope").startswith(b"a NO [NONEXISTENT]")
    assert client.cmd("b FETCH 1 UID").startswith(b"b BAD FETCH is not allowed")


def test_create_and_list_with_hierarchy() -> None:
    """CREATE makes missing parents; LIST with % and * matches levels."""
    server = Server()
    client = server.connect().login()
    assert client.cmd("a CREATE Work.Projects.") == b"a OK CREATE completed\r\n"
    assert set(server.store().list_mailboxes()) == {"INBOX", "Work", "Work.Projects"}
    assert client.lines('b LIST "" %') == [
        b'* LIST (\\HasNoChildren) "." INBOX',
        b'* LIST (\\HasChildren) "." Work',
        b"b OK LIST completed",
    ]
    assert client.lines('c LIST "Work." *') == [
        b'* LIST (\\HasNoChildren) "." Work.Projects',
        b"c OK LIST completed",
    ]
    assert client.lines('d LIST "" ""') == [b'* LIST (\\Noselect) "." ""', b"d OK LIST completed"]


def test_list_shows_missing_parent_as_noselect() -> None:
    """A level that exists only as a parent is listed \\Noselect."""
    assert list_matches(["INBOX", "a.b"], "", "%") == [("INBOX", True), ("a", False)]
    assert list_matches(["INBOX", "a.b"], "", "inbox") == [("INBOX", True)]


def test_lsub_lists_the_subscriptions() -> None:
    """SUBSCRIBE and UNSUBSCRIBE are stored; LSUB lists what is subscribed, existing or not."""
    server = Server()
    client = server.connect().login()
    assert client.cmd("a SUBSCRIBE INBOX") == b"a OK SUBSCRIBE completed\r\n"
    assert client.cmd("a SUBSCRIBE Gone") == b"a OK SUBSCRIBE completed\r\n"
    assert client.lines('b LSUB "" *') == [
        b'* LSUB () "." INBOX', b'* LSUB (\\Noselect) "." Gone', b"b OK LSUB completed"
    ]
    assert client.cmd("c UNSUBSCRIBE INBOX") == b"c OK UNSUBSCRIBE completed\r\n"
    assert server.store().subscriptions() == ["Gone"]
    assert client.lines('d LSUB "" *') == [b'* LSUB (\\Noselect) "." Gone', b"d OK LSUB completed"]


def test_create_existing_is_no_alreadyexists() -> None:
    """CREATE of INBOX or an existing folder answers NO [ALREADYEXISTS]."""
    client = Server().connect().login()
    assert client.cmd("a CREATE inbox").startswith(b"a NO [ALREADYEXISTS]")
    client.cmd("b CREATE Sent")
    assert client.cmd("c CREATE Sent").startswith(b"c NO [ALREADYEXISTS]")


def test_bad_mailbox_name_gets_reason() -> None:
    """A name the store refuses is answered NO with the store's reason."""
    client = Server().connect().login()
    response = client.cmd('a CREATE "a/b"')
    assert response.startswith(b"a NO [CANNOT] mailbox name contains '/'")


def test_mailbox_names_round_trip_in_modified_utf7() -> None:
    """Names are modified UTF-7 on the wire and text in the store."""
    server = Server()
    client = server.connect().login()
    assert client.cmd("a CREATE Entw&APw-rfe") == b"a OK CREATE completed\r\n"
    assert "Entwürfe" in server.store().list_mailboxes()
    assert b'* LIST (\\HasNoChildren) "." Entw&APw-rfe\r\n' in client.cmd('b LIST "" *')
    assert client.cmd("c SELECT Entw&APw-rfe").endswith(b"c OK [READ-WRITE] SELECT completed\r\n")
    assert client.cmd('d STATUS "Entw&APw-rfe" (MESSAGES)').startswith(
        b"* STATUS Entw&APw-rfe (MESSAGES 0)"
    )


def test_invalid_modified_utf7_is_bad() -> None:
    """A name that is not valid modified UTF-7 is a BAD."""
    client = Server().connect().login()
    assert client.cmd("a CREATE &Jjo!").startswith(b"a BAD")


def test_status_items() -> None:
    """STATUS reports MESSAGES, RECENT, UIDNEXT, UIDVALIDITY and UNSEEN."""
    server = Server()
    server.deliver(flags=("\\Seen",))
    server.deliver()
    client = server.connect().login()
    validity = server.mailbox().uidvalidity()
    assert client.lines("a STATUS INBOX (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN)") == [
        b"* STATUS INBOX (MESSAGES 2 RECENT 2 UIDNEXT 3 UIDVALIDITY %d UNSEEN 1)" % validity,
        b"a OK STATUS completed",
    ]
    assert client.cmd("b STATUS INBOX (BOGUS)").startswith(b"b BAD")
    assert client.cmd("c STATUS Nope (MESSAGES)").startswith(b"c NO [NONEXISTENT]")


def test_append_with_flags_and_date() -> None:
    """APPEND stores the message byte-exact with its flags and INTERNALDATE."""
    server = Server()
    client = server.connect().login()
    client.send(
        b'a APPEND INBOX (\\Seen \\Flagged) "05-Mar-2021 10:11:12 +0100" {%d}\r\n' % len(SIMPLE)
    )
    mailbox = server.mailbox()
    assert client.send(SIMPLE + b"\r\n") == (
        b"a OK [APPENDUID %d 1] APPEND completed\r\n" % mailbox.uidvalidity()
    )
    info = mailbox.info(1)
    assert mailbox.read(1) == SIMPLE
    assert info.flags == {"\\Seen", "\\Flagged"}
    one_hour = timezone(timedelta(hours=1))
    assert info.internaldate == datetime(2021, 3, 5, 10, 11, 12, tzinfo=one_hour)


def test_append_to_missing_mailbox_says_trycreate() -> None:
    """APPEND to a folder that does not exist answers NO [TRYCREATE]."""
    client = Server().connect().login()
    assert client.send(b"a APPEND Nope {1+}\r\nx\r\n").startswith(b"a NO [TRYCREATE]")


def test_append_with_invalid_flag_is_no() -> None:
    """APPEND with an unknown system flag is refused with the reason."""
    client = Server().connect().login()
    assert client.send(b"a APPEND INBOX (\\Bogus) {1+}\r\nx\r\n").startswith(b"a NO APPEND refused")


def test_append_to_selected_mailbox_reports_exists() -> None:
    """APPEND to the selected mailbox is followed by EXISTS."""
    server = Server()
    client = server.connect().login()
    client.select()
    response = client.send(b"a APPEND INBOX {%d+}\r\n" % len(SIMPLE) + SIMPLE + b"\r\n")
    assert response == (
        b"* 1 EXISTS\r\n* 1 RECENT\r\na OK [APPENDUID %d 1] APPEND completed\r\n"
        % server.mailbox().uidvalidity()
    )


def test_delete_and_rename() -> None:
    """DELETE and RENAME change the store; missing folders and INBOX get NO with a code."""
    server = Server()
    client = server.connect().login()
    assert client.cmd("a DELETE x").startswith(b"a NO [NONEXISTENT]")
    assert client.cmd("b RENAME x y").startswith(b"b NO [NONEXISTENT]")
    assert client.cmd("c DELETE INBOX").startswith(b"c NO [CANNOT]")
    client.cmd("d CREATE Work.Old")
    assert client.cmd("e RENAME Work Job") == b"e OK RENAME completed\r\n"
    assert set(server.store().list_mailboxes()) == {"INBOX", "Job", "Job.Old"}
    assert client.cmd("f DELETE Job.Old") == b"f OK DELETE completed\r\n"
    assert set(server.store().list_mailboxes()) == {"INBOX", "Job"}
