"""Console sessions: a login with an API token becomes a server-side session named by a random cookie.

    sessions = Sessions(ttl_s=8 * 3600)
    s = sessions.create(token, me, now_ms)       # me: GET /v1/me of that token (name, role, sites)
    sessions.get(cookie_value, now_ms)           # None when unknown or expired (then it is forgotten)
    csrf_ok(s, form_value_or_header)

The cookie (``ef_session``) carries only the session id: HttpOnly (no script reads it), SameSite=Strict (no
other site's page sends it), ``Max-Age`` the session's life, and ``Secure`` behind HTTPS. The token stays
in this process's memory: every page and action calls the API with it, so a revoked or expired token ends
the session at its next request. Each session has its CSRF token, which every form and every htmx request
carries and every POST must match (``csrf_ok``, constant-time).
"""

from __future__ import annotations

import hmac
import secrets
import threading
from dataclasses import dataclass
from typing import Any

from cloud.security.rbac import Principal, Role

__all__ = ["COOKIE", "LOGIN_COOKIE", "SESSION_S", "Session", "Sessions", "csrf_ok"]

COOKIE = "ef_session"
LOGIN_COOKIE = "ef_login"  # the login form's own CSRF token (double submit: cookie and form field)
SESSION_S = 8 * 3600
MAX_SESSIONS = 10_000


@dataclass(frozen=True, slots=True)
class Session:
    sid: str
    token: str
    me: dict[str, Any]  # name, role, sites, token_id
    csrf: str
    expires_ms: int

    @property
    def principal(self) -> Principal:
        sites = self.me.get("sites")
        return Principal(self.me["name"], Role.parse(self.me["role"]), frozenset(sites) if sites is not None else None,
                         self.me.get("token_id"))


class Sessions:
    """The live sessions of one cloud process (a restart logs everyone out)."""

    def __init__(self, ttl_s: float = SESSION_S, max_sessions: int = MAX_SESSIONS) -> None:
        self.ttl_ms = int(ttl_s * 1000)
        self.max_sessions = max_sessions
        self._by_id: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self, token: str, me: dict[str, Any], now_ms: int, token_expires_ms: int | None = None) -> Session:
        expires = now_ms + self.ttl_ms if token_expires_ms is None else min(now_ms + self.ttl_ms, token_expires_ms)
        session = Session(secrets.token_urlsafe(32), token, dict(me), secrets.token_urlsafe(32), expires)
        with self._lock:
            if len(self._by_id) >= self.max_sessions:
                self._prune(now_ms)
                if len(self._by_id) >= self.max_sessions:  # the oldest to end goes first
                    del self._by_id[min(self._by_id.values(), key=lambda s: s.expires_ms).sid]
            self._by_id[session.sid] = session
        return session

    def get(self, sid: str | None, now_ms: int) -> Session | None:
        if not sid:
            return None
        with self._lock:
            session = self._by_id.get(sid)
            if session is not None and session.expires_ms <= now_ms:
                del self._by_id[sid]
                return None
            return session

    def drop(self, sid: str | None) -> None:
        with self._lock:
            self._by_id.pop(sid or "", None)

    def __len__(self) -> int:
        return len(self._by_id)

    def _prune(self, now_ms: int) -> None:
        for sid in [s.sid for s in self._by_id.values() if s.expires_ms <= now_ms]:
            del self._by_id[sid]


def csrf_ok(session: Session, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(session.csrf.encode(), (given or "").encode())
