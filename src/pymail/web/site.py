"""
Building the web service from a configuration: what ``service.py`` calls.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.cred.portal import Portal
from twisted.web.server import Site

from pymail.auth.throttle import LoginThrottle
from pymail.config import Config
from pymail.smtp.delivery import IDeliveryPolicy
from pymail.web.app import ClientSettings, WebApp, make_site
from pymail.web.compose import Submitter
from pymail.web.sessions import SessionStore

_PORT = re.compile(r"^(?:haproxy:)?(tcp6?|ssl|tls):(?:port=)?([0-9]+)(?::|$)")


def _ports(descriptions: tuple[str, ...], plain_kind: str) -> tuple[tuple[int, str], ...]:
    found = []
    for description in descriptions:
        match = _PORT.match(description)
        if match is None:
            continue  # a UNIX socket or systemd socket: no port to tell clients
        kind = "tls" if match.group(1) in ("ssl", "tls") else plain_kind
        found.append((int(match.group(2)), kind))
    return tuple(dict.fromkeys(found))


def client_settings(config: Config) -> ClientSettings:
    """The host name and ports a mail client should use, from the listeners."""
    tls = getattr(config, "tls", None)
    plain = "starttls" if tls is not None and tls.enabled else "plain"

    def ports(section: str) -> tuple[tuple[int, str], ...]:
        part = getattr(config, section)
        return (_ports(part.listen, plain)
                + _ports(tuple(getattr(part, "listen_tls", ())), "tls"))

    return ClientSettings(config.hostname, ports("imap"), ports("pop3"), ports("submission"))


#: What a client over the connection limits is told before the connection closes.
WEB_REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
               b"Connection: close\r\nRetry-After: 10\r\n\r\n")


def make_web_site(config: Config, portal: Portal, directory: Any, policy: IDeliveryPolicy,
                  reactor: Any, throttle: LoginThrottle | None = None) -> Site:
    """The webmail site of a configuration (listen on it with ``[web] listen``)."""
    sessions = SessionStore(reactor, config.web.session_lifetime, config.web.idle_timeout)
    app = WebApp(
        portal=portal,
        sessions=sessions,
        submitter=Submitter(policy, config.hostname),
        directory=directory,
        clock=reactor,
        settings=client_settings(config),
        admins=frozenset(a.lower() for a in config.web.admins),
        max_body=config.smtp.max_message_size + 1024 * 1024,
        max_message_size=config.smtp.max_message_size,
        throttle=throttle,
    )
    return make_site(app)
