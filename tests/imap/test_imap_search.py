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


ENCODED = [
    # quoted-printable with a soft line break and 8-bit Latin-1
    (b"Subject: qp\r\nMIME-Version: 1.0\r\n"
     b"Content-Type: text/plain; charset=iso-8859-1\r\n"
     b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
     b"Die Stra=DFe ist na=\r\nss.\r\n"),
    # base64 text part and a base64 attachment in a multipart
    (b"Subject: b64\r\nMIME-Version: 1.0\r\n"
     b'Content-Type: multipart/mixed; boundary="XX"\r\n\r\n'
     b"--XX\r\nContent-Type: text/plain; charset=utf-8\r\n"
     b"Content-Transfer-Encoding: base64\r\n\r\n"
     b"SGVsbG8gd29ybGQsIGNhZsOpIHRpbWU=\r\n"
     b"--XX\r\nContent-Type: application/octet-stream\r\n"
     b"Content-Transfer-Encoding: base64\r\n\r\n"
     b"c2VjcmV0IGJpbmFyeSBzdHVmZg==\r\n"
     b"--XX--\r\n"),
]


@pytest.mark.parametrize(
    "criteria, expected",
    [
        ("BODY STRASSE", [1]),  # full Unicode case folding: ß is ss
        ("CHARSET UTF-8 BODY {7+}\r\nstraße", [1]),
        ("BODY nass", [1]),  # the soft line break is undone
        ("BODY =DF", []),  # the encoded form is not text
        ("CHARSET UTF-8 BODY {5+}\r\ncafé", [2]),
        ("BODY hello", [2]),
        ("BODY SGVsbG8", []),  # base64 is not searched as written
        ("BODY secret", []),  # nor is a binary attachment's content
        ("TEXT b64", [2]),  # TEXT includes the header
        ("BODY b64", []),
    ],
)
def test_body_and_text_search_decoded_content(criteria: str, expected: list[int]) -> None:
    """BODY and TEXT look through quoted-printable, base64 and the part's charset."""
    server = Server()
    mailbox = server.mailbox()
    for message in ENCODED:
        mailbox.append(message, (), DATES[0])
    client = server.connect().login()
    client.select()
    assert search(client, criteria) == expected
