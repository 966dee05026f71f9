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


Local = dict[int, tuple[frozenset[bytes], int]]


def deliver(server: PymailProcess, count: int) -> None:
    """``count`` messages to Alice over SMTP."""
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=30) as smtp:
        for n in range(1, count + 1):
            smtp.sendmail("s@example.net", [ALICE[0]], b"Subject: m%d\r\n\r\nbody %d\r\n" % (n, n))


def first_sync(server: PymailProcess, select: str) -> tuple[int, int, Local]:
    """
    A client's first sync (``select`` is its SELECT command): CONDSTORE and
    QRESYNC on offer; UIDVALIDITY, HIGHESTMODSEQ and every message's flags
    and MODSEQ.
    """
    client = Session(server.ports["imap"])
    caps = b" ".join(client.ok("CAPABILITY"))
    assert b"CONDSTORE" in caps and b"QRESYNC" in caps
    selected = client.ok(select)
    uidvalidity = code_value(selected, b"UIDVALIDITY")
    known_modseq = code_value(selected, b"HIGHESTMODSEQ")
    local = fetched(client.ok("UID FETCH 1:* (FLAGS MODSEQ)"))
    assert max(m for _, m in local.values()) <= known_modseq
    client.close()
    return uidvalidity, known_modseq, local


def resync(server: PymailProcess, uidvalidity: int, known_modseq: int,
           local: Local) -> tuple[set[int], set[int]]:
    """
    The client comes back with ``SELECT INBOX (QRESYNC ...)``, applies the
    VANISHED and FETCH responses to ``local`` (every changed MODSEQ above
    what it knew), checks that a second resync is empty, and returns the
    vanished and the changed UIDs.
    """
    client = Session(server.ports["imap"])
    client.ok("ENABLE QRESYNC")
    uids = ",".join(str(u) for u in sorted(local))
    lines = client.ok(f"SELECT INBOX (QRESYNC ({uidvalidity} {known_modseq} {uids}))")
    assert code_value(lines, b"UIDVALIDITY") == uidvalidity
    assert code_value(lines, b"HIGHESTMODSEQ") > known_modseq
    vanished = [line for line in lines if line.startswith(b"* VANISHED (EARLIER) ")]
    assert len(vanished) <= 1
    gone = uid_set(vanished[0].split()[-1]) if vanished else set()
    changes = fetched(lines)
    for uid, (flags, modseq) in changes.items():
        assert modseq > known_modseq
        local[uid] = (flags, modseq)
    for uid in gone:
        del local[uid]

    # Nothing changed since: a second resync (with the UIDs it now knows) is empty.
    newest = code_value(lines, b"HIGHESTMODSEQ")
    known = ",".join(str(u) for u in sorted(local))
    client.ok("UNSELECT")
    again = client.ok(f"SELECT INBOX (QRESYNC ({uidvalidity} {newest} {known}))")
    assert not fetched(again)
    assert not [line for line in again if b"VANISHED" in line]
    client.close()
    return gone, set(changes)


def another_session(server: PymailProcess, *commands: str) -> list[bytes]:
    """Another client SELECTs INBOX, runs ``commands`` (each must be OK), and logs out."""
    other = Session(server.ports["imap"])
    other.ok("SELECT INBOX")
    lines = [line for command in commands for line in other.ok(command)]
    other.close()
    return lines


def test_qresync_after_changes_by_another_session_and_a_restart(
    server: PymailProcess,
) -> None:
    """A client resyncs with QRESYNC: only changed flags and VANISHED come back, over a restart."""
    deliver(server, 6)
    # The client's first sync: everything, with MODSEQs.
    uidvalidity, known_modseq, local = first_sync(server, "SELECT INBOX")
    assert sorted(local) == [1, 2, 3, 4, 5, 6]

    # While it is away: another session changes flags and expunges, before a restart...
    another_session(server, "UID STORE 2 +FLAGS.SILENT (\\Flagged)",
                    "UID STORE 4 +FLAGS.SILENT (\\Deleted)", "UID EXPUNGE 4")
    server.stop()
    server.start()
    # ... and after it.
    truth = fetched(another_session(
        server, "UID STORE 3 +FLAGS.SILENT (\\Seen $Label1)",
        "UID STORE 6 +FLAGS.SILENT (\\Deleted)", "UID EXPUNGE 6", "UID FETCH 1:* (FLAGS MODSEQ)"))

    # The client comes back and resynchronises: only what changed is sent
    # (UIDs 2 and 3, not the untouched 1 and 5).
    assert resync(server, uidvalidity, known_modseq, local) == ({4, 6}, {2, 3})
    assert {u: f for u, (f, _) in local.items()} == {u: f for u, (f, _) in truth.items()}
    assert local[2][0] == {b"\\Flagged"}
    assert local[3][0] == {b"\\Seen", b"$Label1"}
