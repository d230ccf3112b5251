"""Flower watches the real queue (docker/compose.yaml's monitoring profile): behind basic
auth it lists the spinenode worker with its three queues and the pipeline's tasks of a
study, from the task events the workers send over Redis."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from nodeproc import Node, worker_process
from peers import FlowerServer, StorescpServer, storescu, wait_until
from spinenode.core.broker import QUEUES, TASK_ANALYZE, TASK_ENCODE, TASK_EXPORT


def _worker_queues(flower: FlowerServer) -> set[str] | None:
    r = flower.get("/api/workers?refresh=1")
    if r.status_code != 200:
        return None
    for name, info in r.json().items():
        queues = {q["name"] for q in (info.get("active_queues") or [])}
        if name.startswith("spinenode@") and queues:
            return queues
    return None


def _finished_tasks(flower: FlowerServer, names: set[str]) -> dict[str, str] | None:
    r = flower.get("/api/tasks")
    if r.status_code != 200:
        return None
    states = {t["name"]: t["state"] for t in r.json().values() if t.get("name") in names}
    return states if set(states) == names and all(s == "SUCCESS" for s in states.values()) else None


@pytest.mark.redis
def test_flower_shows_the_worker_and_the_pipeline_tasks(
    node_factory: Any, study_dir: Any, redis_server: Any, tmp_path: Path
) -> None:
    with StorescpServer(tmp_path / "pacs") as pacs, FlowerServer(redis_server.url, tmp_path / "flower") as flower:
        assert flower.get("/api/workers", auth=False).status_code == 401  # basic auth guards the API
        assert flower.get("/", auth=False).status_code == 401  # and the UI
        node: Node = node_factory(broker_url=redis_server.url, destinations=pacs.destination)
        (tmp_path / "worker").mkdir()
        worker = worker_process(tmp_path / "worker", node)
        worker.start()
        try:
            queues = wait_until(lambda: _worker_queues(flower), 60, interval=0.5, what="the worker in Flower")
            assert queues == set(QUEUES)
            study = study_dir(seed=23)
            assert storescu(study.paths, "127.0.0.1", node.dicom_port, "SPINENODE").returncode == 0
            final = node.wait_state(study.study_uid, {"DONE", "FAILED"}, timeout=120)
            assert final["state"] == "DONE", final
            tasks = {TASK_ANALYZE, TASK_ENCODE, TASK_EXPORT}
            wait_until(lambda: _finished_tasks(flower, tasks), 60, interval=0.5, what="the tasks in Flower")
            page = flower.get("/tasks")
            assert page.status_code == 200 and "Flower" in page.text
        except (httpx.HTTPError, TimeoutError) as exc:
            raise AssertionError(f"{exc}\nflower log:\n{flower.log_path.read_text()[-3000:]}\n"
                                 f"worker log:\n{worker.log()[-3000:]}") from exc
        finally:
            worker.stop()
