"""
How the IMAP server turns failures into tagged replies, in one place.

Handlers raise :class:`CommandFailed` for an expected refusal; storage
exceptions are mapped by :func:`reply_for_storage_error`.  Anything else is
a bug: the dispatcher logs it and answers ``NO [SERVERBUG]``.
"""

from __future__ import annotations

from pymail.errors import (
    BadMailboxName,
    MailboxExists,
    NoSuchMailbox,
    NoSuchMessage,
    StorageError,
)


class CommandFailed(Exception):
    """
    The command is refused with a tagged ``NO`` or ``BAD``.

    :ivar status: ``"NO"`` or ``"BAD"``.
    :ivar text: human-readable reason.
    :ivar code: a response code without brackets (``"TRYCREATE"``) or None.
    """

    def __init__(self, status: str, text: str, code: str | None = None) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.code = code


def no(text: str, code: str | None = None) -> CommandFailed:
    return CommandFailed("NO", text, code)


def bad(text: str, code: str | None = None) -> CommandFailed:
    return CommandFailed("BAD", text, code)


def reply_for_storage_error(error: StorageError, *, trycreate: bool = False) -> CommandFailed:
    """
    The tagged reply for a storage failure (response codes from RFC 5530).

    :param trycreate: the command was APPEND or COPY, where a missing
        destination is answered ``[TRYCREATE]`` (RFC 3501 section 6.3.11).
    """
    if isinstance(error, NoSuchMailbox):
        return no(str(error), "TRYCREATE" if trycreate else "NONEXISTENT")
    if isinstance(error, MailboxExists):
        return no(str(error), "ALREADYEXISTS")
    if isinstance(error, BadMailboxName):
        return no(str(error), "CANNOT")
    if isinstance(error, NoSuchMessage):
        return no(str(error), "EXPUNGEISSUED")
    return no(f"storage failed: {error}", "UNAVAILABLE")
