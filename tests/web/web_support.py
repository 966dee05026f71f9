"""
Drive the web service in memory: a real ``twisted.web`` HTTPChannel over a
``StringTransport`` per request, a cookie jar, and the server's own parts
(the portal with the same realm, LocalDelivery, in-memory stores) on a
:class:`~pymail.testing.ThreadlessReactor`.
"""

from __future__ import annotations

import re
from email.parser import BytesParser
from email import policy
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlencode

import attrs
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.testing import StringTransport
from zope.interface import implementer

from pymail.smtp.delivery import LocalDelivery
from pymail.storage.memory import MemoryStoreFactory
from pymail.testing import ThreadlessReactor, memory_portal
from pymail.web.app import ClientSettings, WebApp, make_site
from pymail.web.compose import Submitter
from pymail.web.sessions import SessionStore

PASSWORDS = {"alice@example.org": "alice-secret-1", "bob@example.org": "bob-secret-22",
             "carol@example.org": "carol-secret-3"}

SETTINGS = ClientSettings("mail.example.org", imap=((143, "starttls"), (993, "tls")),
                          pop3=((110, "starttls"),), submission=((587, "starttls"),))


@implementer(ISSLTransport)
class TLSStringTransport(StringTransport):
    """A StringTransport that says it is TLS, as a TLS connection's transport does."""

    def getPeerCertificate(self) -> None:
        return None

    def setTcpNoDelay(self, enabled: bool) -> None:
        pass


@attrs.define
class Reply:
    status: int
    headers: dict[str, list[str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[-1] if values else None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


def parse_response(raw: bytes) -> Reply:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.setdefault(name.decode().lower(), []).append(value.strip().decode("latin-1"))
    if "chunked" in (headers.get("transfer-encoding") or [""])[0]:
        body = dechunk(body)
    return Reply(status, headers, body)


def dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2:]
    return out


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.csrf: list[str] = []

    def handle_starttag(self, tag: str, attrs_: list[tuple[str, str | None]]) -> None:
        a = dict(attrs_)
        if tag == "input" and a.get("name") == "csrf" and a.get("value"):
            self.csrf.append(a["value"] or "")


def csrf_of(html: str) -> str:
    """The CSRF token of the first form on a page."""
    parser = _Forms()
    parser.feed(html)
    assert parser.csrf, "the page has no CSRF field"
    return parser.csrf[0]


@attrs.define
class Browser:
    """One browser: a cookie jar and requests through the site."""

    world: WebWorld
    cookies: dict[str, str] = attrs.Factory(dict)
    host: str = "127.0.0.1:8080"
    client_ip: str = "127.0.0.1"
    secure: bool = False

    def open(self, method: str, path: str, body: bytes = b"",
             headers: dict[str, str] | None = None) -> tuple[Reply, StringTransport]:
        channel, transport = self.connect()
        all_headers = {"Host": self.host}
        if self.cookies:
            all_headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if body or method == "POST":
            all_headers["Content-Length"] = str(len(body))
        all_headers.update(headers or {})
        raw = f"{method} {path} HTTP/1.1\r\n".encode()
        raw += b"".join(f"{k}: {v}\r\n".encode() for k, v in all_headers.items())
        channel.dataReceived(raw + b"\r\n" + body)
        self.world.reactor.advance(0)
        reply = parse_response(transport.value())
        for cookie in reply.headers.get("set-cookie", []):
            name, _, rest = cookie.partition("=")
            value = rest.split(";", 1)[0]
            if value:
                self.cookies[name] = value
            else:
                self.cookies.pop(name, None)
        return reply, transport

    def connect(self) -> tuple[Any, StringTransport]:
        """A connection to the site, to feed a request piece by piece."""
        kind = TLSStringTransport if self.secure else StringTransport
        transport = kind(peerAddress=IPv4Address("TCP", self.client_ip, 40000),
                         hostAddress=IPv4Address("TCP", "127.0.0.1", 8080))
        channel = self.world.site.buildProtocol(transport.getPeer())
        channel.makeConnection(transport)
        return channel, transport

    def get(self, path: str, **kw: Any) -> Reply:
        return self.open("GET", path, **kw)[0]

    def post(self, path: str, fields: dict[str, str | list[str]], *,
             headers: dict[str, str] | None = None) -> Reply:
        body = urlencode(fields, doseq=True).encode()
        h = {"Content-Type": "application/x-www-form-urlencoded"}
        h.update(headers or {})
        return self.open("POST", path, body, h)[0]

    def post_multipart(self, path: str, fields: dict[str, str],
                       files: list[tuple[str, str, bytes]] = ()) -> Reply:  # type: ignore[assignment]
        boundary = "----pymailtestboundary7MA4YWxkTrZu0gW"
        parts = []
        for name, value in fields.items():
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                         .encode() + value.encode("utf-8") + b"\r\n")
        for filename, ctype, data in files:
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="attachment"; '
                         f'filename="{filename}"\r\nContent-Type: {ctype}\r\n\r\n'.encode()
                         + data + b"\r\n")
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        return self.open("POST", path, body,
                         {"Content-Type": f"multipart/form-data; boundary={boundary}"})[0]

    def sign_in(self, address: str, password: str | None = None) -> Reply:
        form = self.get("/signin")
        return self.post("/signin", {"csrf": csrf_of(form.text), "username": address,
                                     "password": password or PASSWORDS[address]})

    def csrf(self) -> str:
        return csrf_of(self.get("/account").text)


@attrs.define
class WebWorld:
    """The server side: portal, stores, delivery policy, the web app and its site."""

    reactor: ThreadlessReactor
    stores: MemoryStoreFactory
    delivery: LocalDelivery
    app: WebApp
    site: Any

    def browser(self) -> Browser:
        return Browser(self)

    def deliver(self, account: str, message: bytes) -> int:
        """Deliver a message to an account's INBOX as SMTP would; its UID."""
        copies = []
        self.delivery.deliver([account], message).addCallback(copies.extend)
        self.reactor.advance(0)
        return int(copies[0].uid)

    def mailbox(self, account: str, name: str = "INBOX") -> Any:
        found = []
        self.stores.open_store(account, "/nonexistent").get_mailbox(name).addCallback(found.append)
        return found[0]


def make_world(admins: tuple[str, ...] = (), directory: Any = None,
               max_body: int | None = None, max_message_size: int | None = None,
               special_use: bool = False,
               reactor: ThreadlessReactor | None = None) -> WebWorld:
    reactor = reactor if reactor is not None else ThreadlessReactor()
    stores = MemoryStoreFactory(special_use_folders=special_use)
    portal, memory_directory, _ = memory_portal(PASSWORDS, stores)
    delivery = LocalDelivery(memory_directory, stores, "/nonexistent")
    app = WebApp(portal=portal, sessions=SessionStore(reactor, 3600, 600),
                 submitter=Submitter(delivery, "mail.example.org"),
                 directory=directory if directory is not None else memory_directory,
                 clock=reactor, settings=SETTINGS, admins=frozenset(admins),
                 max_message_size=max_message_size,
                 **({"max_body": max_body} if max_body is not None else {}))
    return WebWorld(reactor, stores, delivery, app, make_site(app))


def message(subject: str = "Hello", body: str = "Hi there.", sender: str = "friend@example.net",
            extra: str = "") -> bytes:
    text = (f"From: Friend <{sender}>\r\nTo: alice@example.org\r\nSubject: {subject}\r\n"
            f"Date: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{abs(hash(subject))}@x>\r\n"
            f"{extra}MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            f"{body}\r\n")
    return text.encode("utf-8")


def parse_mail(data: bytes) -> Any:
    return BytesParser(policy=policy.default).parsebytes(data)


TAG = re.compile(r"<[^>]+>")

__all__ = ["Browser", "PASSWORDS", "WebWorld", "csrf_of", "make_world", "message", "parse_mail"]
