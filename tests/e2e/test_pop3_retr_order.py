"""
RETR in order against the real pymail process, where the server reads each
next message ahead: poplib retrieving and deleting every corpus message one
command at a time gets each byte-exact, and the maildrop is empty afterwards.
"""

from __future__ import annotations

import os
import poplib
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import PymailProcess, corpus_messages, wire

from pymail.storage.maildir import MaildirStoreFactory

ALICE = ("alice@example.org", "alice-pw-1")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PymailProcess]:
    proc = PymailProcess(tmp_path, users={ALICE[0]: ALICE[1]})
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def drop_into_maildir(server: PymailProcess, messages: list[bytes]) -> None:
    """Write messages into the account's Maildir as another program (procmail) would."""
    root = Path(MaildirStoreFactory.account_root(ALICE[0], str(server.data_dir)))
    for sub in ("tmp", "new", "cur"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i, message in enumerate(messages):
        name = f"1700000000.M{i}P{os.getpid()}.test"
        (root / "tmp" / name).write_bytes(message)
        os.rename(root / "tmp" / name, root / "new" / name)


def login(server: PymailProcess) -> poplib.POP3:
    pop = poplib.POP3("127.0.0.1", server.ports["pop3"], timeout=30)
    pop.user(ALICE[0])
    pop.pass_(ALICE[1])
    return pop


def test_retr_dele_in_order_byte_exact(server: PymailProcess) -> None:
    """poplib's RETR n, DELE n loop over the corpus gets every message byte-exact, then none."""
    paths = corpus_messages()
    drop_into_maildir(server, [p.read_bytes() for p in paths])
    pop = login(server)
    count, _ = pop.stat()
    assert count == len(paths)
    got = []
    for n in range(1, count + 1):
        _, lines, _ = pop.retr(n)
        got.append(b"".join(line + b"\r\n" for line in lines))
        pop.dele(n)
    pop.quit()
    assert sorted(got) == sorted(wire(p.read_bytes()) for p in paths)
    pop = login(server)
    assert pop.stat() == (0, 0)
    pop.quit()


def test_retr_out_of_order_byte_exact(server: PymailProcess) -> None:
    """RETR in descending order, then again ascending, gets the same bytes for each number."""
    paths = corpus_messages()[:12]
    drop_into_maildir(server, [p.read_bytes() for p in paths])
    pop = login(server)
    count, _ = pop.stat()
    down = {n: pop.retr(n)[1] for n in range(count, 0, -1)}
    up = {n: pop.retr(n)[1] for n in range(1, count + 1)}
    pop.quit()
    assert down == up
    assert sorted(b"".join(line + b"\r\n" for line in lines) for lines in up.values()) == sorted(
        wire(p.read_bytes()) for p in paths
    )
