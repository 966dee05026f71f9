"""
The checker over pymail's own accounts file, also offered to any twisted.cred
application as the ``pymail-passwd`` strcred plugin
(``pymail-passwd:/var/lib/pymail/passwd``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from typing import Any

import attrs
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.strcred import ICheckerFactory
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from zope.interface import implementer

from pymail.auth.sasl import IScramCredentialSource, IScramVerified
from pymail.directory.files import FileDirectory
from pymail.directory.passwords import (
    SCRAM_ITERATIONS,
    SCRAM_SALT_OCTETS,
    hash_password,
    needs_rehash,
    scheme_of,
    scram_credential,
    verify_password,
)
from pymail.storage.fsutil import write_file_durably

log = Logger(namespace="pymail.auth")

#: A file in the data directory: the secret behind decoy SCRAM salts.
DECOY_SECRET = ".scram-decoy-secret"


@implementer(ICredentialsChecker, IScramCredentialSource)
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
    as their users log in.  The same goes for an account without a
    SCRAM-SHA-256 credential: it gets one at its next password login.

    SCRAM logins (:class:`pymail.auth.sasl.IScramVerified`) were verified
    by the SASL exchange against :meth:`scram_credential`; here the account
    must still exist and not be disabled.
    """

    credentialInterfaces = (IUsernamePassword, IScramVerified)

    _directory: FileDirectory
    _reactor: Any = None

    def scram_credential(self, username: str) -> str | None:
        """
        The account's SCRAM credential; for an unknown, disabled or SCRAM-less
        account a decoy whose salt and keys are derived from the name and a
        secret kept in the data directory (so no password matches it):
        the same for every attempt and across restarts, as a real salt is,
        so the challenge does not tell whether the account exists.
        """
        name = username.strip().lower()
        entry = self._directory.user(name)
        if entry is not None and not entry.disabled and entry.scram:
            return entry.scram
        secret = self._decoy_secret()

        def derive(label: bytes) -> bytes:
            return hmac.new(secret, label + b":" + name.encode(), hashlib.sha256).digest()

        # Keys no password produces (they come from a secret): the proof
        # fails exactly as a wrong password's does.
        fields = (derive(b"salt")[:SCRAM_SALT_OCTETS], derive(b"stored"), derive(b"server"))
        return f"{SCRAM_ITERATIONS}:" + ":".join(base64.b64encode(f).decode() for f in fields)

    def _decoy_secret(self) -> bytes:
        path = os.path.join(self._directory.data_dir, DECOY_SECRET)
        try:
            with open(path, "rb") as f:
                secret = f.read()
            if len(secret) >= 32:
                return secret
        except FileNotFoundError:
            pass
        secret = os.urandom(32)
        try:
            write_file_durably(path, secret, mode=0o600)
        except OSError:
            log.warn("cannot keep the SCRAM decoy secret in {path}; using one per process",
                     path=path)
        return secret

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        if IScramVerified.providedBy(credentials):
            return self._scram_avatar_id(credentials)
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
            if needs_rehash(stored) or entry.scram is None:
                self._rehash(entry.address, stored, password)
            return entry.address

        return deferToThreadPool(reactor, reactor.getThreadPool(), check)

    def _scram_avatar_id(self, credentials: Any) -> Deferred[Any]:
        username = credentials.username
        if isinstance(username, bytes):
            username = username.decode("utf-8", "replace")
        entry = self._directory.user(username.strip().lower())
        if not credentials.verified or entry is None or entry.disabled or entry.scram is None:
            return fail(UnauthorizedLogin("authentication failed"))
        return succeed(entry.address)

    def _rehash(self, address: str, old: str, password: str) -> None:
        # In the thread pool, after a successful check.  The hash is only
        # replaced if it is still the one that matched (a password changed
        # meanwhile by `pymail user passwd` wins).  A failure here never
        # fails the login.
        try:
            new = hash_password(password) if needs_rehash(old) else old
            scram = scram_credential(password)
            current = self._directory.user(address)
            if current is None or current.password_hash != old:
                return
            self._directory.set_password(address, new, scram)
        except Exception:
            log.failure("could not rehash the password of {address}", address=address)
            return
        if new != old:
            log.info("rehashed the password of {address} from {scheme} to argon2id",
                     address=address, scheme=scheme_of(old) or "an old scheme")
        else:
            log.info("stored a SCRAM-SHA-256 credential for {address}", address=address)


@implementer(ICheckerFactory)
class AccountsCheckerFactory:
    """The ``pymail-passwd`` strcred checker factory."""

    authType = "pymail-passwd"
    authHelp = (
        "Checks passwords against a pymail accounts file (argon2id hashes). "
        "The argument is the path of the passwd file in pymail's data directory."
    )
    argStringFormat = "Path of the passwd file, e.g. /var/lib/pymail/passwd"
    credentialInterfaces = (IUsernamePassword, IScramVerified)

    def generateChecker(self, argstring: str = "") -> AccountsChecker:
        if not argstring:
            raise ValueError("pymail-passwd needs the path of the passwd file")
        return AccountsChecker(FileDirectory(os.path.dirname(os.path.abspath(argstring))))
