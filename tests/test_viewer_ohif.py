"""OHIF 3.13.2's built viewer (npm @ohif/app dist/, served from loopback, no CDN) against
Orthanc with its DICOMweb plugin, in Debian's headless Chromium (puppeteer-core): the
node's SR, SEG and key image for a phantom lumbar study analysed with the shipped weights.

What a radiologist gets: the SR's text boxes start with the level and the AI caveat;
"Track measurements? Yes" imports one Length per level, labelled with its level, and one
PlanarFreehandROI per dural sac area, shown on its axial slice; the SEG opens with every
structure listed (the phantom has an extruded L4/L5 disc: the herniated material is a
segment of its own, and the SEG screenshot shows the slice with most of it); no page
errors. Screenshots land in tmp_path, or in
``$SPINENODE_SCREENSHOTS_DIR`` (docs/img for docs/results.md).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread

from models.analyzer import SpineAnalyzer, read_study_dir
from models.measure import CANAL_AP_DIAMETER
from models.phantom.config import HerniationFrequencies, PhantomConfig
from models.phantom.generate import generate_dataset
from models.sac_area import sac_areas
from models.series import classify_series, header_from_datasets, select_series
from peers import OrthancServer
from viewer_node import VIEWER_DIR, node_binary
from viewer_web import ViewerServer
from workers.results.identity import ResultIdentity, ResultKind, inputs_digest
from workers.results.keyimages import build_key_image
from workers.results.seg import build_seg
from workers.results.sr import build_findings_sr, measurements_from_masks

#: Every level without herniation but an L4/L5 extrusion (seed 5155: called a protrusion); the
#: rest of the study is drawn exactly as without herniation (docs/phantom.md).
L45_EXTRUSION: dict[str, object] = {
    "types": {lv: ([0.0, 0.0, 0.0, 1.0] if lv == "L4/L5" else [1.0, 0.0, 0.0, 0.0])
              for lv in ("L1/L2", "L2/L3", "L3/L4", "L4/L5", "L5/S1")},
    "hiz": {lv: 0.0 for lv in ("L1/L2", "L2/L3", "L3/L4", "L4/L5", "L5/S1")},
}

#: OHIF's own stack viewport, replaced when the SEG is opened over it, logs this once.
KNOWN_PAGE_ERRORS = ("The stack viewport has been destroyed",)


def _dicomweb_plugin() -> str:
    listing = subprocess.run(["dpkg", "-L", "orthanc-dicomweb"], capture_output=True, text=True, check=False)
    files = listing.stdout.split()
    plugin = next((f for f in files if f.endswith(".so")), None)
    if plugin is None:
        raise AssertionError("orthanc-dicomweb is not installed: run scripts/install-test-deps.sh")
    return plugin


@pytest.mark.timeout(900)
def test_ohif_shows_sr_seg_and_key_image(tmp_path: Path) -> None:
    node = node_binary()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = PhantomConfig.for_region("lumbar", "MR", matrix=256)
        config = replace(config, herniation=HerniationFrequencies.realistic("lumbar").with_overrides(L45_EXTRUSION))
        generate_dataset(tmp_path / "phantom", 1, config, seed=5155)
    study_dir = next((tmp_path / "phantom" / "train_images").iterdir())
    files = sorted(study_dir.rglob("*.dcm"))
    headers = [dcmread(p, stop_before_pixels=True) for p in files]
    result = SpineAnalyzer.from_registry(None, device="cpu").analyze(study_dir.name, read_study_dir(study_dir), "lumbar")
    findings = result.findings
    assert len(findings.levels) >= 4 and result.masks
    masks = result.masks[0]
    herniated = [v for v, t in masks.segments.items() if t.startswith("herniated material ")]
    assert [masks.segments[v] for v in herniated] == ["herniated material L4-L5"], masks.segments
    seg_sop = masks.sop_instance_uids[int(np.argmax(np.isin(masks.labels, herniated).sum(axis=(1, 2))))]

    # the objects, built by the functions the encode stage calls
    study_uid = str(headers[0].StudyInstanceUID)
    digest = inputs_digest(str(h.SOPInstanceUID) for h in headers)

    def identity(kind: ResultKind) -> ResultIdentity:
        return ResultIdentity(study_uid, kind, findings.model.name, findings.model.version, digest)

    out = tmp_path / "results"
    out.mkdir()
    # as the encode stage does: the canal's ends on the image, the dural sac area on the axial T2 slices
    full = {str(h.SOPInstanceUID): p for p, h in zip(files, headers)}
    images = {(lf.level.sop_instance_uid, lf.level.frame_number): dcmread(full[lf.level.sop_instance_uid]).pixel_array
              for lf in findings.levels}
    measured = measurements_from_masks(findings, list(result.masks), headers, images)
    by_series: dict[str, list] = {}
    for h in headers:
        by_series.setdefault(str(h.SeriesInstanceUID), []).append(h)
    axial_uid = select_series([classify_series(header_from_datasets(hs)) for hs in by_series.values()]).axial_t2
    axial = [dcmread(p) for p, h in zip(files, headers) if h.SeriesInstanceUID == axial_uid]
    lines = {lv: m for lv, ms in measured.items() for m in ms if m.kind == CANAL_AP_DIAMETER}
    areas = sac_areas(lines, {str(h.SOPInstanceUID): h for h in headers}, axial)
    assert len(areas) >= 3
    sr = build_findings_sr(findings, headers, identity(ResultKind.SR), measurements=measured, areas=areas)
    sr.save_as(out / "sr.dcm", enforce_file_format=True)
    build_seg(result.masks[0], headers, identity(ResultKind.SEG), findings.model).save_as(out / "seg.dcm")
    source = next(p for p, h in zip(files, headers) if h.SOPInstanceUID == findings.levels[0].level.sop_instance_uid)
    build_key_image(dcmread(source), findings, identity(ResultKind.KEY_IMAGES)).save_as(out / "ki.dcm")

    shots = Path(os.environ.get("SPINENODE_SCREENSHOTS_DIR") or tmp_path / "shots")
    config = {"Plugins": [_dicomweb_plugin()], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}}
    with OrthancServer(tmp_path / "orthanc", extra_config=config) as orthanc:
        for p in [*files, out / "sr.dcm", out / "seg.dcm", out / "ki.dcm"]:
            orthanc.upload(p)
        with ViewerServer(orthanc.http_port) as web:
            proc = subprocess.run([node, str(VIEWER_DIR / "ohif_shots.mjs"), web.url, study_uid, str(tmp_path / "shots"),
                                   seg_sop],
                                  cwd=VIEWER_DIR, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    errors = [e for e in seen["errors"] if not any(k in e for k in KNOWN_PAGE_ERRORS)]
    assert errors == [], seen
    assert {"SR", "SEG", "OT", "MR"} <= {d["modality"] for d in seen["displaySets"]}

    names = [lf.level.name for lf in findings.levels]
    sr_view = seen["sr"]
    # one group per level, then one per dural sac area (its own group: the outline is on the axial image)
    level_groups = [m for m in sr_view["measurements"] if "disc - AI" in m["labels"][0]["label"]]
    area_groups = [m for m in sr_view["measurements"] if "dural sac area - AI" in m["labels"][0]["label"]]
    assert sr_view["isRehydratable"] and len(sr_view["measurements"]) == len(names) + len(areas)
    for m, name in zip(sorted(level_groups, key=lambda m: m["labels"][0]["label"]), sorted(names)):
        assert m["loaded"] and m["coords"] >= 1
        assert m["labels"][0]["label"] == f"{name} disc - AI, PRELIMINARY, not a diagnosis"
        assert m["labels"][1]["label"].startswith("canal ")
        assert len(m["labels"]) <= 5 and not any(lb["label"].startswith("Dural sac") for lb in m["labels"])
    assert sorted(m["labels"][0]["label"].split(" ")[0] for m in area_groups) == sorted(areas)
    for m in area_groups:
        assert m["loaded"] and m["coords"] == 1
        assert m["labels"][1]["label"] == "Dural sac cross-sectional area", m["labels"]
    assert sr_view["trackPrompt"] is True
    tracked = sr_view["tracked"]
    lengths = [t for t in tracked if t["toolName"] in ("Length", "RectangleROI")]
    assert sorted(t["label"].split(" ")[0] for t in lengths) == sorted(names)  # one measurement per level
    assert sum(t["toolName"] == "Length" for t in lengths) >= len(names) - 1
    sacs = [t for t in tracked if t["toolName"] == "PlanarFreehandROI"]
    assert sorted(t["label"].split(" ")[0] for t in sacs) == sorted(areas)  # one area per measured level
    assert len(tracked) == len(lengths) + len(sacs)
    # a tracked area, jumped to (as a click in the measurement panel does), shows its axial slice
    area_sops = {a.sop_instance_uid for a in areas.values()}
    shown = sr_view["area"]["shownImageId"] or ""
    assert any(uid in shown for uid in area_sops), (shown, sr_view["area"])
    level = sr_view["area"]["label"].split(" ")[0]
    assert level in areas
    # the viewer's own area of the outline it drew (mm2) is the area the SR states
    drawn = float(sr_view["area"]["displayText"]["primary"][0].split(" ")[0])
    assert drawn == pytest.approx(areas[level].value_mm2, rel=0.01), (drawn, areas[level].value_mm2)
    assert sr_view["length"]["label"].split(" ")[0] in names

    assert seen["segPrompt"] is True
    (seg,) = seen["segmentation"]
    assert sorted(seg["segments"]) == sorted(result.masks[0].segments.values())
    assert seen["segSlice"] and "middle" not in seen["segSlice"], seen["segSlice"]  # the image asked for
    assert len(seen["shots"]) == 6
    if shots != tmp_path / "shots":
        shots.mkdir(parents=True, exist_ok=True)
        for f in seen["shots"]:
            shutil.copy(f, shots / Path(f).name)
