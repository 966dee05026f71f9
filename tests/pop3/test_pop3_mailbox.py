"""Tests for pymail.pop3.mailbox: UIDL values, the maildrop snapshot, locks."""

from __future__ import annotations

import re

from twisted.trial.unittest import SynchronousTestCase

from pymail.pop3.mailbox import (
    Maildrop,
    MaildropLocks,
    MessageDeleted,
    NoSuchMessageNumber,
    uidl_for_key,
)
from pymail.storage.memory import MemoryMailbox

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
