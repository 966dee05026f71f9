"""
Durability of the Maildir flag write-behind's bookkeeping, checked on the
system calls of a real process (strace): what a power loss could undo.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

# A write-behind STORE (+\Seen on two messages, renamed after the answer),
# its renames finished, then a STORE below write_behind_min (-\Seen, renamed
# and acknowledged at once); markers on /dev/null split the trace.
SCRIPT = r"""
import os, sys
from pymail.storage.maildir import MaildirStoreFactory
from pymail.testing import ThreadlessReactor
MSG = b"From: a@example.org\r\nSubject: s\r\n\r\nhello\r\n"
mark = os.open(os.devnull, os.O_WRONLY)
store = MaildirStoreFactory(ThreadlessReactor()).open_store("alice@example.org", sys.argv[1])
boxes = []
store.get_mailbox("INBOX").addCallback(boxes.append)
box = boxes[0]
box.write_behind_min = 1
uids = []
for n in range(2):
    box.append(MSG).addCallback(uids.append)
box.set_flags(uids, ["\\Seen"], "add")
os.write(mark, b"MARK-renames-done")
box.write_behind_min = 10
box.set_flags(uids, ["\\Seen"], "remove")
os.write(mark, b"MARK-end")
"""

SYNCS = ("fsync(", "fdatasync(")


class RenamesDoneDurabilityTests(SynchronousTestCase):
    def test_forgetting_done_renames_is_durable_before_the_next_change(self) -> None:
        """The index's 'renames done' is on disk before a later flag change can be answered."""
        strace = shutil.which("strace")
        assert strace is not None, "strace is needed (scripts/test installs it)"
        data = os.path.abspath(self.mktemp())
        trace = data + ".trace"
        subprocess.run(
            [strace, "-f", "-y", "-o", trace, "-e",
             "trace=pwrite64,write,fsync,fdatasync,renameat,rename",
             sys.executable, "-c", SCRIPT, data],
            check=True, timeout=60)
        with open(trace, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
        mark = next(i for i, line in enumerate(lines) if "MARK-renames-done" in line)
        wal = [i for i, line in enumerate(lines[:mark])
               if "pymail-index.sqlite-wal>" in line]
        last_write = max(i for i in wal if "pwrite64(" in lines[i])
        synced = [i for i in wal if i > last_write and lines[i].split(None, 1)[1].startswith(SYNCS)]
        # Without it a power loss could bring the done batch back, and the
        # next open would rename the files back to +\Seen, reverting the
        # acknowledged -\Seen that followed.
        assert synced, "\n".join(lines[last_write - 2:mark + 1])
        renamed_after = [line for line in lines[mark:] if "renameat(" in line]
        assert len(renamed_after) == 2, renamed_after
