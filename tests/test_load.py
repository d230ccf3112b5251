"""Load: 8 parallel senders x 500 images, and 20 studies back to back through analysis and
export; the peak memory of the node and of its worker stays bounded.

Images are small (64 x 64) so that CI spends its time on the protocol and the database,
not on copying bytes; the peak RSS values are printed for docs/performance.md.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from pydicom import dcmread
from sqlalchemy import func, select

import dicomgen
from nodeproc import Node
from peers import StorescpServer, storescu, wait_until
from scp_node.db.models import Instance, Study

#: Generous ceilings: a leak of the per-instance or per-study kind grows far beyond them.
NODE_PEAK_MB = 1024
WORKER_PEAK_MB = 3072


def _peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def _worker_pid(node: Node) -> int:
    workers = node.api("/api/queue")["workers"]
    return int(workers[0]["pid"])


def test_eight_senders_by_500(node_factory: Any, tmp_path: Path) -> None:
    node: Node = node_factory(max_associations=16, stable_seconds=30)
    studies = [
        dicomgen.write_study(tmp_path / f"s{i}", seed=200 + i, patient_id=f"PHANTOM-L{i}",
                             series=(dicomgen.SeriesSpec("SAG T2", "sagittal", 250),
                                     dicomgen.SeriesSpec("AX T2", "axial", 250)))
        for i in range(8)
    ]
    results: list[int] = []
    threads = [threading.Thread(target=lambda st=st: results.append(
        storescu(st.paths, "127.0.0.1", node.dicom_port, "SPINENODE", timeout=600).returncode)) for st in studies]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert results == [0] * 8
    with node.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Instance)) == 4000
        assert s.scalar(select(func.count()).select_from(Study)) == 8
    files = [p for p in (node.data_dir / "incoming").rglob("*.dcm")]
    assert len(files) == 4000
    assert node.proc is not None
    peak = _peak_mb(node.proc.pid)
    print(f"\nPEAK RSS node after 8 x 500 images: {peak:.0f} MB")
    assert peak < NODE_PEAK_MB


def test_twenty_studies_back_to_back(node_factory: Any, tmp_path: Path) -> None:
    root = tmp_path / "phantom"
    subprocess.run([sys.executable, "-m", "scp_node.cli", "phantom", str(root), "--studies", "20", "--seed", "301",
                    "--matrix", "256", "--no-masks"], check=True, capture_output=True)
    dirs = sorted(p for p in (root / "train_images").iterdir() if p.is_dir())
    assert len(dirs) == 20
    with StorescpServer(tmp_path / "pacs") as pacs:
        node: Node = node_factory(stable_seconds=1, destinations=pacs.destination)
        uids = []
        for d in dirs:
            files = sorted(d.rglob("*.dcm"))
            uids.append(str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID))
            assert storescu(files, "127.0.0.1", node.dicom_port, "SPINENODE").returncode == 0

        def all_done() -> bool:
            states = [(node.study(u) or {}).get("state") for u in uids]
            assert "FAILED" not in states, [node.study(u) for u in uids if (node.study(u) or {}).get("state") == "FAILED"][:1]
            return all(s == "DONE" for s in states)

        wait_until(all_done, 600, interval=1.0, what="20 studies DONE")
        assert len(pacs.files()) == 60  # SR, SEG, key image per study, none twice
        assert node.proc is not None
        node_peak, worker_peak = _peak_mb(node.proc.pid), _peak_mb(_worker_pid(node))
        print(f"\nPEAK RSS after 20 studies: node {node_peak:.0f} MB, worker {worker_peak:.0f} MB")
        assert node_peak < NODE_PEAK_MB and worker_peak < WORKER_PEAK_MB
