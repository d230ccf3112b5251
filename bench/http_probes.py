"""Probe the admin HTTP side of a running node: access policy, sessions, wrong-token limit,
headers, control characters, health. Prints one row per probe with what was observed.

Starts its own nodes (``spinenode serve`` with SQLite, and one with PostgreSQL for the NUL
probe), a Redis and a PostgreSQL on free loopback ports, and stops them at the end. Asserts
nothing; the tests hold the expectations. ``--code DIR`` runs the nodes from another
checkout (e.g. ``--code /path/to/main`` for a before/after table)::

    .venv/bin/python bench/http_probes.py [--code DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import httpx  # noqa: E402

from nodeproc import Node  # noqa: E402
from peers import PostgresServer, RedisServer, free_port  # noqa: E402

ADMIN, VIEWER = "probe-admin-token", "probe-viewer-token"


def _node(work: Path, code: Path, **settings: Any) -> Node:
    node = Node(work, **settings)
    node.env["PYTHONPATH"] = str(code)
    node.start()
    return node


def _status(c: httpx.Client, path: str) -> str:
    try:
        return str(c.get(path).status_code)
    except httpx.HTTPError as exc:
        return f"no answer ({type(exc).__name__})"


def _headers(r: httpx.Response) -> str:
    got = [h for h in ("cache-control", "x-content-type-options", "x-frame-options") if h in r.headers]
    return f"{r.status_code}, " + (", ".join(f"{h}: {r.headers[h]}" for h in got) if got else "no security headers")


def probe(code: Path, work: Path) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    node = _node(work / "gated", code, admin_token=ADMIN, viewer_token=VIEWER)
    try:
        with httpx.Client(base_url=node.url(""), timeout=30, follow_redirects=False) as c:
            for path in ("/studies", "/api/studies", "/api/studies/1.2.3/findings", "/api/queue", "/metrics",
                         "/api/openapi.json", "/api/health"):
                rows.append((f"GET {path} without a token (VIEWER_TOKEN set)", str(c.get(path).status_code)))
            auth = {"Authorization": f"Bearer {VIEWER}"}
            rows.append(("headers of GET /api/studies with the viewer token", _headers(c.get("/api/studies", headers=auth))))
            rows.append(("headers of GET /metrics with the viewer token", _headers(c.get("/metrics", headers=auth))))
            rows.append(("headers of a 404 (GET /nope with the viewer token)", _headers(c.get("/nope", headers=auth))))
            r = c.post("/login", data={"token": VIEWER})
            cookie = r.headers.get("set-cookie", "").split(";")[0]
            c.cookies.clear()
            before = c.get("/studies", headers={"Cookie": cookie}).status_code
            c.post("/logout", headers={"Cookie": cookie})
            c.cookies.clear()
            after = c.get("/studies", headers={"Cookie": cookie}).status_code
            rows.append(("session cookie replayed after /logout", f"{before} before logout, {after} after"))
            t0 = time.monotonic()
            codes = [c.post("/login", data={"token": f"wrong-{i}"}).status_code for i in range(100)]
            took = time.monotonic() - t0
            summary = ", ".join(f"{codes.count(k)} x {k}" for k in sorted(set(codes)))
            rows.append(("100 wrong logins from one address", f"{summary} in {took:.1f} s; "
                         f"then the right token: {c.post('/login', data={'token': VIEWER}).status_code}"))
        log = node.log()
        rows.append(("wrong logins in the log", f"{log.count('wrong token from')} lines, "
                     f"token in the log: {'yes' if 'wrong-1' in log else 'no'}"))
    finally:
        node.close()

    with PostgresServer() as pg, RedisServer(work / "redis") as redis:
        url = pg.url_for(pg.unique_database())
        node = _node(work / "pg", code, database_url=url, broker_url=redis.url)
        try:
            with httpx.Client(base_url=node.url(""), timeout=60, follow_redirects=False) as c:
                for path in ("/studies?q=PID123%00", "/api/studies/1.2.3%00"):
                    rows.append((f"GET {path} (PostgreSQL)", _status(c, path)))
                rows.append(("log holds the searched value PID123", "yes" if "PID123" in node.log() else "no"))
                h = c.get("/api/health")
                rows.append(("/api/health, all up, no worker", f"{h.status_code} {h.json().get('status')}"))
                redis.kill()
                h = c.get("/api/health")
                rows.append(("/api/health with Redis killed", f"{h.status_code} {h.json().get('status')}"))
        finally:
            node.close()

    env = {k: v for k, v in os.environ.items() if not k.startswith("SPINENODE_")}
    env.update({"PYTHONPATH": str(code), "SPINENODE_DATA_DIR": str(work / "public"), "SPINENODE_HTTP_HOST": "0.0.0.0",
                "SPINENODE_HTTP_PORT": str(free_port()), "SPINENODE_DICOM_PORT": str(free_port()),
                "SPINENODE_DICOM_HOST": "127.0.0.1"})
    r = subprocess.run([sys.executable, "-m", "spinenode_app.cli", "serve"], env=env, capture_output=True, text=True,
                       timeout=120, cwd=work)
    rows.append(("serve with HTTP_HOST=0.0.0.0 and no ADMIN_TOKEN",
                 f"exit {r.returncode}, {len(r.stderr.strip().splitlines())} line(s) on stderr"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", type=Path, default=REPO, help="checkout whose scp_node the nodes run")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="spinenode-probe-") as tmp:
        rows = probe(args.code.resolve(), Path(tmp))
    if args.json:
        print(json.dumps(dict(rows), indent=2))
        return
    width = max(len(p) for p, _ in rows)
    for p, observed in rows:
        print(f"{p:<{width}}  {observed}")


if __name__ == "__main__":
    main()
