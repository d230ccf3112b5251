"""Load: parallel senders, and studies back to back through analysis and export; the peak
memory of the node and of its worker stays bounded.

Each test has a CI size, run by ``make test``, and the full size (8 senders x 500 images,
20 studies), marked ``slow`` and run with ``.venv/bin/python -m pytest -m slow tests/test_load.py``.
The CI size keeps the same shape (several senders at once, several studies queued behind
each other) so that it fails the same way, on a loaded 2-core machine within its timeout.

Images are small (64 x 64) so that CI spends its time on the protocol and the database,
not on copying bytes; the peak RSS values are printed for docs/performance.md.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from sqlalchemy import func, select

import dicomgen
from nodeproc import Node
from peers import StorescpServer, storescu, wait_until
from spinenode.core.db.models import Instance, Study

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


#: (senders, images per sender, test timeout in s): CI size, then the full size.
SENDERS = [pytest.param(4, 200, 900, id="4x200", marks=pytest.mark.timeout(900)),
           pytest.param(8, 500, 1800, id="8x500", marks=[pytest.mark.slow, pytest.mark.timeout(1800)])]
#: (studies, the wait for all of them to be DONE in s), each with its test timeout above the wait
STUDIES = [pytest.param(5, 600, id="5", marks=pytest.mark.timeout(900)),
           pytest.param(20, 1500, id="20", marks=[pytest.mark.slow, pytest.mark.timeout(1800)])]


@pytest.mark.parametrize("senders,images,limit", SENDERS)
def test_parallel_senders(node_factory: Any, tmp_path: Path, senders: int, images: int, limit: int) -> None:
    node: Node = node_factory(max_associations=16, stable_seconds=30)
    half = images // 2
    studies = [
        dicomgen.write_study(tmp_path / f"s{i}", seed=200 + i, patient_id=f"PHANTOM-L{i}",
                             series=(dicomgen.SeriesSpec("SAG T2", "sagittal", half),
                                     dicomgen.SeriesSpec("AX T2", "axial", images - half)))
        for i in range(senders)
    ]
    results: list[int] = []
    threads = [threading.Thread(target=lambda st=st: results.append(
        storescu(st.paths, "127.0.0.1", node.dicom_port, "SPINENODE", timeout=limit - 120).returncode))
        for st in studies]
    for t in threads:
        t.start()
    for t in threads:
        t.join(limit - 60)
    assert results == [0] * senders
    total = senders * images
    with node.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Instance)) == total
        assert s.scalar(select(func.count()).select_from(Study)) == senders
    files = [p for p in (node.data_dir / "incoming").rglob("*.dcm")]
    assert len(files) == total
    assert node.proc is not None
    peak = _peak_mb(node.proc.pid)
    print(f"\nPEAK RSS node after {senders} x {images} images: {peak:.0f} MB")
    assert peak < NODE_PEAK_MB


@pytest.mark.parametrize("n,wait", STUDIES)
def test_studies_back_to_back(node_factory: Any, tmp_path: Path, n: int, wait: int) -> None:
    root = tmp_path / "phantom"
    subprocess.run([sys.executable, "-m", "spinenode_app.cli", "phantom", str(root), "--studies", str(n), "--seed", "301",
                    "--matrix", "256", "--no-masks"], check=True, capture_output=True)
    dirs = sorted(p for p in (root / "train_images").iterdir() if p.is_dir())
    assert len(dirs) == n
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

        wait_until(all_done, wait, interval=1.0, what=f"{n} studies DONE")
        assert len(pacs.files()) == 3 * n  # SR, SEG, key image per study, none twice
        assert node.proc is not None
        node_peak, worker_peak = _peak_mb(node.proc.pid), _peak_mb(_worker_pid(node))
        print(f"\nPEAK RSS after {n} studies: node {node_peak:.0f} MB, worker {worker_peak:.0f} MB")
        assert node_peak < NODE_PEAK_MB and worker_peak < WORKER_PEAK_MB
