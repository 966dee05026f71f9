"""
Small extensions: UNSELECT (RFC 3691), NAMESPACE (RFC 2342), ID (RFC 2971)
and ENABLE (RFC 5161).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

import pymail
from pymail.imap.commands import Command, no_args
from pymail.imap.dispatch import ANY_STATE, AUTHENTICATED, SELECTED, CommandSpec, Reply
from pymail.imap.parser import Cursor, ParseError
from pymail.imap.responses import string

if TYPE_CHECKING:
    from pymail.imap.server import IMAPServerProtocol

#: What ENABLE can turn on.
ENABLEABLE = ("CONDSTORE", "QRESYNC")
#: The most ID fields a client may send (RFC 2971 section 3.3: 30).
MAX_ID_FIELDS = 30


@attrs.frozen
class IdArgs:
    fields: tuple[tuple[bytes, bytes | None], ...]


@attrs.frozen
class EnableArgs:
    names: tuple[str, ...]


def parse_id(cur: Cursor) -> IdArgs:
    cur.sp()
    if cur.accept(b"NIL"):
        return IdArgs(())
    cur.expect(b"(")
    fields: list[tuple[bytes, bytes | None]] = []
    if not cur.accept(b")"):
        while True:
            key = cur.string()
            cur.sp()
            fields.append((key, cur.nstring()))
            if cur.accept(b")"):
                break
            cur.sp()
    if len(fields) > MAX_ID_FIELDS:
        raise ParseError(f"too many ID fields ({len(fields)}, max {MAX_ID_FIELDS})")
    return IdArgs(tuple(fields))


def parse_enable(cur: Cursor) -> EnableArgs:
    names = []
    while not cur.at_end():
        cur.sp()
        names.append(cur.atom().decode("ascii").upper())
    if not names:
        raise ParseError("ENABLE needs at least one capability name")
    return EnableArgs(tuple(names))


async def handle_unselect(conn: IMAPServerProtocol, cmd: Command) -> Reply | None:
    # Like CLOSE, but nothing is expunged (RFC 3691).
    conn.deselect()
    return None


async def handle_namespace(conn: IMAPServerProtocol, cmd: Command) -> Reply | None:
    # One personal namespace, no prefix; no other users' or shared folders.
    conn.writer.untagged(b'NAMESPACE (("" ".")) NIL NIL')
    return None


async def handle_id(conn: IMAPServerProtocol, cmd: Command) -> Reply | None:
    conn.writer.untagged(
        b"ID (" + string(b"name") + b" " + string(b"pymail") + b" "
        + string(b"version") + b" " + string(pymail.__version__.encode("ascii")) + b")"
    )
    return None


async def handle_enable(conn: IMAPServerProtocol, cmd: Command) -> Reply | None:
    args = cmd.args
    assert isinstance(args, EnableArgs)
    newly = conn.enable(args.names)
    conn.writer.untagged(b" ".join([b"ENABLED"] + [n.encode("ascii") for n in newly]))
    return None


COMMANDS = {
    "UNSELECT": CommandSpec(no_args, handle_unselect, SELECTED),
    "NAMESPACE": CommandSpec(no_args, handle_namespace, AUTHENTICATED),
    "ID": CommandSpec(parse_id, handle_id, ANY_STATE),
    "ENABLE": CommandSpec(parse_enable, handle_enable, AUTHENTICATED),
}
CAPABILITIES = ("UNSELECT", "NAMESPACE", "ID", "ENABLE")
