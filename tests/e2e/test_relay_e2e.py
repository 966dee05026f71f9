"""
Outbound relay end to end: a real pymail (the sender) with its DNS pointed
at a twisted.names server on loopback, relaying to a second real pymail
(mx.good.test on 127.0.0.4) and to a scripted SMTP peer on 127.0.0.2 that
refuses, defers or accepts per recipient.  Clients: swaks and s-nail on
submission, smtplib; mail read back with poplib.

The scenarios share one set of processes (module scope) to keep the run
short; each uses its own recipients.
"""

from __future__ import annotations

import poplib
import smtplib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import PymailProcess, free_port, tool

SENDER = ("alice@example.org", "alice-pw")
CAROL = ("carol@good.test", "carol-pw")

DNS_SERVER = """
import sys
from twisted.internet import reactor
from twisted.names import authority, dns, server
port = int(sys.argv[1])
factory = server.DNSServerFactory(
    authorities=[authority.PySourceAuthority(z) for z in sys.argv[2:]])
reactor.listenUDP(port, dns.DNSDatagramProtocol(factory), interface="127.0.0.1")
reactor.listenTCP(port, factory, interface="127.0.0.1")
print("ready", flush=True)
reactor.run()
"""

SOA = ("SOA({name!r}, mname='ns.test', rname='root.test', serial=1, refresh=60, retry=60, "
       "expire=60, minimum=60)")

ZONES = {
    # The second pymail.
    "good.test": ["MX('good.test', 10, 'mx.good.test')", "A('mx.good.test', '127.0.0.4')"],
    # The first MX refuses connections (nothing listens on 127.0.0.5); the second is the peer.
    "failover.test": ["MX('failover.test', 10, 'mx1.failover.test')",
                      "MX('failover.test', 20, 'mx2.failover.test')",
                      "A('mx1.failover.test', '127.0.0.5')",
                      "A('mx2.failover.test', '127.0.0.2')"],
    "peer.test": ["MX('peer.test', 10, 'mx.peer.test')", "A('mx.peer.test', '127.0.0.2')"],
    "nullmx.test": ["MX('nullmx.test', 0, '')"],
    # IPv6 only: the peer's second socket on ::1.
    "six.test": ["MX('six.test', 10, 'mx.six.test')", "AAAA('mx.six.test', '::1')"],
}


class ScriptedPeer:
    """
    A minimal SMTP server in a thread.  Per recipient local part:
    ``reject*`` gets 550 at RCPT; ``defer*`` gets 451 at RCPT while
    :attr:`deferring` is true; anything else is accepted.
    """

    def __init__(self, host: str, port: int, also: str | None = None) -> None:
        self.sock = socket.create_server((host, port))
        self.extra = []
        if also is not None:
            six = socket.create_server((also, port), family=socket.AF_INET6)
            self.extra.append(six)
            threading.Thread(target=self._serve, args=(six,), daemon=True).start()
        self.deferring = True
        self.received: list[tuple[str, list[str], bytes]] = []
        self.rcpt_log: list[tuple[str, str]] = []
        self.thread = threading.Thread(target=self._serve, args=(self.sock,), daemon=True)
        self.thread.start()

    def _serve(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        f = conn.makefile("rb")
        conn.settimeout(30)

        def send(line: str) -> None:
            conn.sendall(line.encode() + b"\r\n")

        send("220 peer.test ESMTP scripted")
        sender, rcpts = "", []
        try:
            while True:
                line = f.readline()
                if not line:
                    return
                cmd = line.decode().strip()
                verb = cmd.split(" ")[0].upper()
                if verb == "EHLO":
                    send("250-peer.test\r\n250 PIPELINING")
                elif verb == "MAIL":
                    sender, rcpts = cmd[10:].strip("<> "), []
                    send("250 2.1.0 ok")
                elif verb == "RCPT":
                    rcpt = cmd[8:].split(">")[0].strip("<")
                    local = rcpt.split("@")[0]
                    if local.startswith("reject"):
                        self.rcpt_log.append((rcpt, "550"))
                        send("550 5.1.1 no such user here")
                    elif local.startswith("defer") and self.deferring:
                        self.rcpt_log.append((rcpt, "451"))
                        send("451 4.2.0 mailbox busy, try later")
                    else:
                        self.rcpt_log.append((rcpt, "250"))
                        rcpts.append(rcpt)
                        send("250 2.1.5 ok")
                elif verb == "DATA":
                    if not rcpts:
                        send("554 5.5.1 no valid recipients")
                        continue
                    send("354 go ahead")
                    data = b""
                    while not data.endswith(b"\r\n.\r\n"):
                        chunk = f.readline()
                        if not chunk:
                            return
                        data += chunk
                    self.received.append((sender, rcpts, data[:-3]))
                    send("250 2.0.0 queued")
                elif verb == "QUIT":
                    send("221 bye")
                    return
                else:
                    send("250 ok")
        except OSError:
            return
        finally:
            f.close()
            conn.close()

    def close(self) -> None:
        for sock in (self.sock, *self.extra):
            sock.close()


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def pop3_all(server: PymailProcess, user: tuple[str, str]) -> list[bytes]:
    pop = poplib.POP3("127.0.0.1", server.ports["pop3"], timeout=30)
    try:
        pop.user(user[0])
        pop.pass_(user[1])
        count, _ = pop.stat()
        return [b"\r\n".join(pop.retr(n)[1]) + b"\r\n" for n in range(1, count + 1)]
    finally:
        pop.quit()


class Relay:
    """The processes of one run."""

    def __init__(self, root: Path) -> None:
        self.mx_port = free_port()
        self.dns_port = free_port()
        zones = []
        for name, records in ZONES.items():
            path = root / f"{name}.zone.py"
            path.write_text("zone = [\n" + ",\n".join([SOA.format(name=name), *records])
                            + "\n]\n")
            zones.append(str(path))
        self.dns = subprocess.Popen([sys.executable, "-c", DNS_SERVER, str(self.dns_port),
                                     *zones], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert self.dns.stdout is not None
        assert self.dns.stdout.readline().strip() == b"ready"
        self.peer = ScriptedPeer("127.0.0.2", self.mx_port, also="::1")
        (root / "remote").mkdir()
        self.remote = PymailProcess(root / "remote")
        self.remote.pymail("domain", "add", "good.test")
        self.remote.pymail("user", "add", CAROL[0], stdin=CAROL[1] + "\n")
        text = self.remote.config_path.read_text()
        plain = f'[smtp]\nlisten = ["tcp:{self.remote.ports["smtp"]}:interface=127.0.0.1"]'
        assert plain in text
        self.remote.config_path.write_text(
            text.replace(plain, f'[smtp]\nlisten = ["tcp:{self.mx_port}:interface=127.0.0.4"]'))
        del self.remote.ports["smtp"]  # not on 127.0.0.1: start() must not wait for it
        self.remote.start()
        (root / "sender").mkdir()
        self.sender = PymailProcess(
            root / "sender",
            extra_config=(
                "[relay]\n"
                f'nameservers = ["127.0.0.1:{self.dns_port}"]\n'
                f"port = {self.mx_port}\n"
                'retry_schedule = ["1s"]\n'
                "scan_interval = 1\n"
                "dns_timeout = 3\n"
            ),
            users=dict([SENDER]),
        )
        self.sender.start()

    def submit(self, *recipients: str, body: str = "hello", extra: str = "") -> None:
        message = (f"From: {SENDER[0]}\r\nTo: {', '.join(recipients)}\r\n"
                   f"Subject: relay test {extra}\r\nMessage-ID: <{time.monotonic_ns()}@t>\r\n"
                   f"\r\n{body}\r\n")
        with smtplib.SMTP("127.0.0.1", self.sender.ports["submission"], timeout=30) as s:
            s.login(*SENDER)
            refused = s.sendmail(SENDER[0], list(recipients), message)
        assert refused == {}

    def log_has(self, text: str) -> bool:
        return text in self.sender.log()

    def close(self) -> None:
        for proc in (self.sender, self.remote):
            proc.stop()
        self.peer.close()
        self.dns.terminate()
        self.dns.wait(10)
        if self.dns.stdout is not None:
            self.dns.stdout.close()


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    r = Relay(tmp_path_factory.mktemp("relay"))
    try:
        yield r
    finally:
        r.close()


def test_delivery_to_remote_pymail_with_swaks(relay: Relay) -> None:
    """A message submitted with swaks reaches the remote pymail byte for byte via MX lookup."""
    body = "Relayed through MX.\r\n..a line starting with a dot\r\nend"
    result = subprocess.run(
        [tool("swaks"), "--server", "127.0.0.1", "--port", str(relay.sender.ports["submission"]),
         "--auth", "PLAIN", "--auth-user", SENDER[0], "--auth-password", SENDER[1],
         "--from", SENDER[0], "--to", CAROL[0], "--header", "Subject: via swaks",
         "--body", body, "--h-Date", "Thu, 1 Jan 2026 00:00:00 +0000"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "250 2.0.0 Ok: queued as" in result.stdout
    [stored] = wait_for("the remote inbox", lambda: pop3_all(relay.remote, CAROL))
    # swaks dot-stuffs "..a" as "...a"; the stored line is the one swaks meant.
    assert b"\r\n..a line starting with a dot\r\nend\r\n" in stored
    assert b"Subject: via swaks\r\n" in stored
    # The sender's Received header (with its queue id) travelled with the message.
    assert b"by mx.test.example (pymail) with ESMTPA id" in stored
    assert relay.log_has("mail.sent id=") and relay.log_has("to=<carol@good.test>")


def test_s_nail_submission(relay: Relay) -> None:
    """s-nail submits through pymail (AUTH over loopback) and the message is relayed."""
    env = {"HOME": str(relay.sender.root), "PATH": "/usr/bin:/bin"}
    url = (f"smtp://alice%40example.org:alice-pw@127.0.0.1:"
           f"{relay.sender.ports['submission']}")
    result = subprocess.run(
        [tool("s-nail"), "-:/", "-S", "v15-compat", "-S", f"mta={url}",
         "-S", "smtp-auth=plain", "-S", "from=alice@example.org", "-s", "via s-nail",
         "someone@peer.test"],
        input="sent with s-nail\n", capture_output=True, text=True, timeout=60, env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    sent = wait_for("the peer to receive it", lambda: [
        m for m in relay.peer.received if "someone@peer.test" in m[1]])
    assert b"Subject: via s-nail" in sent[0][2]
    assert sent[0][0] == SENDER[0]


def test_failover_to_second_mx(relay: Relay) -> None:
    """With the first MX refusing connections, the second MX gets the message."""
    relay.submit("fo@failover.test", extra="failover")
    wait_for("delivery via mx2", lambda: [m for m in relay.peer.received
                                          if "fo@failover.test" in m[1]])


def test_bounce_after_5xx_and_null_mx(relay: Relay) -> None:
    """A 550 from the peer and a null-MX domain bounce to the sender as RFC 3464 reports."""
    relay.submit("reject1@peer.test", "x@nullmx.test", "ok2@peer.test", extra="bounce")
    wait_for("the accepted copy", lambda: [m for m in relay.peer.received
                                           if "ok2@peer.test" in m[1]])
    notices = wait_for("the bounce", lambda: [
        m for m in pop3_all(relay.sender, SENDER) if b"reject1@peer.test" in m])
    notice = notices[0]
    assert b"Content-Type: multipart/report; report-type=delivery-status" in notice
    assert b"Final-Recipient: rfc822; reject1@peer.test" in notice
    assert b"Diagnostic-Code: smtp; 550 5.1.1 no such user here" in notice
    assert b"Final-Recipient: rfc822; x@nullmx.test" in notice
    assert b"Status: 5.1.10" in notice
    assert b"Final-Recipient: rfc822; ok2@peer.test" not in notice
    assert b"Return-Path: <>" in notice


def test_retry_after_4xx_and_restart_with_queued_mail(relay: Relay) -> None:
    """A 451 keeps the message queued across a kill -9 and restart; it goes once accepted."""
    relay.peer.deferring = True
    relay.submit("defer1@peer.test", extra="deferred")
    wait_for("the first deferral", lambda: ("defer1@peer.test", "451") in relay.peer.rcpt_log)
    wait_for("a retry", lambda: relay.peer.rcpt_log.count(("defer1@peer.test", "451")) >= 2)
    listing = relay.sender.pymail("queue", "list").stdout
    assert "defer1@peer.test" in listing and "451 4.2.0" in listing
    relay.sender.kill9()
    relay.peer.deferring = False
    relay.sender.start()
    wait_for("delivery after restart", lambda: [m for m in relay.peer.received
                                                if "defer1@peer.test" in m[1]])
    wait_for("an empty queue", lambda: "The queue is empty."
             in relay.sender.pymail("queue", "list").stdout)


def test_ipv6_mx(relay: Relay) -> None:
    """An MX with only an AAAA record is reached over IPv6."""
    relay.submit("v6@six.test", extra="ipv6")
    wait_for("delivery over IPv6", lambda: [m for m in relay.peer.received
                                            if "v6@six.test" in m[1]])
    relay.sender.wait_for_log("[::1]")


def test_kill9_loses_nothing_acknowledged(relay: Relay) -> None:
    """Every message acknowledged before a kill -9 is delivered after the restart."""
    count = 15
    for i in range(count):
        relay.submit(f"k{i}@peer.test", extra=f"kill {i}")
    relay.sender.kill9()
    relay.sender.start()
    wanted = {f"k{i}@peer.test" for i in range(count)}
    wait_for("every acknowledged message", lambda: wanted <= {
        r for m in relay.peer.received for r in m[1]})
