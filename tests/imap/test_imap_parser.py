"""Tests for the IMAP tokenizer and command grammar, including a fuzz test."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from imap_harness import Server

from pymail.imap.commands import parse_append, parse_store
from pymail.imap.fetch import FetchItem, Section, parse_fetch_items
from pymail.imap.parser import Cursor, ParseError, SequenceSet, format_date_time
from pymail.imap.server import default_table


def test_astring_forms() -> None:
    """Atoms, quoted strings with escapes and literals all read as astrings."""
    cur = Cursor(b'atom "qu\\"o\\\\ted" {3}\r\nl{t ]x')
    assert cur.astring() == b"atom"
    cur.sp()
    assert cur.astring() == b'qu"o\\ted'
    cur.sp()
    assert cur.astring() == b"l{t"
    cur.sp()
    assert cur.astring() == b"]x"
    cur.end()


def test_quoted_string_refuses_crlf_and_8bit_is_allowed_only_in_literal() -> None:
    """A quoted string cannot contain CR or LF."""
    with pytest.raises(ParseError):
        Cursor(b'"a\r\nb"').quoted()


def test_literal_shorter_than_announced_is_error() -> None:
    """A literal whose bytes are missing raises ParseError."""
    with pytest.raises(ParseError):
        Cursor(b"{10}\r\nabc").literal()


def test_sequence_set_with_star_and_ranges() -> None:
    """Sequence sets keep ranges as written, ``*`` as None."""
    assert Cursor(b"1,3:5,7:*,*").sequence_set() == SequenceSet(
        ((1, 1), (3, 5), (7, None), (None, None))
    )


@pytest.mark.parametrize("text", [b"0", b"1:0", b"4294967296", b",1", b"a"])
def test_bad_sequence_sets(text: bytes) -> None:
    """Zero, overflow and junk are not sequence sets."""
    with pytest.raises(ParseError):
        Cursor(text).sequence_set()
        Cursor(text).end()


def test_flag_list() -> None:
    """Flag lists hold system flags and keywords."""
    assert Cursor(b"(\\Seen $Junk foo)").flag_list() == ["\\Seen", "$Junk", "foo"]


def test_date_time_round_trip() -> None:
    """APPEND date-times parse with their zone and render back the same."""
    when = Cursor(b'"17-Jul-1996 02:44:25 -0700"').date_time()
    assert when == datetime(1996, 7, 17, 2, 44, 25, tzinfo=timezone(-timedelta(hours=7)))
    assert format_date_time(when) == b'"17-Jul-1996 02:44:25 -0700"'
    assert Cursor(b'" 7-Jul-1996 02:44:25 +0000"').date_time().day == 7


def test_store_grammar() -> None:
    """STORE parses the mode, .SILENT and flags with or without parentheses."""
    store = parse_store(Cursor(b" 1:2 +FLAGS.SILENT (\\Deleted foo)"))
    assert (store.mode, store.silent, store.flags) == ("add", True, ("\\Deleted", "foo"))
    store = parse_store(Cursor(b" 1 -flags \\Seen"))
    assert (store.mode, store.silent, store.flags) == ("remove", False, ("\\Seen",))


def test_append_grammar_optional_parts() -> None:
    """APPEND takes optional flags and date-time before the literal."""
    append = parse_append(Cursor(b' INBOX () "01-Jan-2020 00:00:00 +0000" {1}\r\nx'))
    assert append.flags == () and append.date is not None and append.message == b"x"
    append = parse_append(Cursor(b" INBOX {1+}\r\nx"))
    assert append.flags == () and append.date is None


def test_fetch_items_sections_and_partial() -> None:
    """BODY sections, HEADER.FIELDS lists and partials parse into FetchItems."""
    items = parse_fetch_items(
        Cursor(b"(UID BODY.PEEK[HEADER.FIELDS (From \"To\")]<0.10> BODY[1.2.MIME] rfc822.size)")
    )
    assert items == [
        FetchItem("UID"),
        FetchItem("BODY[]", Section((), "HEADER.FIELDS", (b"From", b"To")), True, (0, 10)),
        FetchItem("BODY[]", Section((1, 2), "MIME")),
        FetchItem("RFC822.SIZE"),
    ]


def test_fetch_macros() -> None:
    """ALL, FAST and FULL expand to their items."""
    assert [i.name for i in parse_fetch_items(Cursor(b"fast"))] == [
        "FLAGS", "INTERNALDATE", "RFC822.SIZE",
    ]


@pytest.mark.parametrize(
    "text", [b"(UID", b"BODY[HEADER.FIELDS ()]", b"BODY[MIME]", b"FOO", b"UID[]", b"BODY[1.X]"]
)
def test_bad_fetch_items(text: bytes) -> None:
    """Malformed FETCH items raise ParseError."""
    with pytest.raises(ParseError):
        parse_fetch_items(Cursor(text))


_TOKENS = st.sampled_from(
    [b" ", b"(", b")", b"[", b"]", b"<", b">", b".", b"*", b":", b",", b"1", b"42", b"0",
     b'"', b"\\", b"{", b"}", b"{3}\r\n", b"{0+}\r\n", b"\r\n", b"NIL", b"BODY", b"PEEK",
     b"HEADER.FIELDS", b"TEXT", b"FLAGS", b"+FLAGS", b"\\Seen", b"CHARSET", b"UTF-8", b"OR",
     b"NOT", b"SUBJECT", b"UID", b"INBOX", b"\xff", b"\x00", b"%", b"&AMQ-", b"&", b"-"]
)


@settings(max_examples=400, database=None, deadline=None)
@given(name=st.sampled_from(sorted(default_table().commands)), parts=st.lists(_TOKENS, max_size=25))
def test_fuzz_command_grammar_raises_only_parse_error(name: str, parts: list[bytes]) -> None:
    """Whatever follows a command name, parsing gives a value or a ParseError."""
    spec = default_table().get(name)
    assert spec is not None
    cur = Cursor(b"".join(parts))
    try:
        spec.parse(cur)
        cur.end()
    except ParseError:
        pass


@settings(max_examples=200, database=None, deadline=None)
@given(
    name=st.sampled_from(sorted(default_table().commands)),
    data=st.lists(st.one_of(_TOKENS, st.binary(max_size=8)), max_size=30),
)
def test_fuzz_server_never_crashes(name: str, data: list[bytes]) -> None:
    """Random input to a selected session never raises or leaks a traceback."""
    server = Server()
    server.deliver()
    client = server.connect().login()
    client.select()
    out = client.send(b"t " + name.encode() + b" " + b"".join(data) + b"\r\n")
    assert b"Traceback" not in out
    assert b"SERVERBUG" not in out
