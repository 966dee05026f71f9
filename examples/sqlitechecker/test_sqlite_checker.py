"""
The SQLite checker example keeps pymail's checker contract and is found as
a strcred plugin.  Run: PYTHONPATH=examples/sqlitechecker pytest examples/sqlitechecker
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping

from twisted.cred import strcred
from twisted.trial.unittest import SynchronousTestCase

from pymail.directory.passwords import hash_password
from pymail.testing import CheckerContract
from sqlite_checker import SQLiteChecker


def make_database(path: str, users: Mapping[str, str]) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE users (address TEXT PRIMARY KEY, password_hash TEXT NOT NULL)")
        db.executemany("INSERT INTO users VALUES (?, ?)",
                       [(a, hash_password(p)) for a, p in users.items()])


class SQLiteCheckerContract(CheckerContract, SynchronousTestCase):
    def make_checker(self, users: Mapping[str, str]) -> SQLiteChecker:
        path = self.mktemp()
        make_database(path, users)
        return SQLiteChecker(path, self.reactor)


class PluginTests(SynchronousTestCase):
    def test_strcred_string_makes_the_checker(self) -> None:
        """'sqlite:PATH' names this plugin to twisted.cred.strcred (and so to pymail's auth)."""
        checker = strcred.makeChecker("sqlite:/tmp/users.sqlite")
        self.assertIsInstance(checker, SQLiteChecker)
        self.assertEqual(checker.path, "/tmp/users.sqlite")
