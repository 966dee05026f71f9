"""
SCRAM-SHA-256 against the real process: a client-side SCRAM
(:class:`pymail.testing.ScramClient`, RFC 5802 section 3 with hashlib/hmac;
the stdlib clients have none) driven by imaplib's AUTHENTICATE, a raw POP3
AUTH and smtplib's AUTH, over plain TCP with the ``tls`` clear-text policy:
SCRAM sends no password, so it is offered where PLAIN and LOGIN are not.
"""

from __future__ import annotations

import base64
import imaplib
import poplib
import smtplib
from collections.abc import Callable, Iterator

import pytest
from harness import PymailProcess

from pymail.testing import ScramClient

USERS = {"alice@example.org": "pencil-and-paper", "bob@example.org": "bob-pw"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PymailProcess]:
    proc = PymailProcess(tmp_path_factory.mktemp("scram"),
                         extra_config='[security]\ncleartext_auth = "tls"\n', users=USERS)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def test_passwd_holds_a_scram_credential_not_the_password(server: PymailProcess) -> None:
    """`pymail user add` stored a SCRAM-SHA-256 extra field and no clear-text password."""
    text = (server.data_dir / "passwd").read_text()
    line = next(line for line in text.splitlines() if line.startswith("alice@example.org:"))
    assert " scram-sha-256=" in line or ":scram-sha-256=" in line
    assert USERS["alice@example.org"] not in text


def test_imap_authenticate_scram(server: PymailProcess) -> None:
    """imaplib logs in with SCRAM-SHA-256 over plain TCP, and the server proves it knows the key."""
    with imaplib.IMAP4("127.0.0.1", server.ports["imap"], timeout=30) as imap:
        assert "AUTH=SCRAM-SHA-256" in imap.capabilities
        assert "AUTH=PLAIN" not in imap.capabilities
        client = ScramClient("alice@example.org", USERS["alice@example.org"])
        typ, _ = imap.authenticate("SCRAM-SHA-256", client)
        assert typ == "OK" and client.server_verified
        typ, data = imap.select("INBOX")
        assert typ == "OK"


def test_imap_scram_wrong_password_and_unknown_user_fail_alike(server: PymailProcess) -> None:
    """A wrong password and an unknown user both get NO [AUTHENTICATIONFAILED] and are logged."""
    for user, password in (("bob@example.org", "not-bobs"), ("nobody@example.org", "x")):
        with imaplib.IMAP4("127.0.0.1", server.ports["imap"], timeout=30) as imap:
            with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
                imap.authenticate("SCRAM-SHA-256", ScramClient(user, password))
    server.wait_for_log(*(f"pymail auth failure: service=imap rhost=127.0.0.1 user={user}"
                          for user in ("bob@example.org", "nobody@example.org")))


def test_imap_scram_malformed_gets_bad(server: PymailProcess) -> None:
    """Garbage in a SCRAM exchange gets a tagged BAD and the connection stays usable."""
    with imaplib.IMAP4("127.0.0.1", server.ports["imap"], timeout=30) as imap:
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATE"):
            imap.authenticate("SCRAM-SHA-256", lambda challenge: b"p=tls-unique,,n=x,r=y")
        assert imap.noop()[0] == "OK"


def _pop3_auth(server: PymailProcess, client: ScramClient) -> tuple[poplib.POP3, bytes]:
    pop = poplib.POP3("127.0.0.1", server.ports["pop3"], timeout=30)
    pop._putcmd("AUTH SCRAM-SHA-256 " + base64.b64encode(client(None)).decode())
    while True:
        line, _ = pop._getline()
        if not line.startswith(b"+ "):
            return pop, line
        pop._putline(base64.b64encode(client(base64.b64decode(line[2:]))))


def test_pop3_auth_scram(server: PymailProcess) -> None:
    """POP3 AUTH SCRAM-SHA-256 with an initial response logs in over plain TCP."""
    pop = poplib.POP3("127.0.0.1", server.ports["pop3"], timeout=30)
    capa = pop.capa()
    pop.quit()
    assert capa["SASL"] == ["SCRAM-SHA-256"] and "USER" not in capa
    client = ScramClient("alice@example.org", USERS["alice@example.org"])
    pop, last = _pop3_auth(server, client)
    try:
        assert last.startswith(b"+OK") and client.server_verified
        assert pop.stat()[0] >= 0
    finally:
        pop.quit()
    pop, last = _pop3_auth(server, ScramClient("alice@example.org", "wrong"))
    pop.quit()
    assert last.startswith(b"-ERR [AUTH]")


def _smtp(client: ScramClient) -> Callable[..., str]:
    """smtplib's authobject: called with no challenge for the initial response, returns str."""
    return lambda challenge=None: client(challenge).decode("ascii")


def test_smtp_submission_auth_scram(server: PymailProcess) -> None:
    """smtplib authenticates on submission with SCRAM-SHA-256, the only mechanism without TLS."""
    with smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=30) as smtp:
        smtp.ehlo()
        assert smtp.esmtp_features["auth"].split() == ["SCRAM-SHA-256"]
        client = ScramClient("alice@example.org", USERS["alice@example.org"])
        code, _ = smtp.auth("SCRAM-SHA-256", _smtp(client))
        assert code == 235 and client.server_verified
    with smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=30) as smtp:
        smtp.ehlo()
        with pytest.raises(smtplib.SMTPAuthenticationError) as caught:
            smtp.auth("SCRAM-SHA-256", _smtp(ScramClient("alice@example.org", "wrong")))
        assert caught.value.smtp_code == 535


def test_scram_credential_follows_password_change(server: PymailProcess) -> None:
    """After `pymail user passwd` SCRAM takes the new password and not the old one."""
    server.pymail("user", "passwd", "bob@example.org", stdin="bob-new-pw\n")
    with imaplib.IMAP4("127.0.0.1", server.ports["imap"], timeout=30) as imap:
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            imap.authenticate("SCRAM-SHA-256", ScramClient("bob@example.org", "bob-pw"))
    with imaplib.IMAP4("127.0.0.1", server.ports["imap"], timeout=30) as imap:
        typ, _ = imap.authenticate("SCRAM-SHA-256", ScramClient("bob@example.org", "bob-new-pw"))
        assert typ == "OK"
