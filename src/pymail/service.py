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

from typing import Any

import attrs
from twisted.application.service import IServiceCollection, MultiService, Service
from twisted.cred.portal import Portal
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from pymail.auth.checkers import AccountsChecker
from pymail.auth.realm import MailRealm
from pymail.config import Config, check_data_dir, check_endpoints, check_storage_backend
from pymail.directory.files import FileDirectory
from pymail.errors import ConfigError, ListenError
from pymail.interfaces import IMailStoreFactory

log = Logger(namespace="pymail")


def storage_backends() -> dict[str, Any]:
    """Backend name -> callable(reactor) giving its IMailStoreFactory."""
    from pymail.storage.maildir import MaildirStoreFactory
    from pymail.storage.memory import MemoryStoreFactory

    return {
        "maildir": MaildirStoreFactory,
        "memory": lambda reactor: MemoryStoreFactory(),
    }


class EndpointListener(Service):
    """
    Listens on one endpoint string.  Binding happens in
    ``privilegedStartService`` (before twistd drops privileges, so ports
    below 1024 work with ``--uid``) or else in ``startService``.  A failure
    to bind raises :class:`ListenError` naming the config key and the
    reason, instead of being logged and ignored.
    """

    def __init__(self, label: str, description: str, endpoint: IStreamServerEndpoint,
                 factory: Factory) -> None:
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


class PymailService(MultiService):
    """The root service: every listener, plus start-up and shut-down logging."""

    def __init__(self, components: Components) -> None:
        super().__init__()
        self.components = components

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

    def startService(self) -> None:
        self.bind()
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
        return super().stopService()


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

    directory = FileDirectory(config.data_dir)
    try:
        directory.ensure_domains(config.domains)
    except Exception as e:  # a bad name in `domains`
        raise ConfigError(f"{config.source}: domains: {e}") from None
    stores = backends[config.storage.backend](reactor)
    checker = AccountsChecker(directory, reactor)
    portal = Portal(MailRealm(directory, stores, config.data_dir), [checker])
    components = Components(config, directory, stores, portal)

    from pymail.imap.server import IMAPFactory
    from pymail.pop3.server import POP3Factory
    from pymail.smtp.delivery import LocalDelivery
    from pymail.smtp.server import SMTPFactory

    delivery = LocalDelivery(directory, stores, config.data_dir)
    factories: dict[str, Factory] = {}
    if config.smtp.listen:
        factories["[smtp]"] = SMTPFactory(
            config.hostname, delivery, reactor,
            max_message_size=config.smtp.max_message_size,
            max_recipients=config.smtp.max_recipients,
            timeout=float(config.smtp.timeout), mode="mx",
        )
    if config.submission.listen:
        factories["[submission]"] = SMTPFactory(
            config.hostname, delivery, reactor,
            max_message_size=config.smtp.max_message_size,
            max_recipients=config.smtp.max_recipients,
            timeout=float(config.smtp.timeout), mode="submission", portal=portal,
        )
    if config.imap.listen:
        factories["[imap]"] = IMAPFactory(
            portal, reactor, config.hostname,
            max_literal_size=config.imap.max_literal_size,
            idle_timeout=float(config.imap.idle_timeout),
        )
    if config.pop3.listen:
        factories["[pop3]"] = POP3Factory(
            portal, reactor, config.hostname, timeout=float(config.pop3.timeout)
        )

    root = PymailService(components)
    for section in ("smtp", "submission", "imap", "pop3"):
        label = f"[{section}]"
        for description in getattr(config, section).listen:
            endpoint = serverFromString(reactor, description)
            EndpointListener(label, description, endpoint, factories[label]).setServiceParent(
                IServiceCollection(root)
            )
    return root
