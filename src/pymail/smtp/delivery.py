"""
The delivery policy behind the SMTP server: who may send as whom, which
recipients are accepted, where accepted mail goes.

The server asks three questions, in protocol order, and maps the
:class:`~pymail.smtp.replies.ReplyError` it gets to the wire:

1. :meth:`LocalDelivery.check_sender` at ``MAIL FROM``;
2. :meth:`LocalDelivery.check_recipient` at each ``RCPT TO`` (its answer,
   the *targets*, is kept with the recipient);
3. :meth:`LocalDelivery.deliver` after ``DATA``, with the union of the
   targets and the :class:`~pymail.address.Envelope`, and acknowledges only
   when its Deferred fires.

Routing rules (docs/smtp.md says the same for operators):

- a target in a local domain is a local account; any other target is a
  remote address and goes to the outbound queue (:mod:`pymail.relay`);
- ``user+tag@domain`` goes to ``user@domain``; the local copy gets a
  ``Delivered-To: user+tag@domain`` header so the tag can be used later;
- an alias expands to its targets, recursively, local or remote;
- ``postmaster@`` and ``abuse@`` exist in every local domain (the
  directory's role addresses, RFC 5321 section 4.5.1);
- a catch-all alias ``@domain`` takes every otherwise unknown local part
  of that domain;
- a remote recipient is accepted only from an authenticated client (no
  open relay) and only without routing syntax (``%``, ``!``, source routes);
- a message with more than ``max_received`` Received headers is looping
  and refused with ``554 5.4.6``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Protocol, cast

import attrs
from twisted.internet.defer import Deferred, DeferredList, fail, maybeDeferred, succeed
from twisted.python.failure import Failure
from zope.interface import implementer

from pymail.address import Address, AddressError, Envelope
from pymail.interfaces import IDirectory, IMailStoreFactory, IMessageDelivery
from pymail.smtp import replies
from pymail.smtp.replies import ReplyError
from pymail.storage.fsutil import CRLFMessage

#: Received headers beyond which a message is taken to be looping (Postfix's
#: hopcount_limit is 50; RFC 5321 section 6.3 asks for at least 100 "hops"
#: to be tolerated only as an upper bound).
MAX_RECEIVED = 50

#: How deep alias expansion goes before giving up on a cycle-free chain.
MAX_ALIAS_DEPTH = 20


def _with_line(line: bytes, message: bytes) -> bytes:
    """``line`` (a header field ending in CRLF), then ``message``; a CRLFMessage stays one."""
    joined = line + message
    return CRLFMessage(joined) if type(message) is CRLFMessage else joined


# A Received field name at the start of a line, searched for in a lower-cased
# copy of the header section with "\n" put in front: a literal prefix, which
# the regex engine finds with a fast search, where "(?im)^received" tried a
# case-insensitive match at every octet (four times slower).
_RECEIVED = re.compile(rb"\nreceived[ \t]*:")


class LocalTarget(str):
    """
    A target that routing found to be a local account.  It is an ordinary
    ``str`` everywhere; :meth:`LocalDelivery.deliver` takes the answer given
    at ``RCPT`` from it instead of asking the directory again per message.
    """

    __slots__ = ()


class RemoteTarget(str):
    """A target that routing found to be a remote address (see :class:`LocalTarget`)."""

    __slots__ = ()


@attrs.frozen
class StoredCopy:
    """One durable copy of a delivered message: which account, folder and UID."""

    account: str
    folder: str
    uid: int


@attrs.frozen
class QueuedCopy:
    """The remote recipients of a message, durably in the outbound queue."""

    queue_id: str
    recipients: tuple[str, ...]


class IOutboundQueue(Protocol):
    """What the policy needs from the relay queue (:class:`pymail.relay.runner.QueueRunner`)."""

    def submit(
        self, envelope: Envelope, remote: list[tuple[str, Any]], message: bytes
    ) -> Deferred[None]: ...


#: Kept for code written against the first SMTP release: the structural
#: type the server accepted before :class:`~pymail.interfaces.IMessageDelivery`.
IDeliveryPolicy = IMessageDelivery


def count_received(message: bytes) -> int:
    """The number of Received header fields in the header section of ``message``."""
    end = message.find(b"\r\n\r\n")
    head = message if end < 0 else message[: end + 2]
    return len(_RECEIVED.findall(b"\n" + head.lower()))


@implementer(IMessageDelivery)
@attrs.define
class LocalDelivery:
    """
    The routing policy: delivers to local accounts' INBOX and hands remote
    targets to the outbound queue (when there is one; without one, remote
    recipients are refused with ``OUTBOUND_RELAY_DISABLED``).

    :ivar directory: resolves addresses to accounts (aliases, ``+tags``).
    :ivar stores: the storage backend.
    :ivar data_dir: the server's data directory, passed to the backend.
    :ivar queue: the outbound queue, or ``None`` for no relaying at all.
    :ivar max_received: Received headers beyond which mail is looping.
    :ivar postmaster: where ``RCPT TO:<Postmaster>`` (no domain) goes.
    """

    _directory: IDirectory
    _stores: IMailStoreFactory
    _data_dir: str
    queue: IOutboundQueue | None = None
    max_received: int = MAX_RECEIVED
    postmaster: str | None = None

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

    def is_local_domain(self, domain: str) -> bool:
        return self._directory.is_local_domain(domain)

    def check_recipient(
        self, address: Address | str, *, authenticated_as: str | None = None
    ) -> list[str]:
        """
        The targets that mail for ``address`` goes to: canonical local
        accounts and remote addresses (several for an alias).

        :param authenticated_as: the account of an authenticated client, or
            ``None`` on the MX port.
        :raises ReplyError: :data:`~pymail.smtp.replies.RCPT_UNKNOWN_USER`
            for an unknown local address;
            :data:`~pymail.smtp.replies.RELAY_DENIED` for a non-local
            domain from an unauthenticated client;
            :data:`~pymail.smtp.replies.ROUTED_ADDRESS_DENIED` for routing
            syntax to a non-local domain;
            :data:`~pymail.smtp.replies.OUTBOUND_RELAY_DISABLED` when there
            is no outbound queue;
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
        targets = self.route(str(address))
        if not targets:
            raise ReplyError(replies.RCPT_UNKNOWN_USER.format(address=address))
        return targets

    def _check_remote(self, address: Address, authenticated_as: str | None) -> list[str]:
        if authenticated_as is None:
            raise ReplyError(replies.RELAY_DENIED.format(address=address))
        if address.has_relay_syntax:
            raise ReplyError(replies.ROUTED_ADDRESS_DENIED.format(address=address))
        if self.queue is None:
            raise ReplyError(replies.OUTBOUND_RELAY_DISABLED.format(address=address))
        return [RemoteTarget(str(address))]

    # Routing ----------------------------------------------------------------

    def route(self, address: str) -> list[str] | None:
        """
        Where mail for the local ``address`` goes: canonical local accounts
        and remote addresses, in order, without repeats; ``None`` when the
        address does not exist.
        """
        local, _, domain = address.rpartition("@")
        domain = domain.lower()
        base = f"{local.split('+', 1)[0].lower()}@{domain}"
        if self._directory.has_user(base):
            # The common case, answered without copying the alias table.
            return [LocalTarget(base)]
        aliases = self._directory.alias_table()
        found = self._expand(base, aliases, set(), 0)
        if found is None and f"@{domain}" in aliases:
            found = self._expand_alias(f"@{domain}", aliases, {base}, 0)
        return found or None

    def _expand(
        self, address: str, aliases: Mapping[str, list[str]], seen: set[str], depth: int
    ) -> list[str] | None:
        if address in seen or depth > MAX_ALIAS_DEPTH:
            return []
        seen.add(address)
        if self._directory.has_user(address):
            return [LocalTarget(address)]
        if address in aliases:
            return self._expand_alias(address, aliases, seen, depth)
        # Role addresses (postmaster@, abuse@) and anything else the
        # directory itself knows how to resolve.
        resolved = self._directory.resolve(address)
        if resolved is None:
            return None
        return [a.lower() for a in resolved]

    def _expand_alias(
        self, alias: str, aliases: Mapping[str, list[str]], seen: set[str], depth: int
    ) -> list[str] | None:
        out: list[str] = []
        for target in aliases[alias]:
            local, _, domain = target.rpartition("@")
            if self._directory.is_local_domain(domain):
                base = f"{local.split('+', 1)[0].lower()}@{domain.lower()}"
                got = self._expand(base, aliases, seen, depth + 1) or []
            else:
                got = [RemoteTarget(target)]
            for a in got:
                if a not in out:
                    out.append(a)
        return out or None

    def _folder_for(self, account: str) -> str:
        return "INBOX"

    # Delivery ---------------------------------------------------------------

    def deliver(
        self,
        accounts: Iterable[str],
        message: bytes,
        *,
        internaldate: datetime | None = None,
        envelope: Envelope | None = None,
    ) -> Deferred[list[StoredCopy | QueuedCopy]]:
        """
        Store ``message`` (wire form) in each local account's folder and
        queue it once for all remote targets.

        Every write runs at once; the Deferred fires when all of them have
        fired, that is when the message is durable everywhere.  If any
        fails it fails with the first error, but only after the others
        have settled, so nothing is acknowledged while a write is still in
        flight.  A target listed twice gets one copy.

        :param envelope: the sender, the recipients as given and their DSN
            parameters; needed for remote targets and for the
            ``Delivered-To`` header of ``+tag`` recipients.
        :raises ReplyError: (in the Deferred)
            :data:`~pymail.smtp.replies.MAIL_LOOP` for a looping message.
        """
        if count_received(message) > self.max_received:
            return fail(ReplyError(replies.MAIL_LOOP.format(limit=self.max_received)))
        # A target routed at RCPT says where it goes; any other costs one
        # directory look-up (which may stat the account files).
        targets: dict[str, bool] = {}
        for a in accounts:
            kind = type(a)
            is_local = (
                True if kind is LocalTarget
                else False if kind is RemoteTarget
                else self._is_local(a)
            )
            targets.setdefault(a.lower() if is_local else a, is_local)
        local = [t for t, is_local in targets.items() if is_local]
        remote = [t for t, is_local in targets.items() if not is_local]
        if not targets:
            return succeed([])
        tags = self._tagged_recipients(envelope, set(local))
        writes: list[Deferred[Any]] = [
            self._deliver_one(a, _with_line(tags[a], message) if a in tags else message,
                              internaldate)
            for a in local
        ]
        if remote:
            writes.append(maybeDeferred(self._queue, remote, message, envelope))
        if len(writes) == 1:
            # One copy (the usual case): its own result, without a DeferredList.
            return writes[0].addCallback(lambda copy: [copy])
        done = DeferredList(writes, consumeErrors=True)

        def check(results: list[tuple[bool, Any]]) -> list[StoredCopy | QueuedCopy] | Failure:
            for ok, result in results:
                if not ok:
                    return cast(Failure, result)
            return [result for ok, result in results]

        return done.addCallback(check)

    def _is_local(self, target: str) -> bool:
        return self._directory.is_local_domain(target.rpartition("@")[2])

    def _tagged_recipients(self, envelope: Envelope | None, local: set[str]) -> dict[str, bytes]:
        """``Delivered-To`` lines for accounts reached through a ``+tag`` address."""
        out: dict[str, bytes] = {}
        if envelope is None:
            return out
        for rcpt in envelope.recipients:
            if "+" not in rcpt.address.local:
                continue
            for target in rcpt.targets:
                if target.lower() in local and target.lower() not in out:
                    line = f"Delivered-To: {rcpt.address}\r\n"
                    out[target.lower()] = line.encode("utf-8")
        return out

    def _queue(
        self, remote: list[str], message: bytes, envelope: Envelope | None
    ) -> Deferred[QueuedCopy]:
        if self.queue is None or envelope is None:
            raise ReplyError(replies.OUTBOUND_RELAY_DISABLED.format(address=remote[0]))
        # Each remote target keeps the DSN parameters of the RCPT it came from.
        params: list[tuple[str, Any]] = []
        for target in remote:
            origin = next((r for r in envelope.recipients if target in r.targets), None)
            params.append((target, origin))
        d = self.queue.submit(envelope, params, message)
        return d.addCallback(lambda _: QueuedCopy(envelope.queue_id, tuple(remote)))

    def _deliver_one(
        self, account: str, message: bytes, internaldate: datetime | None
    ) -> Deferred[StoredCopy]:
        # Plain callbacks rather than a coroutine: this runs once per
        # message and copy, and the mailbox is usually already open.
        folder = self._folder_for(account)
        try:
            store = self._stores.open_store(account, self._data_dir)
        except Exception:
            return fail()

        def append(mailbox: Any) -> Deferred[int]:
            appended: Deferred[int] = mailbox.append(message, (), internaldate)
            return appended

        def stored(uid: int) -> StoredCopy:
            return StoredCopy(account, folder, uid)

        return store.get_mailbox(folder).addCallback(append).addCallback(stored)

    def inject(self, queue_id: str, recipient: str, message: bytes) -> Deferred[list[Any]]:
        """
        Deliver a message made here (a delivery status notification) from
        the null sender to ``recipient``: stored locally for a local
        address, queued for a remote one.

        :raises ReplyError: (in the Deferred) the local address does not
            exist, or a remote one cannot be queued.
        """
        from pymail.address import EnvelopeRecipient

        try:
            address = Address.parse(f"<{recipient}>", smtputf8=True)
        except AddressError as e:
            return fail(ReplyError(replies.BAD_RECIPIENT_SYNTAX.format(why=e)))
        if self._directory.is_local_domain(address.domain):
            targets = self.route(str(address))
            if not targets:
                return fail(ReplyError(replies.RCPT_UNKNOWN_USER.format(address=address)))
            # Final delivery records the envelope sender (RFC 5321 section 4.4).
            message = b"Return-Path: <>\r\n" + message
        else:
            targets = [str(address)]
        envelope = Envelope(
            queue_id, Address.null(), (EnvelopeRecipient(address, tuple(targets)),)
        )
        return maybeDeferred(self.deliver, targets, message, envelope=envelope)
