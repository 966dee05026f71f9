"""Tests for pymail.relay.queue: the durable spool and its JSON envelopes."""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from pymail.relay.queue import (
    DELIVERED,
    ENVELOPE_FORMAT,
    QueuedMessage,
    QueuedRecipient,
    QueueError,
    Spool,
)
from pymail.testing import ThreadlessReactor


def entry(queue_id: str = "Q1", *recipients: str) -> QueuedMessage:
    rcpts = [QueuedRecipient(r) for r in (recipients or ("bob@remote.example",))]
    return QueuedMessage(queue_id, "alice@example.com", rcpts, created=100.0, next_attempt=100.0)


class _HeldPool:
    """A thread pool that runs jobs only when the test says so."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Any, Any, tuple[Any, ...]]] = []

    def callInThreadWithCallback(self, on_result: Any, f: Any, *args: Any) -> None:
        self.jobs.append((on_result, f, args))

    def run_one(self) -> None:
        on_result, f, args = self.jobs.pop(0)
        try:
            on_result(True, f(*args))
        except Exception as e:  # pragma: no cover - reported to the test
            on_result(False, e)


class _HeldReactor(Clock):
    def __init__(self) -> None:
        super().__init__()
        self.pool = _HeldPool()

    def getThreadPool(self) -> _HeldPool:
        return self.pool

    def callFromThread(self, f: Any, *args: Any) -> None:
        f(*args)


class SpoolTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.path = self.mktemp()
        self.spool = Spool(self.path, ThreadlessReactor())

    def test_add_then_load(self) -> None:
        """An added message is on disk as .msg and .json and loads back equal."""
        e = entry("Q1", "bob@remote.example", "joe@other.example")
        e.recipients[0].notify = ("FAILURE",)
        e.recipients[0].orcpt = "rfc822;b@remote.example"
        self.successResultOf(self.spool.add(e, b"Subject: x\r\n\r\nbody\r\n"))
        self.assertEqual(sorted(os.listdir(self.path)), ["Q1.json", "Q1.msg"])
        [loaded] = Spool(self.path).load()
        self.assertEqual(loaded, e)
        self.assertEqual(self.spool.read_message_now("Q1"), b"Subject: x\r\n\r\nbody\r\n")
        self.assertEqual(loaded.size, len(b"Subject: x\r\n\r\nbody\r\n"))

    def test_envelope_is_documented_json(self) -> None:
        """The envelope is plain JSON with the format marker and the documented keys."""
        self.successResultOf(self.spool.add(entry(), b"m\r\n"))
        with open(os.path.join(self.path, "Q1.json"), encoding="utf-8") as f:
            data = json.load(f)
        self.assertEqual(data["format"], ENVELOPE_FORMAT)
        self.assertEqual(
            set(data),
            {"format", "id", "sender", "created", "next_attempt", "attempts", "client", "ret",
             "envid", "smtputf8", "body", "size", "delay_warned", "recipients"},
        )
        self.assertEqual(
            set(data["recipients"][0]), {"address", "state", "notify", "orcpt", "reply", "remote"}
        )

    def test_crash_leftovers_removed(self) -> None:
        """A .msg without envelope and temporary files (never acknowledged) go at load."""
        self.successResultOf(self.spool.add(entry("Q1"), b"m\r\n"))
        for name in ("Q2.msg", ".Q3.json.tmp"):
            with open(os.path.join(self.path, name), "wb") as f:
                f.write(b"half")
        self.assertEqual([e.queue_id for e in self.spool.load()], ["Q1"])
        self.assertEqual(sorted(os.listdir(self.path)), ["Q1.json", "Q1.msg"])

    def test_rewrite_and_remove(self) -> None:
        """A rewrite replaces the envelope; removal deletes both files; no resurrection."""
        e = entry()
        self.successResultOf(self.spool.add(e, b"m\r\n"))
        e.recipients[0].state = DELIVERED
        self.successResultOf(self.spool.rewrite(e))
        self.assertEqual(self.spool.read_envelope_now("Q1").recipients[0].state, DELIVERED)
        self.successResultOf(self.spool.remove("Q1"))
        self.successResultOf(self.spool.rewrite(e))
        self.assertEqual(os.listdir(self.path), [])
        self.assertRaises(QueueError, self.spool.read_envelope_now, "Q1")

    def test_unreadable_envelope_skipped(self) -> None:
        """A corrupt envelope is reported and skipped, not fatal."""
        self.successResultOf(self.spool.add(entry("Q1"), b"m\r\n"))
        with open(os.path.join(self.path, "Q0.json"), "w") as f:
            f.write("{not json")
        self.assertEqual([e.queue_id for e in self.spool.entries()], ["Q1"])
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    def test_group_commit(self) -> None:
        """Additions made while a write is running share the next write job."""
        reactor = _HeldReactor()
        spool = Spool(self.mktemp(), reactor)
        first = spool.add(entry("Q1"), b"1\r\n")
        second = spool.add(entry("Q2"), b"2\r\n")
        third = spool.add(entry("Q3"), b"3\r\n")
        self.assertEqual(len(reactor.pool.jobs), 1)
        reactor.pool.run_one()
        self.successResultOf(first)
        self.assertNoResult(second)
        self.assertEqual(len(reactor.pool.jobs), 1)  # Q2 and Q3 together
        reactor.pool.run_one()
        self.successResultOf(second)
        self.successResultOf(third)
        self.assertEqual(spool.ids(), ["Q1", "Q2", "Q3"])

    def test_write_failure_leaves_nothing(self) -> None:
        """A failed write fails the Deferred and leaves no envelope behind."""
        # A directory where the message file should go: the write fails
        # (even for root, who ignores permissions).
        os.mkdir(os.path.join(self.path, "Q1.msg"))
        self.failureResultOf(self.spool.add(entry(), b"m\r\n"), QueueError)
        self.assertEqual(self.spool.ids(), [])
