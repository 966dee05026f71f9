"""
Failed-login throttling, shared by every protocol that checks passwords.

Protocols call :meth:`LoginThrottle.login` where they would call
``portal.login``::

    try:
        interface, avatar, logout = await throttle.login(
            portal, credentials, IAccount, peer=transport.getPeer().host, service="imap")
    except LoginFailed:
        ...  # answer "authentication failed"; the delay has been served already

What it adds to ``portal.login``:

- a client address or account that failed too often recently is blocked
  for a while: its logins fail without the password being checked;
- every failure is answered no sooner than ``failure_min`` seconds after the
  attempt began, whatever the reason (no such account, wrong password,
  disabled, blocked), so timing does not reveal whether an account exists;
- after that, a delay that doubles with each recent failure of the address
  or the account (capped), so a guesser on one connection slows down;
- one log line per failure in a stable format for fail2ban
  (see examples/fail2ban/)::

      pymail auth failure: service=pop3 rhost=203.0.113.9 user=alice@example.org
      reason=bad-credentials            (one line)

State is in memory, per process, bounded: at most ``max_tracked``
addresses and accounts are remembered (the oldest are forgotten first).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import attrs
from twisted.cred.error import LoginFailed, UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

log = Logger(namespace="pymail.auth")


class LoginBlocked(UnauthorizedLogin):
    """The client address or the account is blocked after too many failures."""


def log_safe(value: bytes | str | None) -> str:
    """A user name or address for a log line: no spaces or control characters."""
    if value is None:
        return "-"
    if isinstance(value, bytes):
        value = value.decode("utf-8", "backslashreplace")
    text = "".join(c if c.isprintable() and not c.isspace() else f"\\x{ord(c):02x}"
                   for c in value[:256])
    return text or "-"


@attrs.define
class _Record:
    failures: list[float] = attrs.Factory(list)
    blocked_until: float = 0.0


@attrs.define
class LoginThrottle:
    """
    See the module docstring.  All times in seconds.

    :ivar failure_min: every failure is answered at least this long after
        the attempt began.
    :ivar delay: the extra wait after the first recent failure, doubled per
        further failure, at most ``max_delay``.
    :ivar block_after: failures from one address within ``window`` that
        block it for ``block_for``.
    :ivar account_block_after: the same per account, from any address.
    """

    _reactor: IReactorTime
    failure_min: float = 0.4
    delay: float = 0.5
    max_delay: float = 8.0
    block_after: int = 10
    account_block_after: int = 50
    block_for: float = 900.0
    window: float = 900.0
    #: Addresses (and, separately, accounts) remembered at most.
    max_tracked: int = 100_000
    _by_ip: OrderedDict[str, _Record] = attrs.field(factory=OrderedDict, init=False)
    _by_account: OrderedDict[str, _Record] = attrs.field(factory=OrderedDict, init=False)

    @classmethod
    def from_config(cls, security: Any, reactor: IReactorTime) -> LoginThrottle:
        """Built from a :class:`pymail.config.SecurityConfig`."""
        return cls(
            reactor,
            failure_min=security.auth_failure_min_ms / 1000,
            delay=security.auth_delay_ms / 1000,
            max_delay=security.auth_max_delay_ms / 1000,
            block_after=security.auth_block_after,
            account_block_after=security.auth_account_block_after,
            block_for=float(security.auth_block_seconds),
            window=float(security.auth_window_seconds),
        )

    # -- the state ----------------------------------------------------------

    def _record(self, table: OrderedDict[str, _Record], key: str, create: bool) -> _Record | None:
        record = table.get(key)
        if record is None:
            if not create:
                return None
            record = table[key] = _Record()
            while len(table) > self.max_tracked:
                table.popitem(last=False)
        else:
            table.move_to_end(key)
        horizon = self._reactor.seconds() - self.window
        record.failures = [t for t in record.failures if t > horizon]
        return record

    def blocked(self, peer: str | None, username: str | None) -> bool:
        """Whether a login from ``peer`` for ``username`` would be refused unchecked."""
        now = self._reactor.seconds()
        for table, key in ((self._by_ip, peer), (self._by_account, username)):
            if key is None:
                continue
            record = self._record(table, key, create=False)
            if record is not None and record.blocked_until > now:
                return True
        return False

    def failures(self, peer: str | None, username: str | None) -> int:
        """Recent failures of the address or the account, whichever is more."""
        counts = [0]
        for table, key in ((self._by_ip, peer), (self._by_account, username)):
            if key is not None:
                record = self._record(table, key, create=False)
                if record is not None:
                    counts.append(len(record.failures))
        return max(counts)

    def record_failure(self, peer: str | None, username: str | None) -> None:
        """Count a failed login of ``username`` from ``peer``; may start a block."""
        now = self._reactor.seconds()
        for table, key, limit in ((self._by_ip, peer, self.block_after),
                                  (self._by_account, username, self.account_block_after)):
            if key is None:
                continue
            record = self._record(table, key, create=True)
            assert record is not None
            record.failures.append(now)
            if len(record.failures) >= limit and record.blocked_until <= now:
                record.blocked_until = now + self.block_for
                log.warn(
                    "pymail auth block: {what}={key} failures={count} seconds={seconds}",
                    what="rhost" if table is self._by_ip else "user",
                    key=log_safe(key), count=len(record.failures), seconds=int(self.block_for),
                )

    def record_success(self, peer: str | None, username: str | None) -> None:
        """A successful login forgets the address's and the account's failures."""
        for table, key in ((self._by_ip, peer), (self._by_account, username)):
            if key is not None:
                record = table.get(key)
                if record is not None and record.blocked_until <= self._reactor.seconds():
                    del table[key]

    def penalty(self, peer: str | None, username: str | None) -> float:
        """The growing delay owed after a failure (seconds)."""
        count = self.failures(peer, username)
        if count == 0 or self.delay == 0:
            return 0.0
        return min(self.max_delay, self.delay * 2 ** min(count - 1, 30))

    # -- the one call protocols make ---------------------------------------

    def login(
        self,
        portal: Portal,
        credentials: Any,
        *interfaces: Any,
        peer: str | None,
        service: str,
        mind: object = None,
    ) -> Deferred[tuple[Any, Any, Any]]:
        """
        ``portal.login(credentials, mind, *interfaces)`` with throttling.

        :param peer: the client's address (``transport.getPeer().host``).
        :param service: the protocol, for the log (``"pop3"``, ``"imap"``,
            ``"submission"``).
        :raises LoginFailed: (as a failed Deferred) after the padding and
            the delay; :class:`LoginBlocked` when refused unchecked.
            Other exceptions of the portal pass through unpadded.
        """
        return Deferred.fromCoroutine(
            self._login(portal, credentials, interfaces, peer, service, mind)
        )

    async def _login(self, portal: Portal, credentials: Any, interfaces: tuple[Any, ...],
                     peer: str | None, service: str, mind: object) -> tuple[Any, Any, Any]:
        started = self._reactor.seconds()
        raw = getattr(credentials, "username", None)
        username = (raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw)
        username = username.strip().lower() if username else None
        if self.blocked(peer, username):
            reason = "blocked"
            error: LoginFailed = LoginBlocked("too many failed logins")
        else:
            try:
                result = await portal.login(credentials, mind, *interfaces)
            except LoginFailed as e:
                reason = "bad-credentials"
                error = e
            else:
                self.record_success(peer, username)
                return result  # type: ignore[no-any-return]
            self.record_failure(peer, username)
        log.info(
            "pymail auth failure: service={service} rhost={rhost} user={user} reason={reason}",
            service=service, rhost=log_safe(peer), user=log_safe(username), reason=reason,
        )
        wait = max(0.0, started + self.failure_min - self._reactor.seconds())
        wait += self.penalty(peer, username)
        if wait > 0:
            await deferLater(self._reactor, wait, lambda: None)
        raise error
