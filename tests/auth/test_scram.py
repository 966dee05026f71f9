"""
SCRAM-SHA-256 (RFC 5802, RFC 7677): the stored credential, the server-side
exchange in :mod:`pymail.auth.sasl`, and the checker's part.
"""

from __future__ import annotations

import base64
import os

import pytest
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred

from pymail.auth import sasl
from pymail.auth.checkers import AccountsChecker
from pymail.directory.files import FileDirectory
from pymail.directory.passwords import hash_password, parse_scram_credential, scram_credential
from pymail.testing import ScramClient

# RFC 7677 section 3.
RFC_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
RFC_CLIENT_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_NONCE = b"%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
RFC_SERVER_FIRST = (b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                    b"s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
RFC_CLIENT_FINAL = (b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
RFC_SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def rfc_exchange(credentials: dict[str, str]) -> sasl.Exchange:
    return sasl.start(b"SCRAM-SHA-256", None, scram=credentials.get,
                      nonce=lambda: RFC_SERVER_NONCE)


def client_final(password: str, client_first_bare: bytes, server_first: bytes,
                 gs2: bytes = b"n,,") -> tuple[bytes, bytes]:
    """A client's final message and the server-final it expects, by :class:`ScramClient`."""
    user, nonce = (a.split(b"=", 1)[1] for a in client_first_bare.split(b","))
    client = ScramClient(user.decode(), password, nonce=nonce, gs2=gs2)
    client()
    final = client(server_first)
    return final, client.expected_server_final


RFC_CREDENTIALS = {"user": scram_credential("pencil", RFC_SALT, 4096)}


def test_rfc7677_example_exchange() -> None:
    """The server side reproduces RFC 7677's example byte for byte, ending verified."""
    exchange = rfc_exchange(RFC_CREDENTIALS)
    assert exchange.step == sasl.Challenge(b"")
    step = exchange.respond(b64(RFC_CLIENT_FIRST))
    assert step == sasl.Challenge(RFC_SERVER_FIRST)
    step = exchange.respond(b64(RFC_CLIENT_FINAL))
    assert step == sasl.Challenge(RFC_SERVER_FINAL)
    done = exchange.respond(b"")
    assert isinstance(done, sasl.Done)
    assert sasl.IScramVerified.providedBy(done.credentials)
    assert (done.credentials.username, done.credentials.verified) == (b"user", True)


def test_initial_response_starts_the_exchange() -> None:
    """A client-first message as the SASL initial response gets the server-first at once."""
    exchange = sasl.start(b"scram-sha-256", b64(RFC_CLIENT_FIRST), scram=RFC_CREDENTIALS.get,
                          nonce=lambda: RFC_SERVER_NONCE)
    assert exchange.step == sasl.Challenge(RFC_SERVER_FIRST)


def test_wrong_password_ends_unverified() -> None:
    """A proof made with another password ends unverified, without a server signature."""
    exchange = rfc_exchange(RFC_CREDENTIALS)
    exchange.respond(b64(RFC_CLIENT_FIRST))
    final, _ = client_final("pencils", b"n=user,r=rOprNGfwEbeRWgbNEkqO", RFC_SERVER_FIRST)
    done = exchange.respond(b64(final))
    assert isinstance(done, sasl.Done)
    assert done.credentials.verified is False


def test_changed_nonce_is_refused() -> None:
    """A final message whose nonce is not the one the server sent is refused."""
    exchange = rfc_exchange(RFC_CREDENTIALS)
    exchange.respond(b64(RFC_CLIENT_FIRST))
    with pytest.raises(sasl.MalformedResponse):
        exchange.respond(b64(RFC_CLIENT_FINAL.replace(b"k0,", b"k1,")))


@pytest.mark.parametrize("message", [
    b"p=tls-unique,,n=user,r=abc",       # channel binding
    b"x,,n=user,r=abc",                   # no gs2 header
    b"n,,r=abc,n=user",                   # attributes out of order
    b"n,,n=user",                         # no nonce
    b"n,,n=us=er,r=abc",                  # bad escape
    b"n,,n=,r=abc",                       # empty user
    b"n,,n=user,r=a\x01c",                # unprintable nonce
    b"n,,m=ext,n=user,r=abc",             # mandatory extension
    b"n,,n=us\x00er,r=abc",               # NUL
    b"n,,n=\xff,r=abc",                   # not UTF-8
    b"n,a=admin,n=user,r=abc",            # authzid other than the user
    b"n,",                                # truncated
    b"",
])
def test_malformed_client_first_is_refused(message: bytes) -> None:
    """Every malformed client-first message is a MalformedResponse, nothing else."""
    exchange = rfc_exchange(RFC_CREDENTIALS)
    with pytest.raises(sasl.MalformedResponse):
        exchange.respond(b64(message))


def test_authzid_equal_to_the_user_is_accepted() -> None:
    """An authzid naming the user itself is allowed, and enters the channel binding check."""
    exchange = rfc_exchange(RFC_CREDENTIALS)
    step = exchange.respond(b64(b"n,a=user,n=user,r=rOprNGfwEbeRWgbNEkqO"))
    assert step == sasl.Challenge(RFC_SERVER_FIRST)
    final, signature = client_final("pencil", b"n=user,r=rOprNGfwEbeRWgbNEkqO",
                                    RFC_SERVER_FIRST, gs2=b"n,a=user,")
    assert exchange.respond(b64(final)) == sasl.Challenge(signature)


@pytest.mark.parametrize("final", [
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",          # no proof
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=!!!",    # proof not base64
    b"c=eSws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=AAAA",   # other gs2 header
    b"c=***,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=AAAA",    # c not base64
    b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,c=biws,p=AAAA",   # order
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO,p=AAAA",                                 # client nonce only
    b"p=AAAA",
])
def test_malformed_client_final_is_refused(final: bytes) -> None:
    """Every malformed client-final message is a MalformedResponse."""
    exchange = rfc_exchange(RFC_CREDENTIALS)
    exchange.respond(b64(RFC_CLIENT_FIRST))
    with pytest.raises(sasl.MalformedResponse):
        exchange.respond(b64(final))


def test_not_base64_and_cancel() -> None:
    """A response that is not base64 is malformed and '*' cancels, at any step."""
    with pytest.raises(sasl.MalformedResponse):
        rfc_exchange(RFC_CREDENTIALS).respond(b"not base64!")
    exchange = rfc_exchange(RFC_CREDENTIALS)
    exchange.respond(b64(RFC_CLIENT_FIRST))
    with pytest.raises(sasl.Cancelled):
        exchange.respond(b"*")


def test_non_empty_answer_to_server_final_is_refused() -> None:
    """After the server signature only an empty response is accepted."""
    exchange = rfc_exchange(RFC_CREDENTIALS)
    exchange.respond(b64(RFC_CLIENT_FIRST))
    exchange.respond(b64(RFC_CLIENT_FINAL))
    with pytest.raises(sasl.MalformedResponse):
        exchange.respond(b64(b"hello"))


def test_unknown_user_gets_a_stable_plausible_challenge() -> None:
    """An unknown user gets a same-shaped server-first, a per-name stable salt, never verifies."""
    def server_first(user: bytes) -> bytes:
        step = rfc_exchange(RFC_CREDENTIALS).respond(b64(b"n,,n=" + user + b",r=abc"))
        assert isinstance(step, sasl.Challenge)
        return step.data

    first = server_first(b"nobody")
    assert first == server_first(b"nobody")
    assert first != server_first(b"somebody")
    attrs = dict(a.split(b"=", 1) for a in first.split(b","))
    known = dict(a.split(b"=", 1) for a in server_first(b"user").split(b","))
    assert len(base64.b64decode(attrs[b"s"])) == len(base64.b64decode(known[b"s"]))
    assert int(attrs[b"i"]) >= 4096
    exchange = rfc_exchange(RFC_CREDENTIALS)
    exchange.respond(b64(b"n,,n=nobody,r=abc"))
    final, _ = client_final("pencil", b"n=nobody,r=abc", exchange.step.data)  # type: ignore[union-attr]
    done = exchange.respond(b64(final))
    assert isinstance(done, sasl.Done) and done.credentials.verified is False


def test_mechanisms_offer_scram_without_cleartext() -> None:
    """SCRAM-SHA-256 is advertised even where clear-text mechanisms are not."""
    assert sasl.mechanisms("tls", False, False, scram=True) == [b"SCRAM-SHA-256"]
    assert sasl.mechanisms("tls", True, False, scram=True) == [b"SCRAM-SHA-256", b"PLAIN", b"LOGIN"]
    assert sasl.mechanisms("tls", True, False) == [b"PLAIN", b"LOGIN"]
    with pytest.raises(sasl.UnknownMechanism):
        sasl.start(b"SCRAM-SHA-256", None)


def test_credential_format_round_trips() -> None:
    """The stored credential parses back, and malformed ones are rejected."""
    value = scram_credential("pencil", RFC_SALT, 4096)
    iterations, salt, stored, server = parse_scram_credential(value)  # type: ignore[misc]
    assert (iterations, salt) == (4096, RFC_SALT)
    assert "pencil" not in value
    fresh = scram_credential("pencil")
    assert parse_scram_credential(fresh)[0] >= 4096  # type: ignore[index]
    for bad in ("", "4096:a:b", "100:" + value.split(":", 1)[1], "x:" + value.split(":", 1)[1],
                value + ":x", value.replace(value.split(":")[2], "!!")):
        assert parse_scram_credential(bad) is None


def _directory(tmp_path: object) -> FileDirectory:
    d = FileDirectory(str(tmp_path))
    d.add_domain("example.org")
    d.add_user("alice@example.org", hash_password("pencil"), scram_credential("pencil"))
    return d


def _result(d: Deferred[object]) -> object:
    out: list[object] = []
    d.addBoth(out.append)
    assert out, "the checker did not answer synchronously"
    return out[0]


def test_passwd_line_keeps_the_credential_and_other_fields(tmp_path: object) -> None:
    """The credential is an extra field, other extra fields survive, a new password drops it."""
    d = _directory(tmp_path)
    path = os.path.join(str(tmp_path), "passwd")
    with open(path) as f:
        text = f.read()
    assert " pencil" not in text and "scram-sha-256=10000:" in text
    with open(path, "a") as f:
        f.write("bob@example.org:{ARGON2ID}x::::::nologin userdb_quota_rule=*:storage=1G\n")
    d.set_disabled("alice@example.org", True)
    entry = d.user("bob@example.org")
    assert entry is not None and entry.disabled and entry.scram is None
    assert entry.other_extra == ("userdb_quota_rule=*:storage=1G",)
    with open(path) as f:
        assert "nologin userdb_quota_rule=*:storage=1G" in f.read()
    old = d.user("alice@example.org").scram  # type: ignore[union-attr]
    d.set_password("alice@example.org", hash_password("other"))
    assert d.user("alice@example.org").scram is None  # type: ignore[union-attr]
    assert old is not None


def test_checker_refuses_unverified_disabled_and_unknown(tmp_path: object) -> None:
    """The checker accepts verified SCRAM credentials of an enabled account only."""
    d = _directory(tmp_path)
    checker = AccountsChecker(d)
    portal = Portal(None, [checker])  # type: ignore[arg-type]
    assert sasl.scram_source(portal) is not None
    assert sasl.scram_source(portal)("Alice@example.org") == d.user("alice@example.org").scram  # type: ignore[misc,union-attr]
    ok = sasl.ScramVerified(b"alice@example.org", True)
    assert _result(checker.requestAvatarId(ok)) == "alice@example.org"
    bad = _result(checker.requestAvatarId(sasl.ScramVerified(b"alice@example.org", False)))
    assert bad.check(UnauthorizedLogin)  # type: ignore[attr-defined]
    unknown = _result(checker.requestAvatarId(sasl.ScramVerified(b"eve@example.org", True)))
    assert unknown.check(UnauthorizedLogin)  # type: ignore[attr-defined]
    d.set_disabled("alice@example.org", True)
    decoy = sasl.scram_source(portal)("alice@example.org")  # type: ignore[misc]
    assert decoy != d.user("alice@example.org").scram  # type: ignore[union-attr]
    assert parse_scram_credential(decoy) is not None  # well formed, like a real one
    disabled = _result(checker.requestAvatarId(ok))
    assert disabled.check(UnauthorizedLogin)  # type: ignore[attr-defined]
    for failure in (bad, unknown, disabled):
        failure.trap(UnauthorizedLogin)  # type: ignore[attr-defined]


def test_saslprep_applied_to_stored_credential() -> None:
    """RFC 4013: a soft hyphen is mapped to nothing, so 'I\\u00adX' and 'IX' give one credential."""
    from pymail.directory.passwords import scram_credential, scram_prepare

    salt = b"0123456789abcdef"
    assert scram_prepare("I\u00adX") == "IX"
    assert scram_prepare("a\u00a0b") == "a b"  # a non-ASCII space becomes a space
    assert scram_credential("I\u00adX", salt=salt) == scram_credential("IX", salt=salt)
    # SASLprep refuses control characters: such a password is used unchanged.
    assert scram_prepare("a\u0007b") == "a\u0007b"


def test_decoy_salt_is_stable_across_restarts(tmp_path: object) -> None:
    """An unknown user's decoy salt is the same for a new checker (a restart) on the same data."""
    d = _directory(tmp_path)
    first = AccountsChecker(d).scram_credential("eve@example.org")
    again = AccountsChecker(FileDirectory(d.data_dir)).scram_credential("eve@example.org")
    other = AccountsChecker(d).scram_credential("mallory@example.org")
    assert first == again
    assert first != other
    parsed = parse_scram_credential(first)  # type: ignore[arg-type]
    assert parsed is not None and len(parsed[1]) == 16
