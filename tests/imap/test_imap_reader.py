"""Tests for the line-and-literal reader under the IMAP server."""

from __future__ import annotations

from imap_harness import Server


def test_synchronising_literal_gets_continuation() -> None:
    """A ``{n}`` literal is answered with ``+`` and then read exactly."""
    server = Server()
    client = server.connect().login()
    message = b"Subject: x\r\n\r\nhello\r\n"
    assert client.send(b"a APPEND INBOX {%d}\r\n" % len(message)) == b"+ Ready for literal data\r\n"
    assert client.send(message + b"\r\n").startswith(b"a OK [APPENDUID ")
    assert server.mailbox().read(1) == message


def test_literal_split_across_packets() -> None:
    """A literal arriving a byte at a time is reassembled exactly."""
    server = Server()
    client = server.connect().login()
    message = b"Subject: x\r\n\r\n{3}\r\n"
    client.send(b"a APPEND INBOX {%d}\r\n" % len(message))
    for byte in message + b"\r\n":
        client.send(bytes([byte]))
    assert server.mailbox().read(1) == message


def test_non_synchronising_literal_needs_no_continuation() -> None:
    """A ``{n+}`` literal (LITERAL+) is read without a ``+`` response."""
    server = Server()
    client = server.connect().login()
    response = client.send(b"a APPEND INBOX {5+}\r\nX: y\n\r\nb NOOP\r\n")
    assert response.split(b"\r\n")[1:] == [b"b OK NOOP completed", b""]
    assert response.startswith(b"a OK [APPENDUID ")
    assert server.mailbox().read(1) == b"X: y\n"


def test_several_literals_in_one_command() -> None:
    """LOGIN with two literals works."""
    client = Server().connect()
    client.send(b"a LOGIN {17}\r\n")
    response = client.send(b"alice@example.org {2}\r\n")
    assert response == b"+ Ready for literal data\r\n"
    assert client.send(b"pw\r\n").startswith(b"a OK")


def test_oversized_synchronising_literal_refused_before_reading() -> None:
    """A ``{n}`` over the limit is answered NO [TOOBIG] without ``+``; the connection stays."""
    server = Server(max_literal_size=100)
    client = server.connect().login()
    response = client.send(b"a APPEND INBOX {101}\r\n")
    assert response == b"a NO [TOOBIG] literal of 101 octets is too big (max 100)\r\n"
    assert client.cmd("b NOOP") == b"b OK NOOP completed\r\n"
    assert not client.closed


def test_oversized_non_synchronising_literal_closes() -> None:
    """A ``{n+}`` over the limit gets BYE and the connection is closed unread."""
    server = Server(max_literal_size=100)
    client = server.connect().login()
    response = client.send(b"a APPEND INBOX {1000+}\r\n" + b"x" * 1000 + b"\r\nb NOOP\r\n")
    assert response.startswith(b"* BYE [TOOBIG]")
    assert b"b OK" not in response
    assert client.closed
    assert server.mailbox().messages() == []


def test_line_at_limit_is_accepted() -> None:
    """A line of exactly max_line_length octets is read."""
    server = Server()
    client = server.connect()
    line = b"a NOOP " + b"x" * (64 * 1024 - 7)
    assert len(line) == 64 * 1024
    assert client.send(line + b"\r\n").startswith(b"a BAD NOOP: expected end of command")
    assert not client.closed


def test_line_over_limit_is_bad_and_closes() -> None:
    """A line over max_line_length gets BAD and the connection is closed."""
    client = Server().connect()
    response = client.send(b"a NOOP " + b"x" * (64 * 1024) + b"\r\n")
    assert response.startswith(b"a BAD line too long (max 65536 octets)\r\n* BYE")
    assert client.closed


def test_endless_line_without_newline_closes() -> None:
    """Bytes without any newline beyond the limit close the connection early."""
    client = Server(max_line_length=1000).connect()
    client.send(b"a " + b"x" * 500)
    assert not client.closed
    response = client.send(b"x" * 600)
    assert response.startswith(b"a BAD line too long")
    assert client.closed


def test_bare_newline_ends_a_line() -> None:
    """Lines ending in a bare LF are accepted."""
    client = Server().connect()
    assert client.send(b"a NOOP\nb NOOP\n") == b"a OK NOOP completed\r\nb OK NOOP completed\r\n"


def test_literal_with_brace_text_in_quoted_string_is_not_literal() -> None:
    """``{5}`` inside a quoted string in the middle of a line is just text."""
    server = Server()
    client = server.connect().login()
    response = client.cmd('a CREATE "x{5}y"')
    assert response == b"a OK CREATE completed\r\n"
    assert "x{5}y" in server.store().list_mailboxes()


def test_literals_before_login_are_limited_to_line_length() -> None:
    """Before login a literal may be no bigger than a line, so strangers cannot fill memory."""
    client = Server(max_line_length=1000).connect()
    response = client.send(b"a LOGIN {1001}\r\n")
    assert response == b"a NO [TOOBIG] literal of 1001 octets is too big (max 1000)\r\n"
    response = client.send(b"b LOGIN {5000+}\r\n")
    assert response.startswith(b"* BYE [TOOBIG]")
    assert client.closed
