"""
Public fakes for plugin authors, embedders and pymail's own tests.

- :class:`MemoryDirectory`: an :class:`~pymail.interfaces.IDirectory` held
  in memory.
- :func:`memory_portal`: a twisted.cred portal over plain-text test
  passwords, the same realm the server uses, and in-memory mail stores.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import attrs
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import Portal
from zope.interface import implementer

from pymail.auth.realm import MailRealm
from pymail.interfaces import IDirectory, IMailStoreFactory
from pymail.storage.memory import MemoryStoreFactory


@implementer(IDirectory)
@attrs.define
class MemoryDirectory:
    """
    Domains, users and aliases in memory.

    :ivar users: canonical addresses of enabled accounts.
    :ivar aliases: alias address -> list of target addresses.
    """

    domains: set[str] = attrs.Factory(set)
    users: set[str] = attrs.Factory(set)
    aliases: dict[str, list[str]] = attrs.Factory(dict)

    def is_local_domain(self, domain: str) -> bool:
        return domain.lower() in self.domains

    def has_user(self, address: str) -> bool:
        return address.lower() in self.users

    def resolve(self, address: str) -> list[str] | None:
        local, _, domain = address.rpartition("@")
        domain = domain.lower()
        if domain not in self.domains:
            return None
        base = local.split("+", 1)[0].lower() + "@" + domain
        if base in self.users:
            return [base]
        if base in self.aliases:
            return list(self.aliases[base])
        return None


def memory_portal(
    users: Mapping[str, str],
    stores: IMailStoreFactory | None = None,
    domains: Iterable[str] | None = None,
) -> tuple[Portal, MemoryDirectory, IMailStoreFactory]:
    """
    A portal for tests: ``users`` maps ``local@domain`` to a clear-text
    password.  Returns the portal, the directory and the store factory.
    """
    directory = MemoryDirectory(
        domains=set(domains) if domains is not None else {u.split("@")[1] for u in users},
        users={u.lower() for u in users},
    )
    stores = stores if stores is not None else MemoryStoreFactory()
    checker = InMemoryUsernamePasswordDatabaseDontUse()
    for user, password in users.items():
        checker.addUser(user.lower().encode(), password.encode())
    portal = Portal(MailRealm(directory, stores, "/nonexistent"), [checker])
    return portal, directory, stores
