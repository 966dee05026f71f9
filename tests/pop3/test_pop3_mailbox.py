"""Tests for pymail.pop3.mailbox: UIDL values, the maildrop snapshot, locks."""

from __future__ import annotations

import os
import re
from typing import Any

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from pymail.errors import NoSuchMessage
from pymail.interfaces import ISizedRead

from pymail.pop3.mailbox import (
    Maildrop,
    MaildropLocks,
    MessageDeleted,
    NoSuchMessageNumber,
    uidl_for_key,
)
from pymail.storage.maildir import MaildirStoreFactory
from pymail.storage.memory import MemoryMailbox
from pymail.testing import ThreadlessReactor

_VALID_UIDL = re.compile(r"[\x21-\x7e]{1,70}")


class UidlTests(SynchronousTestCase):
    def test_keeps_valid_key(self) -> None:
        """A key that is a valid unique-id is used unchanged."""
        key = "1700000000.M12P34Q5.host.example.org"
        self.assertEqual(uidl_for_key(key), key)

    def test_hashes_invalid_keys(self) -> None:
        """Long, spaced, empty and non-ASCII keys become valid unique-ids."""
        for key in ["x" * 71, "a b", "", "caf\u00e9", "tab\there", "\x7f"]:
            uidl = uidl_for_key(key)
            self.assertTrue(_VALID_UIDL.fullmatch(uidl), (key, uidl))

    def test_hash_is_stable_and_distinct(self) -> None:
        """The same key gives the same unique-id; different keys differ."""
        self.assertEqual(uidl_for_key("a b"), uidl_for_key("a b"))
        self.assertNotEqual(uidl_for_key("a b"), uidl_for_key("a  b"))

    def test_key_shaped_like_a_hash_is_hashed(self) -> None:
        """A key starting with the hash marker is hashed, so it cannot collide with one."""
        hashed = uidl_for_key("a b")
        self.assertNotEqual(uidl_for_key(hashed), hashed)

    def test_seventy_characters_kept(self) -> None:
        """A 70-character key is still valid and kept."""
        self.assertEqual(uidl_for_key("k" * 70), "k" * 70)


class MaildropTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.box = MemoryMailbox("INBOX")
        for body in [b"A: 1\r\n\r\none\r\n", b"A: 2\r\n\r\ntwo!\r\n", b"A: 3\r\n\r\n3\r\n"]:
            self.successResultOf(self.box.append(body))
        self.drop = Maildrop.snapshot(self.box)

    def test_snapshot_ignores_later_arrivals(self) -> None:
        """Messages appended after the snapshot are not in it."""
        self.successResultOf(self.box.append(b"A: 4\r\n\r\n"))
        self.assertEqual(len(self.drop), 3)

    def test_bad_numbers(self) -> None:
        """Numbers outside the maildrop and deleted messages are refused."""
        self.assertRaises(NoSuchMessageNumber, self.drop.info, 0)
        self.assertRaises(NoSuchMessageNumber, self.drop.info, 4)
        self.drop.delete(2)
        self.assertRaises(MessageDeleted, self.drop.info, 2)
        self.assertRaises(MessageDeleted, self.drop.delete, 2)

    def test_commit_expunges_only_marked(self) -> None:
        """Commit removes the marked messages only, even if others are \\Deleted."""
        self.successResultOf(self.box.set_flags([3], ["\\Deleted"], "add"))
        self.drop.delete(1)
        self.assertEqual(self.successResultOf(self.drop.commit()), [1])
        self.assertEqual([m.uid for m in self.box.messages()], [2, 3])

    def test_reset_unmarks(self) -> None:
        """Reset clears the marks, so commit removes nothing."""
        self.drop.delete(1)
        self.drop.reset()
        self.assertEqual(self.drop.stat(), (3, sum(m.size for m in self.box.messages())))
        self.assertEqual(self.successResultOf(self.drop.commit()), [])


class SizedReadTests(SynchronousTestCase):
    """Maildir's ISizedRead, which RETR uses for messages up to a chunk."""

    MESSAGES = [
        b"From: a@example.org\r\nSubject: plain\r\n\r\nhello\r\n.dot line\r\n",
        b"Subject: bare CR\r\n\r\na\rb\r\n",
        b"Subject: no final line end\r\n\r\nlast",
        b"",
    ]

    def setUp(self) -> None:
        data = self.mktemp()
        store = MaildirStoreFactory(ThreadlessReactor()).open_store("alice@example.org", data)
        self.box: Any = self.successResultOf(store.get_mailbox("INBOX"))
        for message in self.MESSAGES:
            self.successResultOf(self.box.append(message))

    def test_maildir_provides_sized_read(self) -> None:
        """The Maildir mailbox declares and implements ISizedRead."""
        self.assertTrue(verifyObject(ISizedRead, self.box))

    def test_same_bytes_as_read(self) -> None:
        """read_sized gives byte for byte what read gives, with the right size or a wrong one."""
        for info in self.box.messages():
            expected = self.box.read(info.uid)
            for size in (info.size, 0, 1, info.size * 3):
                self.assertEqual(self.box.read_sized(info.uid, size), expected, (info, size))

    def test_maildrop_reads_wire_form(self) -> None:
        """The maildrop reads Maildir messages in wire form, as they were appended."""
        drop = Maildrop.snapshot(self.box)
        self.assertEqual([drop.read(n) for n in range(1, len(drop) + 1)], self.MESSAGES)

    def test_removed_file_is_no_such_message(self) -> None:
        """A message whose file another program removed raises NoSuchMessage."""
        info = self.box.messages()[0]
        for sub in ("new", "cur"):
            folder = os.path.join(self.box.path, sub)
            for name in os.listdir(folder):
                if name.startswith(info.key):
                    os.unlink(os.path.join(folder, name))
        self.assertRaises(NoSuchMessage, self.box.read_sized, info.uid, info.size)


class LockTests(SynchronousTestCase):
    def test_exclusive_per_address(self) -> None:
        """A second lock on the same address (any case) is refused until release."""
        locks = MaildropLocks()
        lock = locks.acquire("alice@example.org")
        assert lock is not None
        self.assertIsNone(locks.acquire("Alice@Example.org"))
        self.assertIsNotNone(locks.acquire("bob@example.org"))
        lock.release()
        lock.release()
        self.assertFalse(locks.is_locked("alice@example.org"))
        self.assertIsNotNone(locks.acquire("alice@example.org"))
