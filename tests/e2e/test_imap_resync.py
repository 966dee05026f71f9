"""
Disconnected-mode IMAP against the real pymail process: a client keeps a
local copy (UIDs, flags, MODSEQ), goes away, another session changes flags
and expunges (before and after a server restart), and the client
resynchronises with ``SELECT ... (QRESYNC ...)`` (RFC 7162), learning only
what changed.
"""

from __future__ import annotations

import re
import smtplib
import socket

from harness import PymailProcess

ALICE = ("alice@localhost", "alice-pw")
_FETCH = re.compile(rb"^\* \d+ FETCH \((.*)\)$")
_UID = re.compile(rb"UID (\d+)")
_FLAGS = re.compile(rb"FLAGS \(([^)]*)\)")
_MODSEQ = re.compile(rb"MODSEQ \((\d+)\)")


class Session:
    """A line client that sends one command and returns its response lines."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.file = self.sock.makefile("rb")
        self.n = 0
        self.file.readline()
        self.ok(f"LOGIN {ALICE[0]} {ALICE[1]}")

    def run(self, text: str) -> list[bytes]:
        self.n += 1
        tag = b"r%d" % self.n
        self.sock.sendall(tag + b" " + text.encode() + b"\r\n")
        lines = []
        while True:
            line = self.file.readline()
            if not line:
                raise ConnectionError("server closed the connection")
            line = line.rstrip(b"\r\n")
            lines.append(line)
            if line.startswith(tag + b" "):
                return lines

    def ok(self, text: str) -> list[bytes]:
        lines = self.run(text)
        assert b" OK " in lines[-1], (text, lines)
        return lines

    def close(self) -> None:
        self.run("LOGOUT")
        self.sock.close()


def fetched(lines: list[bytes]) -> dict[int, tuple[frozenset[bytes], int]]:
    """UID -> (flags, MODSEQ) from the untagged FETCH responses."""
    out = {}
    for line in lines:
        m = _FETCH.match(line)
        if m is None:
            continue
        items = m.group(1)
        uid, flags, modseq = _UID.search(items), _FLAGS.search(items), _MODSEQ.search(items)
        assert uid and flags and modseq, line
        out[int(uid.group(1))] = (frozenset(flags.group(1).split()) - {b"\\Recent"},
                                  int(modseq.group(1)))
    return out


def code_value(lines: list[bytes], name: bytes) -> int:
    for line in lines:
        m = re.search(rb"\[" + name + rb" (\d+)\]", line)
        if m:
            return int(m.group(1))
    raise AssertionError(f"no [{name.decode()}] in {lines!r}")


def uid_set(text: bytes) -> set[int]:
    out: set[int] = set()
    for part in text.split(b","):
        a, _, b = part.partition(b":")
        out.update(range(int(a), int(b or a) + 1))
    return out


def test_qresync_after_changes_by_another_session_and_a_restart(
    server: PymailProcess,
) -> None:
    """A client resyncs with QRESYNC: only changed flags and VANISHED come back, over a restart."""
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=30) as smtp:
        for n in range(1, 7):
            smtp.sendmail("s@example.net", [ALICE[0]], b"Subject: m%d\r\n\r\nbody %d\r\n" % (n, n))

    # The client's first sync: everything, with MODSEQs.
    client = Session(server.ports["imap"])
    caps = b" ".join(client.ok("CAPABILITY"))
    assert b"CONDSTORE" in caps and b"QRESYNC" in caps
    client.ok("ENABLE QRESYNC")
    selected = client.ok("SELECT INBOX")
    uidvalidity = code_value(selected, b"UIDVALIDITY")
    known_modseq = code_value(selected, b"HIGHESTMODSEQ")
    local = fetched(client.ok("UID FETCH 1:* (FLAGS MODSEQ)"))
    assert sorted(local) == [1, 2, 3, 4, 5, 6]
    client.close()

    # While it is away: another session changes flags and expunges, before a restart...
    other = Session(server.ports["imap"])
    other.ok("SELECT INBOX")
    other.ok("UID STORE 2 +FLAGS.SILENT (\\Flagged)")
    other.ok("UID STORE 4 +FLAGS.SILENT (\\Deleted)")
    other.ok("UID EXPUNGE 4")
    other.close()
    server.stop()
    server.start()
    # ... and after it.
    other = Session(server.ports["imap"])
    other.ok("SELECT INBOX")
    other.ok("UID STORE 3 +FLAGS.SILENT (\\Seen $Label1)")
    other.ok("UID STORE 6 +FLAGS.SILENT (\\Deleted)")
    other.ok("UID EXPUNGE 6")
    truth = fetched(other.ok("UID FETCH 1:* (FLAGS MODSEQ)"))
    other.close()

    # The client comes back and resynchronises.
    client = Session(server.ports["imap"])
    client.ok("ENABLE QRESYNC")
    resync = client.ok(f"SELECT INBOX (QRESYNC ({uidvalidity} {known_modseq} 1:6))")
    assert code_value(resync, b"UIDVALIDITY") == uidvalidity
    assert code_value(resync, b"HIGHESTMODSEQ") > known_modseq
    vanished = [line for line in resync if line.startswith(b"* VANISHED (EARLIER) ")]
    assert len(vanished) == 1
    assert uid_set(vanished[0].split()[-1]) == {4, 6}
    changes = fetched(resync)
    # Only what changed is sent: UIDs 2 and 3, not the untouched 1 and 5.
    assert set(changes) == {2, 3}
    for uid, (flags, modseq) in changes.items():
        assert modseq > known_modseq
        local[uid] = (flags, modseq)
    for uid in uid_set(vanished[0].split()[-1]):
        del local[uid]
    assert {u: f for u, (f, _) in local.items()} == {u: f for u, (f, _) in truth.items()}
    assert local[2][0] == {b"\\Flagged"}
    assert local[3][0] == {b"\\Seen", b"$Label1"}

    # Nothing changed since: a second resync (with the UIDs it now knows) is empty.
    newest = code_value(resync, b"HIGHESTMODSEQ")
    known = ",".join(str(u) for u in sorted(local))
    client.ok("UNSELECT")
    again = client.ok(f"SELECT INBOX (QRESYNC ({uidvalidity} {newest} {known}))")
    assert not fetched(again)
    assert not [line for line in again if b"VANISHED" in line]
    client.close()
