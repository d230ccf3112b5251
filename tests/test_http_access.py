"""One access policy for every read, sessions that end, wrong tokens limited, and the
security headers on every response: probed on a running node (``spinenode serve``)."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from nodeproc import Node
from scp_node.admin.access import FAILURE_WINDOW_S, MAX_FAILURES, FailureLimiter, Role, SessionStore

ADMIN, VIEWER, METRICS = "admin-tok-3c1f", "viewer-tok-9ab2", "metrics-tok-77d0"
PAGES = ["/", "/studies", "/studies?q=x", "/studies/1.2.3", "/failures"]
API = ["/api/studies", "/api/studies/1.2.3", "/api/studies/1.2.3/findings", "/api/queue", "/api/openapi.json"]
HEADERS = {"x-content-type-options": "nosniff", "x-frame-options": "DENY", "referrer-policy": "no-referrer",
           "cache-control": "no-store"}


def assert_secure_headers(r: httpx.Response) -> None:
    for name, value in HEADERS.items():
        assert r.headers.get(name) == value, (r.request.url, r.status_code, name, r.headers)
    assert "frame-ancestors 'none'" in r.headers.get("content-security-policy", ""), r.request.url


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_every_read_needs_the_viewer_or_admin_token_and_sessions_end(node_factory: Any) -> None:
    node: Node = node_factory(admin_token=ADMIN, viewer_token=VIEWER, metrics_token=METRICS,
                              session_max_age=600)
    with httpx.Client(base_url=node.url(""), timeout=30, follow_redirects=False) as c:
        health = c.get("/api/health")
        assert health.status_code == 200 and health.json()["database"] == "ok"  # always open
        assert_secure_headers(health)
        for path in PAGES:
            r = c.get(path)
            assert r.status_code == 303 and r.headers["location"].startswith("/login?next="), path
            assert_secure_headers(r)
        for path in [*API, "/metrics"]:
            r = c.get(path)
            assert r.status_code == 401 and "Bearer" in r.headers["www-authenticate"], path
            assert_secure_headers(r)
        for path in ("/api/studies", "/metrics"):  # wrong tokens count towards the limit: only two
            assert c.get(path, headers=bearer("not-a-token")).status_code == 401, path
        for token in (VIEWER, ADMIN):
            for path in [*PAGES, *API, "/metrics"]:
                r = c.get(path, headers=bearer(token))
                expected = 404 if "1.2.3" in path else 200
                assert r.status_code == expected, (path, r.status_code)
                assert_secure_headers(r)
        # the scrape token reads /metrics and nothing else
        r = c.get("/metrics", headers=bearer(METRICS))
        assert r.status_code == 200 and "spinenode_studies" in r.text
        assert_secure_headers(r)
        assert c.get("/api/studies", headers=bearer(METRICS)).status_code == 401
        assert c.get("/studies", headers=bearer(METRICS)).status_code == 303
        r = c.get("/no/such/page", headers=bearer(VIEWER))
        assert r.status_code == 404
        assert_secure_headers(r)
        assert c.get("/api/studies/1.2.3%00", headers=bearer(VIEWER)).status_code == 400
        # a POST that never gets past the admin check still carries the headers
        assert_secure_headers(c.post("/api/studies/1.2.3/retry", headers=bearer(VIEWER)))

        # a session: the cookie holds a random id, works until logout, and not after
        assert c.post("/login", data={"token": METRICS}).status_code == 401  # not a dashboard login
        r = c.post("/login", data={"token": VIEWER, "next": "/studies"})
        assert r.status_code == 303 and r.headers["location"] == "/studies"
        cookie = r.headers["set-cookie"]
        assert "Max-Age=600" in cookie and "HttpOnly" in cookie and VIEWER not in cookie
        session = re.search(r"spinenode_session=([^;]+)", cookie)
        assert session is not None
        jar = {"Cookie": f"spinenode_session={session.group(1)}"}
        c.cookies.clear()
        assert c.get("/api/studies", headers=jar).status_code == 200
        page = c.get("/studies", headers=jar)
        assert page.status_code == 200 and "signed in as viewer" in page.text
        assert c.post("/logout", headers=jar).status_code == 303
        c.cookies.clear()
        assert c.get("/api/studies", headers=jar).status_code == 401  # revoked on the server
        assert c.get("/studies", headers=jar).status_code == 303
    log = node.log()
    assert "wrong token from 127.0.0.1" in log
    assert not [t for t in ("not-a-token", METRICS) if t in log]


def test_wrong_tokens_are_limited_per_address_and_logged_without_the_token(node_factory: Any) -> None:
    # no VIEWER_TOKEN: reads stay open (the design contract), /metrics needs its own token
    node: Node = node_factory(admin_token=ADMIN, metrics_token=METRICS)
    with httpx.Client(base_url=node.url(""), timeout=30, follow_redirects=False) as c:
        assert c.get("/api/studies").status_code == 200
        assert c.get("/studies").status_code == 200
        assert c.get("/metrics").status_code == 401
        assert c.get("/metrics", headers=bearer(METRICS)).status_code == 200
        wrong = [f"guess-{i}-x7" for i in range(MAX_FAILURES)]
        for guess in wrong:
            r = c.post("/login", data={"token": guess})
            assert r.status_code == 401
            assert_secure_headers(r)
        # from now on even the right token is refused from this address, on every path
        r = c.post("/login", data={"token": ADMIN})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert_secure_headers(r)
        r = c.post("/api/studies/1.2.3/retry", headers=bearer(ADMIN))
        assert r.status_code == 429
        assert c.get("/metrics", headers=bearer(METRICS)).status_code == 429
        assert c.post("/studies/1.2.3/retry", data={"token": ADMIN}).status_code == 429
        assert c.get("/api/health").status_code == 200
    log = node.log()
    assert log.count("wrong token from 127.0.0.1 (dashboard login)") == MAX_FAILURES
    assert "further attempts refused for now" in log
    assert not [g for g in wrong if g in log] and ADMIN not in log


def test_session_store_expires_and_revokes() -> None:
    now = [1000.0]
    store = SessionStore(60.0, clock=lambda: now[0])
    sid = store.create(Role.VIEWER)
    assert len(sid) >= 40 and store.role(sid) is Role.VIEWER
    assert store.role(sid + "x") is None and store.role("") is None
    now[0] += 59.9
    assert store.role(sid) is Role.VIEWER
    now[0] += 0.2
    assert store.role(sid) is None  # expired
    other = store.create(Role.ADMIN)
    store.revoke(other)
    assert store.role(other) is None


def test_failure_limiter_window(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    limiter = FailureLimiter(clock=lambda: now[0])
    for _ in range(MAX_FAILURES - 1):
        limiter.failed("10.0.0.1", "test")
    assert limiter.retry_after("10.0.0.1") == 0
    limiter.failed("10.0.0.1", "test")
    assert limiter.retry_after("10.0.0.1") == pytest.approx(FAILURE_WINDOW_S)
    assert limiter.retry_after("10.0.0.2") == 0  # per address
    now[0] += FAILURE_WINDOW_S + 0.1
    assert limiter.retry_after("10.0.0.1") == 0
