"""The realm, the accounts checker and the pymail-passwd strcred plugin."""

from __future__ import annotations

from pathlib import Path

from twisted.cred import strcred
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from pymail.auth.checkers import AccountsChecker
from pymail.auth.realm import Account, MailRealm
from pymail.directory.files import FileDirectory
from pymail.directory.passwords import hash_password
from pymail.interfaces import IAccount, IDirectory
from pymail.storage.memory import MemoryStoreFactory
from pymail.testing import MemoryDirectory, ThreadlessReactor


class AuthTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.data = Path(self.mktemp())
        self.directory = FileDirectory(str(self.data))
        self.directory.add_domain("example.org")
        self.directory.add_user("amy@example.org", hash_password("secret"))
        self.reactor = ThreadlessReactor()
        self.checker = AccountsChecker(self.directory, self.reactor)
        self.portal = Portal(MailRealm(self.directory, MemoryStoreFactory(), str(self.data)),
                             [self.checker])

    def login(self, user: bytes, password: bytes):  # type: ignore[no-untyped-def]
        return self.portal.login(UsernamePassword(user, password), None, IAccount)

    def test_interfaces(self) -> None:
        """The checker, realm, directories and avatar provide their interfaces."""
        verifyObject(ICredentialsChecker, self.checker)
        verifyObject(IRealm, MailRealm(self.directory, MemoryStoreFactory(), "/x"))
        verifyObject(IDirectory, self.directory)
        verifyObject(IDirectory, MemoryDirectory())
        iface, avatar, logout = self.successResultOf(self.login(b"amy@example.org", b"secret"))
        verifyObject(IAccount, avatar)
        self.assertIsInstance(avatar, Account)

    def test_good_login_any_case(self) -> None:
        """The right password logs in, the user name in any case; the avatar is canonical."""
        iface, avatar, logout = self.successResultOf(self.login(b"Amy@EXAMPLE.org", b"secret"))
        self.assertEqual(avatar.address, "amy@example.org")

    def test_bad_password_and_unknown_user(self) -> None:
        """A wrong password and an unknown user both fail the same way."""
        self.failureResultOf(self.login(b"amy@example.org", b"nope"), UnauthorizedLogin)
        self.failureResultOf(self.login(b"zed@example.org", b"secret"), UnauthorizedLogin)

    def test_disabled_account_locked_out(self) -> None:
        """A disabled account cannot log in, even with the right password."""
        self.directory.set_disabled("amy@example.org", True)
        self.failureResultOf(self.login(b"amy@example.org", b"secret"), UnauthorizedLogin)



class StrcredPluginTests(TestCase):
    def test_strcred_plugin(self):  # type: ignore[no-untyped-def]
        """'pymail-passwd:PATH' makes a working checker through twisted.cred.strcred."""
        data = Path(self.mktemp())
        directory = FileDirectory(str(data))
        directory.add_domain("example.org")
        directory.add_user("amy@example.org", hash_password("secret"))
        checker = strcred.makeChecker(f"pymail-passwd:{data / 'passwd'}")
        verifyObject(ICredentialsChecker, checker)
        d = checker.requestAvatarId(UsernamePassword(b"amy@example.org", b"secret"))
        d.addCallback(self.assertEqual, "amy@example.org")
        return d
