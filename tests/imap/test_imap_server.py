"""Tests for pymail.imap.server: greeting, login, states, dispatch, timeouts."""

from __future__ import annotations

from typing import Any

import attrs
from imap_harness import PASSWORD, USER, Server
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import Deferred
from zope.interface import implementer

from pymail.auth.realm import MailRealm
from pymail.imap.server import IMAPFactory
from pymail.interfaces import IMailStore
from pymail.storage.memory import MemoryMailStore, MemoryStoreFactory
from pymail.testing import MemoryDirectory


#: Everything the server offers after login (without CONDSTORE: off by default).
CAPABILITIES = (
    b"IMAP4rev1 LITERAL+ SASL-IR IDLE UNSELECT NAMESPACE ID ENABLE CHILDREN SPECIAL-USE "
    b"LIST-EXTENDED LIST-STATUS UIDPLUS MOVE ESEARCH APPENDLIMIT=67108864"
)


def test_greeting_names_host_and_capabilities() -> None:
    """The greeting is an untagged OK with CAPABILITY and the host name."""
    client = Server().connect()
    assert client.greeting == (
        b"* OK [CAPABILITY " + CAPABILITIES + b" AUTH=PLAIN AUTH=LOGIN] "
        b"imap.example.org pymail ready\r\n"
    )


def test_capability_lists_only_what_is_implemented() -> None:
    """CAPABILITY lists the extensions; AUTH= only before login; CONDSTORE when asked."""
    client = Server().connect()
    assert client.lines("a CAPABILITY") == [
        b"* CAPABILITY " + CAPABILITIES + b" AUTH=PLAIN AUTH=LOGIN",
        b"a OK CAPABILITY completed",
    ]
    client.login()
    assert client.lines("b CAPABILITY") == [
        b"* CAPABILITY " + CAPABILITIES,
        b"b OK CAPABILITY completed",
    ]
    client = Server(condstore=True).connect()
    assert b" ESEARCH CONDSTORE QRESYNC " in client.lines("c CAPABILITY")[0]


def test_login_succeeds_with_right_password() -> None:
    """LOGIN with the right password answers OK and enters the authenticated state."""
    client = Server().connect()
    response = client.cmd(f"a LOGIN {USER} {PASSWORD}")
    assert response.startswith(b"a OK [CAPABILITY " + CAPABILITIES + b"]")
    assert client.proto.account.address == USER


def test_login_with_quoted_and_literal_arguments() -> None:
    """LOGIN accepts quoted strings and literals for user and password."""
    client = Server().connect()
    assert client.send(b'a LOGIN "alice@example.org" {2}\r\n') == b"+ Ready for literal data\r\n"
    assert client.send(b"pw\r\n").startswith(b"a OK")


def test_login_fails_with_wrong_password() -> None:
    """A wrong password answers NO [AUTHENTICATIONFAILED] and stays unauthenticated."""
    client = Server().connect()
    response = client.cmd(f"a LOGIN {USER} wrong")
    assert response.startswith(b"a NO [AUTHENTICATIONFAILED]")
    assert client.cmd("b SELECT INBOX").startswith(b"b BAD")


def test_login_twice_is_refused() -> None:
    """LOGIN in the authenticated state is a BAD."""
    client = Server().connect().login()
    assert client.cmd(f"a LOGIN {USER} {PASSWORD}").startswith(b"a BAD")


def test_selected_commands_need_selected_state() -> None:
    """FETCH before SELECT is answered BAD naming the state."""
    client = Server().connect().login()
    assert client.lines("a FETCH 1 FLAGS") == [
        b"a BAD FETCH is not allowed in the authenticated state"
    ]


def test_unknown_command_is_bad_and_connection_usable() -> None:
    """An unknown command gets a tagged BAD and the next command works."""
    client = Server().connect()
    assert client.lines("a FROB x") == [b"a BAD unknown command 'FROB'"]
    assert client.lines("b NOOP") == [b"b OK NOOP completed"]


def test_missing_tag_is_untagged_bad() -> None:
    """A line without a tag gets an untagged BAD."""
    client = Server().connect()
    assert client.cmd("") == b"* BAD missing command tag\r\n"
    assert client.cmd("(x") == b"* BAD missing command tag\r\n"


def test_malformed_arguments_are_bad_without_state_change() -> None:
    """A malformed LOGIN is BAD and the client is still not authenticated."""
    client = Server().connect()
    assert client.cmd("a LOGIN onlyuser").startswith(b"a BAD LOGIN: expected a space")
    assert client.cmd("b LOGIN a b c").startswith(b"b BAD")
    assert client.cmd("c LIST \"\" *").startswith(b"c BAD")
    assert client.cmd(f"d LOGIN {USER} {PASSWORD}").startswith(b"d OK")


def test_malformed_selected_command_keeps_selection() -> None:
    """A malformed FETCH in the selected state leaves the mailbox selected."""
    server = Server()
    server.deliver()
    client = server.connect().login()
    client.select()
    assert client.cmd("a FETCH 1 (FLAGS").startswith(b"a BAD")
    assert client.cmd("b FETCH x FLAGS").startswith(b"b BAD")
    assert client.lines("c FETCH 1 FLAGS") == [
        b"* 1 FETCH (FLAGS (\\Recent))",
        b"c OK FETCH completed",
    ]


def test_pipelined_commands_answered_in_order() -> None:
    """Several commands in one packet are answered one after the other, in order."""
    server = Server()
    server.deliver()
    client = server.connect()
    response = client.send(
        f"a LOGIN {USER} {PASSWORD}\r\nb SELECT INBOX\r\nc FETCH 1 UID\r\nd NOOP\r\n".encode()
    )
    tags = [line.split(b" ")[0] for line in response.split(b"\r\n") if line[:1] not in (b"*", b"")]
    assert tags == [b"a", b"b", b"c", b"d"]
    assert b"* 1 FETCH (UID 1)\r\nc OK" in response


@implementer(ICredentialsChecker)
@attrs.define
class SlowChecker:
    """A checker that answers only when the test says so."""

    pending: list[Deferred[Any]] = attrs.Factory(list)
    credentialInterfaces = (IUsernamePassword,)

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.pending.append(d)
        return d


def slow_server() -> tuple[IMAPFactory, SlowChecker]:
    from twisted.internet.task import Clock

    checker = SlowChecker()
    directory = MemoryDirectory(domains={"example.org"}, users={USER})
    portal = Portal(MailRealm(directory, MemoryStoreFactory(), "/x"), [checker])
    return IMAPFactory(portal, Clock(), "imap.example.org"), checker


def test_pipelined_commands_wait_for_async_handler() -> None:
    """Commands after a LOGIN that is still running wait, then run in order."""
    factory, checker = slow_server()
    server = Server()
    server.factory = factory
    client = server.connect()
    assert client.send(f"a LOGIN {USER} {PASSWORD}\r\nb SELECT INBOX\r\nc NOOP\r\n".encode()) == b""
    assert client.send(b"d CAPABILITY\r\n") == b""
    checker.pending[0].callback(USER.encode())
    response = client.read()
    tags = [line.split(b" ")[0] for line in response.split(b"\r\n") if line[:1] not in (b"*", b"")]
    assert tags == [b"a", b"b", b"c", b"d"]
    assert b"b OK [READ-WRITE]" in response


def test_connection_lost_during_login_logs_avatar_out() -> None:
    """A login that completes after the client left does not resurrect the session."""
    factory, checker = slow_server()
    server = Server()
    server.factory = factory
    client = server.connect()
    client.send(f"a LOGIN {USER} {PASSWORD}\r\n".encode())
    client.lose()
    checker.pending[0].callback(USER.encode())
    assert client.read() == b""
    assert client.proto.account is None


def test_logout_says_bye_then_ok_and_closes() -> None:
    """LOGOUT answers BYE then the tagged OK, and closes the connection."""
    client = Server().connect()
    assert client.lines("a LOGOUT") == [
        b"* BYE imap.example.org logging out",
        b"a OK LOGOUT completed",
    ]
    assert client.closed


def test_commands_after_logout_are_ignored() -> None:
    """Commands pipelined after LOGOUT get no answer."""
    client = Server().connect()
    response = client.send(b"a LOGOUT\r\nb NOOP\r\n")
    assert b"b " not in response


def test_preauth_timeout_says_bye() -> None:
    """A client that does not log in within the pre-auth timeout gets BYE."""
    server = Server(preauth_timeout=10.0)
    client = server.connect()
    server.clock.advance(9)
    assert not client.closed
    server.clock.advance(1)
    assert client.read() == b"* BYE Autologout; idle for too long\r\n"
    assert client.closed


def test_idle_timeout_after_login_resets_on_commands() -> None:
    """After login the autologout timer restarts with every command."""
    server = Server(preauth_timeout=10.0, idle_timeout=1800.0)
    client = server.connect().login()
    server.clock.advance(1000)
    client.cmd("a NOOP")
    server.clock.advance(1000)
    assert not client.closed
    server.clock.advance(800)
    assert client.read().startswith(b"* BYE Autologout")
    assert client.closed


def test_connection_lost_cancels_timer_and_listener() -> None:
    """Losing the connection cancels the timer and stops listening to the mailbox."""
    server = Server()
    client = server.connect().login()
    client.select()
    client.lose()
    assert server.clock.getDelayedCalls() == []
    server.deliver()  # nobody listening: must not write or raise
    assert client.read() == b""


@attrs.define
class BrokenStore(MemoryMailStore):
    """A store whose folder listing fails with an unexpected error."""

    def list_mailboxes(self) -> list[str]:
        raise RuntimeError("disk on fire")


@attrs.define
class BrokenFactory(MemoryStoreFactory):
    def open_store(self, address: str, data_dir: str) -> IMailStore:
        return BrokenStore()


def test_unexpected_error_is_serverbug_and_connection_usable() -> None:
    """An exception in a handler is logged and answered NO [SERVERBUG]."""
    from twisted.internet.task import Clock
    from twisted.logger import globalLogPublisher

    seen: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(seen.append)
    try:
        directory = MemoryDirectory(domains={"example.org"}, users={USER})
        from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse

        checker = InMemoryUsernamePasswordDatabaseDontUse(**{USER: PASSWORD.encode()})
        portal = Portal(MailRealm(directory, BrokenFactory(), "/x"), [checker])
        server = Server()
        server.factory = IMAPFactory(portal, Clock(), "imap.example.org")
        client = server.connect().login()
        response = client.cmd('a LIST "" *')
        assert response.startswith(b"a NO [SERVERBUG]")
        assert b"Traceback" not in response and b"disk on fire" not in response
        assert client.lines("b NOOP") == [b"b OK NOOP completed"]
    finally:
        globalLogPublisher.removeObserver(seen.append)
    assert any(e.get("log_failure") is not None for e in seen)


def test_password_is_never_logged() -> None:
    """Neither a good nor a bad LOGIN puts the password in the log."""
    from twisted.logger import formatEvent, globalLogPublisher

    seen: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(seen.append)
    try:
        client = Server().connect()
        client.cmd(f"a LOGIN {USER} sekrit-wrong")
        client.cmd(f"b LOGIN {USER} {PASSWORD}")
    finally:
        globalLogPublisher.removeObserver(seen.append)
    text = " ".join(formatEvent(e) + repr(e) for e in seen)
    assert "sekrit-wrong" not in text
    assert f"'{PASSWORD}'" not in text


def test_authenticate_unknown_mechanism_is_refused() -> None:
    """AUTHENTICATE with a mechanism not offered answers NO [CANNOT]; LOGIN still works."""
    client = Server().connect()
    assert client.cmd("a AUTHENTICATE CRAM-MD5").startswith(b"a NO [CANNOT]")
    assert client.cmd(f"b LOGIN {USER} {PASSWORD}").startswith(b"b OK")


class SlowMailbox:
    """Wraps a memory mailbox so every write answers only after one clock tick."""

    def __init__(self, inner: Any, clock: Any) -> None:
        self._inner = inner
        self._clock = clock

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _later(self, d: Deferred[Any]) -> Deferred[Any]:
        slow: Deferred[Any] = Deferred()
        d.addBoth(lambda r: self._clock.callLater(1, slow.callback, r))
        return slow

    def set_flags(self, *args: Any) -> Deferred[Any]:
        return self._later(self._inner.set_flags(*args))

    def expunge(self, *args: Any) -> Deferred[Any]:
        return self._later(self._inner.expunge(*args))

    def refresh(self) -> Deferred[Any]:
        return self._later(self._inner.refresh())


def test_slow_storage_is_awaited_and_pipelined_commands_wait() -> None:
    """With storage that answers later, each tagged OK waits for it and order is kept."""
    server = Server()
    server.deliver()
    server.deliver()
    inner = server.mailbox()
    server.store()._mailboxes["INBOX"] = SlowMailbox(inner, server.clock)  # type: ignore[assignment]
    client = server.connect().login()
    client.select()
    response = client.send(
        b"a STORE 1 +FLAGS (\\Deleted)\r\nb EXPUNGE\r\nc FETCH 1 UID\r\nd NOOP\r\n"
    )
    assert response == b""
    inner.append(b"Subject: new\r\n\r\n")  # arrives while STORE is still running
    server.clock.advance(1)
    assert client.read() == (
        b"* 1 FETCH (FLAGS (\\Deleted \\Recent))\r\n* 3 EXISTS\r\n* 3 RECENT\r\n"
        b"a OK STORE completed\r\n"
    )
    server.clock.advance(1)
    assert client.read() == (
        b"* 1 EXPUNGE\r\nb OK EXPUNGE completed\r\n* 1 FETCH (UID 2)\r\nc OK FETCH completed\r\n"
    )
    server.clock.advance(1)
    assert client.read() == b"d OK NOOP completed\r\n"
    assert [i.uid for i in inner.messages()] == [2, 3]


def test_large_fetch_is_written_in_few_chunks() -> None:
    """A FETCH of thousands of messages reaches the transport in ~64 KiB chunks."""
    server = Server()
    for _ in range(3000):
        server.deliver()
    client = server.connect().login()
    client.select()
    calls: list[int] = []
    original_write, original_seq = client.transport.write, client.transport.writeSequence

    def write(data: bytes) -> None:
        calls.append(len(data))
        original_write(data)

    def write_sequence(seq: list[bytes]) -> None:
        calls.append(sum(map(len, seq)))
        original_seq(seq)

    client.transport.write = write  # type: ignore[method-assign]
    client.transport.writeSequence = write_sequence  # type: ignore[method-assign]
    response = client.cmd("a FETCH 1:* (UID FLAGS RFC822.SIZE)")
    assert response.count(b" FETCH (") == 3000
    assert len(calls) <= len(response) // (64 * 1024) + 2


@implementer(IRealm)
@attrs.define
class RecordingRealm:
    """Wraps MailRealm and records avatar logouts."""

    inner: MailRealm
    logouts: list[str] = attrs.Factory(list)

    def requestAvatar(self, avatar_id: Any, mind: Any, *interfaces: Any) -> Any:
        iface, avatar, _ = self.inner.requestAvatar(avatar_id, mind, *interfaces)
        return iface, avatar, lambda: self.logouts.append(avatar.address)


def test_avatar_logout_called_when_connection_ends() -> None:
    """The portal's logout callable runs once when the connection closes."""
    from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
    from twisted.internet.task import Clock

    directory = MemoryDirectory(domains={"example.org"}, users={USER})
    realm = RecordingRealm(MailRealm(directory, MemoryStoreFactory(), "/x"))
    checker = InMemoryUsernamePasswordDatabaseDontUse(**{USER: PASSWORD.encode()})
    server = Server()
    server.factory = IMAPFactory(Portal(realm, [checker]), Clock(), "imap.example.org")
    client = server.connect().login()
    client.cmd("a LOGOUT")
    assert realm.logouts == []
    client.lose()
    assert realm.logouts == [USER]
