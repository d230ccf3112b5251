"""`kill -9` of `spinenode serve` in the middle of a send: nothing acknowledged is lost."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage
from pynetdicom import AE
from pynetdicom import _config as pynetdicom_config
from sqlalchemy import func, select

import dicomgen
from nodeproc import Node, dataset_bytes
from peers import dcmtk_env, dcmtk_tool, storescu
from spinenode.core.db.models import Instance


def _send_until_killed(port: int, files: list[Path], acked: list[str], progress: threading.Event,
                       total: list[str] | None = None) -> None:
    pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True
    ae = AE(ae_title="CRASHSCU")
    ae.add_requested_context(MRImageStorage, [ExplicitVRLittleEndian])
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    assoc = ae.associate("127.0.0.1", port, ae_title="SPINENODE")
    if not assoc.is_established:
        return
    for f in files:
        try:
            rsp = assoc.send_c_store(f)
        except Exception:
            break
        if rsp is None or "Status" not in rsp:
            break  # the peer went away: this one was NOT acknowledged
        if int(rsp.Status) == 0:
            sop = str(dcmread(f, stop_before_pixels=True).SOPInstanceUID)
            acked.append(sop)
            if total is not None:
                total.append(sop)
            if len(total if total is not None else acked) >= 40:
                progress.set()
    if assoc.is_established:
        assoc.release()


def _storescu_until_killed(port: int, files: list[Path], sop_of: dict[Path, str], total: list[str],
                           progress: threading.Event) -> tuple[subprocess.Popen[str], threading.Thread]:
    """A DCMTK storescu association; a reader thread appends to ``total`` the SOP Instance
    UID of every file storescu reports a success response for (``-v``: "Sending file: X"
    ... "Received Store Response (Success)")."""
    proc = subprocess.Popen(
        [dcmtk_tool("storescu"), "-v", "-aet", "CRASHDCMTK", "-aec", "SPINENODE", "127.0.0.1", str(port),
         *map(str, files)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dcmtk_env())

    def read() -> None:
        assert proc.stdout is not None
        current: Path | None = None
        for line in proc.stdout:
            if line.startswith("I: Sending file: "):
                current = Path(line[len("I: Sending file: "):].strip())
            elif line.startswith("I: Received Store Response (Success)") and current is not None:
                total.append(sop_of[current])
                current = None
                if len(total) >= 40:
                    progress.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return proc, reader


def test_kill9_during_parallel_sends_loses_nothing_acknowledged(node_factory: Any, tmp_path: Path) -> None:
    """Six associations at once (per study, one pynetdicom and one DCMTK storescu, each a
    series), so the node's group commit has rounds of several instances when it dies."""
    studies = [
        dicomgen.write_study(
            tmp_path / f"big{i}", seed=31 + i, rows=256, cols=256, patient_id=f"PHANTOM-K{i}",
            series=(dicomgen.SeriesSpec("SAG T2", "sagittal", 60), dicomgen.SeriesSpec("AX T2", "axial", 60)),
        )
        for i in range(3)
    ]
    all_paths = [p for st in studies for p in st.paths]
    by_sop = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in all_paths}
    sop_of = {p: sop for sop, p in by_sop.items()}
    node: Node = node_factory(stable_seconds=2, group_commit="true")
    acked: list[list[str]] = [[] for _ in studies]
    total: list[str] = []
    progress = threading.Event()
    senders = [
        threading.Thread(target=_send_until_killed, args=(
            node.dicom_port, st.series_paths[st.series_uids[0]], acked[i], progress, total))
        for i, st in enumerate(studies)
    ]
    for t in senders:
        t.start()
    dcmtk = [_storescu_until_killed(node.dicom_port, st.series_paths[st.series_uids[1]], sop_of, total, progress)
             for st in studies]
    assert progress.wait(60), "no progress before the kill"
    node.kill9()
    for t in senders:
        t.join(60)
    for proc, reader in dcmtk:
        proc.wait(60)
        reader.join(10)
    n_acked = len(total)
    assert 40 <= n_acked < len(all_paths), "the kill must land mid-send"
    assert any(sop_of[p] in total for st in studies for p in st.series_paths[st.series_uids[1]]), \
        "no DCMTK instance was acknowledged before the kill"

    node.start()  # same DATA_DIR, same database
    with node.db.session() as s:
        rows = dict(s.execute(select(Instance.sop_instance_uid, Instance.path)).all())
    for sop in total:  # every acknowledged instance is indexed, on disk, and whole
        assert sop in rows
        assert dataset_bytes(node.data_dir / rows[sop]) == dataset_bytes(by_sop[sop])
    visible = [p for p in (node.data_dir / "incoming").rglob("*") if p.is_file()]
    assert all(p.suffix == ".dcm" and not p.name.startswith(".") for p in visible), "partial file visible"
    assert len(visible) == len(rows)  # no orphan files: every file has its row

    # the senders resend everything: one row and one file per instance, every study complete
    for st in studies:
        r = storescu(st.paths, "127.0.0.1", node.dicom_port, "SPINENODE")
        assert r.returncode == 0, r.stderr
    with node.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Instance)) == len(all_paths)
    assert len([p for p in (node.data_dir / "incoming").rglob("*") if p.is_file()]) == len(all_paths)
    for st in studies:
        final = node.wait_state(st.study_uid, {"FAILED", "DONE"}, timeout=120)
        assert final["instance_count"] == len(st.paths)
        assert "COMPLETE" in [e["state"] for e in final["events"]]
