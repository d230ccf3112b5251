"""SCP_PROCESSES=2: connections handed to worker processes, real DCMTK senders, kill -9."""

from __future__ import annotations

import re
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pydicom import dcmread
from sqlalchemy import func, select

import dicomgen
from nodeproc import Node, dataset_bytes
from peers import storescu, wait_until
from spinenode.core.db.models import Event, Instance, Series, Study


def _scp_workers(node_pid: int) -> list[int]:
    """PIDs of the node's spawned SCP worker processes (children running spawn_main)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        if ppid == node_pid and b"spawn_main" in cmdline:
            pids.append(int(entry.name))
    return sorted(pids)


def _gone(pid: int) -> bool:
    """True once ``pid`` no longer runs (exited, or a zombie awaiting its reaper)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] == "Z"


def _refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except OSError:
        return True


def test_four_associations_two_processes_then_kill9(node_factory: Any, tmp_path: Path) -> None:
    series = tuple(dicomgen.SeriesSpec(f"SAG T2 {i}", "sagittal", 15) for i in range(4))
    study = dicomgen.write_study(tmp_path / "study", seed=41, rows=128, cols=128, series=series)
    node: Node = node_factory(scp_processes=2, stable_seconds=3600)
    assert node.proc is not None
    workers = wait_until(lambda: len(w := _scp_workers(node.proc.pid)) == 2 and w, 30,
                         what="two SCP worker processes")

    # four DCMTK senders at once, one series each
    def send(paths: list[Path]) -> Any:
        return storescu(paths, "127.0.0.1", node.dicom_port, "SPINENODE", calling_ae="POOLSCU")

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(send, study.series_paths.values()))
    for r in results:
        assert r.returncode == 0, r.stderr

    # every instance exactly once, in the database and on disk, bytes as sent
    with node.db.session() as s:
        rows = dict(s.execute(select(Instance.sop_instance_uid, Instance.path)).all())
        assert s.scalar(select(func.count()).select_from(Study)) == 1
        assert s.scalar(select(func.count()).select_from(Series)) == 4
        # concurrent first instances from two processes: the study was created once
        assert s.scalar(select(func.count()).select_from(Event)) == 1
    assert len(rows) == len(study.paths)
    files = [p for p in (node.data_dir / "incoming").rglob("*") if p.is_file()]
    assert len(files) == len(study.paths)
    for path in study.paths:
        sop = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        assert dataset_bytes(node.data_dir / rows[sop]) == dataset_bytes(path)

    # the associations were spread over both workers, two each
    accepted = re.findall(r"(scp-worker-\d) scp_node\.scp: association accepted", node.log())
    assert sorted(accepted.count(name) for name in set(accepted)) == [2, 2], accepted

    # /metrics counts what both worker processes stored (shared-memory counters)
    import httpx

    metrics = httpx.get(node.url("/metrics"), timeout=10).text
    assert f"spinenode_instances_received_total {float(len(study.paths))}" in metrics, metrics[:2000]
    assert "spinenode_associations_accepted_total 4.0" in metrics

    # kill -9 of the node's main process: no worker is left running, nothing listens
    node.kill9()
    wait_until(lambda: all(_gone(pid) for pid in workers), 30, what="SCP workers to exit")
    assert _refused(node.dicom_port)


def test_shared_counters_count_what_the_in_process_ones_count() -> None:
    """The pool's shared-memory counters have the same counters as ScpCounters and add the same way."""
    from spinenode.core import status
    from scp_node.counters import SharedScpCounters
    from scp_node.scp import ScpCounters

    plain, shared = ScpCounters(), SharedScpCounters()
    for c in (plain, shared):
        c.stored(100)
        c.stored(50)
        c.own_result()
        c.failed(status.CANNOT_UNDERSTAND)
        c.reject("calling_ae")
        with c.lock:
            c.associations += 1
    for name in ("instances", "bytes", "associations", "own_results", "failures", "rejected"):
        assert getattr(shared, name) == getattr(plain, name), name
    assert (shared.instances, shared.bytes, shared.own_results) == (2, 150, 1)
