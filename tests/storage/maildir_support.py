"""A Maildir test case whose thread-pool jobs run one at a time (SteppedReactor)."""

from __future__ import annotations

import os
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from pymail.storage.maildir import MaildirStoreFactory
from pymail.testing import SteppedReactor

ADDRESS = "alice@example.org"


class SteppedMaildirCase(SynchronousTestCase):
    """Alice's Maildir account in a temporary directory, on a SteppedReactor."""

    def setUp(self) -> None:
        self.reactor = SteppedReactor()
        self.data = self.mktemp()
        self.root = os.path.join(self.data, "mail", "example.org", "alice")

    def settle(self, d: Any) -> Any:
        """Run every queued thread-pool job, then the result of ``d``."""
        self.reactor.run_thread_work()
        return self.successResultOf(d)

    def store(self, reactor: Any = None) -> Any:
        return MaildirStoreFactory(reactor or self.reactor).open_store(ADDRESS, self.data)

    def open_inbox(self, reactor: Any = None) -> Any:
        """INBOX on this test's reactor (settled), or on another one (e.g. a second process)."""
        if reactor is None:
            return self.settle(self.store().get_mailbox("INBOX"))
        return self.successResultOf(self.store(reactor).get_mailbox("INBOX"))

    def names(self, folder: str | None = None) -> list[str]:
        """The file names in cur/ and new/ of ``folder`` (default INBOX), sorted."""
        folder = folder or self.root
        return sorted(os.listdir(os.path.join(folder, "cur"))
                      + os.listdir(os.path.join(folder, "new")))


def age_directories(root: str, seconds: int) -> None:
    """Set the mtimes of new/ and cur/ ``seconds`` into the past (a quiet folder)."""
    for sub in ("new", "cur"):
        path = os.path.join(root, sub)
        when = os.stat(path).st_mtime - seconds
        os.utime(path, (when, when))
