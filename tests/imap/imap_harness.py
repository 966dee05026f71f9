"""
Test support for pymail.imap: an IMAP server over the in-memory backend,
driven through StringTransport with a Clock, and a few corpus messages in
wire form.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from pymail.imap.server import IMAPFactory, IMAPServerProtocol
from pymail.interfaces import IMailbox, IMailStore
from pymail.storage.memory import MemoryMailbox, MemoryMailStore, MemoryStoreFactory
from pymail.testing import ThreadlessReactor, memory_portal

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "corpus" / "cpython-email"
USER = "alice@example.org"
PASSWORD = "pw"

SIMPLE = (
    b"From: Alice Example <alice@example.org>\r\n"
    b"To: bob@example.org, \"Carol, C.\" <carol@example.net>\r\n"
    b"Subject: Lunch on Friday\r\n"
    b"Date: Fri, 20 Apr 2001 20:18:00 -0400\r\n"
    b"Message-ID: <1@example.org>\r\n"
    b"\r\n"
    b"Shall we meet at noon?\r\n"
)


def corpus(name: str) -> bytes:
    """A corpus message converted to wire form (CRLF line endings)."""
    data = (CORPUS / name).read_bytes()
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


class Server:
    """One IMAPFactory over an in-memory store, with a Clock."""

    def __init__(self, users: dict[str, str] | None = None, **options: Any) -> None:
        self.users = users or {USER: PASSWORD, "bob@example.org": "bobpw"}
        self.stores = MemoryStoreFactory()
        self.portal, self.directory, _ = memory_portal(self.users, self.stores)
        self.clock = Clock()
        self.factory = IMAPFactory(self.portal, self.clock, "imap.example.org", **options)

    def store(self, user: str = USER) -> MemoryMailStore:
        store = self.stores.open_store(user, "")
        assert isinstance(store, MemoryMailStore)
        return store

    def mailbox(self, name: str = "INBOX", user: str = USER) -> MemoryMailbox:
        result: list[IMailbox] = []
        self.store(user).get_mailbox(name).addCallback(result.append)
        mailbox = result[0]
        assert isinstance(mailbox, MemoryMailbox)
        return mailbox

    def deliver(
        self, message: bytes = SIMPLE, name: str = "INBOX", flags: tuple[str, ...] = ()
    ) -> int:
        uids: list[int] = []
        self.mailbox(name).append(message, flags).addCallback(uids.append)
        return uids[0]

    def connect(self) -> Client:
        return Client(self)


class MboxServer(Server):
    """
    The same over the mbox backend, in ``directory``, with a
    :class:`ThreadlessReactor` as its clock (thread work runs at once).
    :meth:`restart` is a new process over the same files.
    """

    def __init__(self, directory: str, users: dict[str, str] | None = None,
                 **options: Any) -> None:
        self.users = users or {USER: PASSWORD, "bob@example.org": "bobpw"}
        self.directory_path = directory
        self.options = options
        self.restart()

    def restart(self) -> None:
        """Forget every open folder and connection state: a fresh process."""
        from pymail.storage.mbox import MboxStoreFactory

        self.clock = ThreadlessReactor()
        stores: Any = MboxStoreFactory(
            self.clock, inbox_path=self.directory_path + "/{address}/INBOX",
            folders_path=self.directory_path + "/{address}")
        self.stores = stores
        self.portal, self.directory, _ = memory_portal(self.users, self.stores)
        self.factory = IMAPFactory(self.portal, self.clock, "imap.example.org", **self.options)

    def store(self, user: str = USER) -> IMailStore:  # type: ignore[override]
        return self.stores.open_store(user, "")

    def mailbox(self, name: str = "INBOX", user: str = USER) -> IMailbox:  # type: ignore[override]
        result: list[IMailbox] = []
        self.store(user).get_mailbox(name).addCallback(result.append)
        return result[0]


class Client:
    """One connection: send bytes, read what the server wrote."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport = StringTransport()
        proto = server.factory.buildProtocol(None)
        assert isinstance(proto, IMAPServerProtocol)
        self.proto = proto
        proto.makeConnection(self.transport)
        self.greeting = self.read()

    def read(self) -> bytes:
        value = self.transport.value()
        self.transport.clear()
        return value

    def send(self, data: bytes) -> bytes:
        """Feed raw bytes; return everything written in response."""
        self.proto.dataReceived(data)
        return self.read()

    def cmd(self, line: str | bytes) -> bytes:
        """Send one command line (CRLF added); return the response bytes."""
        if isinstance(line, str):
            line = line.encode("utf-8")
        return self.send(line + b"\r\n")

    def lines(self, line: str | bytes) -> list[bytes]:
        """Like :meth:`cmd` but split into response lines."""
        return self.cmd(line).split(b"\r\n")[:-1]

    def login(self, user: str = USER, password: str = PASSWORD) -> Client:
        response = self.cmd(f"L1 LOGIN {user} {password}")
        assert response.startswith(b"L1 OK"), response
        return self

    def select(self, name: str = "INBOX") -> bytes:
        response = self.cmd(f"S1 SELECT {name}")
        assert b"S1 OK" in response, response
        return response

    @property
    def closed(self) -> bool:
        return bool(self.transport.disconnecting)

    def lose(self) -> None:
        from twisted.internet.error import ConnectionDone
        from twisted.python.failure import Failure

        self.proto.connectionLost(Failure(ConnectionDone()))
