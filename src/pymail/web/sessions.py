"""
Web sessions: who is signed in on which browser, and the CSRF token of
each session.

Sessions live in memory: a restart signs everyone out, which is the safe
failure.  A session ends at sign-out, ``lifetime`` seconds after sign-in,
or ``idle_timeout`` seconds after its last request, whichever comes first.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from pymail.interfaces import IAccount

log = Logger()

#: Random bytes in a session id and a CSRF token (256 bits).
TOKEN_BYTES = 32

#: The session cookie's name.
SESSION_COOKIE = b"pymail_session"

#: The pre-sign-in cookie that carries the sign-in form's CSRF token.
SIGNIN_COOKIE = b"pymail_signin"


def new_token() -> str:
    """A fresh unguessable token, URL- and cookie-safe."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def tokens_match(given: str | None, expected: str) -> bool:
    """Compare a token from a request with the expected one in constant time."""
    if not given:
        return False
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8"))


@attrs.define
class WebSession:
    """
    One signed-in browser.

    :ivar account: the avatar the portal gave at sign-in.
    :ivar csrf: the token every state-changing request must carry.
    """

    id: str = attrs.field(repr=False)
    csrf: str = attrs.field(repr=False)
    account: IAccount
    _logout: Callable[[], None] = attrs.field(repr=False)
    created: float
    last_seen: float

    @property
    def address(self) -> str:
        return str(self.account.address)

    def close(self) -> None:
        """Release the avatar (the portal's logout callable)."""
        try:
            self._logout()
        except Exception:
            log.failure("web session logout failed for {address}", address=self.address)


@attrs.define
class SessionStore:
    """
    The signed-in sessions of this process.

    :ivar clock: gives the time (``IReactorTime.seconds``).
    :ivar lifetime: seconds a session lasts after sign-in.
    :ivar idle_timeout: seconds without a request before it ends.
    """

    _clock: IReactorTime
    lifetime: int
    idle_timeout: int
    _sessions: dict[str, WebSession] = attrs.Factory(dict)

    def create(self, account: IAccount, logout: Callable[[], None]) -> WebSession:
        """Start a session for an account the portal has just let in."""
        self.expire()
        now = self._clock.seconds()
        session = WebSession(new_token(), new_token(), account, logout, now, now)
        self._sessions[session.id] = session
        return session

    def _alive(self, session: WebSession, now: float) -> bool:
        return (now - session.created < self.lifetime
                and now - session.last_seen < self.idle_timeout)

    def get(self, session_id: str | None, touch: bool = True) -> WebSession | None:
        """
        The live session with this id, or ``None`` (unknown, ended or
        expired; an expired one is ended here).

        :param touch: count this as activity (resets the idle timer).
        """
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        now = self._clock.seconds()
        if not self._alive(session, now):
            self.end(session_id)
            return None
        if touch:
            session.last_seen = now
        return session

    def end(self, session_id: str) -> None:
        """Sign a session out; unknown ids are ignored."""
        session = self._sessions.pop(session_id, None)
        if session is not None:
            session.close()

    def end_others(self, address: str, keep: str) -> int:
        """End every session of ``address`` but ``keep`` (after a password change)."""
        ids = [s.id for s in self._sessions.values() if s.address == address and s.id != keep]
        for session_id in ids:
            self.end(session_id)
        return len(ids)

    def expire(self) -> None:
        """End every session past its lifetime or idle timeout."""
        now = self._clock.seconds()
        for session_id in [k for k, s in self._sessions.items() if not self._alive(s, now)]:
            self.end(session_id)

    def __len__(self) -> int:
        return len(self._sessions)
