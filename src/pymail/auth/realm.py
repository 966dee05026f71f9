"""
One realm for every access protocol: it turns an authenticated account
address into an :class:`~pymail.interfaces.IAccount` avatar whose ``store``
is the account's mail.  IMAP, POP3 and SMTP submission all log in here, so
an account disabled in the directory is locked out of all of them at once.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm
from zope.interface import implementer

from pymail.interfaces import IAccount, IDirectory, IMailStore, IMailStoreFactory


@implementer(IAccount)
@attrs.define
class Account:
    """The avatar of a logged-in user."""

    address: str
    store: IMailStore

    def logout(self) -> None:
        pass


@implementer(IRealm)
@attrs.define
class MailRealm:
    """
    Gives :class:`IAccount` avatars for accounts that exist and are enabled.

    :ivar directory: the account database, asked again at every login so a
        disabled or deleted account cannot log in even if a checker still
        accepted its password.
    """

    _directory: IDirectory
    _stores: IMailStoreFactory
    _data_dir: str

    def requestAvatar(
        self, avatarId: Any, mind: object, *interfaces: Any
    ) -> tuple[Any, Any, Any]:
        address = avatarId.decode("utf-8") if isinstance(avatarId, bytes) else str(avatarId)
        if IAccount not in interfaces:
            raise NotImplementedError("pymail's realm only gives IAccount avatars")
        if not self._directory.has_user(address):
            raise UnauthorizedLogin(f"account {address!r} does not exist or is disabled")
        account = Account(address, self._stores.open_store(address, self._data_dir))
        return IAccount, account, account.logout
