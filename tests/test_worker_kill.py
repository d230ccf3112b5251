"""`kill -9` of a worker mid-analysis (Redis broker): the study completes after a worker
restarts, and the PACS receives one set of results."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from pydicom import dcmread

from nodeproc import Node, worker_process
from peers import StorescpServer, storescu, wait_until


def test_worker_killed_mid_analysis(node_factory: Any, redis_server: Any, tmp_path: Path) -> None:
    with StorescpServer(tmp_path / "pacs") as pacs:
        node: Node = node_factory(broker_url=redis_server.url, requeue_after=8, destinations=pacs.destination)
        root = tmp_path / "phantom"
        subprocess.run([sys.executable, "-m", "spinenode_app.cli", "phantom", str(root), "--studies", "1",
                        "--seed", "7"], check=True, capture_output=True)
        files = sorted((root / "train_images").rglob("*.dcm"))
        uid = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
        assert storescu(files, "127.0.0.1", node.dicom_port, "SPINENODE").returncode == 0

        (tmp_path / "w1").mkdir()
        first = worker_process(tmp_path / "w1", node)
        first.start()
        node.wait_state(uid, {"ANALYZING"}, timeout=60)
        first.kill9()  # mid-analysis: the task is neither acknowledged nor finished

        (tmp_path / "w2").mkdir()
        second = worker_process(tmp_path / "w2", node)
        second.start()
        try:
            final = node.wait_state(uid, {"DONE", "FAILED"}, timeout=180)
        finally:
            second.stop()
        assert final["state"] == "DONE", final
        assert any("requeued by the sweep" in (e["detail"] or "") for e in final["events"])
        wait_until(lambda: len(pacs.files()) >= 3, 10, what="the results at the PACS")
        received = sorted(str(dcmread(f, stop_before_pixels=True).SeriesNumber) for f in pacs.files())
        assert received == ["9901", "9902", "9903"]  # one SR, one SEG, one key image: no duplicates
