"""
The checker over pymail's own accounts file, also offered to any twisted.cred
application as the ``pymail-passwd`` strcred plugin
(``pymail-passwd:/var/lib/pymail/passwd``).
"""

from __future__ import annotations

import os
from typing import Any

import attrs
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.strcred import ICheckerFactory
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from zope.interface import implementer

from pymail.directory.files import FileDirectory
from pymail.directory.passwords import hash_password, needs_rehash, scheme_of, verify_password

log = Logger(namespace="pymail.auth")


@implementer(ICredentialsChecker)
@attrs.define
class AccountsChecker:
    """
    Checks user names and passwords against a :class:`FileDirectory`.

    The avatar id is the account's canonical address (``str``).  Password
    verification (argon2id, tens of milliseconds) runs in the reactor's
    thread pool.  An unknown user costs as much as a wrong password.

    A password stored in another scheme (bcrypt, SHA512-CRYPT, a Dovecot
    ``{SCHEME}``: see :mod:`pymail.directory.passwords`) is replaced by an
    argon2id hash after it matched, so imported accounts move to argon2id
    as their users log in.
    """

    credentialInterfaces = (IUsernamePassword,)

    _directory: FileDirectory
    _reactor: Any = None

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        username = credentials.username
        password = credentials.password
        if isinstance(username, bytes):
            username = username.decode("utf-8", "replace")
        if isinstance(password, bytes):
            password = password.decode("utf-8", "replace")
        address = username.strip().lower()
        entry = self._directory.user(address)
        stored = entry.password_hash if entry is not None else None
        reactor = self._reactor
        if reactor is None:
            from twisted.internet import reactor

        def check() -> str:
            ok = verify_password(stored, password)
            if not ok or entry is None or entry.disabled or stored is None:
                raise UnauthorizedLogin("authentication failed")
            if needs_rehash(stored):
                self._rehash(entry.address, stored, password)
            return entry.address

        return deferToThreadPool(reactor, reactor.getThreadPool(), check)

    def _rehash(self, address: str, old: str, password: str) -> None:
        # In the thread pool, after a successful check.  The hash is only
        # replaced if it is still the one that matched (a password changed
        # meanwhile by `pymail user passwd` wins).  A failure here never
        # fails the login.
        try:
            new = hash_password(password)
            current = self._directory.user(address)
            if current is None or current.password_hash != old:
                return
            self._directory.set_password(address, new)
        except Exception:
            log.failure("could not rehash the password of {address}", address=address)
            return
        log.info("rehashed the password of {address} from {scheme} to argon2id",
                 address=address, scheme=scheme_of(old) or "an old scheme")


@implementer(ICheckerFactory)
class AccountsCheckerFactory:
    """The ``pymail-passwd`` strcred checker factory."""

    authType = "pymail-passwd"
    authHelp = (
        "Checks passwords against a pymail accounts file (argon2id hashes). "
        "The argument is the path of the passwd file in pymail's data directory."
    )
    argStringFormat = "Path of the passwd file, e.g. /var/lib/pymail/passwd"
    credentialInterfaces = (IUsernamePassword,)

    def generateChecker(self, argstring: str = "") -> AccountsChecker:
        if not argstring:
            raise ValueError("pymail-passwd needs the path of the passwd file")
        return AccountsChecker(FileDirectory(os.path.dirname(os.path.abspath(argstring))))
