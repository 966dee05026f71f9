"""
The abuse list against the real server over real sockets: open-relay
forms on the MX and submission ports, SMTP smuggling, over-long lines and
command floods.  Nothing refused may be stored or queued.
"""

from __future__ import annotations

import base64
import os
import socket
import time
from pathlib import Path

from harness import PymailProcess


#: How long a session waits for the replies it expects (a loaded CI machine
#: may take seconds for a login).
REPLY_WAIT_S = 30.0


def session(port: int, lines: list[bytes], *, raw: bytes = b"", expect: int = 0,
            half_close: bool = False) -> list[str]:
    """
    Send ``lines`` (pipelined) or ``raw``; return the final reply lines, read
    until the server closes or ``expect`` of them have come.  With
    ``half_close`` the client shuts down its sending side after sending.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=REPLY_WAIT_S) as s:
        s.sendall(raw or b"".join(line + b"\r\n" for line in lines))
        if half_close:
            s.shutdown(socket.SHUT_WR)
        data = b""
        finals: list[str] = []
        deadline = time.monotonic() + REPLY_WAIT_S
        while not expect or len(finals) < expect:
            s.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            data += chunk
            finals = final_lines(data)
    finals = final_lines(data)
    assert len(finals) >= expect, f"expected {expect} replies, got {finals}"
    return finals


def final_lines(data: bytes) -> list[str]:
    """The last line of each complete reply in ``data``."""
    complete = data[: data.rfind(b"\r\n") + 2] if b"\r\n" in data else b""
    return [line for line in complete.decode("utf-8", "replace").split("\r\n")
            if len(line) > 3 and line[3] == " "]


def stored_files(server: PymailProcess) -> list[str]:
    found = []
    for root, _, files in os.walk(server.data_dir):
        if "/cur" in root or "/new" in root or root.endswith("queue"):
            found += [os.path.join(root, f) for f in files]
    return found


def test_open_relay_forms_refused(server: PymailProcess) -> None:
    """Every classic relay trick gets a 5xx on MX and (authenticated) on submission."""
    tricks = [b"<victim@elsewhere.example>", b"<victim%elsewhere.example@localhost>",
              b"<elsewhere.example!victim@localhost>", b"<@localhost:victim@elsewhere.example>",
              b'<"victim@elsewhere.example"@localhost>', b"<victim@elsewhere.example.>"]
    mx = session(server.ports["smtp"], [b"EHLO evil.example", b"MAIL FROM:<a@evil.example>"]
                 + [b"RCPT TO:" + t for t in tricks] + [b"DATA", b"QUIT"],
                 expect=5 + len(tricks))
    # mx[0] is the greeting, then EHLO and MAIL.
    rcpt_codes = [line[:3] for line in mx[3:3 + len(tricks)]]
    assert all(c[0] == "5" for c in rcpt_codes), mx
    token = base64.b64encode(b"\0bob@example.org\0bob-pw")
    routed = [b"<victim%elsewhere.example@other.example>", b"<a!victim@other.example>",
              b"<@relay.example:victim@other.example>", b'<"a@b"@other.example>']
    sub = session(server.ports["submission"],
                  [b"EHLO c.example", b"AUTH PLAIN " + token, b"MAIL FROM:<bob@example.org>"]
                  + [b"RCPT TO:" + t for t in routed] + [b"QUIT"], expect=5 + len(routed))
    assert sub[2][:3] == "235" and sub[3][:3] == "250", sub
    assert all(line[:5] == "550 5" for line in sub[4:4 + len(routed)]), sub
    assert stored_files(server) == []


def test_smuggling_sequences_never_end_a_message(server: PymailProcess) -> None:
    """Bare-LF/CR end-of-data forms never end DATA; the whole message is refused, none stored."""
    for fake_end in (b"\n.\n", b"\r.\r", b"\r\n.\n", b"\n.\r\n", b"\r.\r\n"):
        smuggled = (b"Subject: first\r\n\r\nhello" + fake_end
                    + b"MAIL FROM:<admin@localhost>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n"
                    + b"Subject: smuggled\r\n\r\nevil\r\n.\r\n")
        replies = session(server.ports["smtp"], [], raw=(
            b"EHLO c.example\r\nMAIL FROM:<a@c.example>\r\nRCPT TO:<bob@example.org>\r\n"
            b"DATA\r\n" + smuggled + b"QUIT\r\n"))
        codes = [line[:9] for line in replies]
        # codes[0] is the greeting, then EHLO, MAIL, RCPT.
        assert codes[4] == "354 End d" and codes[5] == "550 5.6.0", (fake_end, replies)
        assert codes[6:] == ["221 2.0.0"], (fake_end, replies)
    assert stored_files(server) == []


def test_long_lines_and_floods(server: PymailProcess, tmp_path: Path) -> None:
    """An over-long command gets 500 5.5.2; a flood of bad commands is cut off with 421."""
    replies = session(server.ports["smtp"], [b"EHLO c.example", b"NOOP " + b"x" * 5000,
                                             b"NOOP", b"QUIT"])
    assert replies[2][:9] == "500 5.5.2" and replies[3][:3] == "250", replies
    server.wait_for_log("stage=COMMAND")
    flood = session(server.ports["smtp"], [b"BOGUS"] * 200)
    assert flood[-1][:9] == "421 4.7.0", flood[-3:]
    assert len(flood) < 30
    server.wait_for_log("client=127.0.0.1")


def test_half_closed_pipelined_session_is_answered_and_stored(server: PymailProcess) -> None:
    """A client that pipelines a whole transaction and then half-closes gets every reply."""
    message = b"Subject: half-close\r\n\r\nsent, then shutdown(SHUT_WR)\r\n"
    with socket.create_connection(("127.0.0.1", server.ports["smtp"]), timeout=REPLY_WAIT_S) as s:
        s.sendall(b"EHLO c.example\r\nMAIL FROM:<a@c.example>\r\nRCPT TO:<bob@example.org>\r\n"
                  b"DATA\r\n" + message + b".\r\nNOOP\r\n")
        s.shutdown(socket.SHUT_WR)
        data = b""
        # No QUIT was sent: the server closes once everything is answered.
        while chunk := s.recv(65536):
            data += chunk
    replies = final_lines(data)
    assert [line[:3] for line in replies] == ["220", "250", "250", "250", "354", "250", "250"]
    assert replies[5].startswith("250 2.0.0 Ok: queued as "), replies
    [stored] = stored_files(server)
    assert Path(stored).read_bytes().endswith(message.replace(b"\r\n", b"\n"))
