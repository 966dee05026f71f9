"""
The exception hierarchy of pymail.  Each class says what happened; protocol
code maps them to replies in one place per protocol.
"""

from __future__ import annotations


class PymailError(Exception):
    """Base class of every error pymail raises on purpose."""


class ConfigError(PymailError):
    """
    The configuration cannot be used.  ``str()`` is the whole message for
    the operator: which file, which key, the bad value and what is accepted.
    """


class ListenError(PymailError):
    """A listener could not be started (port in use, permission denied...)."""


class StorageError(PymailError):
    """The storage backend could not do what was asked; nothing was lost."""


class NoSuchMailbox(StorageError):
    """The folder does not exist."""


class MailboxExists(StorageError):
    """A folder of that name exists already."""


class BadMailboxName(StorageError):
    """A folder name that is not acceptable (path tricks, control characters...)."""


class NoSuchMessage(StorageError):
    """The message is gone (expunged, possibly by another program)."""


class DirectoryError(PymailError):
    """The account database refused a change; the message says why."""


class BadAddress(DirectoryError):
    """An address that is not acceptable, with the reason."""
