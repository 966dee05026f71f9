"""
Where mail for a domain goes: MX resolution (RFC 5321 section 5.1) with
dnspython, run in the reactor's thread pool so the reactor never waits.

- MX records are tried by preference, in random order among equal
  preferences (the randomness is injected);
- a domain with no MX record but an address record is its own MX
  ("implicit MX");
- a null MX (``MX 0 .``, RFC 7505) means the domain accepts no mail: the
  message bounces at once with ``5.1.10``;
- NXDOMAIN bounces (``5.1.2``); SERVFAIL, timeouts and unreachable
  nameservers are temporary (``4.4.3``): the message is retried later;
- every MX host's AAAA and A records are used, IPv6 first.

:class:`DNSPythonResolver` is the real :class:`~pymail.interfaces.IResolver`;
:class:`FakeResolver` answers from a dict, for tests.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.threads import deferToThreadPool
from zope.interface import implementer

from pymail.interfaces import IResolver


class DNSError(Exception):
    """A DNS lookup failed; ``str()`` says which name and why."""

    #: The RFC 3463 status code the failure maps to.
    status = "4.4.3"


class DNSTemporaryError(DNSError):
    """SERVFAIL, a timeout, no nameserver answered: try again later."""


class DNSPermanentError(DNSError):
    """The name does not exist (NXDOMAIN): do not try again."""

    status = "5.1.2"


class NullMXError(DNSPermanentError):
    """The domain publishes a null MX (RFC 7505): it accepts no mail."""

    status = "5.1.10"


@attrs.frozen
class MXHost:
    """
    One host to try, with its addresses in the order to try them.

    :ivar name: the MX host name (or the domain itself for an implicit MX).
    :ivar preference: the MX preference (0 for an implicit MX).
    :ivar addresses: IP addresses, IPv6 first.
    """

    name: str
    preference: int
    addresses: tuple[str, ...]


def parse_nameserver(text: str) -> tuple[str, int]:
    """
    ``"192.0.2.53"``, ``"192.0.2.53:5353"``, ``"2001:db8::53"`` or
    ``"[2001:db8::53]:5353"`` as ``(address, port)``.

    :raises ValueError: naming the bad text and what is accepted.
    """
    host, port = text, 53
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":") or not rest[1:].isdigit():
                raise ValueError(f"{text!r}: expected [IPv6]:port")
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, _, p = text.partition(":")
        if not p.isdigit():
            raise ValueError(f"{text!r}: the port must be a number")
        port = int(p)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a nameserver address: use an IP address, optionally with :port"
        ) from None
    if not 0 < port < 65536:
        raise ValueError(f"{text!r}: port out of range")
    return host, port


@implementer(IResolver)
@attrs.define
class DNSPythonResolver:
    """
    :class:`~pymail.interfaces.IResolver` with dnspython, each query in the
    reactor's thread pool.

    :ivar reactor: provides ``getThreadPool``.
    :ivar nameservers: ``(address, port)`` pairs; empty for resolv.conf.
    :ivar timeout: seconds a whole lookup may take.
    :ivar threadpool: the threads lookups run in; ``None`` for the
        reactor's.  pymail gives DNS its own pool, so slow or dead
        nameservers never hold up the fsyncs that acknowledge mail.
    """

    _reactor: Any
    nameservers: Sequence[tuple[str, int]] = ()
    timeout: float = 10.0
    threadpool: Any = None
    _resolver: Any = None

    def __attrs_post_init__(self) -> None:
        import dns.nameserver
        import dns.resolver

        if self.nameservers:
            resolver = dns.resolver.Resolver(configure=False)
            resolver.nameservers = [
                dns.nameserver.Do53Nameserver(address, port) for address, port in self.nameservers
            ]
        else:
            resolver = dns.resolver.Resolver()
        resolver.lifetime = self.timeout
        resolver.timeout = min(self.timeout, 3.0)
        self._resolver = resolver

    def _in_thread(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        pool = self.threadpool if self.threadpool is not None else self._reactor.getThreadPool()
        return deferToThreadPool(self._reactor, pool, f, *args)

    def _query(self, name: str, rdtype: str) -> list[Any]:
        import dns.exception
        import dns.resolver

        try:
            answer = self._resolver.resolve(name + ".", rdtype, search=False)
        except dns.resolver.NXDOMAIN:
            raise DNSPermanentError(f"{name}: no such domain (NXDOMAIN)") from None
        except dns.resolver.NoAnswer:
            return []
        except dns.resolver.NoNameservers as e:
            raise DNSTemporaryError(f"{name} {rdtype}: no nameserver answered ({e})") from None
        except dns.exception.Timeout:
            raise DNSTemporaryError(f"{name} {rdtype}: DNS timeout") from None
        except dns.exception.DNSException as e:
            raise DNSTemporaryError(f"{name} {rdtype}: {e}") from None
        return list(answer)

    def _mx(self, domain: str) -> list[tuple[int, str]]:
        import dns.name

        return [
            # The root name is a null MX (RFC 7505); given as "".
            (int(r.preference),
             "" if r.exchange == dns.name.root else r.exchange.to_text(omit_final_dot=True).lower())
            for r in self._query(domain, "MX")
        ]

    def _addresses(self, host: str) -> list[str]:
        out = [r.address for r in self._query(host, "AAAA")]
        out += [r.address for r in self._query(host, "A")]
        return out

    def lookup_mx(self, domain: str) -> Deferred[list[tuple[int, str]]]:
        return self._in_thread(self._mx, domain)

    def lookup_addresses(self, host: str) -> Deferred[list[str]]:
        return self._in_thread(self._addresses, host)


@implementer(IResolver)
@attrs.define
class FakeResolver:
    """
    An :class:`~pymail.interfaces.IResolver` answering from data, for
    tests::

        FakeResolver(
            mx={"example.net": [(10, "mx1.example.net"), (20, "mx2.example.net")]},
            addresses={"mx1.example.net": ["192.0.2.1"], "mx2.example.net": ["2001:db8::2"]},
            failures={"broken.example": "SERVFAIL", "gone.example": "NXDOMAIN"},
        )

    A name in neither table is NXDOMAIN; a name with addresses but no MX
    entry has no MX records.  ``failures`` values are ``"SERVFAIL"``,
    ``"TIMEOUT"`` or ``"NXDOMAIN"``.  :attr:`queries` records every lookup.
    """

    mx: Mapping[str, list[tuple[int, str]]] = attrs.Factory(dict)
    addresses: Mapping[str, list[str]] = attrs.Factory(dict)
    failures: Mapping[str, str] = attrs.Factory(dict)
    queries: list[tuple[str, str]] = attrs.Factory(list)

    def _fail(self, name: str) -> Deferred[Any] | None:
        kind = self.failures.get(name)
        if kind == "NXDOMAIN":
            return fail(DNSPermanentError(f"{name}: no such domain (NXDOMAIN)"))
        if kind is not None:
            return fail(DNSTemporaryError(f"{name}: {kind}"))
        return None

    def lookup_mx(self, domain: str) -> Deferred[list[tuple[int, str]]]:
        self.queries.append(("MX", domain))
        failed = self._fail(domain)
        if failed is not None:
            return failed
        if domain in self.mx:
            return succeed(list(self.mx[domain]))
        if domain in self.addresses:
            return succeed([])
        return fail(DNSPermanentError(f"{domain}: no such domain (NXDOMAIN)"))

    def lookup_addresses(self, host: str) -> Deferred[list[str]]:
        self.queries.append(("ADDR", host))
        failed = self._fail(host)
        if failed is not None:
            return failed
        if host in self.addresses:
            found = list(self.addresses[host])
            return succeed(sorted(found, key=lambda a: ":" not in a))
        if host in self.mx:
            return succeed([])
        return fail(DNSPermanentError(f"{host}: no such domain (NXDOMAIN)"))


def order_mx(records: list[tuple[int, str]], shuffle: Callable[[list[Any]], None]) -> list[
    tuple[int, str]
]:
    """MX records by preference, shuffled among equal preferences (RFC 5321 section 5.1)."""
    by_pref: dict[int, list[str]] = {}
    for pref, host in records:
        by_pref.setdefault(pref, []).append(host)
    out = []
    for pref in sorted(by_pref):
        hosts = list(dict.fromkeys(by_pref[pref]))
        shuffle(hosts)
        out += [(pref, h) for h in hosts]
    return out


@attrs.define
class MXResolver:
    """
    Turns a domain into the hosts to try, using an
    :class:`~pymail.interfaces.IResolver`.

    :ivar resolver: the DNS.
    :ivar shuffle: shuffles a list in place (``random.shuffle``; tests pass
        a deterministic one).
    """

    resolver: IResolver
    shuffle: Callable[[list[Any]], None] = random.shuffle

    def hosts(self, domain: str) -> Deferred[list[MXHost]]:
        """
        The hosts for ``domain``, in the order to try them; hosts without
        addresses are left out.

        :raises NullMXError: the domain has a null MX.
        :raises DNSPermanentError: NXDOMAIN, or no host has an address.
        :raises DNSTemporaryError: a lookup failed for now and no host was
            found (a host whose lookup failed is skipped when others work).
        """
        return Deferred.fromCoroutine(self._hosts(domain))

    def hosts_for_name(self, name: str) -> Deferred[list[MXHost]]:
        """The addresses of one host (a smarthost), without MX lookup."""

        async def lookup() -> list[MXHost]:
            try:
                ipaddress.ip_address(name.strip("[]"))
            except ValueError:
                pass
            else:
                return [MXHost(name, 0, (name.strip("[]"),))]
            addresses = await self.resolver.lookup_addresses(name)
            if not addresses:
                raise DNSPermanentError(f"{name} has no address")
            return [MXHost(name, 0, tuple(addresses))]

        return Deferred.fromCoroutine(lookup())

    async def _hosts(self, domain: str) -> list[MXHost]:
        if domain.startswith("[") and domain.endswith("]"):
            literal = domain[1:-1]
            if literal.lower().startswith("ipv6:"):
                literal = literal[5:]
            return [MXHost(domain, 0, (literal,))]
        records = await self.resolver.lookup_mx(domain)
        if any(host in ("", ".") for _, host in records):
            # RFC 7505 section 3: a null MX is the only record, preference 0,
            # but any null MX means "no mail" in practice.
            raise NullMXError(f"{domain} accepts no mail (null MX, RFC 7505)")
        if not records:
            records = [(0, domain)]  # implicit MX: the domain's own addresses
        out: list[MXHost] = []
        temporary: DNSError | None = None
        for preference, name in order_mx(records, self.shuffle):
            try:
                addresses = await self.resolver.lookup_addresses(name)
            except DNSTemporaryError as e:
                temporary = e
                continue
            except DNSPermanentError:
                continue
            if addresses:
                ordered = sorted(dict.fromkeys(addresses), key=lambda a: ":" not in a)
                out.append(MXHost(name, preference, tuple(ordered)))
        if out:
            return out
        if temporary is not None:
            raise temporary
        raise DNSPermanentError(f"{domain}: no MX host has an address")
