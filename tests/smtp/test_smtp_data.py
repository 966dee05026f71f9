"""Tests for pymail.smtp.data: finding the end of DATA, unstuffing, limits."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from smtp_support import dot_stuff

from pymail.smtp.data import DataReader


def feed_all(reader: DataReader, chunks: list[bytes]) -> bytes | None:
    """Feed chunks until the end; later chunks join the rest, as line mode would see them."""
    rest = None
    for chunk in chunks:
        if rest is None:
            rest = reader.feed(chunk)
        else:
            rest += chunk
    return rest


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    return [c for c in chunks if c]


_lines = st.lists(
    st.one_of(
        st.sampled_from([b"", b".", b"..", b".x", b"x.", b" .", b"From x"]),
        st.binary(max_size=20).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    ),
    max_size=12,
)


@given(lines=_lines, tail=st.binary(max_size=10), cuts=st.lists(st.integers(0, 10_000)))
def test_any_chunking_gives_the_same_message(
    lines: list[bytes], tail: bytes, cuts: list[int]
) -> None:
    """However the stream is cut, the message is the unstuffed original; the tail is left."""
    message = b"".join(line + b"\r\n" for line in lines)
    reader = DataReader(10_000)
    rest = feed_all(reader, split(dot_stuff(message) + tail, cuts))
    assert rest == tail
    assert reader.message() == message
    assert reader.size == len(message)
    assert not reader.bare_line_ending
    assert not reader.too_big


def test_terminator_right_after_data_command() -> None:
    """'.' as the first line ends an empty message."""
    reader = DataReader(100)
    assert reader.feed(b".\r\nQUIT\r\n") == b"QUIT\r\n"
    assert reader.message() == b""


def test_smuggling_sequences_are_content() -> None:
    """Bare-LF and bare-CR dot lines are not terminators but are flagged."""
    for sequence in (b"\n.\n", b"\r.\r", b"\r\n.\n", b"\n.\r\n", b"\r\n.\r"):
        reader = DataReader(100)
        assert reader.feed(b"a" + sequence + b"b\r\n") is None
        assert reader.feed(b".\r\n") == b""
        assert reader.bare_line_ending, sequence


def test_cr_split_from_lf_is_not_bare() -> None:
    """A CRLF split across chunks is an ordinary line end."""
    reader = DataReader(100)
    for chunk in (b"a\r", b"\n.", b".b\r", b"\n.\r", b"\n"):
        reader.feed(chunk)
    assert reader.message() == b"a\r\n.b\r\n"
    assert not reader.bare_line_ending


def test_long_line_is_not_held() -> None:
    """A long line without CRLF is processed as it arrives, and a CR at a cut still pairs."""
    reader = DataReader(10**6)
    reader.feed(b"x" * 20_000 + b"\r")
    assert len(reader._carry) < 10
    assert reader.feed(b"\n.\r\n") == b""
    assert reader.message() == b"x" * 20_000 + b"\r\n"
    assert not reader.bare_line_ending


def test_size_limit() -> None:
    """Past the limit nothing more is kept, but the end is still found."""
    reader = DataReader(10)
    assert reader.feed(b"0123456789\r\n") is None
    assert reader.feed(b"more\r\n.\r\nNOOP") == b"NOOP"
    assert reader.message() == b""
    assert reader.size == 18


def test_text_line_limit() -> None:
    """A line of 998 octets (1000 with CRLF) passes; 999 is flagged, however it is chunked."""
    from pymail.smtp.data import MAX_TEXT_LINE

    for extra, flagged in ((0, False), (1, True)):
        body = b"a\r\n" + b"x" * (MAX_TEXT_LINE + extra) + b"\r\nb\r\n.\r\n"
        for step in (1, 7, 500, 999, 5000, 20000):
            reader = DataReader(10**6)
            for i in range(0, len(body), step):
                reader.feed(body[i:i + step])
            assert reader.line_too_long is flagged, (extra, step)
    long_line = b"y" * 20000 + b"\r\n.\r\n"
    reader = DataReader(10**6)
    for i in range(0, len(long_line), 3000):
        reader.feed(long_line[i:i + 3000])
    assert reader.line_too_long


_pieces = st.lists(
    st.one_of(
        st.sampled_from([b"\r\n", b"\r", b"\n", b".", b"\r\n.", b"x"]),
        st.integers(990, 1003).map(lambda n: b"a" * n),
    ),
    max_size=10,
)


@given(pieces=_pieces, cuts=st.lists(st.integers(0, 10_000)))
def test_flags_match_a_whole_message_reference(pieces: list[bytes], cuts: list[int]) -> None:
    """Bare CR/LF and over-long lines are flagged as a plain reference says, however it is cut."""
    from hypothesis import assume

    from pymail.smtp.data import MAX_TEXT_LINE

    body = b"".join(pieces)
    # What the reader examines: its leading CRLF, the body and the terminator's CRLF.
    wire = b"\r\n" + body + b"\r\n"
    # The body must not end the message early.
    assume((b"\r\n" + body + b"\r\n.\r\n").find(b"\r\n.\r\n") == len(body) + 2)
    crlf = wire.count(b"\r\n")
    bare = wire.count(b"\r") != crlf or wire.count(b"\n") != crlf
    reader = DataReader(10**6)
    assert feed_all(reader, split(body + b"\r\n.\r\n", cuts)) == b""
    assert reader.bare_line_ending is bare
    if not bare:
        too_long = max(len(line) for line in wire.split(b"\r\n")) > MAX_TEXT_LINE
        assert reader.line_too_long is too_long


@given(st.lists(st.sampled_from([b"\r\n", b"\r", b"\n", b"x", b"\r\r\n", b"\n\r"])).map(b"".join))
def test_bare_line_ending_matches_counting(data: bytes) -> None:
    """has_bare_line_ending says what counting CRs, LFs and CRLFs says, for any octets."""
    from pymail.smtp.data import has_bare_line_ending

    crlf = data.count(b"\r\n")
    assert has_bare_line_ending(data) is (data.count(b"\r") != crlf or data.count(b"\n") != crlf)
