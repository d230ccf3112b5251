"""One access policy for every HTTP request of the admin app.

* ``GET /api/health`` is always open (load balancers, probes).
* Reads (every other ``GET``/``HEAD``: pages, ``/api/*``, findings, OpenAPI) are open
  unless ``VIEWER_TOKEN`` is set; then they need the viewer or the admin token, as a
  ``Bearer`` header or a dashboard session.
* ``/metrics`` follows the reads, and also takes ``METRICS_TOKEN`` (a scrape job's
  ``Bearer``); with ``METRICS_TOKEN`` set it is never open.
* Writes need the admin token (checked by the routes).
* The workers' routes (``/dicom-web/...``, ``/worker/...``) are neither: their own
  dependency checks ``WORKER_TOKEN`` (:mod:`scp_node.admin.dicomweb`), counting wrong
  tokens in the same limiter.

Sessions are random 256-bit ids held in this process: the cookie holds only the id,
the server keeps its role and expiry (``SESSION_MAX_AGE``), ``/logout`` deletes it, and
a restart of the node ends every session. Wrong tokens (login form, ``Bearer``,
retry form) are counted per client address: after :data:`MAX_FAILURES` in
:data:`FAILURE_WINDOW_S` seconds that address gets 429 until the window has passed.
Failed attempts are logged with the address, never with the token.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from starlette.requests import HTTPConnection

from spinenode.core.settings import Settings

log = logging.getLogger(__name__)

COOKIE = "spinenode_session"
#: Wrong tokens allowed per client address within :data:`FAILURE_WINDOW_S`.
MAX_FAILURES = 5
FAILURE_WINDOW_S = 60.0
#: Bounds on what an attacker can make the process remember.
MAX_SESSIONS = 10_000
MAX_TRACKED_ADDRESSES = 10_000
OPEN_PATHS = frozenset({"/api/health"})
#: Reachable without a session so that one can be made or ended.
LOGIN_PATHS = frozenset({"/login", "/logout"})
READ_METHODS = frozenset({"GET", "HEAD"})
#: Routes that check their own token (WORKER_TOKEN) for reads and writes alike.
WORKER_PREFIXES = ("/dicom-web/", "/worker/")


class Role(StrEnum):
    ADMIN = "admin"
    VIEWER = "viewer"
    #: May read /metrics only.
    METRICS = "metrics"


class Decision(StrEnum):
    ALLOW = "allow"
    #: No (valid) credentials: a page redirects to /login, an API call gets 401.
    DENY = "deny"
    #: Too many wrong tokens from this address.
    LIMITED = "limited"


def _same(a: str, b: str) -> bool:
    return secrets.compare_digest(a.encode(), b.encode())


@dataclass(frozen=True, slots=True)
class _Session:
    role: Role
    expires_at: float


class SessionStore:
    """Server-side sessions: the cookie is a random id, its hash the key here."""

    def __init__(self, max_age_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age_s = max_age_s
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, _Session] = {}

    @staticmethod
    def _key(session_id: str) -> str:
        return hashlib.sha256(session_id.encode()).hexdigest()

    def create(self, role: Role) -> str:
        session_id = secrets.token_urlsafe(32)
        now = self._clock()
        with self._lock:
            if len(self._sessions) >= MAX_SESSIONS:
                self._sessions = {k: v for k, v in self._sessions.items() if v.expires_at > now}
                while len(self._sessions) >= MAX_SESSIONS:  # the oldest logins go first
                    del self._sessions[next(iter(self._sessions))]
            self._sessions[self._key(session_id)] = _Session(role, now + self.max_age_s)
        return session_id

    def role(self, session_id: str) -> Role | None:
        if not session_id or len(session_id) > 128:
            return None
        key = self._key(session_id)
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                return None
            if session.expires_at <= self._clock():
                del self._sessions[key]
                return None
            return session.role

    def revoke(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(self._key(session_id), None)


class FailureLimiter:
    """Wrong tokens per client address in a sliding window."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, address: str, now: float) -> deque[float]:
        times = self._failures.get(address)
        if times is None:
            return deque()
        while times and times[0] <= now - FAILURE_WINDOW_S:
            times.popleft()
        if not times:
            del self._failures[address]
        return times

    def retry_after(self, address: str) -> float:
        """Seconds until ``address`` may try again (0 when it may now)."""
        now = self._clock()
        with self._lock:
            times = self._recent(address, now)
            if len(times) < MAX_FAILURES:
                return 0.0
            return max(1.0, times[-MAX_FAILURES] + FAILURE_WINDOW_S - now)

    def failed(self, address: str, what: str) -> None:
        now = self._clock()
        with self._lock:
            times = self._recent(address, now)
            if address not in self._failures:
                if len(self._failures) >= MAX_TRACKED_ADDRESSES:
                    self._failures.pop(next(iter(self._failures)))
                self._failures[address] = times
            times.append(now)
            n = len(times)
        log.warning("wrong token from %s (%s); %d in the last %.0f s%s", address, what, n, FAILURE_WINDOW_S,
                    "; further attempts refused for now" if n >= MAX_FAILURES else "")


def client_address(conn: HTTPConnection) -> str:
    return conn.client.host if conn.client else "unknown"


class Access:
    """The policy above, for one admin app."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.sessions = SessionStore(settings.session_max_age, clock)
        self.limiter = FailureLimiter(clock)

    @property
    def viewer_token(self) -> str:
        return self.settings.viewer_token

    @property
    def reads_gated(self) -> bool:
        return bool(self.settings.viewer_token)

    def role_of_token(self, token: str) -> Role | None:
        """The role a token grants, if any (admin before viewer before metrics)."""
        if not token:
            return None
        for role, configured in ((Role.ADMIN, self.settings.admin_token), (Role.VIEWER, self.settings.viewer_token),
                                 (Role.METRICS, self.settings.metrics_token)):
            if configured and _same(token, configured):
                return role
        return None

    def session_role(self, conn: HTTPConnection) -> Role | None:
        role = self.sessions.role(conn.cookies.get(COOKIE, ""))
        # a session outlives no token: a role whose token is gone grants nothing
        if role is Role.ADMIN and not self.settings.admin_token:
            return None
        if role is Role.VIEWER and not self.settings.viewer_token:
            return None
        return role

    @staticmethod
    def bearer(conn: HTTPConnection) -> str | None:
        header = conn.headers.get("authorization")
        if header is None:
            return None
        scheme, _, value = header.partition(" ")
        return value.strip() if scheme.lower() == "bearer" else ""

    def check_token(self, conn: HTTPConnection, token: str, what: str) -> Role | None | Decision:
        """The role of a presented token; a wrong one is counted, and LIMITED when over the limit."""
        address = client_address(conn)
        if self.limiter.retry_after(address):
            return Decision.LIMITED
        role = self.role_of_token(token)
        if role is None:
            self.limiter.failed(address, what)
        return role

    def decide_read(self, conn: HTTPConnection) -> Decision:
        """May this request (not a write) go on?"""
        path = conn.url.path
        if path in OPEN_PATHS or path in LOGIN_PATHS or path.startswith(WORKER_PREFIXES):
            return Decision.ALLOW
        metrics = path == "/metrics"
        allowed = {Role.ADMIN, Role.VIEWER} | ({Role.METRICS} if metrics else set())
        gated = self.reads_gated or (metrics and bool(self.settings.metrics_token))
        token = self.bearer(conn)
        if token is not None:
            role = self.check_token(conn, token, f"Bearer on {path}")
            if isinstance(role, Decision):
                return role
            if role in allowed:
                return Decision.ALLOW
            return Decision.DENY if gated else Decision.ALLOW
        if not gated or self.session_role(conn) in allowed:
            return Decision.ALLOW
        return Decision.DENY
