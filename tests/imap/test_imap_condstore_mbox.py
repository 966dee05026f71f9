"""CONDSTORE and QRESYNC over mbox across a restart of the server (a new process over the files)."""

from __future__ import annotations

import re
from pathlib import Path

from imap_harness import MboxServer


def test_changedsince_after_a_restart_names_only_what_changed(tmp_path: Path) -> None:
    """After a restart, FETCH (CHANGEDSINCE n) and QRESYNC name only what changed after n."""
    server = MboxServer(str(tmp_path), condstore=True)
    for _ in range(5):
        server.deliver()
    client = server.connect().login()
    selected = client.cmd("a SELECT INBOX (CONDSTORE)")
    match = re.search(rb"\[HIGHESTMODSEQ (\d+)\]", selected)
    assert match is not None
    known = int(match.group(1))
    validity = server.mailbox().uidvalidity()
    client.cmd("b STORE 2 +FLAGS.SILENT (\\Flagged)")
    client.cmd("c STORE 4 +FLAGS.SILENT (\\Deleted)")
    client.cmd("d EXPUNGE")
    flagged = server.mailbox().info(2).modseq
    assert flagged > known

    server.restart()
    client = server.connect().login()
    client.cmd("e ENABLE QRESYNC")
    lines = client.lines(f"f SELECT INBOX (QRESYNC ({validity} {known} 1:5))")
    assert b"* OK [HIGHESTMODSEQ %d] highest" % server.mailbox().highestmodseq() in lines
    assert server.mailbox().info(2).modseq == flagged
    assert b"* VANISHED (EARLIER) 4" in lines
    assert [line for line in lines if b"FETCH" in line] == [
        b"* 2 FETCH (UID 2 FLAGS (\\Flagged \\Recent) MODSEQ (%d))" % flagged]
    assert client.lines(f"g UID FETCH 1:* (FLAGS) (CHANGEDSINCE {flagged})") == [
        b"g OK UID FETCH completed"]
