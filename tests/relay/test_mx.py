"""Tests for pymail.relay.mx: MX ordering, implicit MX, null MX, DNS failures."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from pymail.interfaces import IResolver
from pymail.relay.mx import (
    DNSPermanentError,
    DNSPythonResolver,
    DNSTemporaryError,
    FakeResolver,
    MXHost,
    MXResolver,
    NullMXError,
    parse_nameserver,
)
from pymail.testing import ThreadlessReactor


def no_shuffle(items: list[Any]) -> None:
    pass


def reverse(items: list[Any]) -> None:
    items.reverse()


DNS = FakeResolver(
    mx={
        "two.example": [(20, "mx2.two.example"), (10, "mx1.two.example")],
        "equal.example": [(10, "a.equal.example"), (10, "b.equal.example"),
                          (5, "first.equal.example")],
        "null.example": [(0, "")],
        "partly.example": [(10, "broken.partly.example"), (20, "ok.partly.example")],
        "noaddr.example": [(10, "gone.noaddr.example")],
    },
    addresses={
        "mx1.two.example": ["192.0.2.1", "2001:db8::1"],
        "mx2.two.example": ["192.0.2.2"],
        "a.equal.example": ["192.0.2.10"],
        "b.equal.example": ["192.0.2.11"],
        "first.equal.example": ["192.0.2.5"],
        "implicit.example": ["192.0.2.30"],
        "ok.partly.example": ["192.0.2.40"],
    },
    failures={"servfail.example": "SERVFAIL", "slow.example": "TIMEOUT",
              "broken.partly.example": "SERVFAIL"},
)


class MXTests(SynchronousTestCase):
    def hosts(self, domain: str, shuffle: Any = no_shuffle) -> list[MXHost]:
        return self.successResultOf(MXResolver(DNS, shuffle).hosts(domain))

    def error(self, domain: str) -> Exception:
        return self.failureResultOf(MXResolver(DNS, no_shuffle).hosts(domain)).value

    def test_fakes_provide_the_interface(self) -> None:
        """FakeResolver and DNSPythonResolver provide IResolver."""
        verifyObject(IResolver, DNS)
        verifyObject(IResolver, DNSPythonResolver(ThreadlessReactor(), [("127.0.0.1", 53)]))

    def test_by_preference_ipv6_first(self) -> None:
        """Lower preference first; each host's IPv6 addresses before IPv4."""
        self.assertEqual(self.hosts("two.example"), [
            MXHost("mx1.two.example", 10, ("2001:db8::1", "192.0.2.1")),
            MXHost("mx2.two.example", 20, ("192.0.2.2",)),
        ])

    def test_equal_preference_shuffled(self) -> None:
        """Hosts of equal preference are shuffled among themselves only."""
        names = [h.name for h in self.hosts("equal.example", reverse)]
        self.assertEqual(names, ["first.equal.example", "b.equal.example", "a.equal.example"])

    def test_implicit_mx(self) -> None:
        """A domain without MX records but with an address is its own MX."""
        self.assertEqual(self.hosts("implicit.example"),
                         [MXHost("implicit.example", 0, ("192.0.2.30",))])

    def test_null_mx(self) -> None:
        """A null MX is a permanent 5.1.10 failure."""
        e = self.error("null.example")
        self.assertIsInstance(e, NullMXError)
        self.assertEqual(e.status, "5.1.10")

    def test_nxdomain_is_permanent(self) -> None:
        """NXDOMAIN is permanent (5.1.2)."""
        e = self.error("nowhere.example")
        self.assertIsInstance(e, DNSPermanentError)
        self.assertEqual(e.status, "5.1.2")

    def test_servfail_and_timeout_are_temporary(self) -> None:
        """SERVFAIL and timeouts are temporary (4.4.3)."""
        for domain in ("servfail.example", "slow.example"):
            e = self.error(domain)
            self.assertIsInstance(e, DNSTemporaryError)
            self.assertEqual(e.status, "4.4.3")

    def test_failing_host_skipped(self) -> None:
        """An MX host whose lookup fails is skipped when another works."""
        self.assertEqual([h.name for h in self.hosts("partly.example")], ["ok.partly.example"])

    def test_no_host_with_address(self) -> None:
        """MX hosts that do not exist make the domain undeliverable."""
        self.assertIsInstance(self.error("noaddr.example"), DNSPermanentError)

    def test_address_literal(self) -> None:
        """An address-literal domain is used as it is, with no DNS query."""
        self.assertEqual(self.hosts("[IPv6:2001:db8::7]"),
                         [MXHost("[IPv6:2001:db8::7]", 0, ("2001:db8::7",))])

    def test_parse_nameserver(self) -> None:
        """Nameservers are IPv4 or IPv6 addresses with an optional port."""
        self.assertEqual(parse_nameserver("192.0.2.53"), ("192.0.2.53", 53))
        self.assertEqual(parse_nameserver("127.0.0.1:5353"), ("127.0.0.1", 5353))
        self.assertEqual(parse_nameserver("2001:db8::53"), ("2001:db8::53", 53))
        self.assertEqual(parse_nameserver("[::1]:5300"), ("::1", 5300))
        for bad in ("ns.example", "1.2.3.4:x", "[::1]:99999"):
            self.assertRaises(ValueError, parse_nameserver, bad)
