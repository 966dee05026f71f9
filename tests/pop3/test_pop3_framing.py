"""Tests for pymail.pop3.framing: byte-stuffing and TOP."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from pymail.pop3.framing import message_top, multiline, multiline_lines, multiline_listing


class MultilineTests(SynchronousTestCase):
    def test_stuffs_lines_starting_with_dot(self) -> None:
        """Every line that starts with a dot gets one more, the first line included."""
        body = b".first\r\nmid\r\n.\r\n..two\r\n"
        self.assertEqual(
            b"".join(multiline(b"+OK\r\n", body)),
            b"+OK\r\n..first\r\nmid\r\n..\r\n...two\r\n.\r\n",
        )

    def test_crlf_message_is_kept_byte_exact(self) -> None:
        """A CRLF message without leading dots is sent unchanged before the terminator."""
        body = b"Subject: x\r\n\r\nbody\r\n"
        self.assertEqual(b"".join(multiline(b"+OK\r\n", body)), b"+OK\r\n" + body + b".\r\n")

    def test_stuffs_after_bare_lf(self) -> None:
        """A dot after a bare LF is stuffed too, so LF-splitting clients see no terminator."""
        self.assertEqual(b"".join(multiline(b"+OK\r\n", b"a\n.\r\n")), b"+OK\r\na\n..\r\n.\r\n")

    def test_adds_missing_final_crlf(self) -> None:
        """A body without a final CRLF gets one before the terminator."""
        self.assertEqual(b"".join(multiline(b"+OK\r\n", b"x")), b"+OK\r\nx\r\n.\r\n")

    def test_empty_body(self) -> None:
        """An empty body is just the terminator."""
        self.assertEqual(b"".join(multiline(b"+OK\r\n", b"")), b"+OK\r\n.\r\n")

    def test_short_lines_are_stuffed(self) -> None:
        """Listing lines get CRLF and stuffing."""
        self.assertEqual(
            b"".join(multiline_lines(b"+OK\r\n", [b"1 2", b".x"])), b"+OK\r\n1 2\r\n..x\r\n.\r\n"
        )

    def test_listing_is_joined_and_terminated(self) -> None:
        """A LIST/UIDL listing is the status, the joined lines and the terminator."""
        pieces = multiline_listing(b"+OK\r\n", ["1 120\r\n", "2 4000\r\n"])
        self.assertEqual(pieces, [b"+OK\r\n", b"1 120\r\n2 4000\r\n", b".\r\n"])

    def test_empty_listing(self) -> None:
        """A listing of no messages is the status and the terminator."""
        self.assertEqual(b"".join(multiline_listing(b"+OK\r\n", [])), b"+OK\r\n.\r\n")

    def test_stuffing_search_agrees_with_replace(self) -> None:
        """Bodies with and without dot lines are stuffed exactly as replace() alone would."""
        for body in [b"a\r\nb\r\n", b"a\r\n.b\r\n", b"x.y\r\n", b"a\n.", b"\n.\n."]:
            expected = body.replace(b"\n.", b"\n..")
            self.assertEqual(multiline(b"", body)[1], expected, body)


class MessageTopTests(SynchronousTestCase):
    message = b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\nl3\r\n"

    def test_zero_lines_gives_header_and_blank_line(self) -> None:
        """TOP n 0 is the header and the empty line after it."""
        self.assertEqual(message_top(self.message, 0), b"A: 1\r\nB: 2\r\n\r\n")

    def test_some_lines(self) -> None:
        """TOP n 2 adds the first two body lines."""
        self.assertEqual(message_top(self.message, 2), b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\n")

    def test_more_lines_than_body(self) -> None:
        """Asking for more lines than the body has gives the whole message."""
        self.assertEqual(message_top(self.message, 99), self.message)

    def test_no_body(self) -> None:
        """A message without an empty line is all header."""
        self.assertEqual(message_top(b"A: 1\r\nB: 2\r\n", 0), b"A: 1\r\nB: 2\r\n")

    def test_empty_header(self) -> None:
        """A message that starts with the empty line has an empty header."""
        self.assertEqual(message_top(b"\r\nbody\r\nmore\r\n", 1), b"\r\nbody\r\n")

    def test_last_line_without_crlf(self) -> None:
        """A last body line without CRLF counts as a line."""
        self.assertEqual(message_top(b"A: 1\r\n\r\nx", 1), b"A: 1\r\n\r\nx")
