"""Production topology: PostgreSQL index, Redis broker, `spinenode worker` in its own process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from nodeproc import Node, worker_process
from peers import storescu, wait_until
from spinenode.core.db.models import Instance


@pytest.mark.redis
@pytest.mark.postgres
def test_redis_broker_postgres_db_separate_worker(
    node_factory: Any, study_dir: Any, redis_server: Any, postgres_url: str, tmp_path: Path
) -> None:
    node: Node = node_factory(broker_url=redis_server.url, database_url=postgres_url)
    study = study_dir(seed=21)
    r = storescu(study.paths, "127.0.0.1", node.dicom_port, "SPINENODE")
    assert r.returncode == 0, r.stderr
    with node.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Instance)) == len(study.paths)
    # serve starts no worker with an external broker: the study waits in the queue
    queued = node.wait_state(study.study_uid, {"QUEUED"}, timeout=60)
    assert queued["region"] == "lumbar"
    # the message follows the commit: wait for it to be in Redis
    wait_until(lambda: node.api("/api/queue")["queues"]["gpu"] == 1, 10, what="one message in the gpu queue")

    worker = worker_process(tmp_path / "worker", node)
    (tmp_path / "worker").mkdir()
    worker.start()
    try:
        final = node.wait_state(study.study_uid, {"FAILED", "DONE"}, timeout=90)
        assert all(s["classification"] for s in final["series"]), worker.log()[-3000:]
        assert final["selection"]["sagittal_t2"] and final["selection"]["axial_t2"]
        assert node.api("/api/queue")["queues"]["gpu"] == 0
    finally:
        worker.stop()


@pytest.mark.postgres
def test_postgres_index_and_resend(node_factory: Any, study_dir: Any, postgres_url: str) -> None:
    node: Node = node_factory(database_url=postgres_url)
    study = study_dir(seed=22)
    for _ in range(2):  # the resend is idempotent
        r = storescu(study.paths, "127.0.0.1", node.dicom_port, "SPINENODE")
        assert r.returncode == 0, r.stderr
    with node.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Instance)) == len(study.paths)
    final = node.wait_state(study.study_uid, {"FAILED", "DONE"}, timeout=90)
    assert all(s["classification"] for s in final["series"])
