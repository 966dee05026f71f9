"""Every built-in backend runs the storage contract."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from pymail.storage import fsutil
from pymail.storage.maildir import MaildirStoreFactory
from pymail.storage.mbox import MboxStoreFactory
from pymail.storage.memory import MemoryStoreFactory
from pymail.testing import MailStoreContract


class MemoryContractTests(MailStoreContract, SynchronousTestCase):
    def make_store(self) -> Any:
        return MemoryStoreFactory(special_use_folders=True).open_store(
            "alice@example.org", "/nonexistent")


class MaildirContractTests(MailStoreContract, SynchronousTestCase):
    persistent_modseq = True
    sync = "journal"

    def make_store(self) -> Any:
        self.data_dir = self.mktemp()
        self.factory = MaildirStoreFactory(self.reactor, sync=self.sync)
        return self.factory.open_store("alice@example.org", self.data_dir)

    def reopen_store(self) -> Any:
        # The next process starts after this one stopped, which writes the
        # index changes still waiting for their batch (the service calls
        # checkpoint_all() when it stops).
        self.successResultOf(self.factory.checkpoint_all())
        return MaildirStoreFactory(self.reactor, sync=self.sync).open_store(
            "alice@example.org", self.data_dir)


class MaildirSyncfsContractTests(MaildirContractTests):
    """The same contract with ``sync="syncfs"`` (two syncfs per group commit)."""

    sync = "syncfs"

    def setUp(self) -> None:
        if fsutil.syncfs is None:
            self.skipTest("no syncfs that reports write-back errors here (Linux < 5.8)")
        super().setUp()


class MboxContractTests(MailStoreContract, SynchronousTestCase):
    persistent_modseq = True

    def make_store(self) -> Any:
        self.data_dir = self.mktemp()
        return MboxStoreFactory(self.reactor).open_store("alice@example.org", self.data_dir)

    def reopen_store(self) -> Any:
        return MboxStoreFactory(self.reactor).open_store("alice@example.org", self.data_dir)
