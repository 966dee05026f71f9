"""Backend plugins: discovery, per-domain routing, [storage] options."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from pymail.config import from_mapping
from pymail.errors import ConfigError
from pymail.interfaces import IMailStoreBackend
from pymail.service import make_stores
from pymail.storage.maildir import MaildirStore
from pymail.storage.mbox import MboxStore
from pymail.storage.plugins import discover_backends
from pymail.testing import ThreadlessReactor

EXAMPLE = Path(__file__).parents[2] / "examples" / "jsonstore"


class PluginTests(SynchronousTestCase):
    def test_builtin_backends_discovered(self) -> None:
        """maildir, mbox and memory are found and provide IMailStoreBackend."""
        found = discover_backends()
        assert {"maildir", "mbox", "memory"} <= set(found)
        for backend in found.values():
            verifyObject(IMailStoreBackend, backend)

    def test_per_domain_backend_and_options(self) -> None:
        """[storage] domains sends one domain to mbox, with its inbox option; others use maildir."""
        data = os.path.abspath(self.mktemp())
        config = from_mapping({
            "data_dir": data,
            "storage": {"backend": "maildir", "domains": ["old.example=mbox"],
                        "options": [f"mbox.inbox={data}/spool/{{local}}"]},
        }, "test.toml")
        stores = make_stores(config, ThreadlessReactor())
        assert isinstance(stores.open_store("a@new.example", data), MaildirStore)
        mbox = stores.open_store("b@OLD.example", data)
        assert isinstance(mbox, MboxStore)
        assert mbox.inbox_path == f"{data}/spool/b"

    def test_maildir_sync_option(self) -> None:
        """Maildir journals deliveries unless maildir.sync asks for fsync or the syncfs group commit."""
        from pymail.storage import fsutil

        data = os.path.abspath(self.mktemp())
        reactor = ThreadlessReactor()
        cases = [([], "journal", None), (["maildir.sync=fsync"], "fsync", None)]
        if fsutil.syncfs is not None:
            cases.append((["maildir.sync=syncfs"], "syncfs", fsutil.syncfs))
        for options, expected, syncfs in cases:
            config = from_mapping({"data_dir": data, "storage": {"options": options}}, "t.toml")
            store = make_stores(config, reactor).open_store(f"{expected}@example.org", data)
            box = self.successResultOf(store.get_mailbox("INBOX"))
            assert store._factory.sync == expected
            assert box.syncfs is syncfs
            assert box.journaled is (expected == "journal")

    def test_bad_storage_settings_are_config_errors(self) -> None:
        """Unknown backends, malformed entries and unknown options name the key."""
        cases = [
            ({"backend": "nosuch"}, "nosuch"),
            ({"domains": ["x.example=nosuch"]}, "nosuch"),
            ({"domains": ["just-a-domain"]}, "domain=backend"),
            ({"options": ["mbox.colour=blue"]}, "colour"),
            ({"options": ["mbox.inbox=/var/mail/fixed"]}, "{local}"),
            ({"options": ["maildir.sync=sometimes"]}, "sometimes"),
            ({"options": ["maildir.fsync=yes"]}, "fsync"),
        ]
        for storage, needle in cases:
            config = from_mapping({"data_dir": self.mktemp(), "storage": storage}, "t.toml")
            error = self.assertRaises(ConfigError, make_stores, config, ThreadlessReactor())
            assert needle in str(error) and "[storage]" in str(error), str(error)

    def test_example_plugin_is_discovered(self) -> None:
        """The example backend in examples/jsonstore is found by twisted.plugin when on the path."""
        code = ("from pymail.storage.plugins import discover_backends; "
                "b = discover_backends()['jsonstore']; print(b.description)")
        env = {**os.environ, "PYTHONPATH": str(EXAMPLE)}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, timeout=60, check=True)
        assert "JSON" in out.stdout

    def test_example_plugin_passes_the_contract(self) -> None:
        """examples/jsonstore runs MailStoreContract green (its own test file, run by pytest)."""
        env = {**os.environ, "PYTHONPATH": str(EXAMPLE)}
        out = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             str(EXAMPLE / "test_jsonstore.py")],
            env=env, capture_output=True, text=True, timeout=120, cwd=str(EXAMPLE.parents[1]))
        assert out.returncode == 0, out.stdout + out.stderr
        assert " passed" in out.stdout and "failed" not in out.stdout
