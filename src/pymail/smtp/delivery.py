"""
The delivery policy behind the SMTP server: who may send as whom, which
recipients are accepted, and where accepted mail goes.

The server asks three questions, in protocol order, and maps the
:class:`~pymail.smtp.replies.ReplyError` it gets to the wire:

1. :meth:`LocalDelivery.check_sender` at ``MAIL FROM``;
2. :meth:`LocalDelivery.check_recipient` at each ``RCPT TO`` (its answer,
   the *targets*, is kept with the recipient);
3. :meth:`LocalDelivery.deliver` after ``DATA``, with the union of the
   targets, and acknowledges only when its Deferred fires.

Room to grow: a target is a canonical address.  Today every target is a
local account (a local domain).  The relay issue makes
:meth:`LocalDelivery._check_remote` return ``[str(address)]`` for an
authenticated sender and :meth:`LocalDelivery.deliver` hand targets in
non-local domains to the durable queue; folder delivery (``user+folder``,
sieve) changes only :meth:`LocalDelivery._folder_for`.  The server needs
no change for either.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Protocol, cast

import attrs
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.python.failure import Failure

from pymail.address import Address, AddressError
from pymail.interfaces import IDirectory, IMailStoreFactory
from pymail.smtp import replies
from pymail.smtp.replies import ReplyError


@attrs.frozen
class StoredCopy:
    """One durable copy of a delivered message: which account, folder and UID."""

    account: str
    folder: str
    uid: int


class IDeliveryPolicy(Protocol):
    """
    What the SMTP server needs from its policy (a structural type, so a
    test can hand the server a fake with asynchronous answers).
    """

    def check_sender(self, sender: Address, *, authenticated_as: str | None = None) -> None: ...

    def check_recipient(
        self, address: Address | str, *, authenticated_as: str | None = None
    ) -> list[str] | Deferred[list[str]]: ...

    def deliver(
        self,
        accounts: Iterable[str],
        message: bytes,
        *,
        internaldate: datetime | None = None,
    ) -> Deferred[list[StoredCopy]]: ...


@attrs.define
class LocalDelivery:
    """
    Delivers to local accounts' INBOX; refuses everything that would leave
    the server (outbound relay comes with the relay queue).

    :ivar directory: resolves addresses to accounts (aliases, ``+tags``).
    :ivar stores: the storage backend.
    :ivar data_dir: the server's data directory, passed to the backend.
    """

    _directory: IDirectory
    _stores: IMailStoreFactory
    _data_dir: str

    def check_sender(self, sender: Address, *, authenticated_as: str | None = None) -> None:
        """
        Whether ``sender`` may be used as the reverse-path.

        Anyone may send from any address on the MX port (authenticity is
        SPF/DKIM/DMARC's job, later).  An authenticated user may only use
        their own address or one that resolves to it (an alias or a
        ``+tag``); the null reverse-path is refused too, as a user agent
        has no business sending bounces.

        :raises ReplyError: with :data:`~pymail.smtp.replies.SENDER_NOT_OWNED`.
        """
        if authenticated_as is None:
            return
        owner = authenticated_as.lower()
        if not sender.is_null:
            if str(sender).lower() == owner:
                return
            if owner in (a.lower() for a in self._directory.resolve(str(sender)) or ()):
                return
        raise ReplyError(replies.SENDER_NOT_OWNED.format(sender=sender, user=authenticated_as))

    def check_recipient(
        self, address: Address | str, *, authenticated_as: str | None = None
    ) -> list[str]:
        """
        The targets that mail for ``address`` goes to: the canonical local
        accounts (several for an alias).

        :param authenticated_as: the account of an authenticated client, or
            ``None`` on the MX port.
        :raises ReplyError: :data:`~pymail.smtp.replies.RCPT_UNKNOWN_USER`
            for an unknown local address;
            :data:`~pymail.smtp.replies.RELAY_DENIED` for a non-local
            domain from an unauthenticated client;
            :data:`~pymail.smtp.replies.OUTBOUND_RELAY_DISABLED` for one
            from an authenticated client;
            :data:`~pymail.smtp.replies.BAD_RECIPIENT_SYNTAX` for a string
            that does not parse.
        """
        if isinstance(address, str):
            try:
                address = Address.parse(address)
            except AddressError as e:
                raise ReplyError(replies.BAD_RECIPIENT_SYNTAX.format(why=e)) from None
        if self._directory.is_local_domain(address.domain):
            return self._check_local(address)
        return self._check_remote(address, authenticated_as)

    def _check_local(self, address: Address) -> list[str]:
        # A source route or a percent hack that ends in a local domain does
        # not leave the server: the route is ignored (RFC 5321 appendix C)
        # and an odd local part is simply not found in the directory.
        accounts = self._directory.resolve(str(address))
        if not accounts:
            raise ReplyError(replies.RCPT_UNKNOWN_USER.format(address=address))
        return list(accounts)

    def _check_remote(self, address: Address, authenticated_as: str | None) -> list[str]:
        if authenticated_as is None:
            raise ReplyError(replies.RELAY_DENIED.format(address=address))
        if address.has_relay_syntax:
            raise ReplyError(replies.ROUTED_ADDRESS_DENIED.format(address=address))
        raise ReplyError(replies.OUTBOUND_RELAY_DISABLED.format(address=address))

    def _folder_for(self, account: str) -> str:
        return "INBOX"

    def deliver(
        self,
        accounts: Iterable[str],
        message: bytes,
        *,
        internaldate: datetime | None = None,
    ) -> Deferred[list[StoredCopy]]:
        """
        Store ``message`` (wire form) in each account's folder.

        Every append runs at once; the Deferred fires when all of them have
        fired, that is when the message is durable everywhere.  If any
        append fails it fails with the first error, but only after the
        others have settled, so nothing is acknowledged while a write is
        still in flight.  An account listed twice gets one copy.

        :return: a Deferred firing with one :class:`StoredCopy` per account.
        """
        targets = list(dict.fromkeys(a.lower() for a in accounts))
        if not targets:
            return succeed([])
        appends = [self._deliver_one(a, message, internaldate) for a in targets]
        done = DeferredList(appends, consumeErrors=True)

        def check(results: list[tuple[bool, Any]]) -> list[StoredCopy] | Failure:
            for ok, result in results:
                if not ok:
                    return cast(Failure, result)
            return [result for ok, result in results]

        return done.addCallback(check)

    def _deliver_one(
        self, account: str, message: bytes, internaldate: datetime | None
    ) -> Deferred[StoredCopy]:
        async def append() -> StoredCopy:
            folder = self._folder_for(account)
            store = self._stores.open_store(account, self._data_dir)
            mailbox = await store.get_mailbox(folder)
            uid: int = await mailbox.append(message, (), internaldate)
            return StoredCopy(account, folder, uid)

        return Deferred.fromCoroutine(append())
