"""
The command table: for each command name, how its arguments are parsed,
which handler runs it, in which states it is allowed, and whether EXPUNGE
responses may follow it.

Extensions (IDLE, MOVE, UIDPLUS, ...) add entries to a :class:`CommandTable`
and capabilities to its list; nothing else in the server changes.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import attrs

from pymail.imap.parser import Cursor

if TYPE_CHECKING:
    from pymail.imap.commands import Command
    from pymail.imap.server import IMAPServerProtocol


class State(enum.Enum):
    """The connection states of RFC 3501 section 3."""

    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


ANY_STATE = frozenset({State.NOT_AUTHENTICATED, State.AUTHENTICATED, State.SELECTED})
NOT_AUTHENTICATED = frozenset({State.NOT_AUTHENTICATED})
AUTHENTICATED = frozenset({State.AUTHENTICATED, State.SELECTED})
SELECTED = frozenset({State.SELECTED})


@attrs.frozen
class Reply:
    """What a handler answers on success: the tagged OK's text and code."""

    text: str
    code: str | None = None


Handler = Callable[["IMAPServerProtocol", "Command"], Awaitable["Reply | None"]]


@attrs.frozen
class CommandSpec:
    """
    One command.

    :ivar parse: reads the arguments from a cursor placed after the name.
    :ivar handler: runs the command; returns the tagged OK (or None for
        ``"<NAME> completed"``) or raises
        :class:`~pymail.imap.errors.CommandFailed`.
    :ivar states: where the command is allowed.
    :ivar expunge_ok: whether untagged EXPUNGE may be sent after it (not
        after FETCH, STORE, SEARCH: RFC 3501 section 7.4.1).
    """

    parse: Callable[[Cursor], Any]
    handler: Handler
    states: frozenset[State]
    expunge_ok: bool = True


@attrs.define
class CommandTable:
    """Command names (``"UID FETCH"`` for UID commands) to specs, and capabilities."""

    commands: dict[str, CommandSpec] = attrs.Factory(dict)
    capabilities: list[str] = attrs.Factory(lambda: ["IMAP4rev1"])

    def add(self, name: str, spec: CommandSpec) -> None:
        self.commands[name.upper()] = spec

    def update(self, specs: dict[str, CommandSpec]) -> None:
        for name, spec in specs.items():
            self.add(name, spec)

    def get(self, name: str) -> CommandSpec | None:
        return self.commands.get(name)

    def add_capabilities(self, names: Iterable[str]) -> None:
        for name in names:
            if name not in self.capabilities:
                self.capabilities.append(name)
