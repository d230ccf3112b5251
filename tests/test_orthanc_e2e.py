"""Orthanc as the PACS: it routes a study to the node, the node sends its SR back.

The study here has no sagittal series, so the node answers with a "not analysed"
SR that says why; this path needs no model weights.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import highdicom as hd
from pydicom import dcmread

import dicomgen
from nodeproc import Node
from peers import OrthancServer, dciodvfy, free_port, wait_until

AXIAL_ONLY = (dicomgen.SeriesSpec("AX T2", "axial", 12, "T2"), dicomgen.SeriesSpec("AX T1", "axial", 12, "T1"))


def _results_in_orthanc(orthanc: OrthancServer, study_uid: str, source_count: int) -> list[str]:
    ids = orthanc.study_instances(study_uid)
    return ids if len(ids) > source_count else []


def _check_sr(orthanc: OrthancServer, study_uid: str, source_uids: set[str], tmp_path: Path) -> Any:
    srs = []
    for iid in orthanc.study_instances(study_uid):
        raw = orthanc.download(iid)
        ds = dcmread(io.BytesIO(raw), stop_before_pixels=True)
        if ds.Modality == "SR":
            path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
            path.write_bytes(raw)
            srs.append((ds, path))
    assert len(srs) == 1, f"expected one SR, found {len(srs)}"
    ds, path = srs[0]
    assert ds.StudyInstanceUID == study_uid and ds.SeriesNumber == 9901
    assert dciodvfy(path).errors == []
    sr = hd.sr.srread(path)
    refs = {str(item.ReferencedSOPInstanceUID) for s in sr.CurrentRequestedProcedureEvidenceSequence
            for se in s.ReferencedSeriesSequence for item in se.ReferencedSOPSequence}
    assert refs and refs <= source_uids  # every reference resolves to an instance of the study
    return sr


def test_orthanc_routes_study_and_receives_not_analysed_sr(
    node_factory: Any, orthanc_factory: Any, tmp_path: Path
) -> None:
    node_port = free_port()
    orthanc: OrthancServer = orthanc_factory(modalities={"SPINENODE": ("SPINENODE", "127.0.0.1", node_port)})
    node: Node = node_factory(dicom_port=node_port, destinations=orthanc.destination, allowed_calling_aes="ORTHANC")
    study = dicomgen.write_study(tmp_path / "ax", seed=51, series=AXIAL_ONLY)
    ids = [orthanc.upload(p) for p in study.paths]
    orthanc.store_to_modality("SPINENODE", ids)

    final = node.wait_state(study.study_uid, {"DONE", "FAILED"}, timeout=120)
    assert final["state"] == "DONE", final
    states = [e["state"] for e in final["events"] if e["state"] != "RECEIVING"]
    assert states[:4] == ["COMPLETE", "QUEUED", "ANALYZING", "ANALYZING"] and states[-1] == "DONE"
    assert "no usable sagittal" in " ".join(e["detail"] or "" for e in final["events"])

    wait_until(lambda: _results_in_orthanc(orthanc, study.study_uid, len(study.paths)), 30, what="SR in Orthanc")
    source_uids = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in study.paths}
    sr = _check_sr(orthanc, study.study_uid, source_uids, tmp_path)
    assert sr.VerificationFlag == "UNVERIFIED" and sr.PreliminaryFlag == "PRELIMINARY"
    texts = [str(getattr(i, "TextValue", "")) for i in _walk(sr.ContentSequence)]
    assert any("no usable sagittal" in t for t in texts)
    assert any("NOT A DIAGNOSIS" in t for t in texts)

    # A PACS rule that forwards whole studies sends the node's own SR back: acknowledged,
    # not stored, and the study is not reopened (else: a new SR, sent back again, forever).
    before = node.study(study.study_uid)
    assert before is not None
    sr_ids = [i for i in orthanc.study_instances(study.study_uid)
              if dcmread(io.BytesIO(orthanc.download(i)), stop_before_pixels=True).Modality == "SR"]
    orthanc.store_to_modality("SPINENODE", sr_ids)  # synchronous: raises unless the node answered success
    after = node.study(study.study_uid)
    assert after is not None and after["state"] == "DONE"
    assert after["generation"] == before["generation"] and len(after["events"]) == len(before["events"])

    # metrics scraped after the real run
    m = _metrics(node)
    assert m[("spinenode_own_results_ignored_total", ())] == len(sr_ids) == 1
    assert m[("spinenode_instances_received_total", ())] == len(study.paths)
    assert m[("spinenode_associations_accepted_total", ())] >= 1
    assert m[("spinenode_studies", (("state", "DONE"),))] == 1
    assert m[("spinenode_export_attempts_total", (("state", "SENT"),))] == 1
    assert m[("spinenode_stage_seconds_count", (("stage", "total"),))] == 1
    assert m[("spinenode_stage_seconds_count", (("stage", "encoded_to_stored"),))] == 1
    assert m[("spinenode_workers_online", ())] == 1


def _metrics(node: Node) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(node.url("/metrics"), timeout=10).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text) for s in fam.samples
    }


def _walk(seq: Any) -> Any:
    for item in seq:
        yield item
        if "ContentSequence" in item:
            yield from _walk(item.ContentSequence)


def test_destination_down_then_up_delivers_exactly_once(
    node_factory: Any, orthanc_factory: Any, tmp_path: Path
) -> None:
    pacs_port = free_port()
    node: Node = node_factory(
        destinations=f"ORTHANC@127.0.0.1:{pacs_port}", export_retry_base=0.5, export_retry_max=1.0,
    )
    study = dicomgen.write_study(tmp_path / "ax", seed=52, series=AXIAL_ONLY)
    from peers import storescu

    assert storescu(study.paths, "127.0.0.1", node.dicom_port, "SPINENODE").returncode == 0

    def failed_attempts() -> int:
        st = node.study(study.study_uid) or {}
        if st.get("state") != "EXPORTING":
            return 0
        return sum(1 for e in st["events"] if "pending" in (e["detail"] or ""))

    wait_until(lambda: failed_attempts() >= 2, 90, what="two failed export attempts")
    orthanc: OrthancServer = orthanc_factory(dicom_port=pacs_port)
    final = node.wait_state(study.study_uid, {"DONE", "FAILED"}, timeout=90)
    assert final["state"] == "DONE", final
    ids = orthanc.instances()
    assert len(ids) == 1  # exactly one object: the SR, once
    assert dcmread(io.BytesIO(orthanc.download(ids[0])), stop_before_pixels=True).Modality == "SR"
    exports = final["exports"]
    assert len(exports) == 1 and exports[0]["state"] == "SENT" and exports[0]["attempts"] >= 3
