"""The findings SR read by the viewer's own code: dcmjs 0.52.0 and @cornerstonejs/adapters
5.6.8 (the versions OHIF 3.13.2 uses) in Node.js, plus a line-for-line port of OHIF's SR
viewport label rules (tests/viewer/sr_in_viewer.mjs).

What a radiologist must see in OHIF: every level imports through ``generateToolState``
("Track measurements? Yes"), one measurement per level, labelled with the level, and one
freehand area per dural sac area, on its axial image, labelled with its level; the
lines OHIF draws (at most five) start with the level and the AI caveat, then the graded
findings, then the measurements in mm; no probability and no bare unit "1" among them.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

import dicomgen
from models.measure import CANAL_AP_DIAMETER, DISC_HEIGHT, LinearMeasurement
from models.sac_area import DURAL_SAC_AREA, AreaMeasurement
from models.types import (
    LUMBAR_CONDITIONS, LUMBAR_LEVELS, Box, Condition, Findings, Grade, Level, LevelFindings, ModelId, Region,
)
from peers import dciodvfy
from viewer_node import sr_in_viewer
from workers.results.identity import ResultIdentity, ResultKind, inputs_digest
from workers.results.sr import build_findings_sr, build_not_analysed_sr

MODEL = ModelId("spinenode-test-model", "0.0.1")


@pytest.fixture
def sagittal(tmp_path: Path) -> list[Dataset]:
    st = dicomgen.write_study(tmp_path / "src", seed=81, rows=96, cols=96,
                              series=(dicomgen.SeriesSpec("SAG T2", "sagittal", 9, "T2"),))
    return [dcmread(p, stop_before_pixels=True) for p in st.paths]


def _identity(headers: list[Dataset], kind: ResultKind) -> ResultIdentity:
    return ResultIdentity(str(headers[0].StudyInstanceUID), kind, MODEL.name, MODEL.version,
                          inputs_digest(str(d.SOPInstanceUID) for d in headers))


def _lumbar(headers: list[Dataset]) -> tuple[Findings, dict[str, list[LinearMeasurement]]]:
    mid = headers[len(headers) // 2]
    sev = {"L4-L5": (0.05, 0.15, 0.80), "L3-L4": (0.2, 0.7, 0.1)}
    levels, measured = [], {}
    for i, name in enumerate(LUMBAR_LEVELS):
        y = 10.0 + 16 * i
        lvl = Level(name, str(mid.SeriesInstanceUID), str(mid.SOPInstanceUID), 4, Box(30, y, 60, y + 7), 0.93,
                    (0.0, 0.0, float(i)))
        grades = tuple(Grade(c, sev.get(name, (0.9, 0.07, 0.03)) if c is not Condition.PFIRRMANN
                             else (0.0, 0.1, 0.6, 0.3, 0.0)) for c in LUMBAR_CONDITIONS)
        if name == "L4-L5":  # issue 19: a herniation and a HIZ join the graded line
            grades += (Grade(Condition.DISC_HERNIATION, (0.05, 0.1, 0.15, 0.7)),
                       Grade(Condition.HERNIATION_POSITION, (0.1, 0.8, 0.05, 0.03, 0.02)),
                       Grade(Condition.HIGH_INTENSITY_ZONE, (0.2, 0.8)))
        if name == "L5-S1":  # left and right foramen differ
            grades = tuple(Grade(g.condition, (0.1, 0.8, 0.1)) if g.condition is Condition.LEFT_NEURAL_FORAMINAL_NARROWING
                           else g for g in grades)
        levels.append(LevelFindings(lvl, grades))
        if name != "L1-L2":  # one level without a measurement: it falls back to its box
            measured[name] = [
                LinearMeasurement(CANAL_AP_DIAMETER, name, 11.52 - i, lvl.sop_instance_uid, (62, y + 3), (70, y + 3)),
                LinearMeasurement(DISC_HEIGHT, name, 8.25, lvl.sop_instance_uid, (45, y), (45, y + 7)),
            ]
    return Findings(str(mid.StudyInstanceUID), Region.LUMBAR, MODEL, tuple(levels)), measured


def test_every_level_imports_and_reads_level_first(sagittal: list[Dataset], tmp_path: Path) -> None:
    findings, measured = _lumbar(sagittal)
    sr = build_findings_sr(findings, sagittal, _identity(sagittal, ResultKind.SR), measurements=measured)
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    assert dciodvfy(path).errors == []

    out = sr_in_viewer(path, sagittal, tmp_path)
    assert out["warnings"] == []  # e.g. "No spatial coordinates group found" before the fix
    state = out["toolState"]
    assert sorted(state) == ["Length", "RectangleROI"]
    assert len(state["Length"]) == 4 and len(state["RectangleROI"]) == 1
    imported = {m["label"].split(" ")[0]: (tool, m) for tool, ms in state.items() for m in ms}
    assert sorted(imported) == sorted(LUMBAR_LEVELS)  # one measurement per level, labelled by it
    tool, l45 = imported["L4-L5"]
    assert tool == "Length" and len(l45["points"]) == 2
    assert l45["findingSites"] == [{"CodeValue": "84020006", "CodeMeaning": "L4/L5 disc"}]
    assert l45["finding"]["CodeValue"] == "415582006"  # Finding = Stenosis
    (stats,) = l45["cachedStats"].values()
    assert stats == {"length": 8.52, "unit": "mm"}  # the canal AP diameter, the level's first NUM
    assert imported["L1-L2"][0] == "RectangleROI" and len(imported["L1-L2"][1]["points"]) == 4

    display = {d["trackingIdentifier"].rsplit(" ", 1)[-1]: d for d in out["display"]}
    assert sorted(display) == sorted(LUMBAR_LEVELS)
    for name, d in display.items():
        lines = d["lines"]
        assert d["allLabels"] <= 5, (name, d)  # nothing cut off by OHIF's five-line cap
        assert lines[0].startswith(f"{name} disc - AI, PRELIMINARY, not a diagnosis"), lines
        assert lines[1].startswith("canal ") and "Pfirrmann 3" in lines[1], lines
        assert "foramina " in lines[2] and "; subart. " in lines[2], lines
        assert not any(re.search(r"(^|\s)1$", ln) or "[empty]" in ln or "Probability" in ln for ln in lines), lines
    assert display["L4-L5"]["lines"][1].startswith("canal SEVERE, Pfirrmann 3, EXTRUSION paracentral L, HIZ")
    assert display["L4-L5"]["lines"][2] == "foramina SEVERE; subart. SEVERE: "  # both sides alike: said once
    assert display["L5-S1"]["lines"][2] == "foramina L MODERATE R normal/mild; subart. normal/mild: "
    assert display["L4-L5"]["lines"][3:] == ["Spinal canal AP diameter: 8.52 mm", "Disc height: 8.25 mm"]
    assert [c["points"] for c in display["L4-L5"]["coords"]] == [2, 2]
    assert display["L1-L2"]["lines"][3] == "Certainty of Finding: 93.00 %"
    assert [c["points"] for c in display["L1-L2"]["coords"]] == [5]


def test_dural_sac_area_is_a_group_on_the_axial_image(tmp_path: Path) -> None:
    """With an axial series, the dural sac area of a level is a group of its own after the
    level's group: tracking imports it as one closed PlanarFreehandROI on the axial image
    (the area in mm2 as its cached area), labelled with the level and "dural sac area";
    OHIF's lines for it start with the level, then the area. The level's sagittal group is
    unchanged: the level, its grades, the canal diameter and the disc height, and no
    SCOORD from the axial image. A plain-text renderer shows the area per level."""
    st = dicomgen.write_study(tmp_path / "src", seed=83, rows=96, cols=96,
                              series=(dicomgen.SeriesSpec("SAG T2", "sagittal", 9, "T2"),
                                      dicomgen.SeriesSpec("AX T2", "axial", 5, "T2")))
    headers = [dcmread(p, stop_before_pixels=True) for p in st.paths]
    sag = [h for h in headers if h.SeriesDescription == "SAG T2"]
    ax = next(h for h in headers if h.SeriesDescription == "AX T2")
    findings, measured = _lumbar(sag)
    ring = [(48 + 8 * np.cos(t), 40 + 6 * np.sin(t)) for t in np.linspace(0, 2 * np.pi, 24, endpoint=False)]
    areas = {"L4-L5": AreaMeasurement(DURAL_SAC_AREA, "L4-L5", 143.26, str(ax.SeriesInstanceUID),
                                      str(ax.SOPInstanceUID), (*ring, ring[0]))}
    sr = build_findings_sr(findings, headers, _identity(headers, ResultKind.SR), measurements=measured, areas=areas)
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    assert dciodvfy(path).errors == []
    out = sr_in_viewer(path, headers, tmp_path)
    assert out["warnings"] == []

    # tracking: the five levels as before, plus the area on the axial image
    state = out["toolState"]
    assert sorted(state) == ["Length", "PlanarFreehandROI", "RectangleROI"]
    assert len(state["Length"]) == 4 and len(state["RectangleROI"]) == 1
    assert {m["sopInstanceUid"] for m in state["Length"]} == {findings.levels[0].level.sop_instance_uid}
    (area,) = state["PlanarFreehandROI"]
    assert area["sopInstanceUid"] == str(ax.SOPInstanceUID)  # the axial image, not the sagittal one
    assert area["label"] == "L4-L5 dural sac area - AI, PRELIMINARY, not a diagnosis"
    assert area["contour"] == {"points": 24, "closed": True}
    (stats,) = area["cachedStats"].values()
    assert stats["area"] == 143.3
    assert area["findingSites"] == [{"CodeValue": "84020006", "CodeMeaning": "L4/L5 disc"}]
    l45 = next(m for m in state["Length"] if m["label"].startswith("L4-L5"))
    (stats,) = l45["cachedStats"].values()
    assert stats == {"length": 8.52, "unit": "mm"}

    # what OHIF's SR viewport draws: the area group right after its level's, on the axial image
    ids = [d["trackingIdentifier"] for d in out["display"]]
    assert ids[ids.index("Cornerstone3DTools@^0.1.0:Length:disc L4-L5") + 1] == \
        "Cornerstone3DTools@^0.1.0:PlanarFreehandROI:dural sac L4-L5"
    display = {d["trackingIdentifier"].split(":", 1)[-1]: d for d in out["display"]}
    lines = display["Length:disc L4-L5"]["lines"]
    assert lines[0].startswith("L4-L5 disc - AI, PRELIMINARY, not a diagnosis") and lines[1].startswith("canal SEVERE")
    assert lines[3:] == ["Spinal canal AP diameter: 8.52 mm", "Disc height: 8.25 mm"]
    assert {c["referencedSOPInstanceUID"] for c in display["Length:disc L4-L5"]["coords"]} == {str(sag[4].SOPInstanceUID)}
    sac = display["PlanarFreehandROI:dural sac L4-L5"]
    assert sac["lines"] == ["L4-L5 dural sac area - AI, PRELIMINARY, not a diagnosis: ",
                            "Dural sac cross-sectional area: 143.30 mm2"]
    assert [(c["points"], c["referencedSOPInstanceUID"]) for c in sac["coords"]] == [(25, str(ax.SOPInstanceUID))]
    text = subprocess.run(["/usr/bin/dsrdump", "+Pl", str(path)], capture_output=True, text=True, check=False).stdout
    assert '"Tracking Identifier")="Cornerstone3DTools@^0.1.0:PlanarFreehandROI:dural sac L4-L5"' in text
    assert '"Comment")="L4-L5 dural sac area - AI, PRELIMINARY, not a diagnosis"' in text
    assert '"Dural sac cross-sectional area")="143.3" (mm2,UCUM,"mm2")' in text


def test_cervical_level_lines(tmp_path: Path) -> None:
    st = dicomgen.write_study(tmp_path / "src", seed=82, rows=96, cols=96, body_part="CSPINE",
                              series=(dicomgen.SeriesSpec("SAG T2", "sagittal", 7, "T2"),))
    headers = [dcmread(p, stop_before_pixels=True) for p in st.paths]
    mid = headers[len(headers) // 2]
    lvl = Level("C5-C6", str(mid.SeriesInstanceUID), str(mid.SOPInstanceUID), 3, Box(30, 40, 60, 46), 0.8,
                (0.0, 0.0, 0.0))
    findings = Findings(str(mid.StudyInstanceUID), Region.CERVICAL, MODEL, (
        LevelFindings(lvl, (Grade(Condition.SPINAL_CANAL_STENOSIS, (0.1, 0.6, 0.3)),)),))
    sr = build_findings_sr(findings, headers, _identity(headers, ResultKind.SR), measurements={"C5-C6": [
        LinearMeasurement(CANAL_AP_DIAMETER, "C5-C6", 9.4, lvl.sop_instance_uid, (62, 43), (69, 43))]})
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    out = sr_in_viewer(path, headers, tmp_path)
    (d,) = out["display"]
    assert d["lines"] == ["C5-C6 disc - AI, PRELIMINARY, not a diagnosis: ", "canal MODERATE: ",
                          "Spinal canal AP diameter: 9.40 mm"]
    assert [m["label"] for m in out["toolState"]["Length"]] == ["C5-C6 disc - AI, PRELIMINARY, not a diagnosis"]


def test_not_analysed_sr_loads_without_measurements(sagittal: list[Dataset], tmp_path: Path) -> None:
    """No measurement group at all: OHIF fails on a group without geometry."""
    sr = build_not_analysed_sr("no usable sagittal series", sagittal,
                               _identity(sagittal, ResultKind.NOT_ANALYSED_SR), MODEL)
    path = tmp_path / "na.dcm"
    sr.save_as(path, enforce_file_format=True)
    assert dciodvfy(path).errors == []
    out = sr_in_viewer(path, sagittal, tmp_path)
    assert out == {"toolState": {}, "display": [], "warnings": []}
