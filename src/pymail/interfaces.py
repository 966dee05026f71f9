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

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import attrs
from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

#: The IMAP system flags a backend must store (RFC 3501 section 2.3.2).
#: ``\\Recent`` is a session property and is never stored.
SYSTEM_FLAGS = frozenset({"\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"})


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
