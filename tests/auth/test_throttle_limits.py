"""Tests for pymail.auth.throttle (failed-login throttling) and pymail.auth.limits."""

from __future__ import annotations

from typing import Any

from twisted.cred.error import UnauthorizedLogin
from twisted.cred.credentials import UsernamePassword
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from pymail.auth import sasl
from pymail.auth.limits import ConnectionLimits, LimitedFactory
from pymail.auth.throttle import LoginBlocked, LoginThrottle
from pymail.interfaces import IAccount
from pymail.testing import memory_portal

ALICE = "alice@example.org"


class ThrottleTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.portal, _, _ = memory_portal({ALICE: "right"})
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def attempt(self, throttle: LoginThrottle, password: str, peer: str = "192.0.2.1",
                user: str = ALICE) -> Any:
        d = throttle.login(self.portal, UsernamePassword(user.encode(), password.encode()),
                           IAccount, peer=peer, service="pop3")
        return d

    def test_unknown_user_and_wrong_password_take_the_same_time(self) -> None:
        """Both failures are answered exactly at the padding, so timing reveals no account."""
        for user in (ALICE, "nobody@example.org"):
            throttle = LoginThrottle(self.clock, failure_min=0.4, delay=0.0)
            d = self.attempt(throttle, "wrong", user=user)
            self.clock.advance(0.399)
            self.assertNoResult(d)
            self.clock.advance(0.002)
            self.failureResultOf(d, UnauthorizedLogin)

    def test_delay_grows_and_is_capped(self) -> None:
        """Each further failure doubles the delay, up to the cap."""
        throttle = LoginThrottle(self.clock, failure_min=0.0, delay=0.5, max_delay=2.0,
                                 block_after=100)
        waits = []
        for _ in range(5):
            d = self.attempt(throttle, "wrong")
            start = self.clock.seconds()
            while not d.called:
                self.clock.advance(0.25)
            self.failureResultOf(d)
            waits.append(self.clock.seconds() - start)
        self.assertEqual(waits, [0.5, 1.0, 2.0, 2.0, 2.0])

    def test_block_after_failures_then_expiry(self) -> None:
        """After N failures from one address even the right password fails, until the block ends."""
        throttle = LoginThrottle(self.clock, failure_min=0.0, delay=0.0, block_after=3,
                                 block_for=60.0)
        for _ in range(3):
            self.failureResultOf(self.attempt(throttle, "wrong"))
        self.failureResultOf(self.attempt(throttle, "right"), LoginBlocked)
        # Another address is not blocked.
        self.successResultOf(self.attempt(throttle, "right", peer="192.0.2.2"))
        self.clock.advance(61)
        self.successResultOf(self.attempt(throttle, "right"))

    def test_spread_guessing_blocks_the_account(self) -> None:
        """Failures for one account from many addresses block password logins to it."""
        throttle = LoginThrottle(self.clock, failure_min=0.0, delay=0.0, block_after=100,
                                 account_block_after=5)
        for i in range(5):
            self.failureResultOf(self.attempt(throttle, "wrong", peer=f"198.51.100.{i}"))
        self.failureResultOf(self.attempt(throttle, "right", peer="203.0.113.7"), LoginBlocked)

    def test_success_forgets_failures(self) -> None:
        """A successful login clears the address's failures."""
        throttle = LoginThrottle(self.clock, failure_min=0.0, delay=0.0, block_after=3)
        for _ in range(2):
            self.failureResultOf(self.attempt(throttle, "wrong"))
        self.successResultOf(self.attempt(throttle, "right"))
        self.assertEqual(throttle.failures("192.0.2.1", ALICE), 0)

    def test_failure_log_line_is_stable_and_safe(self) -> None:
        """Each failure logs 'pymail auth failure: service= rhost= user= reason=' with no CR/LF."""
        from twisted.logger import formatEvent

        throttle = LoginThrottle(self.clock, failure_min=0.0, delay=0.0)
        self.failureResultOf(self.attempt(throttle, "wrong", user="evil\r\nuser x"))
        lines = [formatEvent(e) for e in self.events if "auth failure" in e.get("log_format", "")]
        self.assertEqual(lines, ["pymail auth failure: service=pop3 rhost=192.0.2.1 "
                                 "user=evil\\x0d\\x0auser\\x20x reason=bad-credentials"])
        self.assertEqual(self.events[-1]["log_level"], LogLevel.info)

    def test_memory_is_bounded(self) -> None:
        """Past max_tracked addresses the oldest are forgotten."""
        throttle = LoginThrottle(self.clock, failure_min=0.0, delay=0.0, max_tracked=10)
        for i in range(50):
            throttle.record_failure(f"10.0.0.{i}", None)
        self.assertEqual(len(throttle._by_ip), 10)


class SASLTests(SynchronousTestCase):
    def test_mechanisms_follow_the_policy(self) -> None:
        """PLAIN and LOGIN are offered over TLS, from loopback under 'loopback', else not."""
        self.assertEqual(sasl.mechanisms("loopback", False, True), [b"PLAIN", b"LOGIN"])
        self.assertEqual(sasl.mechanisms("loopback", False, False), [])
        self.assertEqual(sasl.mechanisms("tls", False, True), [])
        self.assertEqual(sasl.mechanisms("tls", True, False), [b"PLAIN", b"LOGIN"])
        self.assertEqual(sasl.mechanisms("always", False, False), [b"PLAIN", b"LOGIN"])

    def test_loopback_addresses(self) -> None:
        """127.0.0.0/8, ::1 and IPv4-mapped loopback are loopback; others are not."""
        for host in ("127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1"):
            self.assertTrue(sasl.is_loopback(host), host)
        for host in ("10.0.0.1", "::2", "", None, "1270.0.0.1x"):
            self.assertFalse(sasl.is_loopback(host), host)

    def test_plain_authzid_must_match(self) -> None:
        """PLAIN with another user's authorization identity is refused (no proxy login)."""
        import base64

        token = base64.b64encode(b"bob\0alice\0pw")
        self.assertRaises(sasl.MalformedResponse, sasl.start, b"PLAIN", token)
        done = sasl.start(b"plain", base64.b64encode(b"alice\0alice\0pw")).step
        assert isinstance(done, sasl.Done)
        self.assertEqual((done.credentials.username, done.credentials.password),
                         (b"alice", b"pw"))

    def test_empty_initial_response_and_too_long(self) -> None:
        """'=' is an empty response; an over-long one is refused before decoding."""
        self.assertEqual(sasl.decode(b"="), b"")
        self.assertRaises(sasl.MalformedResponse, sasl.decode, b"QUFB" * 2000)


class Recorder(Protocol):
    authenticated = False
    received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data


class LimitsTests(SynchronousTestCase):
    def connect(self, factory: LimitedFactory, host: str) -> tuple[Any, StringTransport]:
        transport = StringTransport(peerAddress=IPv4Address("TCP", host, 5000))
        protocol = factory.buildProtocol(IPv4Address("TCP", host, 5000))
        protocol.makeConnection(transport)
        return protocol, transport

    def test_per_ip_and_total_limits(self) -> None:
        """Past the per-IP or total limit a connection is told so and closed; a close frees one."""
        clock = Clock()
        limits = ConnectionLimits(clock, max_total=3, max_per_ip=2, preauth_timeout=0)
        factory = LimitedFactory(limits, Factory.forProtocol(Recorder), label="[pop3]",
                                 refusal=b"-ERR too many\r\n")
        a1, t1 = self.connect(factory, "192.0.2.1")
        a2, t2 = self.connect(factory, "192.0.2.1")
        a3, t3 = self.connect(factory, "192.0.2.1")
        self.assertEqual((t1.value(), t2.value(), t3.value()), (b"", b"", b"-ERR too many\r\n"))
        self.assertTrue(t3.disconnecting)
        a3.connectionLost(None)
        b1, u1 = self.connect(factory, "192.0.2.2")
        b2, u2 = self.connect(factory, "192.0.2.3")
        self.assertEqual((u1.value(), u2.value()), (b"", b"-ERR too many\r\n"))
        a1.connectionLost(None)
        c1, v1 = self.connect(factory, "192.0.2.4")
        self.assertEqual(v1.value(), b"")
        self.assertEqual(limits.total, 3)

    def test_preauth_timeout_closes_unauthenticated_only(self) -> None:
        """A session not logged in by the pre-auth timeout is closed; a logged-in one stays."""
        clock = Clock()
        limits = ConnectionLimits(clock, preauth_timeout=10)
        factory = LimitedFactory(limits, Factory.forProtocol(Recorder), label="[pop3]",
                                 refusal=b"", refusal_timeout=b"-ERR late\r\n")
        idle, t_idle = self.connect(factory, "192.0.2.1")
        busy, t_busy = self.connect(factory, "192.0.2.2")
        busy.wrappedProtocol.authenticated = True
        clock.advance(10)
        self.assertEqual(t_idle.value(), b"-ERR late\r\n")
        self.assertTrue(t_idle.disconnecting)
        self.assertFalse(t_busy.disconnecting)
