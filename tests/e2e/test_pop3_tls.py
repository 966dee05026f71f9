"""
POP3 over TLS with real clients: poplib (POP3_SSL on the implicit-TLS port
and STLS on the plain one), fetchmail (keep, no keep, UIDL tracking) and
getmail6, against the real pymail process with a test certificate.
"""

from __future__ import annotations

import os
import poplib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from tls_harness import ALICE, HOSTNAME, TLSPymailProcess, strip_trace, tool

from harness import wire


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSPymailProcess]:
    proc = TLSPymailProcess(tmp_path_factory.mktemp("pop3tls"), users={ALICE[0]: ALICE[1]})
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def retr_all(pop: poplib.POP3) -> list[bytes]:
    count, _ = pop.stat()
    out = []
    for n in range(1, count + 1):
        _, lines, _ = pop.retr(n)
        out.append(b"".join(line + b"\r\n" for line in lines))
    return out


def pop3s(server: TLSPymailProcess, login: bool = True) -> poplib.POP3_SSL:
    """A POP3_SSL session on the implicit-TLS port trusting the test certificate."""
    pop = poplib.POP3_SSL("127.0.0.1", server.ports["pop3_tls"],
                          context=server.client_context(), timeout=30)
    if login:
        pop.user(ALICE[0])
        pop.pass_(ALICE[1])
    return pop


def empty_maildrop(server: TLSPymailProcess) -> None:
    pop = pop3s(server)
    count, _ = pop.stat()
    for n in range(1, count + 1):
        pop.dele(n)
    pop.quit()


def test_pop3_ssl_retrieves_byte_exact(tls_server: TLSPymailProcess) -> None:
    """poplib.POP3_SSL on the implicit-TLS port logs in and reads messages byte-exact."""
    empty_maildrop(tls_server)
    sent = tls_server.deliver(4)
    pop = pop3s(tls_server, login=False)
    try:
        capa = pop.capa()
        assert "STLS" not in capa, "STLS is offered on a connection that already has TLS"
        assert capa["SASL"] == ["SCRAM-SHA-256", "PLAIN", "LOGIN"]
        assert pop.sock.version() in ("TLSv1.2", "TLSv1.3")
        pop.user(ALICE[0])
        pop.pass_(ALICE[1])
        got = retr_all(pop)
    finally:
        pop.quit()
    assert [strip_trace(m) for m in got] == sent


def test_stls_upgrades_and_then_logs_in(tls_server: TLSPymailProcess) -> None:
    """On the plain port CAPA offers STLS; after stls() the session logs in and reads."""
    empty_maildrop(tls_server)
    sent = tls_server.deliver(2)
    pop = poplib.POP3("127.0.0.1", tls_server.ports["pop3"], timeout=30)
    try:
        assert "STLS" in pop.capa()
        pop.stls(tls_server.client_context())
        capa = pop.capa()
        assert "STLS" not in capa
        assert "USER" in capa
        pop.user(ALICE[0])
        pop.pass_(ALICE[1])
        got = retr_all(pop)
    finally:
        pop.quit()
    assert [strip_trace(m) for m in got] == sent


def test_auth_plain_with_initial_response_over_tls(tls_server: TLSPymailProcess) -> None:
    """AUTH PLAIN with an initial response (RFC 5034) logs in over TLS."""
    import base64

    pop = pop3s(tls_server, login=False)
    try:
        token = base64.b64encode(b"\0" + ALICE[0].encode() + b"\0" + ALICE[1].encode())
        reply = pop._shortcmd("AUTH PLAIN " + token.decode())
        assert reply.startswith(b"+OK maildrop has")
    finally:
        pop.quit()


def body(message: bytes) -> bytes:
    """Everything after the header of a wire-form message."""
    return message.split(b"\r\n\r\n", 1)[1]


def _fetchmail(server: TLSPymailProcess, tmp: Path, *, implicit: bool, keep: bool,
               idfile: Path) -> list[bytes]:
    out_dir = tmp / f"fetched-{len(list(tmp.glob('fetched-*')))}"
    out_dir.mkdir()
    mda = tmp / "mda.sh"
    mda.write_text('#!/bin/sh\ncat > "$1/$(date +%s%N).$$"\n')
    mda.chmod(0o755)
    port = server.ports["pop3_tls" if implicit else "pop3"]
    rc = tmp / "fetchmailrc"
    rc.write_text(
        f'poll 127.0.0.1 service {port} protocol pop3 uidl\n'
        f'  user "{ALICE[0]}" password "{ALICE[1]}"\n'
        f'  {"ssl" if implicit else ""} sslproto TLS1.2+ sslcertck sslcertfile "{server.cert}"\n'
        f'  sslcommonname "{HOSTNAME}"\n'
        f'  {"keep" if keep else "nokeep fetchall"}\n'
        f'  mda "{mda} {out_dir}"\n'
    )
    rc.chmod(0o600)
    result = subprocess.run(
        [tool("fetchmail"), "--fetchmailrc", str(rc), "--idfile", str(idfile), "--invisible",
         "--nosyslog", "--nodetach", "--verbose"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "HOME": str(tmp)},
    )
    # fetchmail exits 1 when there was no mail: both are success here.
    assert result.returncode in (0, 1), result.stdout + result.stderr
    # Verbose fetchmail describes the certificate it checked: TLS was used.
    assert "Subject CommonName: " + HOSTNAME in result.stdout + result.stderr
    files = sorted(out_dir.iterdir(), key=lambda p: p.name)
    return [p.read_bytes() for p in files]


@pytest.mark.parametrize("implicit", [False, True], ids=["stls", "implicit-tls"])
def test_fetchmail_keep_uidl_then_nokeep(tls_server: TLSPymailProcess, tmp_path: Path,
                                         implicit: bool) -> None:
    """fetchmail with keep+uidl fetches only new mail; without keep it empties the maildrop."""
    empty_maildrop(tls_server)
    idfile = tmp_path / "fetchids"
    first = tls_server.deliver(3)
    got = _fetchmail(tls_server, tmp_path, implicit=implicit, keep=True, idfile=idfile)
    assert [strip_trace(wire(m)) for m in got] == first
    # Nothing new: the UIDL list remembers what was fetched.
    again = _fetchmail(tls_server, tmp_path, implicit=implicit, keep=True, idfile=idfile)
    assert again == []
    newer = tls_server.deliver(1, start=3)
    got = _fetchmail(tls_server, tmp_path, implicit=implicit, keep=True, idfile=idfile)
    assert [strip_trace(wire(m)) for m in got] == newer
    # Without keep, everything is fetched (fetchall) and deleted.
    got = _fetchmail(tls_server, tmp_path, implicit=implicit, keep=False,
                     idfile=tmp_path / "other-ids")
    assert len(got) == 4
    pop = pop3s(tls_server)
    assert pop.stat() == (0, 0)
    pop.quit()


@pytest.mark.parametrize("delete", [False, True], ids=["leave", "delete"])
def test_getmail6_over_pop3s(tls_server: TLSPymailProcess, tmp_path: Path,
                             delete: bool) -> None:
    """getmail6 (SimplePOP3SSLRetriever) delivers every message to a Maildir, then only new ones."""
    empty_maildrop(tls_server)
    sent = tls_server.deliver(3)
    maildir = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    rc = tmp_path / "getmailrc"
    rc.write_text(
        "[retriever]\ntype = SimplePOP3SSLRetriever\nserver = 127.0.0.1\n"
        f"port = {tls_server.ports['pop3_tls']}\nusername = {ALICE[0]}\n"
        f"password = {ALICE[1]}\nca_certs = {tls_server.cert}\n"
        # An external MDA: getmail's Maildir destination refuses to run as
        # root (CI may be root); allow_root_commands only matters then.
        "\n[destination]\ntype = MDA_external\npath = /bin/sh\n"
        f"arguments = (\"-c\", \"cat > {maildir}/new/$$\")\nallow_root_commands = true\n"
        f"\n[options]\ndelete = {'true' if delete else 'false'}\nread_all = false\n"
        "verbose = 1\n"
    )

    def run() -> list[bytes]:
        result = subprocess.run(
            [tool("getmail"), "--getmaildir", str(tmp_path), "--rcfile", str(rc)],
            capture_output=True, text=True, timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        files = sorted((maildir / "new").iterdir(), key=lambda p: p.stat().st_mtime_ns)
        data = [p.read_bytes() for p in files]
        for p in files:
            p.unlink()
        return data

    got = run()
    assert len(got) == len(sent)
    # getmail re-renders the header with Python's email package (its own
    # Return-Path, Delivered-To, Received; refolding), so bodies are compared
    # byte for byte and headers by Message-ID.
    assert sorted(body(wire(m)) for m in got) == sorted(body(m) for m in sent)
    later = tls_server.deliver(1, start=3)
    got = run()
    assert len(got) == 1 and body(wire(got[0])) == body(later[0])
    pop = pop3s(tls_server)
    assert pop.stat()[0] == (0 if delete else 4)
    pop.quit()


def test_certificate_hostname_is_the_configured_one(tls_server: TLSPymailProcess) -> None:
    """The implicit-TLS port presents the test certificate for the configured host name."""
    import socket
    import ssl

    context = tls_server.client_context()
    with socket.create_connection(("127.0.0.1", tls_server.ports["pop3_tls"]), timeout=10) as s:
        with context.wrap_socket(s, server_hostname=HOSTNAME) as tls:
            cert = tls.getpeercert()
            assert ("commonName", HOSTNAME) in [pair for rdn in cert["subject"] for pair in rdn]
            assert tls.recv(100).startswith(b"+OK")
    assert ssl.HAS_SNI
