"""
Storage backends as Twisted plugins, and the factory that sends each
account to its domain's backend.

The built-in backends (``maildir``, ``mbox``, ``memory``) are plugin objects
here, exported by ``twisted/plugins/pymail_plugin.py``; third-party
backends are found the same way (see docs/plugins.md).  Backend modules are
imported only when a factory is made.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs
from twisted.internet.defer import Deferred, DeferredList
from twisted.plugin import IPlugin, getPlugins
from zope.interface import implementer

from pymail.interfaces import IMailStore, IMailStoreBackend, IMailStoreFactory


def _no_options(backend: str, options: Mapping[str, str]) -> None:
    if options:
        raise ValueError(f"backend {backend!r} takes no options (got {', '.join(options)})")


def _maildir(reactor: Any, options: Mapping[str, str]) -> IMailStoreFactory:
    from pymail.storage.maildir import SYNC_MODES, MaildirStoreFactory

    unknown = set(options) - {"sync"}
    if unknown:
        raise ValueError(f"unknown maildir option(s) {', '.join(sorted(unknown))}; known: sync")
    sync = options.get("sync", "journal")
    if sync not in SYNC_MODES:
        raise ValueError(f"maildir.sync = {sync!r} must be one of {', '.join(SYNC_MODES)}")
    return MaildirStoreFactory(reactor, sync=sync)


def _mbox(reactor: Any, options: Mapping[str, str]) -> IMailStoreFactory:
    from pymail.storage.mbox import MboxStoreFactory

    unknown = set(options) - {"inbox", "folders"}
    if unknown:
        raise ValueError(f"unknown mbox option(s) {', '.join(sorted(unknown))}; "
                         "known: inbox, folders")
    for key, value in options.items():
        if "{local}" not in value and "{address}" not in value:
            raise ValueError(f"mbox.{key} = {value!r} must contain {{local}} or {{address}}, "
                             "e.g. /var/mail/{local}")
    return MboxStoreFactory(reactor, inbox_path=options.get("inbox"),
                            folders_path=options.get("folders"))


def _memory(reactor: Any, options: Mapping[str, str]) -> IMailStoreFactory:
    from pymail.storage.memory import MemoryStoreFactory

    _no_options("memory", options)
    return MemoryStoreFactory(special_use_folders=True)


@implementer(IPlugin, IMailStoreBackend)
@attrs.frozen
class BuiltinBackend:
    """A backend shipped with pymail."""

    name: str
    description: str
    _make: Callable[[Any, Mapping[str, str]], IMailStoreFactory]

    def make_factory(self, reactor: object, options: dict[str, str]) -> IMailStoreFactory:
        return self._make(reactor, options)


maildir_backend = BuiltinBackend(
    "maildir", "Maildir++ with Dovecot-compatible uidlist, keywords and subscriptions.", _maildir)
mbox_backend = BuiltinBackend(
    "mbox", "mboxrd files (mutt/procmail compatible): a spool INBOX plus folder files.", _mbox)
memory_backend = BuiltinBackend(
    "memory", "Mail in memory only (tests, embedding); nothing survives a restart.", _memory)


def discover_backends() -> dict[str, IMailStoreBackend]:
    """Every storage backend plugin installed, by name (built-ins included)."""
    import twisted.plugins

    found: dict[str, IMailStoreBackend] = {}
    for backend in getPlugins(IMailStoreBackend, twisted.plugins):
        found.setdefault(backend.name, backend)
    for builtin in (maildir_backend, mbox_backend, memory_backend):
        found.setdefault(builtin.name, builtin)
    return found


def parse_options(entries: tuple[str, ...] | list[str]) -> dict[str, dict[str, str]]:
    """``["mbox.inbox=/var/mail/{local}"]`` -> ``{"mbox": {"inbox": ...}}``."""
    out: dict[str, dict[str, str]] = {}
    for entry in entries:
        key, eq, value = entry.partition("=")
        backend, dot, option = key.strip().partition(".")
        if not eq or not dot or not backend or not option:
            raise ValueError(f"{entry!r} is not 'backend.option=value', "
                             "e.g. 'mbox.inbox=/var/mail/{local}'")
        out.setdefault(backend, {})[option] = value.strip()
    return out


def parse_domains(entries: tuple[str, ...] | list[str]) -> dict[str, str]:
    """``["example.org=mbox"]`` -> ``{"example.org": "mbox"}``."""
    out = {}
    for entry in entries:
        domain, eq, backend = entry.partition("=")
        if not eq or not domain.strip() or not backend.strip():
            raise ValueError(f"{entry!r} is not 'domain=backend', e.g. 'example.org=mbox'")
        out[domain.strip().lower()] = backend.strip()
    return out


@implementer(IMailStoreFactory)
@attrs.define
class DomainRoutingFactory:
    """Sends each account to its domain's backend, or to the default one."""

    default: IMailStoreFactory
    by_domain: dict[str, IMailStoreFactory] = attrs.Factory(dict)
    name: str = "per-domain"
    description: str = "Chooses a backend per domain."

    def open_store(self, address: str, data_dir: str) -> IMailStore:
        domain = address.rpartition("@")[2].lower()
        return self.by_domain.get(domain, self.default).open_store(address, data_dir)

    def checkpoint_all(self) -> Deferred[None]:
        """Each backend's ``checkpoint_all()``, where it has one (the service calls it at stop)."""
        done = [factory.checkpoint_all()  # type: ignore[attr-defined]
                for factory in {id(f): f for f in (self.default, *self.by_domain.values())}.values()
                if hasattr(factory, "checkpoint_all")]
        return DeferredList(done).addCallback(lambda _: None)

    @property
    def persistent_modseq(self) -> bool:
        """
        Whether every backend routed to keeps MODSEQs across restarts: IMAP
        offers CONDSTORE/QRESYNC (to every account) only then.
        """
        return all(bool(getattr(factory, "persistent_modseq", False))
                   for factory in (self.default, *self.by_domain.values()))


def make_store_factory(backend: str, domains: Mapping[str, str],
                       options: Mapping[str, Mapping[str, str]], reactor: Any,
                       known: Mapping[str, IMailStoreBackend] | None = None
                       ) -> IMailStoreFactory:
    """
    The store factory for a ``[storage]`` section: ``backend`` for every
    domain not named in ``domains``.  One factory per backend, shared.

    :raises KeyError: a backend name that no plugin provides.
    :raises ValueError: bad options.
    """
    known = known if known is not None else discover_backends()
    made: dict[str, IMailStoreFactory] = {}

    def factory(name: str) -> IMailStoreFactory:
        if name not in made:
            made[name] = known[name].make_factory(reactor, dict(options.get(name, {})))
        return made[name]

    for name in options:
        if name not in known:
            raise ValueError(f"options for {name!r}, which is not a known backend")
        factory(name)  # checks the options even if no domain uses the backend
    default = factory(backend)
    if not domains:
        return default
    return DomainRoutingFactory(default, {d: factory(b) for d, b in domains.items()})
