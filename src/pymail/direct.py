"""
Sending a reply now instead of on the next reactor turn.

Twisted's TCP transport never sends inside ``write()``: it queues the data,
asks the reactor to watch the socket for writability, and sends on the next
turn of the loop, then stops watching again.  For a client that sends one
command and waits for its reply (POP3 without pipelining, the SMTP 250 after
DATA) that is one more
``epoll_wait`` and two ``epoll_ctl`` calls per reply, and the reply leaves
only after every other ready connection has had its turn.

:func:`send_now` sends straight on the socket when that cannot reorder
anything: the transport (under wrappers that only relay writes) is plain
TCP (not TLS, where the bytes on the socket are records), connected, not
closing, and has nothing queued.  What
the socket does not take at once, and every error, is handed to the
transport's ``write()``, so flow control (the push producer), partial sends
and lost connections are handled where they always are: a failed direct
send has sent nothing, and the transport meets the same error on its next
attempt.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp
from twisted.protocols.policies import ProtocolWrapper

#: How many relaying wrappers are looked through.
_MAX_WRAPPERS = 4


def through_relays(transport: Any) -> Any:
    """
    The transport under protocol wrappers that pass writes on unchanged
    (the connection limits' :class:`~pymail.auth.limits.LimitedProtocol`);
    a wrapper that does something with writes (TLS, a write timeout) is a
    transport of its own and is returned as it is.
    """
    for _ in range(_MAX_WRAPPERS):
        kind = type(transport)
        if not (
            isinstance(transport, ProtocolWrapper)
            and kind.write is ProtocolWrapper.write
            and kind.writeSequence is ProtocolWrapper.writeSequence
        ):
            break
        transport = transport.transport
    return transport


def _idle_plain_tcp(transport: Any) -> Any:
    """
    The socket of ``transport`` (already looked through relays, see
    :func:`through_relays`) if it is a connected plain-TCP transport with
    nothing queued, else ``None``.

    This reads Twisted's private send-buffer fields (``dataBuffer``,
    ``offset``, ``_tempDataLen``); when a Twisted release renames them the
    ``getattr`` defaults make this answer ``None`` and every write takes the
    ordinary path.
    """
    if not isinstance(transport, tcp.Connection) or transport.TLS:
        return None
    if not transport.connected or transport.disconnecting:
        return None
    if getattr(transport, "_tempDataLen", 1) or getattr(transport, "_writeDisconnected", True):
        return None
    if len(getattr(transport, "dataBuffer", b"x")) != getattr(transport, "offset", -1):
        return None
    return transport.socket


#: Pieces given to one ``sendmsg``; more are joined first (IOV_MAX is 1024
#: on Linux, and many tiny pieces gain nothing from scatter/gather).
MAX_PIECES = 64


def send_now(transport: Any, pieces: list[bytes], under: Any = None, size: int = -1) -> None:
    """
    Write ``pieces`` to ``transport`` in order, sending as much as the socket
    takes at once when nothing else is queued (see the module docstring):
    one ``sendmsg`` of the pieces, so a reply's status line, message and
    terminator are not copied into one buffer first.  The rest goes through
    ``transport.writeSequence``.

    :param under: ``through_relays(transport)``, when the caller keeps it
        (it does not change while a connection lasts; STLS sets the TCP
        transport's ``TLS`` flag, which is checked on every call).
    :param size: the octets in ``pieces``, when the caller knows them: a
        send that took them all then returns without looking at the pieces.
    """
    sock = _idle_plain_tcp(through_relays(transport) if under is None else under)
    if sock is not None:
        if len(pieces) > MAX_PIECES:
            pieces = [b"".join(pieces)]
        try:
            sent = sock.sendmsg(pieces)
        except OSError:
            # EAGAIN, EINTR, or a lost connection: the transport's own send
            # gets the same answer and deals with it.
            sent = 0
        if sent == size:
            return
        if sent:
            pieces = _after(pieces, sent)
            if not pieces:
                return
    transport.writeSequence(pieces)


def _after(pieces: list[bytes], sent: int) -> list[bytes]:
    """What is left of ``pieces`` once their first ``sent`` octets are out."""
    for i, piece in enumerate(pieces):
        if sent < len(piece):
            return [piece[sent:], *pieces[i + 1 :]]
        sent -= len(piece)
    return []
