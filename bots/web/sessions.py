"""Logins of the operator's page: the token check, sessions that expire, CSRF tokens."""

from __future__ import annotations

import hmac
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

COOKIE = "actorbot_session"
CSRF_FIELD = "csrf"  # the hidden form field
CSRF_HEADER = "X-CSRF-Token"  # the same token, from the page's script


def token_matches(given: str, expected: str) -> bool:
    """Return whether the login token is right, in time that does not depend on where it differs."""
    if not expected:
        return False  # never log in to a page without a configured token
    return hmac.compare_digest(given.encode(), expected.encode())


@dataclass(frozen=True)
class Session:
    """One login: its CSRF token is bound to it and dies with it."""

    csrf: str
    expires_at: float


class Sessions:
    """The logins of this process (in memory: a restart logs everyone out)."""

    def __init__(self, lifetime_seconds: float, clock: Callable[[], float] = time.time) -> None:
        self._lifetime = lifetime_seconds
        self._clock = clock
        self._sessions: dict[str, Session] = {}

    @property
    def lifetime_seconds(self) -> float:
        """Return how long a login lasts."""
        return self._lifetime

    def start(self) -> str:
        """Create a session and return its id (the cookie's value)."""
        self._drop_expired()
        session_id = secrets.token_urlsafe(32)
        self._sessions[session_id] = Session(
            secrets.token_urlsafe(32), self._clock() + self._lifetime
        )
        return session_id

    def get(self, session_id: str | None) -> Session | None:
        """Return the live session with this id, or None (unknown or expired)."""
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if session.expires_at <= self._clock():
            del self._sessions[session_id]
            return None
        return session

    def end(self, session_id: str) -> None:
        """Log a session out."""
        self._sessions.pop(session_id, None)

    def _drop_expired(self) -> None:
        now = self._clock()
        for session_id in [s for s, v in self._sessions.items() if v.expires_at <= now]:
            del self._sessions[session_id]


class WrongLogins:
    """Wrong tokens per address: past the limit within the window, logins wait (guessing).

    A locked-out address is refused before its token is looked at, so a guess that happens
    to be right tells nothing while locked out either.
    """

    def __init__(
        self, limit: int = 5, window_seconds: float = 60.0, clock: Callable[[], float] = time.time
    ) -> None:
        self._limit = limit
        self._window = window_seconds
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}

    def wait_seconds(self, address: str) -> float:
        """Return how long ``address`` must wait before trying again (0: it may try now)."""
        failures = self._recent(address)
        if len(failures) < self._limit:
            return 0.0
        return max(0.0, failures[0] + self._window - self._clock())

    def failed(self, address: str) -> None:
        """Count a wrong token from ``address``."""
        self._recent(address).append(self._clock())

    def _recent(self, address: str) -> deque[float]:
        failures = self._failures.setdefault(address, deque())
        cutoff = self._clock() - self._window
        while failures and failures[0] <= cutoff:
            failures.popleft()
        if not failures:  # forget addresses that stopped, so the map stays small
            del self._failures[address]
            failures = self._failures.setdefault(address, deque())
        return failures


def csrf_matches(session: Session, given: str | None) -> bool:
    """Return whether a state-changing request carries its session's CSRF token."""
    return given is not None and hmac.compare_digest(given.encode(), session.csrf.encode())
