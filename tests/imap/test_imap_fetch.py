"""Tests for FETCH: byte-exact bodies, sections, partials, \\Seen, ENVELOPE, BODYSTRUCTURE."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from imap_harness import SIMPLE, Client, Server, corpus

from pymail.imap.fetch import Section, section_bytes

HEADERS = (
    b"Received: from a by b;\r\n\tMon, 1 Jan 2001 00:00:00 +0000\r\n"
    b"Received: from c by d; Mon, 1 Jan 2001 00:00:01 +0000\r\n"
    b"From: x@example.org\r\n"
    b"Subject: folded\r\n subject\r\n"
    b"To: y@example.org\r\n"
    b"\r\n"
    b"Body line 1\r\nBody line 2\r\n"
)


def selected(*messages: bytes) -> tuple[Server, Client]:
    server = Server()
    for message in messages:
        server.deliver(message)
    client = server.connect().login()
    client.select()
    return server, client


@pytest.mark.parametrize("name", ["msg_02.txt", "msg_07.txt", "msg_36.txt", "msg_06.txt"])
def test_body_is_byte_exact(name: str) -> None:
    """BODY.PEEK[] and RFC822 serve the stored message byte for byte."""
    message = corpus(name)
    server, client = selected(message)
    assert client.cmd("a FETCH 1 BODY.PEEK[]") == (
        b"* 1 FETCH (BODY[] {%d}\r\n" % len(message) + message + b")\r\na OK FETCH completed\r\n"
    )
    assert client.cmd("b FETCH 1 RFC822").startswith(
        b"* 1 FETCH (RFC822 {%d}\r\n" % len(message) + message + b" FLAGS (\\Seen \\Recent))"
    )


def test_header_and_text_split_the_message() -> None:
    """BODY[HEADER] includes the blank line and BODY[TEXT] is the rest."""
    message = corpus("msg_02.txt")
    header, _, _ = message.partition(b"\r\n\r\n")
    assert section_bytes(Section((), "HEADER"), message) == header + b"\r\n\r\n"
    assert (
        section_bytes(Section((), "HEADER"), message) + section_bytes(Section((), "TEXT"), message)
        == message
    )
    _, client = selected(message)
    response = client.cmd("a FETCH 1 (RFC822.HEADER BODY.PEEK[TEXT])")
    assert response.startswith(b"* 1 FETCH (RFC822.HEADER {%d}\r\n" % (len(header) + 4))


def test_metadata_items() -> None:
    """UID, FLAGS, INTERNALDATE and RFC822.SIZE come from the index."""
    server = Server()
    when = datetime(2021, 3, 5, 9, 8, 7, tzinfo=timezone(timedelta(hours=-5, minutes=-30)))
    server.mailbox().append(SIMPLE, ["\\Flagged", "$Later"], when)
    client = server.connect().login()
    client.select()
    assert client.lines("a FETCH 1 (UID FLAGS INTERNALDATE RFC822.SIZE)") == [
        b'* 1 FETCH (UID 1 FLAGS ($Later \\Flagged \\Recent) INTERNALDATE '
        b'"05-Mar-2021 09:08:07 -0530" RFC822.SIZE %d)' % len(SIMPLE),
        b"a OK FETCH completed",
    ]


def test_uid_fetch_always_includes_uid() -> None:
    """UID FETCH adds UID to each response and addresses messages by UID."""
    server, client = selected(SIMPLE, SIMPLE, SIMPLE)
    assert client.lines("a UID FETCH 2:* FLAGS") == [
        b"* 2 FETCH (UID 2 FLAGS (\\Recent))",
        b"* 3 FETCH (UID 3 FLAGS (\\Recent))",
        b"a OK UID FETCH completed",
    ]
    assert client.lines("b UID FETCH 9:* UID") == [
        b"* 3 FETCH (UID 3)",
        b"b OK UID FETCH completed",
    ]
    assert client.lines("c UID FETCH 7 UID") == [b"c OK UID FETCH completed"]


def test_sequence_numbers_out_of_range_are_bad() -> None:
    """A message sequence number beyond the mailbox is a BAD."""
    _, client = selected(SIMPLE)
    assert client.cmd("a FETCH 2 UID").startswith(b"a BAD message sequence number 2")
    assert client.cmd("b FETCH 1:* UID").startswith(b"* 1 FETCH (UID 1)")


def test_fetch_on_empty_mailbox_with_star_is_ok() -> None:
    """FETCH 1:* in an empty mailbox answers OK with no data."""
    _, client = selected()
    assert client.lines("a FETCH 1:* FLAGS") == [b"a OK FETCH completed"]


def test_partial_fetch() -> None:
    """``<start.count>`` serves that slice and labels the response with the origin."""
    _, client = selected(SIMPLE)
    assert client.lines("a FETCH 1 BODY.PEEK[]<6.5>") == [
        b"* 1 FETCH (BODY[]<6> {5}",
        b"Alice)",
        b"a OK FETCH completed",
    ]
    assert client.lines("b FETCH 1 BODY.PEEK[TEXT]<1000.10>") == [
        b'* 1 FETCH (BODY[TEXT]<1000> "")',
        b"b OK FETCH completed",
    ]


def test_header_fields_keeps_repeats_and_folding() -> None:
    """HEADER.FIELDS returns every matching field with its continuation lines."""
    _, client = selected(HEADERS)
    expected = (
        b"Received: from a by b;\r\n\tMon, 1 Jan 2001 00:00:00 +0000\r\n"
        b"Received: from c by d; Mon, 1 Jan 2001 00:00:01 +0000\r\n"
        b"Subject: folded\r\n subject\r\n"
        b"\r\n"
    )
    response = client.cmd("a FETCH 1 BODY.PEEK[HEADER.FIELDS (received SUBJECT)]")
    assert response == (
        b"* 1 FETCH (BODY[HEADER.FIELDS (received SUBJECT)] {%d}\r\n" % len(expected)
        + expected + b")\r\na OK FETCH completed\r\n"
    )


def test_header_fields_not() -> None:
    """HEADER.FIELDS.NOT returns all fields but the named ones."""
    assert section_bytes(Section((), "HEADER.FIELDS.NOT", (b"Received", b"subject")), HEADERS) == (
        b"From: x@example.org\r\nTo: y@example.org\r\n\r\n"
    )


def test_body_fetch_sets_seen_but_peek_does_not() -> None:
    """BODY[] marks \\Seen and reports FLAGS; BODY.PEEK[] and RFC822.HEADER do not."""
    server, client = selected(SIMPLE, SIMPLE)
    assert b"FLAGS" not in client.cmd("a FETCH 1 (BODY.PEEK[] RFC822.HEADER)")
    assert server.mailbox().info(1).flags == frozenset()
    response = client.cmd("b FETCH 1 BODY[TEXT]")
    assert response.startswith(
        b"* 1 FETCH (BODY[TEXT] {24}\r\nShall we meet at noon?\r\n FLAGS (\\Seen \\Recent))"
    )
    assert server.mailbox().info(1).flags == {"\\Seen"}
    # Already seen: no second FLAGS.
    assert b"FLAGS" not in client.cmd("c FETCH 1 BODY[TEXT]")
    # RFC822.TEXT sets it too.
    assert b"FLAGS (\\Seen \\Recent)" in client.cmd("d FETCH 2 RFC822.TEXT")


def test_seen_flag_change_is_not_repeated_as_unsolicited_fetch() -> None:
    """The \\Seen set by FETCH is reported once, not again at the next NOOP."""
    _, client = selected(SIMPLE)
    client.cmd("a FETCH 1 BODY[]")
    assert client.lines("b NOOP") == [b"b OK NOOP completed"]


def test_envelope_of_simple_message() -> None:
    """ENVELOPE lists date, subject and parsed addresses."""
    _, client = selected(SIMPLE)
    assert client.lines("a FETCH 1 ENVELOPE") == [
        b'* 1 FETCH (ENVELOPE ("Fri, 20 Apr 2001 20:18:00 -0400" "Lunch on Friday" '
        b'(("Alice Example" NIL "alice" "example.org")) '
        b'(("Alice Example" NIL "alice" "example.org")) '
        b'(("Alice Example" NIL "alice" "example.org")) '
        b'((NIL NIL "bob" "example.org")("Carol, C." NIL "carol" "example.net")) '
        b'NIL NIL NIL "<1@example.org>"))',
        b"a OK FETCH completed",
    ]


def test_envelope_with_8bit_header_is_sent_as_literal() -> None:
    """An 8-bit Subject does not break ENVELOPE; it goes out as a literal."""
    message = b"Subject: caf\xc3\xa9\r\nFrom: =?utf-8?q?Andr=C3=A9?= <a@b.c>\r\n\r\nx\r\n"
    _, client = selected(message)
    response = client.cmd("a FETCH 1 ENVELOPE")
    assert b"{5}\r\ncaf\xc3\xa9" in response
    assert b'(("=?utf-8?q?Andr=C3=A9?=" NIL "a" "b.c"))' in response
    assert response.endswith(b"a OK FETCH completed\r\n")


def test_fast_all_full_macros() -> None:
    """ALL and FULL include ENVELOPE; FULL includes BODY."""
    _, client = selected(SIMPLE)
    assert b"ENVELOPE (" in client.cmd("a FETCH 1 ALL")
    full = client.cmd("b FETCH 1 FULL")
    assert b" BODY (" in full and b"ENVELOPE" in full
    fast = client.cmd("c FETCH 1 FAST")
    assert b"ENVELOPE" not in fast and b"RFC822.SIZE" in fast


def test_bodystructure_of_multipart_with_attachment() -> None:
    """BODYSTRUCTURE describes the parts, their parameters and disposition."""
    message = corpus("msg_07.txt")
    _, client = selected(message)
    response = client.cmd("a FETCH 1 BODYSTRUCTURE")
    assert response.startswith(
        b'* 1 FETCH (BODYSTRUCTURE (("text" "plain" ("charset" "us-ascii") NIL NIL "7BIT" '
    )
    assert b'("image" "gif" ("name" "dingusfish.gif") NIL NIL "base64" ' in response
    assert b'("attachment" ("filename" "dingusfish.gif"))' in response
    assert b' NIL NIL)("image" ' in response
    assert b' NIL NIL) "mixed" ("boundary" "BOUNDARY") NIL NIL NIL))\r\n' in response


def test_body_part_numbers() -> None:
    """BODY[1] and BODY[2.MIME] serve one part's content and MIME header."""
    message = corpus("msg_07.txt")
    _, client = selected(message)
    response = client.cmd("a FETCH 1 (BODY.PEEK[1] BODY.PEEK[2.MIME])")
    text = b"Hi there,\r\n\r\nThis is the dingus fish.\r\n"
    assert b"BODY[1] {%d}\r\n" % len(text) + text in response
    assert (
        b'Content-Type: image/gif; name="dingusfish.gif"\r\n'
        b"Content-Transfer-Encoding: base64\r\n"
        b'content-disposition: attachment; filename="dingusfish.gif"\r\n\r\n'
    ) in response
    assert client.lines("b FETCH 1 BODY.PEEK[9]") == [
        b'* 1 FETCH (BODY[9] "")',
        b"b OK FETCH completed",
    ]


def test_body_part_of_encapsulated_message() -> None:
    """For a message/rfc822 part, BODY[n.HEADER] is the inner message's header."""
    message = corpus("msg_06.txt")
    _, client = selected(message)
    response = client.cmd("a FETCH 1 (BODY.PEEK[1.HEADER] BODYSTRUCTURE)")
    assert b"BODY[1.HEADER] {" in response
    assert b"Subject: testing\r\n" in response
    assert b'"message" "rfc822" NIL NIL "forwarded message" "7bit"' in response


def test_fetch_of_message_expunged_elsewhere_serves_the_rest() -> None:
    """A message expunged by another session is skipped with NO [EXPUNGEISSUED]."""
    server, client = selected(SIMPLE, SIMPLE)
    other = server.connect().login()
    other.select()
    other.cmd("a STORE 1 +FLAGS (\\Deleted)")
    other.cmd("b EXPUNGE")
    response = client.lines("c FETCH 1:2 (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert response[0].startswith(b"* 2 FETCH (UID 2 ")
    assert response[-1].startswith(b"c NO [EXPUNGEISSUED]")
    assert not any(b"EXPUNGE\r" in line or line.endswith(b"EXPUNGE") for line in response)
