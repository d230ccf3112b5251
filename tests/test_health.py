"""``/api/health`` tells the truth on a running node: a database that refuses writes, a
broker that is down and a disk under the watermark each make it 503 (it said "ok" to all
three before, with ``SELECT 1``); and a 500 from a database outage carries the security
headers and logs no exception message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from nodeproc import Node
from peers import PostgresServer, RedisServer, wait_until


def health(node: Node) -> tuple[int, dict[str, Any]]:
    r = httpx.get(node.url("/api/health"), timeout=30)
    assert r.headers["cache-control"] == "no-store"
    return r.status_code, r.json()


def wait_health(node: Node, status: int, what: str) -> dict[str, Any]:
    seen: list[Any] = []

    def check() -> bool:
        code, body = health(node)
        seen[:] = [code, body]
        return code == status

    try:
        wait_until(check, 30, interval=0.3, what=what)
    except TimeoutError as exc:
        raise AssertionError(f"{what}: last {seen}") from exc
    return seen[1]


def _set_read_only(url: str, on: bool) -> None:
    """Make the node's database refuse writes (or accept them again) for new sessions,
    and end the node's current sessions so that its pool reconnects."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text("SET default_transaction_read_only = off"))  # this session may write
            name = conn.execute(text("SELECT current_database()")).scalar()
            conn.execute(text(f'ALTER DATABASE "{name}" SET default_transaction_read_only = {"on" if on else "off"}'))
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
    finally:
        engine.dispose()


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.timeout(300)
def test_health_reports_database_broker_and_workers_truthfully(
    node_factory: Any, redis_server: RedisServer, postgres_server: PostgresServer, postgres_url: str
) -> None:
    node: Node = node_factory(database_url=postgres_url, broker_url=redis_server.url)
    code, body = health(node)
    # an external broker: serve runs no worker, so none is online yet; the node itself is fine
    assert code == 200 and body["status"] == "degraded" and body["problems"] == ["no worker online"], body
    assert body["database"] == "ok" and body["broker"] == "ok" and body["disk"]["state"] == "ok"

    redis_server.kill()
    body = wait_health(node, 503, "health 503 with the broker down")
    assert body["broker"] == "unreachable" and "broker unreachable" in body["problems"]
    redis_server.start()
    wait_health(node, 200, "health 200 with the broker back")

    _set_read_only(postgres_url, True)
    try:
        body = wait_health(node, 503, "health 503 with a read-only database")
        assert body["database"] == "not writable", body
        # reads still work: SELECT 1, the old check, would have said "ok"
        assert httpx.get(node.url("/api/studies"), timeout=30).status_code == 200
    finally:
        _set_read_only(postgres_url, False)
    wait_health(node, 200, "health 200 with a writable database")

    # the database gone: a 500 that carries the headers and logs no message
    postgres_server.stop()
    try:
        r = httpx.get(node.url("/api/studies"), timeout=60)
        assert r.status_code == 500 and r.json() == {"detail": "internal error; see the node log"}
        assert r.headers["cache-control"] == "no-store" and r.headers["x-content-type-options"] == "nosniff"
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        assert health(node)[0] == 503
    finally:
        postgres_server.start()
    wait_health(node, 200, "health 200 with the database back")
    assert "admin HTTP GET /api/studies failed (OperationalError)" in node.log()


def test_health_is_503_while_the_disk_is_under_the_watermark(node_factory: Any, small_disk: Path) -> None:
    node: Node = node_factory(disk_min_free_mb=32, start=False)
    node.data_dir = small_disk / "data"
    node.env["SPINENODE_DATA_DIR"] = str(node.data_dir)
    node.database_url = f"sqlite:///{node.data_dir / 'spinenode.db'}"
    node.start()
    assert health(node)[0] == 200
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (40 * 2**20))  # leaves under 32 MB free
    body = wait_health(node, 503, "health 503 under the watermark")
    assert body["disk"]["state"] == "low" and body["disk"]["min_free_mb"] == 32 and body["disk"]["free_mb"] < 32
    # a full disk: the probe write itself fails
    with (small_disk / "filler3").open("wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 2**20)
        except OSError:
            pass
    body = wait_health(node, 503, "health 503 on a full disk")
    assert body["disk"]["state"] in {"low", "not writable"}
    for name in ("filler", "filler3"):
        (small_disk / name).unlink()
    wait_health(node, 200, "health 200 with room again")
