"""
Every extension point of pymail, as typed zope.interface interfaces.

Plugin authors read this module: a storage backend implements
:class:`IMailStoreFactory`, :class:`IMailStore` and :class:`IMailbox`; an
account system plugs in as a ``twisted.cred.strcred.ICheckerFactory`` whose
checker returns the account's canonical address as the avatar id.

Conventions shared by every interface here:

- Messages cross these interfaces in *wire form*: RFC 5322 bytes with CRLF
  line endings, exactly as SMTP received them and IMAP/POP3 serve them.  A
  backend converts to and from its on-disk convention (Maildir and mbox keep
  LF) and reports sizes in wire form.
- Methods that touch the disk in a way that can be slow (anything that
  fsyncs, or rewrites a file) return a ``Deferred``; cheap reads of the
  in-memory view are synchronous so the protocol loops stay fast.
- UIDs are positive integers, strictly ascending in arrival order, never
  reused within one UIDVALIDITY.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

import attrs
from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from pymail.address import Address, Envelope
    from pymail.smtp.delivery import QueuedCopy, StoredCopy

#: The IMAP system flags a backend must store (RFC 3501 section 2.3.2).
#: ``\\Recent`` is a session property and is never stored.
SYSTEM_FLAGS = frozenset({"\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"})

#: The special-use roles (RFC 6154) and the folder every new account gets
#: for each, in the order they are created.
SPECIAL_USE_FOLDERS: tuple[tuple[str, str], ...] = (
    ("Drafts", "\\Drafts"),
    ("Sent", "\\Sent"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
    ("Archive", "\\Archive"),
)

#: The roles :meth:`IMailStore.special_use` may report.
SPECIAL_USE_ROLES = frozenset(role for _, role in SPECIAL_USE_FOLDERS) | {"\\All", "\\Flagged"}

_T = TypeVar("_T")


@attrs.frozen
class MessageInfo:
    """
    What a mailbox knows about one message without reading it.

    :ivar uid: the IMAP UID, stable for the life of the UIDVALIDITY.
    :ivar key: the storage identity of the message (a Maildir base name, an
        mbox message id, ...); unique and permanent for the message, so POP3
        UIDL is derived from it.
    :ivar flags: system flags (``\\Seen`` ...) and keywords.
    :ivar internaldate: when the message arrived (timezone-aware).
    :ivar size: the size in wire form (CRLF line endings), in octets.
    :ivar modseq: the modification sequence of the last change (RFC 7162).
    """

    uid: int
    key: str
    flags: frozenset[str]
    internaldate: datetime
    size: int
    modseq: int = 1


@attrs.frozen
class MailboxChange:
    """
    One change to a mailbox, as told to listeners.

    :ivar kind: ``"added"``, ``"flags"`` or ``"expunged"``.
    :ivar uids: the messages concerned, ascending.
    """

    kind: str
    uids: tuple[int, ...]


class IMailboxListener(Interface):
    """Told about changes to a mailbox, whoever made them."""

    def mailbox_changed(mailbox: IMailbox, change: MailboxChange) -> None:
        """
        Something changed.  Called in the reactor thread, after the mailbox's
        in-memory view already shows the change.  Must not raise.
        """


class IMailbox(Interface):
    """
    One folder of one account: an ordered set of messages with UIDs.

    A backend keeps one live object per folder per process, so every session
    and every delivery see the same view and the same listeners.
    """

    name = Attribute("The folder's name, e.g. ``'INBOX'`` (str).")

    def uidvalidity() -> int:
        """The UIDVALIDITY value (RFC 3501 section 2.3.1.1)."""

    def uidnext() -> int:
        """The UID the next message will get."""

    def highestmodseq() -> int:
        """The highest MODSEQ of any change so far (1 for a new folder)."""

    def messages() -> Sequence[MessageInfo]:
        """The current messages, ascending by UID.  Do not mutate."""

    def info(uid: int) -> MessageInfo:
        """
        The message with this UID.

        :raises pymail.errors.NoSuchMessage: no such UID (any more).
        """

    def read(uid: int) -> bytes:
        """
        The whole message, in wire form.

        :raises pymail.errors.NoSuchMessage: the message is gone (expunged,
            possibly by another program).
        """

    def append(
        message: bytes,
        flags: Iterable[str] = (),
        internaldate: datetime | None = None,
    ) -> Deferred[int]:
        """
        Store a message durably and give its UID.

        The Deferred fires only after the message is on stable storage
        (written, fsynced, renamed into place, directory fsynced), so the
        caller may acknowledge it (SMTP 250, IMAP APPEND OK).

        :param message: the message in wire form.
        :raises pymail.errors.StorageError: it could not be stored; nothing
            partial is left visible.
        """

    def set_flags(
        uids: Iterable[int], flags: Iterable[str], mode: str
    ) -> Deferred[dict[int, frozenset[str]]]:
        """
        Change flags. ``mode`` is ``"add"``, ``"remove"`` or ``"replace"``.

        Fires with the new flags of every message that still exists (UIDs
        that are gone are left out).
        """

    def expunge(uids: Iterable[int] | None = None) -> Deferred[list[int]]:
        """
        Permanently remove messages flagged ``\\Deleted``; with ``uids``, only
        those of them (UID EXPUNGE).  Fires with the removed UIDs, ascending.
        """

    def refresh() -> Deferred[None]:
        """
        Look for changes made by other programs (new files, flags changed,
        messages removed), update the view and tell the listeners.
        """

    def add_listener(listener: IMailboxListener) -> None:
        """Start telling ``listener`` about changes."""

    def remove_listener(listener: IMailboxListener) -> None:
        """Stop telling ``listener`` about changes; unknown listeners are ignored."""

    def keywords() -> frozenset[str]:
        """
        The keywords this folder knows (used by some message or defined
        earlier), for the IMAP ``FLAGS`` response.
        """

    def accepts_new_keywords() -> bool:
        """
        Whether a keyword not in :meth:`keywords` can be stored permanently
        (IMAP ``PERMANENTFLAGS`` then includes ``\\*``).  False when the
        format holds no keywords or its keyword table is full (Maildir
        holds 26 per folder).
        """

    def cached(uid: int, name: str, compute: Callable[[bytes], _T]) -> _T:
        """
        A value derived from the message that never changes (its parsed
        ENVELOPE or BODYSTRUCTURE), computed once with ``compute(message)``
        (wire form) and then kept, in the folder's index where the backend
        has one.  ``name`` identifies the derivation and its version (e.g.
        ``"envelope.1"``); values are nested tuples and lists of ``bytes``,
        ``str``, ``int`` and ``None``.

        :raises pymail.errors.NoSuchMessage: no such UID (any more).
        """


class IMailboxRestore(Interface):
    """
    Optional, for ``pymail migrate``: fill an empty folder keeping UIDs.
    A mailbox that provides it keeps UIDVALIDITY and UIDs across a change
    of backend; one that does not gets the messages appended (new UIDs).
    """

    def restore(
        uidvalidity: int,
        uidnext: int,
        messages: Sequence[tuple[int, bytes, frozenset[str], datetime]],
    ) -> Deferred[None]:
        """
        Store ``(uid, message, flags, internaldate)`` with exactly these
        UIDs (ascending) and take ``uidvalidity`` and ``uidnext``.

        :raises pymail.errors.StorageError: the folder is not empty.
        """


class IMessageStream(Interface):
    """
    Optional, for serving large messages without holding them whole (POP3
    RETR and TOP): a mailbox that provides it hands out a message as a
    readable stream.  Callers use :func:`pymail.storage.base.open_message`,
    which falls back to ``BytesIO(mailbox.read(uid))`` for mailboxes that
    do not provide it.
    """

    def open_message(uid: int) -> BinaryIO:
        """
        A binary stream of the message in wire form, byte for byte what
        :meth:`IMailbox.read` returns; the caller reads it in chunks and
        closes it.  The message is fixed when the stream is opened: a later
        flag change or expunge does not cut it short.

        :raises pymail.errors.NoSuchMessage: the message is gone.
        """


class ISizedRead(Interface):
    """
    Optional, for serving many whole messages fast (POP3 RETR): the message
    read knowing its wire size (:attr:`MessageInfo.size`), so a file-backed
    mailbox reads it with one system call and no buffered file object.
    """

    def read_sized(uid: int, size: int) -> bytes:
        """
        Byte for byte what :meth:`IMailbox.read` returns.

        :param size: the message's wire size from :class:`MessageInfo`; a
            hint for the read, not trusted (a file that grew is read whole).
        :raises pymail.errors.NoSuchMessage: the message is gone.
        """


class ICachedMany(Interface):
    """
    Optional, for a folder's first FETCH of ENVELOPEs (or first SEARCH):
    many :meth:`IMailbox.cached` values read and kept at once, from any
    thread, so the IMAP server can fill them in the thread pool with one
    index query and one transaction per batch instead of one per message.
    """

    def cached_many(uids: Iterable[int], name: str) -> dict[int, Any]:
        """
        The values ``name`` already kept for those of ``uids`` that have
        one; UIDs without a value (or gone) are left out.
        """

    def store_cached(name: str, values: dict[int, Any]) -> None:
        """
        Keep ``values`` (UID to the value ``compute(message)`` gave, as for
        :meth:`IMailbox.cached`) under ``name``, all at once.
        """


class IMailStore(Interface):
    """All the folders of one account."""

    def list_mailboxes() -> list[str]:
        """The names of the account's folders; always includes ``'INBOX'``."""

    def get_mailbox(name: str) -> Deferred[IMailbox]:
        """
        Open a folder (``'INBOX'`` matches case-insensitively).

        :raises pymail.errors.NoSuchMailbox: no such folder.
        :raises pymail.errors.BadMailboxName: the name is not acceptable.
        """

    def create_mailbox(name: str) -> Deferred[None]:
        """
        Create a folder.

        :raises pymail.errors.MailboxExists: it exists already.
        :raises pymail.errors.BadMailboxName: the name is not acceptable.
        """

    def delete_mailbox(name: str) -> Deferred[None]:
        """
        Delete a folder and its messages (RFC 3501 section 6.3.4).  Folders
        below it in the hierarchy stay.  Open :class:`IMailbox` objects of
        the folder report every message expunged.

        :raises pymail.errors.NoSuchMailbox: no such folder.
        :raises pymail.errors.BadMailboxName: the name is not acceptable,
            or is INBOX (which cannot be deleted).
        """

    def rename_mailbox(old: str, new: str) -> Deferred[None]:
        """
        Rename a folder and every folder below it (``Work`` -> ``Job`` also
        moves ``Work.Projects`` to ``Job.Projects``), keeping UIDs,
        UIDVALIDITY, flags and special-use roles.  Renaming INBOX moves its
        messages into a new folder ``new`` and leaves INBOX empty (RFC 3501
        section 6.3.5).

        :raises pymail.errors.NoSuchMailbox: ``old`` does not exist.
        :raises pymail.errors.MailboxExists: ``new`` exists already.
        :raises pymail.errors.BadMailboxName: either name is not acceptable
            (or ``new`` is INBOX, or lies below ``old``).
        """

    def subscriptions() -> list[str]:
        """The subscribed folder names (they need not exist), sorted."""

    def subscribe(name: str) -> Deferred[None]:
        """
        Add ``name`` to the subscriptions (kept across restarts).  The folder
        need not exist (RFC 3501 section 6.3.6).

        :raises pymail.errors.BadMailboxName: the name is not acceptable.
        """

    def unsubscribe(name: str) -> Deferred[None]:
        """Remove ``name`` from the subscriptions; unknown names are ignored."""

    def special_use() -> dict[str, str]:
        """
        Folder name -> special-use role (``"\\Sent"``, ``"\\Trash"`` ... from
        :data:`SPECIAL_USE_ROLES`, RFC 6154) for the folders that have one.
        A new account gets the folders of :data:`SPECIAL_USE_FOLDERS`.
        """


class IMailStoreFactory(Interface):
    """
    A storage backend, found as a Twisted plugin by :attr:`name`.

    pymail asks it for each account's store; the factory owns the per-process
    registry of live mailboxes.
    """

    name = Attribute("The name used in the config's ``[storage] backend`` (str).")
    description = Attribute("One line for ``pymail --help`` and the docs (str).")

    def open_store(address: str, data_dir: str) -> IMailStore:
        """
        The store of the account ``address`` (a canonical ``local@domain``).

        :param data_dir: the server's data directory; a backend keeps the
            account's mail below it unless its own options say otherwise.
        """


class IMailStoreBackend(Interface):
    """
    A storage backend as a Twisted plugin: an object providing
    ``twisted.plugin.IPlugin`` and this interface, in a module of a
    ``twisted/plugins/`` directory, is found with
    ``twisted.plugin.getPlugins`` and chosen by :attr:`name` in the config's
    ``[storage] backend`` (or per domain in ``[storage] domains``).
    """

    name = Attribute("The name used in the config (str), e.g. ``'maildir'``.")
    description = Attribute("One line for the docs and error messages (str).")

    def make_factory(reactor: object, options: dict[str, str]) -> IMailStoreFactory:
        """
        The process's store factory for this backend.

        :param reactor: the reactor (threads, time) the backend must use.
        :param options: this backend's ``[storage] options`` (``key`` ->
            ``value``); unknown keys should raise ``ValueError`` naming them.
        """


class IAccount(Interface):
    """
    The avatar every access protocol gets from the portal (IMAP, POP3,
    SMTP submission).  One realm makes it, so an account disabled in one
    place is locked out everywhere.
    """

    address = Attribute("The canonical address the user logged in as (str).")
    store = Attribute("The account's :class:`IMailStore`.")

    def logout() -> None:
        """The session ended; release what the avatar holds."""


class IDirectory(Interface):
    """The account database: domains, users and aliases."""

    def is_local_domain(domain: str) -> bool:
        """Whether mail for ``domain`` is delivered here."""

    def resolve(address: str) -> list[str] | None:
        """
        The canonical local accounts that mail for ``address`` goes to, or
        ``None`` when the address does not exist here.  Aliases expand;
        ``user+tag@domain`` resolves as ``user@domain``.
        """

    def has_user(address: str) -> bool:
        """Whether ``address`` is an existing, enabled account."""

    def alias_table() -> Mapping[str, list[str]]:
        """
        Every alias as a read-only mapping: lower-case alias address (or
        ``@domain`` for a domain's catch-all) to its target addresses, local
        or remote.  The SMTP routing expands it (nested aliases, catch-all)
        when :meth:`has_user` says no.
        """


class IMessageDelivery(Interface):
    """
    The SMTP server's policy: who may send as whom, which recipients are
    accepted and where accepted mail goes (pymail's is
    :class:`pymail.smtp.delivery.LocalDelivery`).  Refusals raise
    :class:`pymail.smtp.replies.ReplyError` carrying the SMTP reply.
    """

    def check_sender(sender: Address, *, authenticated_as: str | None = None) -> None:
        """
        At ``MAIL FROM``: may ``sender`` (a :class:`pymail.address.Address`)
        be used by this client (``authenticated_as`` is the account, or
        ``None`` on the MX port)?

        :raises pymail.smtp.replies.ReplyError: no, with the reply to give.
        """

    def check_recipient(
        address: Address | str, *, authenticated_as: str | None = None
    ) -> list[str] | Deferred[list[str]]:
        """
        At ``RCPT TO``: the targets mail for ``address`` goes to (canonical
        local accounts and remote addresses).

        :raises pymail.smtp.replies.ReplyError: refused, with the reply.
        """

    def deliver(
        accounts: Iterable[str],
        message: bytes,
        *,
        internaldate: datetime | None = None,
        envelope: Envelope | None = None,
    ) -> Deferred[list[StoredCopy | QueuedCopy]]:
        """
        After ``DATA``: store or queue ``message`` (wire form) for every
        target; fires only when every copy is durable.  ``envelope`` is
        the :class:`pymail.address.Envelope` (sender, recipients, DSN
        parameters).

        :raises pymail.smtp.replies.ReplyError: refused as a whole (a
            mail loop), with the reply.
        """


class IResolver(Interface):
    """
    DNS as the outbound relay needs it (pymail's is
    :class:`pymail.relay.mx.DNSPythonResolver`, which asks dnspython in a
    thread; :class:`pymail.relay.mx.FakeResolver` answers from a dict).
    Names are absolute ASCII (A-label) domain names without the final dot.
    """

    def lookup_mx(domain: str) -> Deferred[list[tuple[int, str]]]:
        """
        The MX records of ``domain`` as ``(preference, exchange)``; an empty
        list when the domain exists but has no MX record.  A null MX (RFC
        7505) is ``[(0, "")]``.

        :raises pymail.relay.mx.DNSPermanentError: the domain does not exist
            (NXDOMAIN).
        :raises pymail.relay.mx.DNSTemporaryError: SERVFAIL, a timeout, no
            answer from any nameserver.
        """

    def lookup_addresses(host: str) -> Deferred[list[str]]:
        """
        The IPv6 and IPv4 addresses of ``host`` (AAAA and A records), IPv6
        first; an empty list when it has none.

        :raises pymail.relay.mx.DNSPermanentError: NXDOMAIN.
        :raises pymail.relay.mx.DNSTemporaryError: as for :meth:`lookup_mx`.
        """
