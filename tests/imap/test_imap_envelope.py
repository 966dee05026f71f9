"""Tests for the ENVELOPE and BODYSTRUCTURE pure functions."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from imap_harness import CORPUS, corpus

from pymail.imap.bodystructure import bodystructure, part_bytes
from pymail.imap.envelope import (
    _parse_address_list,
    envelope,
    envelope_sexp,
    envelope_wire,
    parse_address_list,
)
from pymail.imap.responses import sexp


def test_group_syntax_gets_group_markers() -> None:
    """A group becomes (NIL NIL name NIL) ... (NIL NIL NIL NIL)."""
    assert parse_address_list(b"IETF-Announce:;") == (
        (None, None, b"IETF-Announce", None),
        (None, None, None, None),
    )
    assert parse_address_list(b"Friends: a@b.c, \"D E\" <d@e.f>;, g@h.i") == (
        (None, None, b"Friends", None),
        (None, None, b"a", b"b.c"),
        (b"D E", None, b"d", b"e.f"),
        (None, None, None, None),
        (None, None, b"g", b"h.i"),
    )


def test_comments_are_dropped() -> None:
    """Comments around an addr-spec do not become part of the address."""
    assert parse_address_list(b"barry@python.org (Barry A. Warsaw)") == (
        (None, None, b"barry", b"python.org"),
    )
    value = b"Pete(A (nested) comment) <pete(his account)@silly.test(his host)>"
    assert parse_address_list(value) == (
        (b"Pete", None, b"pete", b"silly.test"),
    )


def test_route_and_quoted_local_part() -> None:
    """Source routes go to the adl field; quoted local parts keep their quotes."""
    assert parse_address_list(b"<@a.example,@b.example:joe@c.example>") == (
        (None, b"@a.example,@b.example", b"joe", b"c.example"),
    )
    assert parse_address_list(b'"john doe"@example.org') == (
        (None, None, b'"john doe"', b"example.org"),
    )


def test_missing_domain_and_garbage_do_not_raise() -> None:
    """Addresses without a domain, unbalanced quotes and brackets are tolerated."""
    assert parse_address_list(b"undisclosed-recipients") == (
        (None, None, b"undisclosed-recipients", b"MISSING_DOMAIN"),
    )
    for junk in [b'"unterminated <a@b', b"<<<>>>", b"@@@", b",,,", b"(((", b"[x", b":;:;", b"\\"]:
        parse_address_list(junk)


def test_envelope_passes_encoded_words_and_8bit_through() -> None:
    """Encoded-words stay encoded and raw 8-bit bytes are kept."""
    message = (
        b"Subject: =?iso-8859-1?q?caf=E9?= \xe9t\xe9\r\n"
        b"From: =?utf-8?b?w6k=?= <x@y.z>\r\n"
        b"\r\nbody\r\n"
    )
    env = envelope(message)
    assert env[1] == b"=?iso-8859-1?q?caf=E9?= \xe9t\xe9"
    assert env[2] == ((b"=?utf-8?b?w6k=?=", None, b"x", b"y.z"),)
    assert sexp(envelope_sexp(env)).startswith(b"(NIL {27}\r\n=?iso-8859-1?q?caf=E9?= \xe9t\xe9 ")


def test_envelope_defaults_sender_and_reply_to_to_from() -> None:
    """Sender and Reply-To default to From; missing fields are NIL."""
    env = envelope(b"From: a@b.c\r\nReply-To: \r\n\r\n")
    assert env[3] == env[4] == env[2] == ((None, None, b"a", b"b.c"),)
    assert env[0] is None and env[5] is None and env[9] is None


def test_envelope_unfolds_headers() -> None:
    """Folded header values are unfolded."""
    env = envelope(b"Subject: one\r\n two\r\nTo: a@b.c,\r\n\td@e.f\r\n\r\n")
    assert env[1] == b"one two"
    assert env[5] == ((None, None, b"a", b"b.c"), (None, None, b"d", b"e.f"))


@pytest.mark.parametrize("path", sorted(p.name for p in CORPUS.glob("*.txt")))
def test_every_corpus_message_has_envelope_and_structure(path: str) -> None:
    """ENVELOPE and BODYSTRUCTURE work on every corpus message and render."""
    message = corpus(path)
    assert sexp(envelope_sexp(envelope(message))).startswith(b"(")
    assert sexp(bodystructure(message)).startswith(b"(")
    assert sexp(bodystructure(message, extended=False)).startswith(b"(")


def test_bodystructure_of_deep_nesting_is_bounded() -> None:
    """A hostile, deeply nested multipart does not exhaust the stack."""
    message = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
    for _ in range(2000):
        message += b"--b\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
    assert sexp(bodystructure(message)).startswith(b"(")


def test_part_bytes_of_single_part_message() -> None:
    """BODY[1] of a non-multipart message is its body."""
    assert part_bytes(b"Subject: x\r\n\r\nhello\r\n", (1,)) == b"hello\r\n"
    assert part_bytes(b"Subject: x\r\n\r\nhello\r\n", (2,)) is None


_ADDRESS_PIECES = st.sampled_from([
    b"a", b"bob", b"x.y", b"@", b"<", b">", b",", b" ", b"\t", b'"', b'"Carol, C."', b".",
    b"(c)", b":", b";", b"\\", b"[1.2]", b"=?utf-8?q?=C3=A9?=", b"\xc3\xa9", b"example.org",
])


@settings(max_examples=3000, deadline=None)
@given(st.lists(_ADDRESS_PIECES, max_size=14))
def test_fast_address_path_agrees_with_the_tokenizer(pieces: list[bytes]) -> None:
    """The shortcut for simple addresses gives exactly what the full parser gives."""
    value = b"".join(pieces).strip()
    if value:
        assert parse_address_list(value) == _parse_address_list(value)


@pytest.mark.parametrize("value", [
    b"bob@example.org",
    b"Alice  Example <alice@example.org>, bob@example.org,\t\"Carol, C.\" <c@x.y>",
    b'"" <a@b>', b"<a@b>", b"a@b,", b"J. Smith <j@s.t>", b"a@b,,c@d", b"<a@b> junk",
    b"group: a@b, c@d;", b"=?utf-8?q?=C3=A9?= <e@x.y>",
])
def test_fast_address_path_on_common_and_odd_shapes(value: bytes) -> None:
    """Common address shapes take the shortcut; odd ones still parse as before."""
    assert parse_address_list(value) == _parse_address_list(value)


@pytest.mark.parametrize("path", sorted(p.name for p in CORPUS.glob("*.txt")))
def test_envelope_wire_is_the_generic_rendering(path: str) -> None:
    """envelope_wire writes byte for byte what the generic sexp writer gives."""
    env = envelope(corpus(path))
    assert envelope_wire(env) == sexp(envelope_sexp(env))
