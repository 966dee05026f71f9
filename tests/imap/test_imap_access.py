"""Tests for AUTHENTICATE PLAIN (with SASL-IR), STARTTLS, LOGINDISABLED and the pre-login limit."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from imap_harness import PASSWORD, USER, Client, Server
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from pymail.tls import ServerTLS, make_selfsigned


def plain(user: str = USER, password: str = PASSWORD, authzid: str = "") -> bytes:
    return base64.b64encode(f"{authzid}\0{user}\0{password}".encode())


def test_authenticate_plain_with_initial_response() -> None:
    """AUTHENTICATE PLAIN with SASL-IR logs in at once and lists the new capabilities."""
    client = Server().connect()
    response = client.cmd(b"a AUTHENTICATE PLAIN " + plain())
    assert response.startswith(b"a OK [CAPABILITY IMAP4rev1 ")
    assert response.endswith(b"] AUTHENTICATE completed\r\n")
    assert client.proto.account.address == USER


def test_authenticate_plain_with_continuation() -> None:
    """Without an initial response the server asks with an empty continuation."""
    client = Server().connect()
    assert client.cmd("a AUTHENTICATE PLAIN") == b"+ \r\n"
    assert client.cmd(plain()).startswith(b"a OK [CAPABILITY")


def test_authenticate_failures() -> None:
    """Wrong password, cancel, bad base64 and another authzid get NO or BAD; connection lives."""
    client = Server().connect()
    assert client.cmd(b"a AUTHENTICATE PLAIN " + plain(password="nope")).startswith(
        b"a NO [AUTHENTICATIONFAILED]"
    )
    client.cmd("b AUTHENTICATE PLAIN")
    assert client.cmd("*") == b"b BAD AUTHENTICATE cancelled\r\n"
    assert client.cmd("c AUTHENTICATE PLAIN %%%").startswith(b"c BAD")
    assert client.cmd(b"d AUTHENTICATE PLAIN " + plain(authzid="bob@example.org")).startswith(
        b"d NO [AUTHORIZATIONFAILED]"
    )
    assert client.cmd(b"e AUTHENTICATE PLAIN " + base64.b64encode(b"junk")).startswith(b"e BAD")
    assert client.cmd(b"f AUTHENTICATE PLAIN " + plain()).startswith(b"f OK")


def test_authenticate_pipelined_after_response_waits() -> None:
    """A command sent right after the SASL response runs only after the login finished."""
    client = Server().connect()
    client.cmd("a AUTHENTICATE PLAIN")
    response = client.send(plain() + b"\r\nb SELECT INBOX\r\n")
    assert b"a OK" in response and b"b OK [READ-WRITE]" in response


class TLSTransport(StringTransport):
    """A StringTransport that records startTLS and has a chosen peer."""

    def __init__(self, host: str) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", host, 40000))
        self.tls_started: Any = None

    def startTLS(self, creator: Any) -> None:
        self.tls_started = creator


def tls_client(tmp_path: Path, host: str, **options: Any) -> tuple[Client, TLSTransport]:
    make_selfsigned("imap.example.org", str(tmp_path / "c.pem"), str(tmp_path / "k.pem"))
    tls = ServerTLS(str(tmp_path / "c.pem"), str(tmp_path / "k.pem"))
    server = Server(tls=tls, **options)
    client = Client.__new__(Client)
    client.server = server
    transport = TLSTransport(host)
    client.transport = transport
    client.proto = server.factory.buildProtocol(None)
    client.proto.makeConnection(transport)
    client.greeting = client.read()
    return client, transport


def test_starttls_then_login(tmp_path: Path) -> None:
    """Off loopback, passwords wait for TLS: LOGINDISABLED, STARTTLS, then LOGIN works."""
    client, transport = tls_client(tmp_path, "192.0.2.7")
    assert b" STARTTLS LOGINDISABLED]" in client.greeting
    assert b"AUTH=PLAIN" not in client.greeting
    assert client.cmd(f"a LOGIN {USER} {PASSWORD}").startswith(b"a NO [PRIVACYREQUIRED]")
    assert client.cmd(b"b AUTHENTICATE PLAIN " + plain()).startswith(b"b NO [PRIVACYREQUIRED]")
    # Input pipelined behind STARTTLS is thrown away (RFC 3501 6.2.1).
    assert client.send(b"c STARTTLS\r\nd NOOP\r\n") == b"c OK Begin TLS negotiation now\r\n"
    assert transport.tls_started is client.server.factory.tls.creator
    caps = client.lines("e CAPABILITY")[0]
    assert b"STARTTLS" not in caps and b"LOGINDISABLED" not in caps and b"AUTH=PLAIN" in caps
    assert client.cmd("f STARTTLS").startswith(b"f BAD")
    assert client.cmd(f"g LOGIN {USER} {PASSWORD}").startswith(b"g OK")


def test_loopback_may_log_in_without_tls(tmp_path: Path) -> None:
    """On loopback LOGIN works before STARTTLS unless that is turned off."""
    client, _ = tls_client(tmp_path, "127.0.0.1")
    assert b"LOGINDISABLED" not in client.greeting and b"STARTTLS" in client.greeting
    assert client.cmd(f"a LOGIN {USER} {PASSWORD}").startswith(b"a OK")
    strict, _ = tls_client(tmp_path, "127.0.0.1", allow_plaintext_on_loopback=False)
    assert b"LOGINDISABLED" in strict.greeting


def test_starttls_without_certificate_is_bad() -> None:
    """STARTTLS is not offered and answered BAD when no certificate is configured."""
    client = Server().connect()
    assert b"STARTTLS" not in client.greeting
    assert client.cmd("a STARTTLS").startswith(b"a BAD")


def test_preauth_timeout_is_absolute() -> None:
    """Commands before login do not extend the pre-login time limit."""
    server = Server(preauth_timeout=60)
    client = server.connect()
    for _ in range(5):
        server.clock.advance(15)
        if client.closed:
            break
        client.cmd("a NOOP")
    assert client.closed
    assert server.clock.seconds() <= 75


def test_cleartext_policy_tls_refuses_loopback(tmp_path: Path) -> None:
    """With cleartext_auth = "tls" even loopback must STARTTLS before LOGIN."""
    client, _ = tls_client(tmp_path, "127.0.0.1", cleartext_auth="tls")
    assert b"LOGINDISABLED" in client.greeting
    assert client.cmd(f"a LOGIN {USER} {PASSWORD}").startswith(b"a NO [PRIVACYREQUIRED]")


def test_failed_logins_go_through_the_throttle() -> None:
    """With a LoginThrottle, repeated failures are refused without checking the password."""
    from pymail.auth.throttle import LoginThrottle

    server = Server()
    throttle = LoginThrottle(server.clock)
    server.factory.throttle = throttle
    client = server.connect()
    for n in range(3):
        client.cmd(f"a{n} LOGIN {USER} wrong")
        server.clock.advance(10)
    assert throttle.failures("192.168.1.1", USER) >= 3


def test_authenticate_login_mechanism() -> None:
    """AUTH=LOGIN asks for the user name, then the password (also with SASL-IR); * cancels."""
    client = Server().connect()
    assert b"AUTH=LOGIN" in client.cmd("c CAPABILITY")
    assert client.cmd("a AUTHENTICATE LOGIN") == b"+ " + base64.b64encode(b"Username:") + b"\r\n"
    assert client.cmd(base64.b64encode(USER.encode())) == (
        b"+ " + base64.b64encode(b"Password:") + b"\r\n"
    )
    assert client.cmd(base64.b64encode(PASSWORD.encode())).startswith(b"a OK [CAPABILITY")
    assert client.proto.account.address == USER

    other = Server().connect()
    assert other.cmd(b"a AUTHENTICATE LOGIN " + base64.b64encode(USER.encode())).startswith(
        b"+ " + base64.b64encode(b"Password:")
    )
    assert other.cmd(base64.b64encode(b"wrong")).startswith(b"a NO [AUTHENTICATIONFAILED]")
    other.cmd("b AUTHENTICATE LOGIN")
    assert other.cmd("*") == b"b BAD AUTHENTICATE cancelled\r\n"
    other.cmd("c AUTHENTICATE LOGIN")
    assert other.cmd("%%%").startswith(b"c BAD")
    assert other.cmd("d NOOP") == b"d OK NOOP completed\r\n"
