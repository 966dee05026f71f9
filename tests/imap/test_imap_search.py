"""Tests for SEARCH and UID SEARCH."""

from __future__ import annotations

from datetime import datetime, UTC

import pytest
from imap_harness import Client, Server

MESSAGES = [
    (b"From: Alice <alice@example.org>\r\nTo: bob@example.org\r\nSubject: Lunch plans\r\n"
     b"Date: Mon, 01 Mar 2021 10:00:00 +0000\r\nX-Tag: red\r\n\r\nNoon at the cafe?\r\n"),
    (b"From: Bob <bob@example.org>\r\nTo: alice@example.org\r\nSubject: =?utf-8?q?Caf=C3=A9?=\r\n"
     b"Date: Tue, 02 Mar 2021 10:00:00 +0000\r\n\r\n" + b"x" * 500 + b"\r\n"),
    (b"From: Carol <carol@example.net>\r\nTo: alice@example.org\r\nSubject: Re: lunch PLANS\r\n"
     b"\r\nSure.\r\n"),
]
FLAGS = [("\\Seen", "$Work"), ("\\Flagged", "\\Answered"), ("\\Deleted", "\\Draft")]
DATES = [datetime(2021, 3, d, 12, 0, tzinfo=UTC) for d in (1, 2, 3)]


@pytest.fixture
def client() -> Client:
    server = Server()
    mailbox = server.mailbox()
    for message, flags, when in zip(MESSAGES, FLAGS, DATES, strict=True):
        mailbox.append(message, flags, when)
    client = server.connect().login()
    client.select()
    # Make message 3 not recent for NEW/OLD tests: a fresh delivery later is.
    return client


def search(client: Client, criteria: str) -> list[int]:
    lines = client.lines(f"s SEARCH {criteria}")
    assert lines[-1] == b"s OK SEARCH completed", lines
    return [int(n) for n in lines[0].split()[2:]]


@pytest.mark.parametrize(
    "criteria, expected",
    [
        ("ALL", [1, 2, 3]),
        ("1,3", [1, 3]),
        ("2:*", [2, 3]),
        ("UID 2", [2]),
        ("SEEN", [1]),
        ("UNSEEN", [2, 3]),
        ("DELETED", [3]),
        ("UNDELETED", [1, 2]),
        ("FLAGGED", [2]),
        ("UNFLAGGED", [1, 3]),
        ("ANSWERED", [2]),
        ("UNANSWERED", [1, 3]),
        ("DRAFT", [3]),
        ("UNDRAFT", [1, 2]),
        ("KEYWORD $Work", [1]),
        ("UNKEYWORD $Work", [2, 3]),
        ("RECENT", [1, 2, 3]),
        ("NEW", [2, 3]),
        ("OLD", []),
        ("LARGER 400", [2]),
        ("SMALLER 200", [1, 3]),
        ("SUBJECT lunch", [1, 3]),
        ("SUBJECT {5+}\r\ncafé", [2]),
        ("FROM ALICE", [1]),
        ("TO alice@example.org", [2, 3]),
        ('HEADER X-Tag "red"', [1]),
        ('HEADER X-Tag ""', [1]),
        ("BODY noon", [1]),
        ("TEXT carol", [3]),
        ("NOT SEEN", [2, 3]),
        ("OR SEEN FLAGGED", [1, 2]),
        ("NOT (OR SEEN FLAGGED)", [3]),
        ("OR (SUBJECT lunch SEEN) DRAFT", [1, 3]),
        ("BEFORE 2-Mar-2021", [1]),
        ("ON 2-Mar-2021", [2]),
        ("SINCE 2-Mar-2021", [2, 3]),
        ("SENTBEFORE 2-Mar-2021", [1]),
        ("SENTSINCE 2-Mar-2021", [2]),
        ("SENTON 1-Mar-2021", [1]),
        ("CHARSET UTF-8 SUBJECT {5+}\r\ncafé", [2]),
        ('CHARSET "utf-8" SUBJECT CAF', [2]),
        ("CHARSET US-ASCII ALL", [1, 2, 3]),
    ],
)
def test_search_keys(client: Client, criteria: str, expected: list[int]) -> None:
    """Each search key selects the messages RFC 3501 says it does."""
    assert search(client, criteria) == expected


def test_uid_search_answers_uids(client: Client) -> None:
    """UID SEARCH answers UIDs, not sequence numbers."""
    client.cmd("a STORE 3 -FLAGS.SILENT (\\Deleted)")
    client.cmd("a STORE 1 +FLAGS.SILENT (\\Deleted)")
    client.cmd("b EXPUNGE")
    assert client.lines("c UID SEARCH DRAFT") == [b"* SEARCH 3", b"c OK UID SEARCH completed"]
    assert client.lines("d SEARCH DRAFT") == [b"* SEARCH 2", b"d OK SEARCH completed"]


def test_unknown_charset_is_badcharset(client: Client) -> None:
    """A charset other than UTF-8 and US-ASCII answers NO [BADCHARSET ...]."""
    assert client.cmd("a SEARCH CHARSET KOI8-R ALL").startswith(
        b"a NO [BADCHARSET (UTF-8 US-ASCII)]"
    )


def test_malformed_search_is_bad(client: Client) -> None:
    """Unknown keys and missing arguments are BAD."""
    assert client.cmd("a SEARCH FROB").startswith(b"a BAD")
    assert client.cmd("b SEARCH SUBJECT").startswith(b"b BAD")
    assert client.cmd("c SEARCH (SEEN").startswith(b"c BAD")
