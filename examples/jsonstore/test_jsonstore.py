"""The example backend passes pymail's storage contract."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from jsonstore import JsonStoreFactory
from pymail.testing import MailStoreContract


class JsonStoreContractTests(MailStoreContract, SynchronousTestCase):
    def make_store(self) -> Any:
        self.data_dir = self.mktemp()
        return JsonStoreFactory().open_store("alice@example.org", self.data_dir)

    def reopen_store(self) -> Any:
        return JsonStoreFactory().open_store("alice@example.org", self.data_dir)
