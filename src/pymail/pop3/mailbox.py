"""
The POP3 view of an account's INBOX: pymail's :class:`~pymail.interfaces.IMailbox`
adapted to what RFC 1939 needs.

- :class:`Maildrop`: the message list as it was at login (a POP3 session
  never sees later arrivals), message numbers, deletion marks, and the
  UPDATE state's commit.
- :func:`uidl_for_key`: the unique-id listing of a message, derived from its
  permanent storage key.
- :class:`MaildropLocks`: the exclusive-access lock RFC 1939 section 4 asks
  for, within one process; :class:`FileMaildropLocks` also across processes
  (an ``flock`` on a lock file per account).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
from collections.abc import Iterator
from typing import BinaryIO

import attrs
from twisted.internet.defer import Deferred

from pymail.errors import PymailError
from pymail.interfaces import IMailbox, ISizedRead, MessageInfo
from pymail.storage.base import open_message

#: RFC 1939 section 7: a unique-id is 1 to 70 characters in 0x21-0x7E.
_UIDL_SAFE = re.compile(r"[\x21-\x7e]{1,70}")
#: Marks a hashed unique-id; keys that start with it are hashed too, so two
#: different keys can never produce the same unique-id.
_HASHED_PREFIX = "~"


def uidl_for_key(key: str) -> str:
    """
    The POP3 unique-id of the message whose storage key is ``key``.

    A key that is already a valid unique-id (RFC 1939 section 7: 1 to 70
    characters from 0x21 to 0x7E) is used as it is, so other servers reading
    the same Maildir give the same unique-ids; any other key is replaced by
    ``~`` and the SHA-256 of its UTF-8 form in hex (65 characters).  The key
    is permanent, so the unique-id is stable across sessions, restarts and
    flag changes.
    """
    if _UIDL_SAFE.fullmatch(key) and not key.startswith(_HASHED_PREFIX):
        return key
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    return _HASHED_PREFIX + digest


class MessageNumberError(PymailError):
    """A message number the client gave cannot be used; ``str()`` says why."""


class NoSuchMessageNumber(MessageNumberError):
    """The number is outside the maildrop."""


class MessageDeleted(MessageNumberError):
    """The message is marked as deleted in this session."""


@attrs.define
class Maildrop:
    """
    One POP3 session's maildrop: a snapshot of the INBOX taken at login.

    Message numbers are 1-based positions in the snapshot and never change
    during the session.  Deletions are only marks until :meth:`commit`.
    """

    _mailbox: IMailbox
    _messages: tuple[MessageInfo, ...]
    _deleted: set[int] = attrs.Factory(set)
    # The mailbox's ISizedRead, adapted once instead of per RETR.
    _sized: ISizedRead | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        self._sized = ISizedRead(self._mailbox, None)

    @classmethod
    def snapshot(cls, mailbox: IMailbox) -> Maildrop:
        """The maildrop of ``mailbox`` as it is now."""
        return cls(mailbox, tuple(mailbox.messages()))

    def __len__(self) -> int:
        """The number of messages in the snapshot, deleted or not."""
        return len(self._messages)

    def info(self, number: int) -> MessageInfo:
        """
        The message with this number.

        :raises NoSuchMessageNumber: outside ``1..len(self)``.
        :raises MessageDeleted: marked deleted in this session.
        """
        if not 1 <= number <= len(self._messages):
            raise NoSuchMessageNumber(
                f"no message {number}, the maildrop has {len(self._messages)}"
            )
        if number in self._deleted:
            raise MessageDeleted(f"message {number} is deleted")
        return self._messages[number - 1]

    def stat(self) -> tuple[int, int]:
        """The number and total wire-form size of the messages not deleted."""
        octets = sum(m.size for m in self._messages)
        octets -= sum(self._messages[n - 1].size for n in self._deleted)
        return len(self._messages) - len(self._deleted), octets

    def listing(self) -> Iterator[tuple[int, MessageInfo]]:
        """
        The message numbers and messages not deleted, ascending, one at a
        time: a list of 10,000 pairs kept alive would set off the garbage
        collector's full passes, costing more than the listing itself.
        """
        deleted = self._deleted
        for n, m in enumerate(self._messages, 1):
            if n not in deleted:
                yield n, m

    def uidl(self, number: int) -> str:
        """The unique-id of a message (see :func:`uidl_for_key`)."""
        return uidl_for_key(self.info(number).key)

    def read(self, number: int) -> bytes:
        """
        The whole message in wire form.

        :raises MessageNumberError: see :meth:`info`.
        :raises pymail.errors.NoSuchMessage: another session (IMAP, another
            program) removed it since the snapshot.
        """
        info = self.info(number)
        sized = self._sized
        if sized is not None:
            return sized.read_sized(info.uid, info.size)  # type: ignore[no-any-return]
        return self._mailbox.read(info.uid)

    def open(self, number: int) -> BinaryIO:
        """
        The message in wire form as a stream to read in chunks and close
        (see :func:`pymail.storage.base.open_message`).

        :raises MessageNumberError: see :meth:`info`.
        :raises pymail.errors.NoSuchMessage: see :meth:`read`.
        """
        return open_message(self._mailbox, self.info(number).uid)

    def delete(self, number: int) -> None:
        """
        Mark a message deleted; nothing is removed before :meth:`commit`.

        :raises MessageNumberError: see :meth:`info`.
        """
        self.info(number)
        self._deleted.add(number)

    def reset(self) -> None:
        """Unmark every message this session marked deleted (RSET)."""
        self._deleted.clear()

    def deleted_uids(self) -> list[int]:
        """The UIDs of the messages this session marked deleted, ascending."""
        return sorted(self._messages[n - 1].uid for n in self._deleted)

    def commit(self) -> Deferred[list[int]]:
        """
        Remove the messages this session marked deleted, and only those
        (RFC 1939 UPDATE state): flag them ``\\Deleted``, then expunge
        exactly their UIDs, so messages another session flagged
        ``\\Deleted`` but did not expunge stay.  Fires with the UIDs
        removed; messages already gone are skipped.
        """
        return Deferred.fromCoroutine(self._commit())

    async def _commit(self) -> list[int]:
        uids = self.deleted_uids()
        if not uids:
            return []
        await self._mailbox.set_flags(uids, ["\\Deleted"], "add")
        return await self._mailbox.expunge(uids)


@attrs.define(eq=False)
class MaildropLock:
    """A held maildrop lock; :meth:`release` may be called any number of times."""

    _locks: MaildropLocks
    address: str
    _held: bool = True
    _fd: int | None = None

    def release(self) -> None:
        """Let another session open the maildrop."""
        if self._held:
            self._held = False
            if self._fd is not None:
                # Closing the file drops the flock (and so does process death).
                os.close(self._fd)
                self._fd = None
            self._locks._release(self.address)


@attrs.define
class MaildropLocks:
    """
    The exclusive-access locks of RFC 1939 section 4 ("the POP3 server then
    acquires an exclusive-access lock on the maildrop"), one per account,
    within this process.  Every listener of a process must share one
    instance, which is why :data:`PROCESS_LOCKS` exists.
    """

    _held: set[str] = attrs.Factory(set)

    def acquire(self, address: str) -> MaildropLock | None:
        """Lock the maildrop of ``address``, or ``None`` if it is in use."""
        key = address.lower()
        if key in self._held:
            return None
        self._held.add(key)
        return MaildropLock(self, key)

    def is_locked(self, address: str) -> bool:
        """Whether a session holds the maildrop of ``address``."""
        return address.lower() in self._held

    def _release(self, key: str) -> None:
        self._held.discard(key)


@attrs.define
class FileMaildropLocks(MaildropLocks):
    """
    :class:`MaildropLocks` that also hold an exclusive ``flock`` on
    ``<directory>/<sha256 of the address>.lock``, so POP3 sessions in other
    pymail processes sharing the data directory (several servers on one
    host, or on a file system with working ``flock``) see the maildrop as
    in use.  The kernel drops the lock when the holder dies, so a crashed
    session never leaves a maildrop locked.
    """

    directory: str = ""

    def acquire(self, address: str) -> MaildropLock | None:
        lock = super().acquire(address)
        if lock is None:
            return None
        name = hashlib.sha256(lock.address.encode("utf-8")).hexdigest() + ".lock"
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            fd = os.open(os.path.join(self.directory, name), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            lock.release()
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            lock.release()
            return None
        lock._fd = fd
        return lock


#: The locks every :class:`~pymail.pop3.server.POP3Factory` of this process
#: uses unless given its own.
PROCESS_LOCKS = MaildropLocks()
