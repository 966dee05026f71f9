"""
The queue runner: the service that takes messages from the spool and
delivers them to other domains' MX hosts (or a smarthost).

- Each queued message is tried at its ``next_attempt``; recipients are
  grouped by domain and each domain gets one transaction, with at most
  ``concurrency_per_domain`` transactions to one domain at once.
- Per recipient: a 2xx reply means delivered, a 5xx means failed (a bounce
  to the sender), a 4xx or any connection problem means tried again later
  by the retry schedule, until ``max_queue_lifetime`` (then it bounces with
  ``4.4.7``).
- The envelope is rewritten durably after each attempt; a message whose
  recipients are all done is removed.  A crash in the middle of an attempt
  leaves the old envelope: the attempt is repeated (a duplicate is
  possible, a loss is not).
- Notifications (:mod:`pymail.relay.bounce`) go through the delivery
  policy's :meth:`~pymail.smtp.delivery.LocalDelivery.inject`, so a bounce
  to a local user is stored locally and one to a remote sender is queued
  with the null sender.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, DeferredSemaphore
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from pymail import maillog
from pymail.address import Envelope
from pymail.relay import bounce
from pymail.relay.client import OutboundMessage, OutboundRecipient, SMTPClient, SMTPClientError
from pymail.relay.mx import DNSError, DNSPermanentError, MXHost, MXResolver
from pymail.relay.queue import DELIVERED, FAILED, QUEUED, QueuedMessage, QueuedRecipient, Spool
from pymail.smtp.replies import Reply

log = Logger()

#: RFC 3463: delivery time expired (the queue lifetime ran out).
EXPIRED_STATUS = "4.4.7"

_DURATION = re.compile(r"(\d+)([smhd]?)\Z")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """``"90"``, ``"30s"``, ``"5m"``, ``"2h"``, ``"1d"`` in seconds; :raises ValueError:."""
    match = _DURATION.match(text.strip().lower())
    if not match:
        raise ValueError(f"{text!r} is not a duration: use e.g. '30s', '5m', '2h', '1d'")
    return int(match.group(1)) * _UNITS[match.group(2)]


@attrs.frozen
class RetryPolicy:
    """
    When to try again.

    :ivar schedule: waits after the 1st, 2nd... failure; the last repeats.
    :ivar lifetime: seconds after queueing when a recipient bounces.
    :ivar delay_warning: seconds after queueing when the sender is warned
        once (0: never).
    """

    schedule: tuple[float, ...] = (60, 300, 900, 1800, 3600, 7200, 14400, 28800)
    lifetime: float = 5 * 86400
    delay_warning: float = 0

    def delay_after(self, attempts: int) -> float:
        """The wait after ``attempts`` failed attempts (``attempts`` >= 1)."""
        return self.schedule[min(attempts, len(self.schedule)) - 1]


@attrs.define
class QueueRunner(Service):
    """
    The outbound queue as a Twisted service; also the
    :class:`~pymail.smtp.delivery.IOutboundQueue` the delivery policy
    submits remote recipients to.
    """

    spool: Spool
    mx: MXResolver
    client: SMTPClient
    reactor: Any
    hostname: str
    queue_ids: Callable[[], str]
    policy: RetryPolicy = RetryPolicy()
    concurrency_per_domain: int = 10
    smarthost: tuple[str, int] | None = None
    scan_interval: float = 60.0
    #: ``inject(queue_id, recipient, message)`` delivers a notification.
    inject: Callable[[str, str, bytes], Deferred[Any]] | None = None
    _entries: dict[str, QueuedMessage] = attrs.Factory(dict)
    _timers: dict[str, IDelayedCall] = attrs.Factory(dict)
    _active: dict[str, Deferred[None]] = attrs.Factory(dict)
    _stamps: dict[str, float] = attrs.Factory(dict)
    _semaphores: dict[str, DeferredSemaphore] = attrs.Factory(dict)
    _scanner: LoopingCall | None = None
    _expired: set[int] = attrs.Factory(set)
    #: Thread pools started and stopped with the service (DNS).
    threadpools: list[Any] = attrs.Factory(list)
    # Service's own attributes, which attrs would otherwise not set.
    running: int = 0
    name: str = "relay"  # type: ignore[assignment]
    parent: Any = None

    # Service ----------------------------------------------------------------

    def startService(self) -> None:
        Service.startService(self)
        for pool in self.threadpools:
            pool.start()
        for entry in self.spool.load():
            self._track(entry)
        log.info("relay queue: {count} message(s) waiting in {path}",
                 count=len(self._entries), path=self.spool.path)
        self._scanner = LoopingCall(self.scan)
        self._scanner.clock = self.reactor
        self._scanner.start(self.scan_interval, now=False)

    def stopService(self) -> Deferred[Any] | None:
        Service.stopService(self)
        if self._scanner is not None and self._scanner.running:
            self._scanner.stop()
        for timer in self._timers.values():
            if timer.active():
                timer.cancel()
        self._timers.clear()
        for pool in self.threadpools:
            pool.stop()
        # Attempts in flight are not waited for (a remote server may take
        # minutes); their envelopes are unchanged on disk, so they are
        # simply tried again after the restart.
        return None

    # Submission -------------------------------------------------------------

    def submit(
        self, envelope: Envelope, remote: list[tuple[str, Any]], message: bytes
    ) -> Deferred[None]:
        """
        Queue ``message`` durably for the remote targets; fires when it is
        on stable storage.  ``remote`` pairs each target with the
        :class:`~pymail.address.EnvelopeRecipient` it came from (for NOTIFY
        and ORCPT), or ``None``.
        """
        now = self.reactor.seconds()
        recipients = []
        for target, origin in remote:
            orcpt = origin.orcpt if origin is not None else None
            if orcpt is None and origin is not None and str(origin.address) != target:
                orcpt = f"rfc822;{origin.address}"
            recipients.append(QueuedRecipient(
                target,
                notify=origin.notify if origin is not None else None,
                orcpt=orcpt,
            ))
        entry = QueuedMessage(
            queue_id=envelope.queue_id,
            sender=str(envelope.sender),
            recipients=recipients,
            created=now,
            next_attempt=now,
            client=envelope.client,
            ret=envelope.ret,
            envid=envelope.envid,
            smtputf8=envelope.smtputf8,
            body=envelope.body,
        )
        d = self.spool.add(entry, message)

        def added(_: object) -> None:
            maillog.queued(entry.queue_id, entry.sender, [r.address for r in recipients],
                           len(message))
            if self.running:
                self._track(entry)

        return d.addCallback(added)

    # Scheduling -------------------------------------------------------------

    def _track(self, entry: QueuedMessage) -> None:
        self._entries[entry.queue_id] = entry
        self._schedule(entry)

    def _schedule(self, entry: QueuedMessage) -> None:
        old = self._timers.pop(entry.queue_id, None)
        if old is not None and old.active():
            old.cancel()
        if not self.running:
            return
        delay = max(0.0, entry.next_attempt - self.reactor.seconds())
        self._timers[entry.queue_id] = self.reactor.callLater(delay, self._start, entry.queue_id)

    def scan(self) -> None:
        """
        Re-read the queue directory: pick up envelopes changed by ``pymail
        queue flush`` and forget messages removed by ``pymail queue delete``.
        """
        import os

        try:
            ids = set(self.spool.ids())
        except OSError as e:
            log.error("relay queue: cannot read {path}: {error}", path=self.spool.path,
                      error=e.strerror)
            return
        for queue_id in list(self._entries):
            if queue_id not in ids and queue_id not in self._active:
                del self._entries[queue_id]
                self._stamps.pop(queue_id, None)
                timer = self._timers.pop(queue_id, None)
                if timer is not None and timer.active():
                    timer.cancel()
        for queue_id in ids:
            if queue_id in self._active:
                continue
            try:
                stamp = os.stat(self.spool.envelope_path(queue_id)).st_mtime
            except FileNotFoundError:
                continue
            if queue_id in self._entries and self._stamps.get(queue_id) == stamp:
                continue
            self._stamps[queue_id] = stamp
            try:
                entry = self.spool.read_envelope_now(queue_id)
            except Exception as e:
                log.error("relay queue: {error}", error=str(e))
                continue
            known = self._entries.get(queue_id)
            if known is None or entry.next_attempt != known.next_attempt:
                self._track(entry)

    def _start(self, queue_id: str) -> None:
        self._timers.pop(queue_id, None)
        if queue_id in self._active or queue_id not in self._entries:
            return
        d = Deferred.fromCoroutine(self._attempt(self._entries[queue_id]))

        def unexpected(failure: Any) -> None:
            log.failure("relay queue: attempt for {queue_id} failed unexpectedly", failure,
                        queue_id=queue_id)
            entry = self._entries.get(queue_id)
            if entry is not None and self.running:
                entry.next_attempt = self.reactor.seconds() + self.policy.delay_after(1)
                self._schedule(entry)

        def done(_: object) -> None:
            self._active.pop(queue_id, None)

        self._active[queue_id] = d
        d.addErrback(unexpected).addBoth(done)

    # One attempt ------------------------------------------------------------

    async def _attempt(self, entry: QueuedMessage) -> None:
        try:
            message = await self.spool.read_message(entry.queue_id)
        except FileNotFoundError:
            self._entries.pop(entry.queue_id, None)
            return
        tried = entry.pending()
        by_domain: dict[str, list[QueuedRecipient]] = {}
        for r in tried:
            by_domain.setdefault(r.domain, []).append(r)
        runs = [self._domain_limited(entry, domain, rcpts, message)
                for domain, rcpts in by_domain.items()]
        await DeferredList(runs, consumeErrors=False)
        entry.attempts += 1
        now = self.reactor.seconds()
        failed_now = [r for r in tried if r.state == FAILED]
        pending = entry.pending()
        if pending and now - entry.created >= self.policy.lifetime:
            for r in pending:
                # The diagnostic stays the last reply; the status says why
                # we gave up (RFC 3463: 4.4.7, delivery time expired).
                r.state = FAILED
                self._expired.add(id(r))
                failed_now.append(r)
            pending = []
        notice = "-"
        if failed_now:
            notice = await self._notify(entry, failed_now, bounce.FAILED, message, now)
        for r in failed_now:
            maillog.bounced(entry.queue_id, r.address, r.remote, r.reply, notice)
            self._expired.discard(id(r))
        if not pending:
            await self.spool.remove(entry.queue_id)
            self._entries.pop(entry.queue_id, None)
            return
        delay = self.policy.delay_after(entry.attempts)
        entry.next_attempt = now + delay
        for r in pending:
            maillog.retry(entry.queue_id, r.address, r.remote, r.reply, delay)
        if (self.policy.delay_warning and not entry.delay_warned
                and now - entry.created >= self.policy.delay_warning):
            entry.delay_warned = True
            await self._notify(entry, pending, bounce.DELAYED, message, now)
        await self.spool.rewrite(entry)
        if self.running and entry.queue_id in self._entries:
            self._schedule(entry)

    def _domain_limited(self, entry: QueuedMessage, domain: str,
                        rcpts: list[QueuedRecipient], message: bytes) -> Deferred[None]:
        semaphore = self._semaphores.get(domain)
        if semaphore is None:
            semaphore = self._semaphores[domain] = DeferredSemaphore(self.concurrency_per_domain)
        return semaphore.run(
            lambda: Deferred.fromCoroutine(self._deliver_domain(entry, domain, rcpts, message)))

    async def _hosts(self, domain: str) -> list[MXHost]:
        if self.smarthost is not None:
            name, _port = self.smarthost
            return await self.mx.hosts_for_name(name)
        return await self.mx.hosts(domain)

    async def _deliver_domain(self, entry: QueuedMessage, domain: str,
                              rcpts: list[QueuedRecipient], message: bytes) -> None:
        try:
            hosts = await self._hosts(domain)
        except DNSError as e:
            code = 550 if isinstance(e, DNSPermanentError) else 451
            self._record(entry, rcpts, [Reply(code, e.status, str(e))] * len(rcpts), "")
            return
        outbound = OutboundMessage(
            sender=entry.sender,
            recipients=tuple(OutboundRecipient(r.address, r.notify, r.orcpt) for r in rcpts),
            message=message, ret=entry.ret, envid=entry.envid, smtputf8=entry.smtputf8,
            body=entry.body,
        )
        port = self.smarthost[1] if self.smarthost is not None else None
        last: Reply = Reply(451, "4.4.1", f"No MX host of {domain} could be reached")
        where = ""
        for host in hosts:
            for address in host.addresses:
                try:
                    result = await self.client.send(host.name, address, outbound, port)
                except SMTPClientError as e:
                    last, where = e.reply, f"{host.name} [{address}]"
                    if e.try_next_host:
                        continue
                    self._record(entry, rcpts, [e.reply] * len(rcpts), where)
                    return
                self._record(entry, rcpts, list(result.replies), result.host)
                success = [r for r, reply in zip(rcpts, result.replies, strict=True)
                           if reply.code < 300 and r.notify and "SUCCESS" in r.notify]
                if success and not result.dsn:
                    await self._notify(entry, success, bounce.RELAYED, message,
                                       self.reactor.seconds())
                return
        self._record(entry, rcpts, [last] * len(rcpts), where)

    def _record(self, entry: QueuedMessage, rcpts: list[QueuedRecipient],
                replies: list[Reply], remote: str) -> None:
        for r, reply in zip(rcpts, replies, strict=True):
            r.reply = str(reply).replace(" / ", " ")
            r.remote = remote
            if reply.code < 300:
                r.state = DELIVERED
                maillog.sent(entry.queue_id, r.address, remote, r.reply)
            elif reply.code >= 500:
                r.state = FAILED
            else:
                r.state = QUEUED

    async def _notify(self, entry: QueuedMessage, rcpts: list[QueuedRecipient], action: str,
                      message: bytes, now: float) -> str:
        """Send one notification about ``rcpts``; give its queue id or ``-``."""
        if not entry.sender or self.inject is None:
            return "-"
        chosen = [r for r in rcpts if bounce.wants_notice(r, action)]
        if not chosen:
            return "-"
        default = {"failed": "5.0.0", "delayed": "4.0.0"}.get(action, "2.0.0")
        notices = [
            bounce.Notice(
                r, action,
                EXPIRED_STATUS if id(r) in self._expired else bounce.status_of(r.reply, default),
                r.reply,
            )
            for r in chosen
        ]
        notice_id = self.queue_ids()
        dsn = bounce.make_dsn(
            hostname=self.hostname, entry=entry, notices=notices, original=message, now=now,
            message_id=notice_id, retry_until=entry.created + self.policy.lifetime,
        )
        try:
            await self.inject(notice_id, entry.sender, dsn)
        except Exception as e:
            log.error("relay queue: cannot send the {action} notice for {queue_id} to "
                      "<{sender}>: {error}", action=action, queue_id=entry.queue_id,
                      sender=entry.sender, error=str(e))
            return "-"
        return notice_id



def make_relay(config: Any, directory: Any, stores: Any, reactor: Any) -> tuple[Any, QueueRunner]:
    """
    The delivery policy and the queue runner for a configuration, wired to
    each other (the policy queues remote targets; the runner sends its
    notifications through the policy).

    :raises pymail.errors.ConfigError: a bad ``[relay]`` value.
    """
    import os

    from pymail.errors import ConfigError
    from pymail.relay.mx import DNSPythonResolver, parse_nameserver
    from pymail.smtp.delivery import LocalDelivery
    from pymail.smtp.server import QueueIdGenerator

    relay = config.relay
    where = f"{config.source}: [relay]"
    try:
        schedule = tuple(float(parse_duration(t)) for t in relay.retry_schedule)
    except ValueError as e:
        raise ConfigError(f"{where} retry_schedule: {e}") from None
    if not schedule:
        raise ConfigError(f"{where} retry_schedule must not be empty, e.g. [\"5m\", \"1h\"]")
    try:
        nameservers = [parse_nameserver(n) for n in relay.nameservers]
    except ValueError as e:
        raise ConfigError(f"{where} nameservers: {e}") from None
    smarthost: tuple[str, int] | None = None
    if relay.smarthost:
        host, _, port = relay.smarthost.rpartition(":") if relay.smarthost.count(":") == 1 \
            else (relay.smarthost, "", "")
        if port and not port.isdigit():
            raise ConfigError(f"{where} smarthost = {relay.smarthost!r}: the port must be a "
                              "number, e.g. 'smtp.example.net:587'")
        smarthost = (host or relay.smarthost, int(port) if port else 25)
    from twisted.python.threadpool import ThreadPool

    # DNS gets its own threads: lookups that wait for a dead nameserver
    # must not queue ahead of the fsyncs that acknowledge mail.
    dns_pool = ThreadPool(minthreads=0, maxthreads=10, name="pymail-dns")
    resolver = DNSPythonResolver(reactor, nameservers, float(relay.dns_timeout), dns_pool)
    client = SMTPClient(
        reactor, config.hostname, port=relay.port, bind_address=relay.bind_address,
        client_tls=_client_tls, require_tls=smarthost is not None,
        username=relay.smarthost_username, password=relay.smarthost_password,
    )
    ids = QueueIdGenerator(reactor)
    runner = QueueRunner(
        spool=Spool(os.path.join(config.data_dir, "queue"), reactor),
        mx=MXResolver(resolver),
        client=client,
        reactor=reactor,
        hostname=config.hostname,
        queue_ids=ids,
        policy=RetryPolicy(schedule, float(relay.max_queue_lifetime),
                           float(relay.delay_warning)),
        concurrency_per_domain=relay.concurrency_per_domain,
        smarthost=smarthost,
        scan_interval=float(relay.scan_interval),
    )
    delivery = LocalDelivery(
        directory, stores, config.data_dir,
        queue=runner if relay.enabled else None,
        max_received=config.smtp.max_received,
        postmaster=f"postmaster@{(config.domains or (config.hostname,))[0]}",
    )
    runner.inject = delivery.inject
    runner.threadpools.append(dns_pool)
    return delivery, runner


def _client_tls(hostname: str, verify: bool) -> Any:
    """TLS for an outgoing connection: verified for a smarthost, opportunistic for MX."""
    from twisted.internet import ssl

    if verify:
        return ssl.optionsForClientTLS(hostname)
    return ssl.CertificateOptions(verify=False)
