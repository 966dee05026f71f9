"""
An example pymail checker plugin: accounts in an SQLite table.

    CREATE TABLE users (address TEXT PRIMARY KEY, password_hash TEXT NOT NULL);

``password_hash`` holds any hash pymail verifies (``{ARGON2ID}...`` from
``pymail.directory.passwords.hash_password``, bcrypt, SHA512-CRYPT, Dovecot
``{SCHEME}`` digests).  Configure it with
``auth = ["sqlite:/var/lib/pymail/users.sqlite"]``; the account must also exist
(and be enabled) in pymail's directory, which decides where its mail lives.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import attrs
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.strcred import ICheckerFactory
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from zope.interface import implementer

from pymail.directory.passwords import verify_password

#: Longest user name looked up (RFC 5321: 64 + 1 + 255).
MAX_ADDRESS = 320


@implementer(ICredentialsChecker)
@attrs.define
class SQLiteChecker:
    """Checks passwords against ``users(address, password_hash)`` in an SQLite file."""

    credentialInterfaces = (IUsernamePassword,)

    path: str
    _reactor: Any = None

    def _lookup(self, address: str) -> str | None:
        # A connection per lookup: sqlite3 connections stay in one thread,
        # and this runs in the reactor's thread pool.
        with sqlite3.connect(f"file:{self.path}?mode=ro", uri=True) as db:
            row = db.execute(
                "SELECT password_hash FROM users WHERE address = ?", (address,)
            ).fetchone()
        return row[0] if row else None

    def requestAvatarId(self, credentials: Any) -> Deferred[str]:
        reactor = self._reactor
        if reactor is None:
            from twisted.internet import reactor

        username, password = credentials.username, credentials.password
        if isinstance(username, bytes):
            username = username.decode("utf-8", "replace")
        if isinstance(password, bytes):
            password = password.decode("utf-8", "replace")
        address = username.strip().lower()

        def check() -> str:
            stored = None
            if 0 < len(address) <= MAX_ADDRESS and "\x00" not in address:
                stored = self._lookup(address)
            # verify_password(None, ...) costs as much as a real check.
            if not password or not verify_password(stored, password):
                raise UnauthorizedLogin("authentication failed")
            return address

        return deferToThreadPool(reactor, reactor.getThreadPool(), check)


@implementer(ICheckerFactory)
class SQLiteCheckerFactory:
    """The ``sqlite`` strcred checker factory: ``sqlite:/path/to/users.sqlite``."""

    authType = "sqlite"
    authHelp = "Checks passwords against users(address, password_hash) in an SQLite file."
    argStringFormat = "Path of the SQLite file"
    credentialInterfaces = (IUsernamePassword,)

    def generateChecker(self, argstring: str = "") -> SQLiteChecker:
        if not argstring:
            raise ValueError(
                "sqlite needs the path of the database, e.g. sqlite:/var/lib/users.sqlite"
            )
        return SQLiteChecker(argstring)
