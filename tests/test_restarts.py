"""Redis and PostgreSQL restarted under the node: nothing lost, no node restart needed."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

import dicomgen
from nodeproc import Node, worker_process
from peers import storescu, wait_until
from spinenode.core.db.models import Instance


def test_redis_restart_loses_queued_message_sweep_recovers(
    node_factory: Any, redis_server: Any, tmp_path: Path
) -> None:
    node: Node = node_factory(broker_url=redis_server.url, requeue_after=4)
    study = dicomgen.write_study(tmp_path / "st", seed=111)
    assert storescu(study.paths, "127.0.0.1", node.dicom_port, "SPINENODE").returncode == 0
    node.wait_state(study.study_uid, {"QUEUED"}, timeout=60)
    wait_until(lambda: node.api("/api/queue")["queues"]["gpu"] == 1, 10, what="the message in Redis")
    redis_server.kill()  # no persistence: the queued message is gone
    redis_server.start()
    assert node.api("/api/queue")["queues"]["gpu"] == 0
    # the sweep sees the study QUEUED for over REQUEUE_AFTER and sends it again
    wait_until(lambda: node.api("/api/queue")["queues"]["gpu"] == 1, 30, what="the sweep to re-send")
    worker = worker_process(tmp_path / "worker", node)
    (tmp_path / "worker").mkdir()
    worker.start()
    try:
        final = node.wait_state(study.study_uid, {"DONE", "FAILED"}, timeout=90)
        assert all(s["classification"] for s in final["series"])
        assert any("requeued by the sweep" in (e["detail"] or "") for e in final["events"])
    finally:
        worker.stop()
    assert node.alive()


def test_postgres_restart_while_receiving(node_factory: Any, postgres_server: Any, postgres_url: str,
                                          tmp_path: Path) -> None:
    node: Node = node_factory(database_url=postgres_url)
    study = dicomgen.write_study(tmp_path / "st", seed=112, rows=128, cols=128, series=(
        dicomgen.SeriesSpec("SAG T2", "sagittal", 120), dicomgen.SeriesSpec("AX T2", "axial", 120)))
    results: list[Any] = []
    sender = threading.Thread(target=lambda: results.append(
        storescu(study.paths, "127.0.0.1", node.dicom_port, "SPINENODE", timeout=300)))
    sender.start()
    wait_until(lambda: _count(node) >= 20, 60, what="the first instances")
    postgres_server.restart()
    sender.join(300)
    # whatever was refused during the outage (0xA700) is sent again; the node was not restarted
    r = storescu(study.paths, "127.0.0.1", node.dicom_port, "SPINENODE", timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert _count(node) == len(study.paths)
    final = node.wait_state(study.study_uid, {"DONE", "FAILED"}, timeout=90)
    assert final["instance_count"] == len(study.paths)
    assert node.alive()


def _count(node: Node) -> int:
    try:
        with node.db.session() as s:
            return int(s.scalar(select(func.count()).select_from(Instance)) or 0)
    except Exception:
        return 0
