"""The embedded (serverless) broker: `kill -9` of `spinenode serve` mid-analysis loses the
in-flight message with the worker; after a restart the database sweep recovers it, and
the PACS gets one set of results."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from pydicom import dcmread

from nodeproc import Node
from peers import StorescpServer, storescu, wait_until


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()


def test_kill9_serve_mid_analysis_with_embedded_broker(node_factory: Any, tmp_path: Path) -> None:
    root = tmp_path / "phantom"
    subprocess.run([sys.executable, "-m", "spinenode_app.cli", "phantom", str(root), "--studies", "1", "--seed", "9"],
                   check=True, capture_output=True)
    files = sorted((root / "train_images").rglob("*.dcm"))
    uid = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    with StorescpServer(tmp_path / "pacs") as pacs:
        node: Node = node_factory(requeue_after=6, destinations=pacs.destination)
        assert storescu(files, "127.0.0.1", node.dicom_port, "SPINENODE").returncode == 0
        node.wait_state(uid, {"ANALYZING"}, timeout=60)
        worker_pid = int(node.api("/api/queue")["workers"][0]["pid"])
        # a machine crash: both processes die at once, the worker holding the consumed
        # analyze message (the filesystem broker has no redelivery)
        os.kill(worker_pid, 9)
        node.kill9()
        wait_until(lambda: not _alive(worker_pid), 30, what="the embedded worker to be gone")
        node.start()
        final = node.wait_state(uid, {"DONE", "FAILED"}, timeout=180)
        assert final["state"] == "DONE", final
        assert any("requeued by the sweep" in (e["detail"] or "") for e in final["events"]), final["events"]
        wait_until(lambda: len(pacs.files()) >= 3, 15, what="results at the PACS")
        got = sorted(str(dcmread(f, stop_before_pixels=True).SeriesNumber) for f in pacs.files())
        assert got == ["9901", "9902", "9903"]
