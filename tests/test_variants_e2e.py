"""A phantom study re-encoded as a scanner sends it (each series one Legacy Converted
Enhanced MR image, rows reversed), sent by DCMTK storescu to a running node: analysed
like the plain study, and the SR, SEG and key image reference the frames they came from."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import highdicom as hd
import pytest
from pydicom import dcmread
from pydicom.multival import MultiValue

from nodeproc import Node
from peers import dciodvfy, storescu

LEGACY_ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.4"


def _variant_files(out: Path) -> tuple[str, list[Path], dict[str, Any]]:
    from models.analyzer import read_study_dir
    from models.phantom.config import PhantomConfig
    from models.phantom.generate import generate_dataset
    from models.phantom.variants import apply_variant

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        generate_dataset(out / "plain", 1, PhantomConfig.for_region("lumbar", "MR", matrix=256), seed=4242)
    study = next(p for p in (out / "plain" / "train_images").iterdir() if p.is_dir())
    series = read_study_dir(study)
    variant = apply_variant(apply_variant(series, "flip_rows"), "legacy_enhanced")
    files = []
    for uid, (ds,) in variant.items():
        path = out / "variant" / f"{ds.SOPInstanceUID}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return str(next(iter(series.values()))[0].StudyInstanceUID), files, series


@pytest.mark.timeout(420)
def test_legacy_converted_multiframe_study_by_cstore(node_factory: Any, tmp_path: Path) -> None:
    study_uid, files, plain = _variant_files(tmp_path)
    assert len(files) == 3 and all(str(dcmread(f, stop_before_pixels=True).SOPClassUID) == LEGACY_ENHANCED_MR
                                   for f in files)
    node: Node = node_factory(stable_seconds=1)
    # DCMTK proposes this SOP class only with -R (contexts taken from the files)
    sent = storescu(files, "127.0.0.1", node.dicom_port, "SPINENODE", extra_args=("-R",))
    assert sent.returncode == 0, sent.stdout + sent.stderr
    final = node.wait_state(study_uid, {"DONE", "FAILED"}, timeout=300)
    assert final["state"] == "DONE", final
    assert sorted(r["kind"] for r in final["results"]) == ["key-images", "seg", "sr"], final
    findings = node.api(f"/api/studies/{study_uid}/findings")
    levels = findings["levels"]
    assert [lv["level"] for lv in levels] == ["L1-L2", "L2-L3", "L3-L4", "L4-L5", "L5-S1"], findings
    assert not findings.get("missing"), findings
    sources = {str(dcmread(f, stop_before_pixels=True).SOPInstanceUID): f for f in files}
    for lv in levels:
        assert lv["sop_instance_uid"] in sources and 1 <= lv["frame_number"] <= 15
        assert len(lv["findings"]) == 6  # canal, Pfirrmann, both foramina, both recesses

    results = {r["kind"]: node.data_dir / "results" / study_uid / f"{r['sop_instance_uid']}.dcm"
               for r in final["results"]}
    for kind, path in results.items():
        assert dciodvfy(path).errors == [], kind
    sr = hd.sr.srread(results["sr"])
    refs = []
    for group in sr.content.get_image_measurement_groups():
        # the geometry is under the group's first NUM (the one OHIF imports when tracking)
        num = group.get_measurements()[0][0]
        # measured on the frame (pixel spacing from the functional groups): millimetres, not the box's %
        assert num.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue == "mm"
        region = next(it for it in num.ContentSequence if it.ValueType == "SCOORD")
        ref = region.ContentSequence[0].ReferencedSOPSequence[0]  # the SCOORD's SELECTED FROM image
        frames = ref.ReferencedFrameNumber
        refs.append((ref.ReferencedSOPInstanceUID, [int(f) for f in (frames if isinstance(frames, MultiValue) else [frames])]))
    assert sorted(refs) == sorted((lv["sop_instance_uid"], [lv["frame_number"]]) for lv in levels)
    seg = hd.seg.segread(results["seg"])
    (src,) = {lv["sop_instance_uid"] for lv in levels}
    assert seg.get_source_image_uids()[0][2] == src
    assert any(d.SegmentLabel.startswith("disc ") for d in seg.SegmentSequence)
    frames = {int(f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedFrameNumber)
              for f in seg.PerFrameFunctionalGroupsSequence}
    assert {lv["frame_number"] for lv in levels} <= frames
