"""`auth = [...]` checker strings, and the SQLite checker example in examples/."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from pymail.auth.checkers import AccountsChecker
from pymail.config import from_mapping
from pymail.directory.files import FileDirectory
from pymail.errors import ConfigError
from pymail.service import make_checkers
from pymail.testing import ThreadlessReactor

EXAMPLE = Path(__file__).parents[2] / "examples" / "sqlitechecker"


class AuthConfigTests(SynchronousTestCase):
    def test_empty_auth_uses_the_accounts_file(self) -> None:
        """With no auth strings the portal checks pymail's own accounts file."""
        data_dir = self.mktemp()
        config = from_mapping({"data_dir": data_dir}, "t.toml")
        (checker,) = make_checkers(config, FileDirectory(data_dir), ThreadlessReactor())
        self.assertIsInstance(checker, AccountsChecker)

    def test_strcred_strings_build_checkers(self) -> None:
        """'pymail-passwd:PATH' builds the accounts checker through twisted.cred.strcred."""
        data_dir = self.mktemp()
        config = from_mapping({"data_dir": data_dir,
                               "auth": [f"pymail-passwd:{data_dir}/passwd"]}, "t.toml")
        (checker,) = make_checkers(config, FileDirectory(data_dir), ThreadlessReactor())
        self.assertIsInstance(checker, AccountsChecker)

    def test_unknown_checker_is_a_config_error(self) -> None:
        """A string naming no installed plugin is a config error listing the installed ones."""
        data_dir = self.mktemp()
        config = from_mapping({"data_dir": data_dir, "auth": ["ldapx:whatever"]}, "t.toml")
        error = self.assertRaises(ConfigError, make_checkers, config, FileDirectory(data_dir),
                                  ThreadlessReactor())
        self.assertIn("auth: 'ldapx:whatever' names no installed checker", str(error))
        self.assertIn("pymail-passwd", str(error))

    def test_example_checker_passes_the_contract(self) -> None:
        """examples/sqlitechecker runs CheckerContract green and is found by strcred."""
        env = {**os.environ, "PYTHONPATH": str(EXAMPLE)}
        out = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             str(EXAMPLE / "test_sqlite_checker.py")],
            env=env, capture_output=True, text=True, timeout=120, cwd=str(EXAMPLE.parents[1]))
        assert out.returncode == 0, out.stdout + out.stderr
        assert "6 passed" in out.stdout, out.stdout
