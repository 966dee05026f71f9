"""Tests for POP3Server's read-ahead of the next message for clients that RETR in order."""

from __future__ import annotations

from pymail.errors import StorageError
from pymail.storage.memory import MemoryMailbox, MemoryMailStore

from tests.pop3.test_pop3_server import ALICE, POP3TestCase, parse_multiline


class CountingMailbox(MemoryMailbox):
    """A memory mailbox that counts reads per UID and can fail reads of chosen UIDs."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.reads: list[int] = []
        self.broken: set[int] = set()

    def read(self, uid: int) -> bytes:
        self.reads.append(uid)
        if uid in self.broken:
            raise StorageError("disk on fire")
        return super().read(uid)


class ReadAheadTests(POP3TestCase):
    def setUp(self) -> None:
        super().setUp()
        self.box = CountingMailbox("INBOX")
        self.stores._stores[ALICE] = MemoryMailStore({"INBOX": self.box})
        for message in self.messages:
            self.successResultOf(self.box.append(message))
        self.uids = [m.uid for m in self.box.messages()]

    def test_in_order_byte_exact_each_read_once(self) -> None:
        """RETR of every message in order is byte-exact and reads each message once."""
        s = self.logged_in()
        for number, message in enumerate(self.messages, 1):
            status, body, rest = parse_multiline(s.cmd(f"RETR {number}"))
            self.assertEqual((status, body, rest), (b"+OK %d octets" % len(message), message, b""))
        self.assertEqual(self.box.reads, self.uids)

    def test_next_message_read_after_reply(self) -> None:
        """After RETR n the next message is read before the client asks, and not again."""
        s = self.logged_in()
        s.cmd("RETR 1")
        self.assertEqual(self.box.reads, self.uids[:2])
        self.assertEqual(parse_multiline(s.cmd("RETR 2"))[1], self.messages[1])
        self.assertEqual(self.box.reads, self.uids[:3])

    def test_read_ahead_kept_across_dele(self) -> None:
        """RETR n, DELE n, RETR n+1 (poplib's and fetchmail's loop) still uses the read-ahead."""
        s = self.logged_in()
        s.cmd("RETR 1")
        self.assertEqual(s.cmd("DELE 1"), b"+OK message 1 deleted\r\n")
        self.assertEqual(parse_multiline(s.cmd("RETR 2"))[1], self.messages[1])
        self.assertEqual(self.box.reads, self.uids[:3])

    def test_deleted_message_not_served(self) -> None:
        """A message read ahead and then marked deleted is refused like any deleted one."""
        s = self.logged_in()
        s.cmd("RETR 1")
        s.cmd("DELE 2")
        self.assertEqual(s.cmd("RETR 2"), b"-ERR message 2 is deleted\r\n")

    def test_other_message_gets_its_own_content(self) -> None:
        """A RETR of another number than the one read ahead gets its own message, byte-exact."""
        s = self.logged_in()
        s.cmd("RETR 1")
        self.assertEqual(parse_multiline(s.cmd("RETR 3"))[1], self.messages[2])
        self.assertEqual(parse_multiline(s.cmd("RETR 2"))[1], self.messages[1])
        self.assertEqual(parse_multiline(s.cmd("TOP 4 0"))[0], b"+OK top of message follows")

    def test_failed_read_ahead_left_to_retr(self) -> None:
        """A read-ahead that fails sends and logs nothing; the RETR itself reports the error."""
        self.box.broken.add(self.uids[1])
        s = self.logged_in()
        status, body, rest = parse_multiline(s.cmd("RETR 1"))
        self.assertEqual((body, rest), (self.messages[0], b""))
        self.assertEqual(self.flushLoggedErrors(StorageError), [])
        self.assertEqual(
            s.cmd("RETR 2"), b"-ERR [SYS/TEMP] cannot read message 2 now, try again later\r\n"
        )
        self.assertEqual(len(self.flushLoggedErrors(StorageError)), 1)
        self.assertEqual(s.cmd("NOOP"), b"+OK\r\n")

    def test_no_read_ahead_past_the_last_message(self) -> None:
        """RETR of the last message reads nothing more."""
        s = self.logged_in()
        s.cmd("RETR 4")
        s.cmd("RETR 4")
        self.assertEqual(self.box.reads, [self.uids[3]] * 2)

    def test_big_message_not_read_ahead(self) -> None:
        """A message bigger than READ_AHEAD_MAX is left to its RETR."""
        s = self.logged_in()
        s.server.READ_AHEAD_MAX = len(self.messages[1]) - 1
        s.cmd("RETR 1")
        self.assertEqual(self.box.reads, self.uids[:1])
        self.assertEqual(parse_multiline(s.cmd("RETR 2"))[1], self.messages[1])

    def test_pipelined_then_single(self) -> None:
        """A pipelined batch keeps its order, and a lone RETR after it finds the right message."""
        s = self.logged_in()
        rest = s.send(b"RETR 1\r\nRETR 2\r\nNOOP\r\n")
        for message in self.messages[:2]:
            _status, body, rest = parse_multiline(rest)
            self.assertEqual(body, message)
        self.assertEqual(rest, b"+OK\r\n")
        self.assertEqual(parse_multiline(s.cmd("RETR 3"))[1], self.messages[2])
        self.assertEqual(self.box.reads, self.uids[:4])

    def test_quit_drops_read_ahead(self) -> None:
        """The message read ahead is not kept once the session ends."""
        s = self.logged_in()
        s.cmd("RETR 1")
        self.assertIsNotNone(s.server._ahead)
        s.cmd("QUIT")
        self.assertIsNone(s.server._ahead)
