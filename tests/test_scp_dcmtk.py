"""The receiver against real DCMTK senders and a raw pynetdicom SCU, with the node as a process."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage
from sqlalchemy import func, select

import dicomgen
from nodeproc import Node, dataset_bytes
from peers import echoscu, storescu
from rawscu import send_raw, write_raw
from spinenode.core import status
from spinenode.core.db.models import Instance, Study

WEIGHTS = Path(__file__).resolve().parents[1] / "models" / "weights" / "manifest.json"


def _spool_files(node: Node) -> list[Path]:
    return sorted(p for p in (node.data_dir / "incoming").rglob("*") if p.is_file())


def test_echo_store_complete_classify(node_factory: Any, study_dir: Any) -> None:
    node: Node = node_factory()
    assert echoscu("127.0.0.1", node.dicom_port, "SPINENODE").returncode == 0
    study = study_dir(seed=11)
    r = storescu(study.paths, "127.0.0.1", node.dicom_port, "SPINENODE")
    assert r.returncode == 0, r.stderr

    # every instance once, on disk and in the database, bytes as sent
    with node.db.session() as s:
        n = s.scalar(select(func.count()).select_from(Instance))
        rows = s.execute(select(Instance.sop_instance_uid, Instance.path)).all()
    assert n == len(study.paths)
    files = _spool_files(node)
    assert len(files) == len(study.paths)
    by_sop = {dcmread(p, stop_before_pixels=True).SOPInstanceUID: p for p in study.paths}
    for sop, rel in rows:
        assert dataset_bytes(node.data_dir / rel) == dataset_bytes(by_sop[sop])
        assert Path(rel).parts[1:] == (study.study_uid, Path(rel).parts[2], f"{sop}.dcm")

    # quiet period -> COMPLETE -> QUEUED -> a worker classifies the series
    final = node.wait_state(study.study_uid, {"FAILED", "DONE"}, timeout=90)
    states = [e["state"] for e in final["events"]]
    assert states[:4] == ["RECEIVING", "COMPLETE", "QUEUED", "ANALYZING"], states
    assert final["region"] == "lumbar"
    classes = {s["series_uid"]: s["classification"] for s in final["series"]}
    assert all(c is not None for c in classes.values())
    got = sorted((c["plane"], c["weighting"], c["role"]) for c in classes.values())
    assert got == [("axial", "T2", "axial_t2"), ("sagittal", "T1", "sagittal_t1"), ("sagittal", "T2", "sagittal_t2")]
    if WEIGHTS.exists():
        # noise images: the analyzer finds no disc, and says so in a "not analysed" SR
        assert final["state"] == "DONE", final
        assert final["results"] and final["results"][0]["kind"] in ("sr", "not-analysed-sr")
    else:
        # no weights installed: the stage says so plainly instead of pretending
        assert final["state"] == "FAILED" and final["failed_stage"] == "analyze"
        assert "AnalyzerUnavailableError" in final["reason"]
    queue = node.api("/api/queue")
    assert queue["states"][final["state"]] == 1 and any(w["online"] for w in queue["workers"])
    # the embedded broker keeps everything under DATA_DIR, nothing in the working directory
    assert not (node.workdir / "control").exists() and (node.data_dir / "broker" / "control").is_dir()


def test_association_checks(node_factory: Any, study_dir: Any) -> None:
    node: Node = node_factory(allowed_calling_aes="PACS1,PACS2")
    assert echoscu("127.0.0.1", node.dicom_port, "SPINENODE", calling_ae="PACS2").returncode == 0
    assert echoscu("127.0.0.1", node.dicom_port, "SPINENODE", calling_ae="INTRUDER").returncode != 0
    assert echoscu("127.0.0.1", node.dicom_port, "WRONGAE", calling_ae="PACS1").returncode != 0
    study = study_dir(seed=12, series=(dicomgen.SeriesSpec("SAG T2", "sagittal", 3),))
    assert storescu(study.paths, "127.0.0.1", node.dicom_port, "SPINENODE", calling_ae="INTRUDER").returncode != 0
    assert _spool_files(node) == []
    # still serving the allowed peer afterwards
    r = storescu(study.paths, "127.0.0.1", node.dicom_port, "SPINENODE", calling_ae="PACS1")
    assert r.returncode == 0, r.stderr
    assert len(_spool_files(node)) == 3
    log = node.log()
    assert "calling_ae" in log and "called_ae" in log


def test_bad_input_gets_status_and_node_keeps_serving(node_factory: Any, tmp_path: Path) -> None:
    node: Node = node_factory()
    good = dicomgen.write_study(tmp_path / "good", seed=13, series=(dicomgen.SeriesSpec("SAG T2", "sagittal", 2),))
    raw = good.paths[0].read_bytes()
    body = dataset_bytes(good.paths[0])
    ds = dcmread(good.paths[0])
    sop = str(ds.SOPInstanceUID)
    bad = tmp_path / "bad"
    bad.mkdir()
    truncated = write_raw(bad / "trunc.dcm", MRImageStorage, sop, ExplicitVRLittleEndian, body[: len(body) // 2])
    garbage = write_raw(bad / "garbage.dcm", MRImageStorage, "1.2.3.4", ExplicitVRLittleEndian, bytes(range(256)) * 40)
    ds_path = copy.deepcopy(ds)
    ds_path.SOPInstanceUID = "1.2.3/../../../../tmp/evil"
    ds_path.file_meta.MediaStorageSOPInstanceUID = ds_path.SOPInstanceUID
    crafted = bad / "crafted.dcm"
    ds_path.save_as(crafted, enforce_file_format=True)
    # the data set says CT, the request says MR
    ds_ct = copy.deepcopy(ds)
    ds_ct.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    mismatch = write_raw(bad / "mismatch.dcm", MRImageStorage, sop, ExplicitVRLittleEndian, b"")
    mismatch.write_bytes(mismatch.read_bytes() + _body(ds_ct))
    statuses = send_raw(
        node.dicom_port, [truncated, garbage, crafted, mismatch, good.paths[1]],
        [(MRImageStorage, ExplicitVRLittleEndian)],
    )
    assert statuses == [
        status.CANNOT_UNDERSTAND, status.CANNOT_UNDERSTAND, status.CANNOT_UNDERSTAND,
        status.DATASET_DOES_NOT_MATCH_SOP_CLASS, status.SUCCESS, status.SUCCESS,
    ]
    files = _spool_files(node)
    assert len(files) == 1 and all(node.data_dir / "incoming" in p.parents for p in files)
    assert not list(Path("/tmp").glob("evil*"))
    assert len(raw) > 0 and echoscu("127.0.0.1", node.dicom_port, "SPINENODE").returncode == 0
    log = node.log()
    assert "0xC210" in log and "0xA900" in log
    assert "PHANTOM" not in log  # no patient name or ID in the logs


def _body(ds: Any) -> bytes:
    import io

    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return dataset_bytes_from(buf.getvalue())


def dataset_bytes_from(raw: bytes) -> bytes:
    group_len = int.from_bytes(raw[140:144], "little")
    return raw[144 + group_len:]


@pytest.mark.parametrize(("kind", "flag"), [("jpegls", "-xt"), ("jpeg-lossless", "-xs")])
def test_compressed_stored_byte_identical(node_factory: Any, tmp_path: Path, kind: str, flag: str) -> None:
    node: Node = node_factory()
    study = dicomgen.write_study(tmp_path / "plain", seed=14, series=(dicomgen.SeriesSpec("SAG T2", "sagittal", 4),))
    packed = dicomgen.compress(study.paths, tmp_path / kind, kind)
    r = storescu(packed, "127.0.0.1", node.dicom_port, "SPINENODE", extra_args=(flag,))
    assert r.returncode == 0, r.stderr
    with node.db.session() as s:
        rows = dict(s.execute(select(Instance.sop_instance_uid, Instance.path)).all())
        syntaxes = set(s.scalars(select(Instance.transfer_syntax_uid)).all())
    assert syntaxes == {str(dicomgen.COMPRESSION_SYNTAXES[kind])}
    for p in packed:
        sop = dcmread(p, stop_before_pixels=True).SOPInstanceUID
        assert dataset_bytes(node.data_dir / rows[sop]) == dataset_bytes(p)
    with node.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Study)) == 1
