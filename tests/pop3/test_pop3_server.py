"""Tests for pymail.pop3.server: the POP3 protocol over an in-memory transport."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IPushProducer
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import ILogObserver, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from pymail.errors import StorageError
from pymail.interfaces import IAccount, IMailbox
from pymail.pop3 import replies
from pymail.pop3.mailbox import PROCESS_LOCKS, MaildropLocks, uidl_for_key
from pymail.pop3.server import POP3Factory, POP3Server, State
from pymail.storage.memory import MemoryMailbox, MemoryMailStore, MemoryStoreFactory
from pymail.testing import memory_portal

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "corpus" / "cpython-email"
ALICE = "alice@example.org"
PASSWORD = "s3cret-Pa55"
DOTS = (
    b"Subject: dots\r\nFrom: a@example.org\r\n\r\n"
    b".leading dot\r\n..two dots\r\n.\r\nnot the end\r\n. space\r\n"
)


def wire(name: str) -> bytes:
    """A corpus message in wire form (CRLF line endings)."""
    return (CORPUS / name).read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def parse_multiline(data: bytes) -> tuple[bytes, bytes, bytes]:
    """Split one multi-line response into status line, unstuffed body and the rest."""
    status, _, rest = data.partition(b"\r\n")
    lines = []
    while True:
        line, sep, rest = rest.partition(b"\r\n")
        if not sep:
            raise AssertionError("multi-line response not terminated")
        if line == b".":
            break
        lines.append(line[1:] if line.startswith(b".") else line)
    return status, b"".join(line + b"\r\n" for line in lines), rest


class CountingTransport(StringTransport):
    """A StringTransport that counts write calls."""

    writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        super().write(data)

    def writeSequence(self, data: Any) -> None:
        self.writes += 1
        super().writeSequence(data)


class Session:
    """One client connection to a server built by the factory."""

    def __init__(self, factory: POP3Factory) -> None:
        self.server = factory.buildProtocol(None)
        # Loopback: clear-text logins are allowed there by default.
        self.transport = CountingTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        self.server.makeConnection(self.transport)
        self.greeting = self.take()

    def take(self) -> bytes:
        data = self.transport.value()
        self.transport.clear()
        return data

    def send(self, data: bytes) -> bytes:
        self.server.dataReceived(data)
        return self.take()

    def cmd(self, line: str) -> bytes:
        return self.send(line.encode() + b"\r\n")

    def login(self, user: str = ALICE, password: str = PASSWORD) -> bytes:
        self.cmd(f"USER {user}")
        return self.cmd(f"PASS {password}")

    def lose(self) -> None:
        self.server.connectionLost()


@implementer(IRealm)
class RecordingRealm:
    """Wraps a realm and records each avatar's logout."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.logouts: list[str] = []

    def requestAvatar(self, avatar_id: Any, mind: Any, *interfaces: Any) -> Any:
        interface, avatar, logout = self.inner.requestAvatar(avatar_id, mind, *interfaces)

        def recorded_logout() -> None:
            self.logouts.append(avatar.address)
            logout()

        return interface, avatar, recorded_logout


@implementer(ICredentialsChecker)
class PendingChecker:
    """A checker whose answers the test gives later."""

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self) -> None:
        self.pending: list[Deferred[bytes]] = []

    def requestAvatarId(self, credentials: Any) -> Any:
        d: Deferred[bytes] = Deferred()
        self.pending.append(d)
        return d


class FailingMailbox(MemoryMailbox):
    """A memory mailbox whose expunge and read fail like a broken disk."""

    fail_read = False

    def expunge(self, uids: Any = None) -> Deferred[list[int]]:
        return fail(StorageError("disk on fire"))

    def read(self, uid: int) -> bytes:
        if self.fail_read:
            raise StorageError("disk on fire")
        return super().read(uid)


class POP3TestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.stores = MemoryStoreFactory()
        portal, _, _ = memory_portal(
            {ALICE: PASSWORD, "bob@example.org": "two words"}, stores=self.stores
        )
        self.realm = RecordingRealm(portal.realm)
        self.portal = Portal(self.realm, portal.checkers.values())
        self.locks = MaildropLocks()
        self.factory = POP3Factory(self.portal, self.clock, "mail.example.org", locks=self.locks)
        self.inbox = self.successResultOf(
            self.stores.open_store(ALICE, "/nonexistent").get_mailbox("INBOX")
        )
        self.messages = [wire("msg_01.txt"), wire("msg_02.txt"), DOTS, wire("msg_05.txt")]
        for message in self.messages:
            self.successResultOf(self.inbox.append(message))

    def session(self) -> Session:
        return Session(self.factory)

    def logged_in(self) -> Session:
        s = self.session()
        reply = s.login()
        self.assertTrue(reply.startswith(b"+OK"), reply)
        return s


class AuthorizationTests(POP3TestCase):
    def test_greeting(self) -> None:
        """The greeting is +OK with the hostname and no APOP timestamp."""
        self.assertEqual(
            self.session().greeting, b"+OK pymail POP3 server ready on mail.example.org\r\n"
        )

    def test_capa_lists_exactly(self) -> None:
        """CAPA lists exactly the supported capabilities; login ones only before login."""
        before = (
            b"+OK capability list follows\r\nTOP\r\nUIDL\r\nUSER\r\nSASL PLAIN LOGIN\r\n"
            b"RESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\nIMPLEMENTATION pymail\r\n.\r\n"
        )
        after = (
            b"+OK capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\n"
            b"AUTH-RESP-CODE\r\nPIPELINING\r\nIMPLEMENTATION pymail\r\n.\r\n"
        )
        s = self.session()
        self.assertEqual(s.cmd("CAPA"), before)
        s.login()
        self.assertEqual(s.cmd("capa"), after)

    def test_login_good(self) -> None:
        """USER and PASS with the right password open the maildrop."""
        s = self.session()
        self.assertEqual(s.cmd(f"USER {ALICE}"), b"+OK send PASS\r\n")
        octets = sum(len(m) for m in self.messages)
        self.assertEqual(
            s.cmd(f"PASS {PASSWORD}"), b"+OK maildrop has 4 messages (%d octets)\r\n" % octets
        )
        self.assertIs(s.server.state, State.TRANSACTION)

    def test_password_with_spaces(self) -> None:
        """The whole rest of the PASS line is the password, spaces included."""
        self.assertTrue(self.session().login("bob@example.org", "two words").startswith(b"+OK"))

    def test_login_bad_password(self) -> None:
        """A wrong password gets -ERR [AUTH], and the client may try again."""
        s = self.session()
        self.assertEqual(s.login(ALICE, "wrong"), replies.line(replies.AUTH_FAILED))
        self.assertIs(s.server.state, State.AUTHORIZATION)
        self.assertEqual(s.cmd(f"PASS {PASSWORD}"), b"-ERR send USER first\r\n")
        self.assertTrue(s.login().startswith(b"+OK"))

    def test_login_unknown_user(self) -> None:
        """An unknown user gets the same -ERR [AUTH] as a wrong password."""
        self.assertEqual(
            self.session().login("nobody@example.org", "x"),
            b"-ERR [AUTH] authentication failed\r\n",
        )

    def test_pass_without_user(self) -> None:
        """PASS before USER is refused."""
        self.assertEqual(self.session().cmd("PASS x"), b"-ERR send USER first\r\n")

    def test_password_never_logged(self) -> None:
        """Neither a right nor a wrong password appears in any log event."""
        events: list[dict[str, Any]] = []
        observer = cast(ILogObserver, events.append)
        globalLogPublisher.addObserver(observer)
        try:
            s = self.session()
            s.login(ALICE, "Wr0ng-Pa55")
            s.login()
            s.cmd("QUIT")
        finally:
            globalLogPublisher.removeObserver(observer)
        self.assertTrue(events)
        for event in events:
            text = repr(event) + (formatEvent(event) or "")
            self.assertNotIn(PASSWORD, text)
            self.assertNotIn("Wr0ng-Pa55", text)

    def test_username_logged_without_control_characters(self) -> None:
        """A failed login logs the username with control characters escaped."""
        events: list[dict[str, Any]] = []
        observer = cast(ILogObserver, events.append)
        globalLogPublisher.addObserver(observer)
        try:
            self.session().send(b"USER evil\x1b[2J\rname\r\nPASS x\r\n")
        finally:
            globalLogPublisher.removeObserver(observer)
        texts = [formatEvent(e) or "" for e in events]
        self.assertTrue(any("login failed for evil\\x1b[2J\\x0dname" in t for t in texts))
        self.assertFalse(any("\x1b" in t or "\r" in t for t in texts))

    def test_logout_called_when_session_ends(self) -> None:
        """The avatar's logout runs once when the session ends, with or without QUIT."""
        s = self.logged_in()
        s.cmd("QUIT")
        s.lose()
        self.assertEqual(self.realm.logouts, [ALICE])
        s = self.logged_in()
        s.lose()
        self.assertEqual(self.realm.logouts, [ALICE, ALICE])

    def test_checker_failure_is_temporary(self) -> None:
        """A checker that crashes gets -ERR [SYS/TEMP], not [AUTH]."""

        @implementer(ICredentialsChecker)
        class Broken:
            credentialInterfaces = (IUsernamePassword,)

            def requestAvatarId(self, credentials: Any) -> Any:
                return fail(RuntimeError("database down"))

        self.factory.portal = Portal(self.realm, [Broken()])
        self.assertEqual(
            self.session().login(), b"-ERR [SYS/TEMP] cannot log in now, try again later\r\n"
        )
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_commands_wait_for_login(self) -> None:
        """Commands pipelined after PASS wait for the login result and run in order."""
        checker = PendingChecker()
        self.factory.portal = Portal(self.realm, [checker])
        s = self.session()
        out = s.send(f"USER {ALICE}\r\nPASS {PASSWORD}\r\nSTAT\r\nNOOP\r\n".encode())
        self.assertEqual(out, b"+OK send PASS\r\n")
        s.transport.writes = 0
        checker.pending[0].callback(ALICE.encode())
        out = s.take()
        self.assertEqual(
            out.split(b"\r\n")[1:3], [b"+OK 4 %d" % sum(map(len, self.messages)), b"+OK"]
        )
        self.assertEqual(s.transport.writes, 1)

    def test_single_lines_wait_for_login(self) -> None:
        """Lines arriving one read at a time during a pending login wait, then run in order."""
        checker = PendingChecker()
        self.factory.portal = Portal(self.realm, [checker])
        s = self.session()
        s.cmd(f"USER {ALICE}")
        self.assertEqual(s.cmd(f"PASS {PASSWORD}"), b"")
        self.assertEqual(s.cmd("STAT"), b"")
        self.assertEqual(s.cmd("noop"), b"")
        checker.pending[0].callback(ALICE.encode())
        self.assertEqual(
            s.take().split(b"\r\n")[1:3], [b"+OK 4 %d" % sum(map(len, self.messages)), b"+OK"]
        )

    def test_connection_lost_during_login(self) -> None:
        """A login that completes after the client left takes no lock and logs out."""
        checker = PendingChecker()
        self.factory.portal = Portal(self.realm, [checker])
        s = self.session()
        s.send(f"USER {ALICE}\r\nPASS {PASSWORD}\r\n".encode())
        s.lose()
        checker.pending[0].callback(ALICE.encode())
        self.assertFalse(self.locks.is_locked(ALICE))
        self.assertEqual(self.realm.logouts, [ALICE])


class TransactionTests(POP3TestCase):
    def test_stat(self) -> None:
        """STAT gives the message count and total wire size."""
        s = self.logged_in()
        self.assertEqual(s.cmd("STAT"), b"+OK 4 %d\r\n" % sum(map(len, self.messages)))

    def test_list(self) -> None:
        """LIST gives every message's size; LIST n one message's."""
        s = self.logged_in()
        status, body, rest = parse_multiline(s.cmd("LIST"))
        self.assertTrue(status.startswith(b"+OK 4 messages"))
        self.assertEqual(
            body, b"".join(b"%d %d\r\n" % (i, len(m)) for i, m in enumerate(self.messages, 1))
        )
        self.assertEqual(rest, b"")
        self.assertEqual(s.cmd("LIST 3"), b"+OK 3 %d\r\n" % len(DOTS))

    def test_uidl(self) -> None:
        """UIDL gives each message's unique-id from its storage key."""
        s = self.logged_in()
        keys = [m.key for m in self.inbox.messages()]
        _, body, _ = parse_multiline(s.cmd("UIDL"))
        self.assertEqual(
            body,
            b"".join(b"%d %s\r\n" % (i, uidl_for_key(k).encode()) for i, k in enumerate(keys, 1)),
        )
        self.assertEqual(s.cmd("UIDL 2"), b"+OK 2 %s\r\n" % uidl_for_key(keys[1]).encode())

    def test_retr_byte_exact(self) -> None:
        """RETR serves each stored message byte-exact once unstuffed, with its size."""
        s = self.logged_in()
        for number, message in enumerate(self.messages, 1):
            status, body, rest = parse_multiline(s.cmd(f"RETR {number}"))
            self.assertEqual(status, b"+OK %d octets" % len(message))
            self.assertEqual(body, message)
            self.assertEqual(rest, b"")

    def test_retr_stuffs_dots(self) -> None:
        """Lines starting with a dot are stuffed on the wire."""
        s = self.logged_in()
        raw = s.cmd("RETR 3")
        self.assertIn(
            b"\r\n..leading dot\r\n...two dots\r\n..\r\nnot the end\r\n.. space\r\n.\r\n", raw
        )

    def test_retr_is_one_write(self) -> None:
        """A whole RETR response leaves in one transport write (no Nagle stall)."""
        s = self.logged_in()
        s.transport.writes = 0
        s.cmd("RETR 2")
        self.assertEqual(s.transport.writes, 1)

    def test_top(self) -> None:
        """TOP gives the header, the empty line and the first n body lines, stuffed."""
        s = self.logged_in()
        _, body, _ = parse_multiline(s.cmd("TOP 3 0"))
        self.assertEqual(body, b"Subject: dots\r\nFrom: a@example.org\r\n\r\n")
        raw = s.cmd("TOP 3 2")
        self.assertTrue(raw.startswith(b"+OK"))
        self.assertTrue(raw.endswith(b"\r\n\r\n..leading dot\r\n...two dots\r\n.\r\n"))
        _, body, _ = parse_multiline(s.cmd("TOP 2 1000"))
        self.assertEqual(body, self.messages[1])

    def test_dele_then_rset_restores(self) -> None:
        """RSET brings back messages DELE marked, and QUIT then removes nothing."""
        s = self.logged_in()
        self.assertEqual(s.cmd("DELE 1"), b"+OK message 1 deleted\r\n")
        self.assertEqual(s.cmd("STAT"), b"+OK 3 %d\r\n" % sum(map(len, self.messages[1:])))
        self.assertTrue(s.cmd("RSET").startswith(b"+OK maildrop has 4 messages"))
        self.assertTrue(s.cmd("RETR 1").startswith(b"+OK"))
        self.assertEqual(s.cmd("QUIT"), b"+OK pymail POP3 server signing off\r\n")
        self.assertEqual(len(self.inbox.messages()), 4)

    def test_deleted_message_hidden(self) -> None:
        """A DELE'd message is left out of LIST, UIDL and STAT and cannot be read."""
        s = self.logged_in()
        s.cmd("DELE 2")
        _, body, _ = parse_multiline(s.cmd("LIST"))
        self.assertNotIn(b"\r\n2 ", b"\r\n" + body)
        _, body, _ = parse_multiline(s.cmd("UIDL"))
        self.assertNotIn(b"\r\n2 ", b"\r\n" + body)
        for command in ["RETR 2", "TOP 2 1", "LIST 2", "UIDL 2", "DELE 2"]:
            self.assertEqual(s.cmd(command), b"-ERR message 2 is deleted\r\n", command)

    def test_dele_then_quit_removes_only_those(self) -> None:
        """QUIT removes exactly the messages DELE marked."""
        s = self.logged_in()
        uids = [m.uid for m in self.inbox.messages()]
        s.cmd("DELE 1")
        s.cmd("DELE 3")
        self.assertEqual(
            s.cmd("QUIT"), b"+OK pymail POP3 server signing off (2 messages deleted)\r\n"
        )
        self.assertTrue(s.transport.disconnecting)
        self.assertEqual([m.uid for m in self.inbox.messages()], [uids[1], uids[3]])
        self.assertFalse(self.locks.is_locked(ALICE))

    def test_imap_deleted_survives_quit(self) -> None:
        """A message flagged \\Deleted elsewhere but not DELE'd here survives QUIT."""
        uids = [m.uid for m in self.inbox.messages()]
        self.successResultOf(self.inbox.set_flags([uids[1]], ["\\Deleted"], "add"))
        s = self.logged_in()
        s.cmd("DELE 1")
        s.cmd("QUIT")
        self.assertEqual([m.uid for m in self.inbox.messages()], uids[1:])
        self.assertIn("\\Deleted", self.inbox.info(uids[1]).flags)

    def test_connection_lost_removes_nothing(self) -> None:
        """Without QUIT nothing is removed, and the lock is released."""
        s = self.logged_in()
        s.cmd("DELE 1")
        s.cmd("DELE 2")
        s.lose()
        self.assertEqual(len(self.inbox.messages()), 4)
        self.assertEqual([m.flags for m in self.inbox.messages()], [frozenset()] * 4)
        self.assertFalse(self.locks.is_locked(ALICE))

    def test_snapshot_hides_new_mail(self) -> None:
        """A message arriving during the session is not shown in it."""
        s = self.logged_in()
        self.successResultOf(self.inbox.append(b"Subject: late\r\n\r\n"))
        self.assertTrue(s.cmd("STAT").startswith(b"+OK 4 "))
        self.assertEqual(s.cmd("RETR 5"), b"-ERR no message 5, the maildrop has 4\r\n")

    def test_retr_expunged_by_other_session(self) -> None:
        """RETR of a message another session expunged gets -ERR and the session goes on."""
        s = self.logged_in()
        uid = self.inbox.messages()[1].uid
        self.successResultOf(self.inbox.set_flags([uid], ["\\Deleted"], "add"))
        self.successResultOf(self.inbox.expunge([uid]))
        self.assertEqual(s.cmd("RETR 2"), b"-ERR message 2 was removed by another session\r\n")
        self.assertEqual(s.cmd("TOP 2 0"), b"-ERR message 2 was removed by another session\r\n")
        self.assertEqual(s.cmd("NOOP"), b"+OK\r\n")
        s.cmd("DELE 2")
        self.assertEqual(s.cmd("QUIT"), b"+OK pymail POP3 server signing off\r\n")
        self.assertEqual(len(self.inbox.messages()), 3)

    def test_storage_read_failure(self) -> None:
        """A message the backend cannot read gets -ERR [SYS/TEMP]; the session goes on."""
        box = FailingMailbox("INBOX")
        box.fail_read = True
        self.stores._stores[ALICE] = MemoryMailStore({"INBOX": box})
        self.successResultOf(box.append(b"A: 1\r\n\r\n"))
        s = self.logged_in()
        self.assertEqual(
            s.cmd("RETR 1"), b"-ERR [SYS/TEMP] cannot read message 1 now, try again later\r\n"
        )
        self.assertEqual(s.cmd("NOOP"), b"+OK\r\n")
        self.assertEqual(len(self.flushLoggedErrors(StorageError)), 1)

    def test_update_failure(self) -> None:
        """A failed expunge at QUIT gets -ERR [SYS/TEMP], and the lock is released."""
        box = FailingMailbox("INBOX")
        self.stores._stores[ALICE] = MemoryMailStore({"INBOX": box})
        self.successResultOf(box.append(b"A: 1\r\n\r\n"))
        s = self.logged_in()
        s.cmd("DELE 1")
        self.assertEqual(
            s.cmd("QUIT"), b"-ERR [SYS/TEMP] some deleted messages not removed, try again later\r\n"
        )
        self.assertTrue(s.transport.disconnecting)
        self.assertFalse(self.locks.is_locked(ALICE))
        self.assertEqual(len(self.flushLoggedErrors(StorageError)), 1)


class LockingTests(POP3TestCase):
    def test_second_session_in_use(self) -> None:
        """A second session on a locked maildrop gets -ERR [IN-USE] and may retry later."""
        first = self.logged_in()
        second = self.session()
        self.assertEqual(second.login(), replies.line(replies.IN_USE))
        self.assertIs(second.server.state, State.AUTHORIZATION)
        self.assertEqual(self.realm.logouts, [ALICE])
        first.cmd("QUIT")
        first.lose()
        self.assertTrue(second.login().startswith(b"+OK"))

    def test_lock_released_on_connection_lost(self) -> None:
        """A session that drops without QUIT releases the lock."""
        self.logged_in().lose()
        self.logged_in()

    def test_lock_released_on_timeout(self) -> None:
        """A session ended by the autologout timer releases the lock."""
        s = self.logged_in()
        self.clock.advance(600)
        s.lose()
        self.logged_in()

    def test_other_account_not_locked(self) -> None:
        """Another account's maildrop is not affected by the lock."""
        self.logged_in()
        self.assertTrue(self.session().login("bob@example.org", "two words").startswith(b"+OK"))

    def test_factories_share_process_locks(self) -> None:
        """Two factories built without locks share the process-wide ones."""
        a = POP3Factory(self.portal, self.clock, "a")
        b = POP3Factory(self.portal, self.clock, "b")
        self.assertIs(a.locks, PROCESS_LOCKS)
        first = Session(a)
        self.addCleanup(first.lose)
        first.login()
        self.assertTrue(Session(b).login().startswith(b"-ERR [IN-USE]"))


class ErrorTests(POP3TestCase):
    def test_wrong_state_commands(self) -> None:
        """Commands outside their state get -ERR and change nothing."""
        s = self.session()
        for command in ["STAT", "LIST", "RETR 1", "DELE 1", "NOOP", "RSET", "UIDL", "TOP 1 1"]:
            name = command.split()[0]
            self.assertEqual(
                s.cmd(command),
                b"-ERR %s is not allowed in the AUTHORIZATION state\r\n" % name.encode(),
            )
        s.login()
        self.assertEqual(s.cmd("USER x"), b"-ERR USER is not allowed in the TRANSACTION state\r\n")
        self.assertEqual(s.cmd("PASS x"), b"-ERR PASS is not allowed in the TRANSACTION state\r\n")
        self.assertIs(s.server.state, State.TRANSACTION)

    def test_unknown_commands(self) -> None:
        """Unknown and obsolete commands get -ERR; garbage is not echoed."""
        s = self.logged_in()
        self.assertEqual(s.cmd("APOP alice abc"), b"-ERR unknown command APOP\r\n")
        self.assertEqual(s.cmd("LAST"), b"-ERR unknown command LAST\r\n")
        self.assertEqual(s.send(b"\x00\xff\x1b[2J\r\n"), b"-ERR unknown command\r\n")
        self.assertEqual(s.cmd(""), b"-ERR empty command line\r\n")
        self.assertEqual(s.cmd("NOOP"), b"+OK\r\n")

    def test_bad_arguments(self) -> None:
        """Malformed or out-of-range message numbers get -ERR with a reason."""
        s = self.logged_in()
        cases = {
            "RETR": b"-ERR syntax: RETR msg\r\n",
            "RETR abc": b"-ERR syntax: RETR msg\r\n",
            "RETR -1": b"-ERR syntax: RETR msg\r\n",
            "RETR +1": b"-ERR syntax: RETR msg\r\n",
            "RETR 1 2": b"-ERR syntax: RETR msg\r\n",
            "RETR 99999999999": b"-ERR syntax: RETR msg\r\n",
            "RETR 0": b"-ERR no message 0, the maildrop has 4\r\n",
            "RETR 5": b"-ERR no message 5, the maildrop has 4\r\n",
            "DELE 9": b"-ERR no message 9, the maildrop has 4\r\n",
            "LIST 9": b"-ERR no message 9, the maildrop has 4\r\n",
            "UIDL 9": b"-ERR no message 9, the maildrop has 4\r\n",
            "TOP 1": b"-ERR syntax: TOP msg lines\r\n",
            "TOP 1 -1": b"-ERR syntax: TOP msg lines\r\n",
            "STAT 1": b"-ERR syntax: STAT\r\n",
            "NOOP x": b"-ERR syntax: NOOP\r\n",
        }
        for command, expected in cases.items():
            self.assertEqual(s.cmd(command), expected, command)
            s.cmd("NOOP")
        self.assertEqual(s.cmd("STAT"), b"+OK 4 %d\r\n" % sum(map(len, self.messages)))

    def test_over_long_line(self) -> None:
        """An over-long line gets one -ERR, and the commands after it still run."""
        s = self.logged_in()
        out = s.send(b"NOOP " + b"x" * 300 + b"\r\nSTAT\r\n")
        self.assertEqual(
            out.split(b"\r\n")[:2],
            [
                b"-ERR command line too long (max 255 octets with CRLF)",
                b"+OK 4 %d" % sum(map(len, self.messages)),
            ],
        )

    def test_over_long_line_in_pieces(self) -> None:
        """An over-long line arriving in pieces is answered once and skipped to its end."""
        s = self.logged_in()
        self.assertEqual(
            s.send(b"LIST " + b"1" * 400),
            b"-ERR command line too long (max 255 octets with CRLF)\r\n",
        )
        self.assertEqual(s.send(b"1" * 1000), b"")
        self.assertEqual(s.send(b"111\r\nNOOP\r\n"), b"+OK\r\n")

    def test_many_bad_commands_close(self) -> None:
        """Ten bad commands in a row close the connection, deleting nothing."""
        s = self.logged_in()
        s.cmd("DELE 1")
        out = s.send(b"BOGUS\r\n" * 20)
        self.assertEqual(out.count(b"-ERR"), 10)
        self.assertTrue(out.endswith(b"(too many errors, closing the connection)\r\n"))
        self.assertTrue(s.transport.disconnecting)
        s.lose()
        self.assertEqual(len(self.inbox.messages()), 4)

    def test_good_command_resets_error_count(self) -> None:
        """Errors separated by good commands do not close the connection."""
        s = self.logged_in()
        for _ in range(30):
            s.cmd("BOGUS")
            s.cmd("NOOP")
        self.assertFalse(s.transport.disconnecting)

    def test_verify_push_producer(self) -> None:
        """The server is a push producer for its transport."""
        s = self.session()
        self.assertTrue(verifyObject(IPushProducer, s.server))
        self.assertIs(s.transport.producer, s.server)


class PipeliningTests(POP3TestCase):
    def test_pipelined_commands_in_order(self) -> None:
        """Commands sent in one write are answered in order, in one write."""
        s = self.session()
        s.transport.writes = 0
        out = s.send(
            f"CAPA\r\nUSER {ALICE}\r\nPASS {PASSWORD}\r\nSTAT\r\nRETR 3\r\n"
            "DELE 1\r\nLIST 1\r\nNOOP\r\nQUIT\r\n".encode()
        )
        self.assertEqual(s.transport.writes, 1)
        _, _, rest = parse_multiline(out)
        lines = rest.split(b"\r\n", 3)
        self.assertEqual(lines[0], b"+OK send PASS")
        self.assertTrue(lines[1].startswith(b"+OK maildrop has 4"))
        self.assertTrue(lines[2].startswith(b"+OK 4 "))
        status, body, rest = parse_multiline(lines[3])
        self.assertEqual(body, DOTS)
        self.assertEqual(
            rest,
            b"+OK message 1 deleted\r\n-ERR message 1 is deleted\r\n+OK\r\n"
            b"+OK pymail POP3 server signing off (1 messages deleted)\r\n",
        )
        self.assertEqual(len(self.inbox.messages()), 3)

    def test_lines_split_across_reads(self) -> None:
        """A command arriving byte by byte is handled once complete."""
        s = self.logged_in()
        out = b"".join(s.send(bytes([b])) for b in b"STAT\r\n")
        self.assertTrue(out.startswith(b"+OK 4 "))

    def test_bare_lf_accepted(self) -> None:
        """Lines ending in a bare LF are accepted from lax clients."""
        s = self.logged_in()
        self.assertEqual(s.send(b"NOOP\nNOOP\n"), b"+OK\r\n+OK\r\n")

    def test_commands_after_quit_ignored(self) -> None:
        """Nothing after QUIT is processed."""
        s = self.logged_in()
        self.assertEqual(
            s.send(b"QUIT\r\nDELE 1\r\nQUIT\r\n"), b"+OK pymail POP3 server signing off\r\n"
        )
        self.assertEqual(len(self.inbox.messages()), 4)

    def test_paused_transport_holds_commands(self) -> None:
        """While the client does not read, commands wait; they run on resume."""
        s = self.logged_in()
        s.server.pauseProducing()
        self.assertEqual(s.send(b"NOOP\r\nSTAT\r\n"), b"")
        s.server.resumeProducing()
        out = s.take()
        self.assertTrue(out.startswith(b"+OK\r\n+OK 4 "))

    def test_flood_while_paused_stops_reading(self) -> None:
        """Past the pending-input limit the server stops reading from the transport."""
        s = self.logged_in()
        s.server.pauseProducing()
        s.send(b"NOOP\r\n" * 20000)
        self.assertEqual(s.transport.producerState, "paused")
        s.server.resumeProducing()
        self.assertEqual(s.transport.producerState, "producing")
        self.assertEqual(s.take().count(b"+OK\r\n"), 20000)


class TimeoutTests(POP3TestCase):
    def test_timeout_closes_silently(self) -> None:
        """After the autologout time without a command the connection closes with no reply."""
        s = self.logged_in()
        s.cmd("DELE 1")
        self.clock.advance(599)
        self.assertFalse(s.transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(s.transport.disconnecting)
        self.assertEqual(s.take(), b"")
        s.lose()
        self.assertEqual(len(self.inbox.messages()), 4)

    def test_commands_reset_timer(self) -> None:
        """Each command restarts the autologout timer."""
        s = self.logged_in()
        for _ in range(5):
            self.clock.advance(500)
            s.cmd("NOOP")
        self.assertFalse(s.transport.disconnecting)

    def test_timeout_counts_from_last_command(self) -> None:
        """The autologout time is counted from the last command, not from the first timer."""
        s = self.logged_in()
        self.clock.advance(500)
        s.cmd("NOOP")
        self.clock.advance(599)
        self.assertFalse(s.transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(s.transport.disconnecting)

    def test_lower_case_commands(self) -> None:
        """Keywords are case-insensitive (RFC 1939 section 3): "retr 1" is RETR."""
        s = self.logged_in()
        self.assertEqual(s.cmd("retr 1"), s.cmd("RETR 1"))
        self.assertEqual(s.cmd("Stat"), s.cmd("STAT"))

    def test_timeout_before_login(self) -> None:
        """The timer also runs in the AUTHORIZATION state."""
        s = self.session()
        self.clock.advance(600)
        self.assertTrue(s.transport.disconnecting)

    def test_custom_timeout(self) -> None:
        """The factory's timeout is used."""
        factory = POP3Factory(self.portal, self.clock, "h", timeout=30.0, locks=self.locks)
        s = Session(factory)
        self.clock.advance(30)
        self.assertTrue(s.transport.disconnecting)

    def test_no_timer_left_after_close(self) -> None:
        """No delayed call is left behind when the session ends."""
        s = self.logged_in()
        s.cmd("QUIT")
        s.lose()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class UidlStabilityTests(POP3TestCase):
    def uidl(self) -> bytes:
        s = self.logged_in()
        _, body, _ = parse_multiline(s.cmd("UIDL"))
        s.cmd("QUIT")
        s.lose()
        return body

    def test_stable_across_sessions(self) -> None:
        """Two sessions see the same unique-ids."""
        self.assertEqual(self.uidl(), self.uidl())

    def test_stable_after_flag_change(self) -> None:
        """Changing flags does not change a unique-id."""
        before = self.uidl()
        uids = [m.uid for m in self.inbox.messages()]
        self.successResultOf(self.inbox.set_flags(uids, ["\\Seen", "$Label1"], "add"))
        self.assertEqual(self.uidl(), before)

    def test_stable_after_other_deletions(self) -> None:
        """Unique-ids follow the message, not its number, after deletions."""
        before = dict(line.split(b" ") for line in self.uidl().splitlines())
        s = self.logged_in()
        s.cmd("DELE 1")
        s.cmd("QUIT")
        s.lose()
        after = dict(line.split(b" ") for line in self.uidl().splitlines())
        self.assertEqual(list(after.values()), list(before.values())[1:])

    def test_valid_characters(self) -> None:
        """Every unique-id is 1 to 70 characters from 0x21 to 0x7E."""
        for line in self.uidl().splitlines():
            value = line.split(b" ", 1)[1]
            self.assertTrue(1 <= len(value) <= 70)
            self.assertTrue(all(0x21 <= c <= 0x7E for c in value))


class InterfaceTests(SynchronousTestCase):
    def test_factory_builds_pop3_server(self) -> None:
        """POP3Factory builds POP3Server sessions that know their factory."""
        portal, _, _ = memory_portal({ALICE: PASSWORD})
        factory = POP3Factory(portal, Clock(), "h", locks=MaildropLocks())
        server = factory.buildProtocol(None)
        self.assertIsInstance(server, POP3Server)
        self.assertIs(server.factory, factory)

    def test_memory_mailbox_is_imailbox(self) -> None:
        """The failing test double still provides IMailbox."""
        self.assertTrue(verifyObject(IMailbox, FailingMailbox("INBOX")))

    def test_account_interface(self) -> None:
        """The avatars the server logs in as provide IAccount."""
        portal, _, _ = memory_portal({ALICE: PASSWORD})
        from twisted.cred.credentials import UsernamePassword

        result: list[Any] = []
        portal.login(
            UsernamePassword(ALICE.encode(), PASSWORD.encode()), None, IAccount
        ).addCallback(result.append)
        self.assertTrue(IAccount.providedBy(result[0][1]))
