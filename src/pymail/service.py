"""
The embedding API: :func:`make_service` turns a :class:`~pymail.config.Config`
into a Twisted ``MultiService`` holding every configured listener.

Embedding pymail in another Twisted application::

    from twisted.internet import reactor
    from pymail.config import load
    from pymail.service import make_service

    service = make_service(load("pymail.toml"), reactor)
    service.setServiceParent(application)   # or service.startService()
"""

from __future__ import annotations

import inspect
import os
import signal
import threading
from typing import Any

import attrs
from twisted.application.service import IServiceCollection, MultiService, Service
from twisted.cred.portal import Portal
from twisted.internet.defer import maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from pymail.auth.checkers import AccountsChecker
from pymail.auth.limits import REFUSALS, ConnectionLimits, LimitedFactory
from pymail.auth.realm import MailRealm
from pymail.auth.throttle import LoginThrottle
from pymail.config import Config, check_data_dir, check_endpoints, check_storage_backend
from pymail.directory.files import FileDirectory
from pymail.errors import ConfigError, ListenError
from pymail.pop3.mailbox import FileMaildropLocks
from pymail.interfaces import IMailStoreFactory
from pymail.tls import ServerTLS

log = Logger(namespace="pymail")


def storage_backends() -> dict[str, Any]:
    """
    Backend name -> callable(reactor) giving its IMailStoreFactory (with no
    options), for every backend plugin found with ``twisted.plugin``.
    """
    from pymail.storage.plugins import discover_backends

    return {
        name: (lambda reactor, backend=backend: backend.make_factory(reactor, {}))
        for name, backend in discover_backends().items()
    }


def make_stores(config: Config, reactor: Any) -> IMailStoreFactory:
    """
    The store factory of a configuration: ``[storage] backend``, with the
    ``[storage] domains`` overrides and ``[storage] options``.

    :raises ConfigError: an unknown backend or a bad option.
    """
    from pymail.storage.plugins import (
        discover_backends,
        make_store_factory,
        parse_domains,
        parse_options,
    )

    known = discover_backends()
    check_storage_backend(config, list(known))
    try:
        return make_store_factory(
            config.storage.backend,
            parse_domains(config.storage.domains),
            parse_options(config.storage.options),
            reactor,
            known,
        )
    except ValueError as e:
        raise ConfigError(f"{config.source}: [storage] options: {e}") from None


class EndpointListener(Service):
    """
    Listens on one endpoint string.  Binding happens in
    ``privilegedStartService`` (before twistd drops privileges, so ports
    below 1024 work with ``--uid``) or else in ``startService``.  A failure
    to bind raises :class:`ListenError` naming the config key and the
    reason, instead of being logged and ignored.
    """

    def __init__(self, label: str, description: str, endpoint: IStreamServerEndpoint,
                 factory: IProtocolFactory) -> None:
        self.label = label
        self.description = description
        self._endpoint = endpoint
        self._factory = factory
        self.port: IListeningPort | None = None
        self._listening = False

    def _listen(self) -> None:
        if self._listening:
            return
        self._listening = True
        outcome: list[Any] = []
        self._endpoint.listen(self._factory).addBoth(outcome.append)
        if not outcome:
            # An endpoint that binds asynchronously (rare): report later.
            log.warn("{label}: {description} is binding asynchronously",
                     label=self.label, description=self.description)
            return
        if isinstance(outcome[0], Failure):
            self._listening = False
            reason = outcome[0].getErrorMessage()
            raise ListenError(f"{self.label} listen: {self.description!r}: cannot listen: {reason}")
        self.port = outcome[0]
        host = self.port.getHost()
        where = f"{getattr(host, 'host', '')}:{getattr(host, 'port', '')}".strip(":") or str(host)
        log.info("{label} listening on {where} ({description})",
                 label=self.label, where=where, description=self.description)

    def privilegedStartService(self) -> None:
        self._listen()
        super().privilegedStartService()

    def startService(self) -> None:
        self._listen()
        super().startService()

    def stopService(self) -> Any:
        super().stopService()
        self._listening = False
        port, self.port = self.port, None
        if port is not None:
            return port.stopListening()
        return None


@attrs.define
class Components:
    """The shared parts every listener is built from; useful to embedders and tests."""

    config: Config
    directory: FileDirectory
    stores: IMailStoreFactory
    portal: Portal
    #: The certificate(s) for STARTTLS/STLS and implicit TLS, or None.
    tls: ServerTLS | None = None
    #: Failed-login throttling shared by every protocol that checks passwords.
    throttle: LoginThrottle | None = None
    #: Connection limits shared by every listener.
    limits: ConnectionLimits | None = None


class PymailService(MultiService):
    """The root service: every listener, plus start-up and shut-down logging."""

    def __init__(self, components: Components) -> None:
        super().__init__()
        self.components = components

    #: The log observer ``twistd pymail`` chose (see :mod:`pymail.logobserver`);
    #: it becomes the application's ``ILogObserver`` when twistd adds this
    #: service to its application, unless one is set there already.
    log_observer: Any = None

    def setServiceParent(self, parent: Any) -> Any:
        result = super().setServiceParent(parent)
        if self.log_observer is not None and hasattr(parent, "setComponent"):
            from twisted.logger import ILogObserver

            if parent.getComponent(ILogObserver, None) is None:
                parent.setComponent(ILogObserver, self.log_observer)
        return result

    def listeners(self) -> list[EndpointListener]:
        return [s for s in self if isinstance(s, EndpointListener)]

    def bind(self) -> None:
        """
        Bind every listener now.  twistd's ``pymail`` does this before
        logging starts, so a port in use is reported like a config error;
        an embedder may call it to find out early.  Starting the service
        binds whatever is not bound yet.

        :raises ListenError: naming the listener and the reason; listeners
            bound so far are released.
        """
        try:
            for s in self.listeners():
                s._listen()
        except ListenError:
            for s in self.listeners():
                if s.port is not None:
                    s.port.stopListening()
                    s.port = None
                    s._listening = False
            raise

    def privilegedStartService(self) -> None:
        self.bind()
        super().privilegedStartService()

    def reload_tls(self) -> bool:
        """Re-read the TLS certificates (what SIGHUP does); False if none or failed."""
        tls = self.components.tls
        return tls.reload() if tls is not None else False

    def _install_sighup(self) -> None:
        # SIGHUP re-reads the certificates; new handshakes use them and
        # established connections keep theirs.  Only the main thread may
        # set signal handlers (an embedder may run the reactor elsewhere).
        self._previous_sighup: Any = None
        if self.components.tls is None or threading.current_thread() is not threading.main_thread():
            return
        from twisted.internet import reactor

        def on_hup(signum: int, frame: Any) -> None:
            reactor.callFromThread(self.reload_tls)  # type: ignore[attr-defined]

        self._previous_sighup = signal.signal(signal.SIGHUP, on_hup)

    def startService(self) -> None:
        self.bind()
        self._install_sighup()
        super().startService()
        config = self.components.config
        log.info("pymail started: hostname {hostname}, data in {data_dir}, configuration "
                 "{source}", hostname=config.hostname, data_dir=config.data_dir,
                 source=config.source)
        if not self.components.directory.users():
            domain = (self.components.directory.domains() or ["example.org"])[0]
            hint = "" if config.source == "<embedded default>" else f" --config {config.source}"
            log.info("No accounts yet. Add the first one with: pymail{hint} user add "
                     "alice@{domain}", hint=hint, domain=domain)

    def stopService(self) -> Any:
        log.info("pymail stopping")
        if getattr(self, "_previous_sighup", None) is not None:
            signal.signal(signal.SIGHUP, self._previous_sighup)
            self._previous_sighup = None
        stopped = maybeDeferred(super().stopService)
        # The storage's delivery journals are emptied (their files made
        # durable) while the thread pool still runs, so the next start has
        # nothing to replay.
        checkpoint_all = getattr(self.components.stores, "checkpoint_all", None)
        if checkpoint_all is not None:
            stopped.addBoth(lambda result: checkpoint_all().addBoth(lambda _: result))
        return stopped


def tune_allocator() -> bool:
    """
    Make glibc return large freed blocks to the system (``mallopt``
    M_MMAP_THRESHOLD = 128 KiB, fixed).

    Every password check allocates a 19 MiB argon2id buffer in a pool
    thread.  With glibc's default *dynamic* threshold, the first freed
    buffer raises the threshold, later buffers come from the thread's
    arena and stay mapped: the benchmarks measured 190-510 MiB of RSS
    after many logins, 179 KiB per idle IMAP connection.  With the
    threshold fixed they are mmapped and unmapped each time (3.7 KiB per
    connection).  twistd's ``pymail`` calls this at start-up; an embedder
    may call it too.  Returns False where it does not apply (not glibc).
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_mmap_threshold = -3  # <malloc.h>
    return bool(mallopt(m_mmap_threshold, 128 * 1024))


def make_service(config: Config, reactor: Any) -> PymailService:
    """
    Build pymail's services from a configuration.

    Everything that can be checked before listening is checked here: the
    data directory (created if missing), every endpoint string, the storage
    backend.  Binding happens when the service starts.

    :raises ConfigError: the configuration cannot be used (the message names
        the key and the value).
    """
    check_data_dir(config)
    check_endpoints(config, reactor)
    backends = storage_backends()
    check_storage_backend(config, list(backends))

    directory = FileDirectory(config.data_dir, reactor)
    try:
        directory.ensure_domains(config.domains)
    except Exception as e:  # a bad name in `domains`
        raise ConfigError(f"{config.source}: domains: {e}") from None
    stores = make_stores(config, reactor)
    checkers = make_checkers(config, directory, reactor)
    portal = Portal(MailRealm(directory, stores, config.data_dir), checkers)
    tls = ServerTLS.from_config(config)
    throttle = LoginThrottle.from_config(config.security, reactor)
    limits = ConnectionLimits.from_config(config.security, reactor)
    components = Components(config, directory, stores, portal, tls, throttle, limits)

    from pymail.imap.server import IMAPFactory
    from pymail.pop3.server import POP3Factory
    from pymail.smtp.server import SMTPFactory

    from pymail.relay.runner import make_relay

    delivery, relay = make_relay(config, directory, stores, reactor)
    factories: dict[str, IProtocolFactory] = {}
    security: dict[str, Any] = {
        "tls": tls, "throttle": throttle, "cleartext_auth": config.security.cleartext_auth
    }
    if config.smtp.listen:
        factories["[smtp]"] = SMTPFactory(
            config.hostname, delivery, reactor,
            max_message_size=config.smtp.max_message_size,
            max_recipients=config.smtp.max_recipients,
            timeout=float(config.smtp.timeout), mode="mx",
            **_security_kwargs(SMTPFactory, tls=tls),
        )
    if config.submission.listen or config.submission.listen_tls:
        factories["[submission]"] = SMTPFactory(
            config.hostname, delivery, reactor,
            max_message_size=config.smtp.max_message_size,
            max_recipients=config.smtp.max_recipients,
            timeout=float(config.smtp.timeout), mode="submission", portal=portal,
            **_security_kwargs(SMTPFactory, **security),
        )
    if config.imap.listen or config.imap.listen_tls:
        factories["[imap]"] = IMAPFactory(
            portal, reactor, config.hostname,
            max_literal_size=config.imap.max_literal_size,
            idle_timeout=float(config.imap.idle_timeout),
            # CONDSTORE/QRESYNC only over storage whose MODSEQs persist.
            condstore=bool(getattr(stores, "persistent_modseq", False)),
            **_security_kwargs(IMAPFactory, **security),
        )
    if config.pop3.listen or config.pop3.listen_tls:
        factories["[pop3]"] = POP3Factory(
            portal, reactor, config.hostname, timeout=float(config.pop3.timeout),
            tls=tls, throttle=throttle, cleartext_auth=config.security.cleartext_auth,
            locks=FileMaildropLocks(directory=os.path.join(config.data_dir, "pop3-locks")),
        )

    root = PymailService(components)
    relay.setServiceParent(IServiceCollection(root))
    def listen(label: str, plain: Any, implicit: Any, factory: Any, refusal: bytes,
               refusal_timeout: bytes | None = None, preauth: bool = True) -> None:
        # Plain endpoints, then implicit-TLS ones (the same certificates and
        # SIGHUP reload for IMAPS, POP3S, 465 and HTTPS), each behind the
        # connection limits.
        for description, secure in [(d, False) for d in plain] + [(d, True) for d in implicit]:
            endpoint = serverFromString(reactor, description)
            wrapped = factory
            if secure:
                assert tls is not None, "config.from_mapping requires [tls] for listen_tls"
                wrapped = tls.wrap(factory)
            limited = LimitedFactory(
                limits, wrapped, label=label + (" tls" if secure else ""),
                refusal=b"" if secure else refusal, refusal_timeout=refusal_timeout,
                preauth=preauth,
            )
            EndpointListener(label, description, endpoint, limited).setServiceParent(
                IServiceCollection(root)
            )

    for section in ("smtp", "submission", "imap", "pop3"):
        label = f"[{section}]"
        refusal, refusal_timeout = REFUSALS[section]
        # A section without endpoints has no factory (and listens nowhere).
        listen(label, getattr(config, section).listen,
               getattr(getattr(config, section), "listen_tls", ()), factories.get(label),
               refusal, refusal_timeout, preauth=section != "smtp")
    if config.web.listen or config.web.listen_tls:
        from pymail.web.site import WEB_REFUSAL, make_web_site

        site = make_web_site(config, portal, directory, delivery, reactor, throttle=throttle)
        listen("[web]", config.web.listen, config.web.listen_tls, site, WEB_REFUSAL,
               preauth=False)
    return root


def make_checkers(config: Config, directory: FileDirectory, reactor: Any) -> list[Any]:
    """
    The credential checkers of ``auth`` (strcred strings), or pymail's own
    accounts file when the list is empty.

    :raises ConfigError: a string names no installed checker plugin, or the
        plugin refuses its argument.
    """
    if not config.auth:
        return [AccountsChecker(directory, reactor)]
    from twisted.cred import strcred

    checkers = []
    for description in config.auth:
        try:
            checkers.append(strcred.makeChecker(description))
        except strcred.InvalidAuthType:
            known = sorted(f.authType for f in strcred.findCheckerFactories())
            raise ConfigError(
                f"{config.source}: auth: {description!r} names no installed checker; "
                f"installed: {', '.join(known)}"
            ) from None
        except Exception as e:
            raise ConfigError(f"{config.source}: auth: {description!r}: {e}") from None
    return checkers


def _security_kwargs(factory_class: type, **offered: Any) -> dict[str, Any]:
    """
    The keywords among ``tls``, ``throttle``, ``cleartext_auth`` that
    ``factory_class`` accepts: each protocol takes them once it does
    STARTTLS and SASL, and nothing breaks before.
    """
    params = inspect.signature(factory_class).parameters
    return {name: value for name, value in offered.items() if name in params}
