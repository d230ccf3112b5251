"""SR objects: dciodvfy 0 errors, strict read-back with highdicom, readable as text."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

import dicomgen
from models.types import Box, Condition, Findings, Grade, Level, LevelFindings, ModelId, Region
from peers import dciodvfy
from models.measure import CANAL_AP_DIAMETER, DISC_HEIGHT, LinearMeasurement
from models.sac_area import DURAL_SAC_AREA, AreaMeasurement
from workers.results.identity import ResultIdentity, ResultKind, inputs_digest
from workers.results.sr import build_findings_sr, build_not_analysed_sr, grades_from_sr

MODEL = ModelId("spinenode-test-model", "0.0.1")


@pytest.fixture
def evidence(tmp_path: Path) -> list[Dataset]:
    st = dicomgen.write_study(tmp_path / "src", seed=41)
    return [dcmread(p, stop_before_pixels=True) for p in st.paths]


def _findings(evidence: list[Dataset]) -> Findings:
    sag = [ds for ds in evidence if ds.SeriesDescription.startswith("SAG T2")]
    mid = sag[len(sag) // 2]
    levels = []
    for i, name in enumerate(("L3-L4", "L4-L5", "L5-S1")):
        y = 10.0 + 15 * i
        lvl = Level(name, str(mid.SeriesInstanceUID), str(mid.SOPInstanceUID), 7, Box(20, y, 40, y + 6), 0.9,
                    (0.0, 0.0, float(i)))
        sev = (0.05, 0.15, 0.80) if name == "L4-L5" else (0.9, 0.07, 0.03)
        levels.append(LevelFindings(lvl, (
            Grade(Condition.SPINAL_CANAL_STENOSIS, sev),
            Grade(Condition.LEFT_NEURAL_FORAMINAL_NARROWING, (0.6, 0.3, 0.1)),
            Grade(Condition.PFIRRMANN, (0.1, 0.2, 0.4, 0.2, 0.1)),
        )))
    return Findings(str(mid.StudyInstanceUID), Region.LUMBAR, MODEL, tuple(levels),
                    ("no usable axial T2 series: subarticular stenosis not assessed",))


def _identity(evidence: list[Dataset], kind: ResultKind) -> ResultIdentity:
    return ResultIdentity(str(evidence[0].StudyInstanceUID), kind, MODEL.name, MODEL.version,
                          inputs_digest(str(d.SOPInstanceUID) for d in evidence))


def _roundtrip(sr: Dataset, path: Path) -> Dataset:
    sr.save_as(path, enforce_file_format=True)
    result = dciodvfy(path)
    assert result.errors == [], result.output
    # the only warnings: dciodvfy does not know the private scheme the SR declares
    assert all("Unrecognized defined term" in w and "<99SPINENODE>" in w for w in result.warnings), result.warnings
    return dcmread(path)


def test_findings_sr_valid_and_readable(evidence: list[Dataset], tmp_path: Path) -> None:
    sr = build_findings_sr(_findings(evidence), evidence, _identity(evidence, ResultKind.SR))
    ds = _roundtrip(sr, tmp_path / "sr.dcm")
    assert ds.CompletionFlag == "COMPLETE" and ds.VerificationFlag == "UNVERIFIED"
    assert ds.PreliminaryFlag == "PRELIMINARY"
    assert ds.StudyInstanceUID == evidence[0].StudyInstanceUID and ds.SeriesNumber == 9901
    assert ds.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == "99SPINENODE"
    ours = [e for e in ds.ContributingEquipmentSequence if e.Manufacturer == "spinenode project"]
    assert len(ours) == 1 and ours[0].SoftwareVersions == "0.0.1"
    assert ours[0].ManufacturerModelName == "spinenode-test-model"
    parsed = hd.sr.srread(tmp_path / "sr.dcm")
    groups = parsed.content.get_image_measurement_groups()
    assert len(groups) == 3
    sites = sorted(g.finding_sites[0].value.value for g in groups)
    assert sites == ["62551000", "715056000", "84020006"]
    l45 = next(g for g in groups if g.finding_sites[0].value.value == "84020006")
    assert l45.finding_type.value == "415582006"  # Finding = Stenosis (SCT)
    # highdicom's parsed evaluations drop nested content: read the group's items as stored
    raw = next(g for g in _walk(ds) if g.get("ValueType") == "CONTAINER" and any(
        it.get("ValueType") == "CODE" and it.ConceptCodeSequence[0].CodeValue == "84020006"
        for it in g.get("ContentSequence", [])))
    evals = [it for it in raw.ContentSequence if it.ValueType == "CODE" and it.RelationshipType == "CONTAINS"
             and it.ConceptNameCodeSequence[0].CodeValue != "121071"]
    canal = next(e for e in evals if e.ConceptNameCodeSequence[0].CodeValue == "415582006"
                 and _modifier(e, "363698007") == "61853006")
    assert canal.ConceptCodeSequence[0].CodeMeaning == "Severe"
    assert canal.ConceptCodeSequence[0].CodingSchemeDesignator == "SCT"
    foramen = next(e for e in evals if _modifier(e, "363698007") == "NEURAL_FORAMEN")
    assert _modifier(foramen, "272741003") == "7771000"  # Laterality = Left (SCT)
    probs = [(it.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue,
              float(it.MeasuredValueSequence[0].NumericValue)) for it in canal.ContentSequence if it.ValueType == "NUM"]
    assert probs == [("%", 5.0), ("%", 15.0), ("%", 80.0)]
    assert [_modifier(it, "246112005") for it in canal.ContentSequence if it.ValueType == "NUM"] == [
        "NORMAL_MILD", "6736007", "24484000"]
    # the group's own NUMs: the detection certainty in % over the box (no mm measurement given)
    (num,) = l45.get_measurements()
    assert num.unit.value == "%" and num.name.value == "111012"
    roi = next(it for it in raw.ContentSequence if it.ValueType == "NUM").ContentSequence[0]
    assert roi.GraphicType == "POLYLINE" and len(roi.GraphicData) == 10
    sop_uids = {str(d.SOPInstanceUID) for d in evidence}
    assert str(roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID) in sop_uids
    no_unit_one = [it for it in _walk(ds) if it.get("ValueType") == "NUM"
                   and it.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue == "1"]
    assert no_unit_one == []
    text = subprocess.run(["/usr/bin/dsrdump", "+Pl", "+Pt", str(tmp_path / "sr.dcm")], capture_output=True, text=True).stdout
    assert "L4-L5: spinal canal stenosis severe (p=0.80)" in text
    assert "NOT A DIAGNOSIS" in text and "spinenode-test-model" in text
    assert '"Comment")="L4-L5 disc - AI, PRELIMINARY, not a diagnosis"' in text
    assert '"Comment")="canal SEVERE, Pfirrmann 3"' in text


def test_findings_sr_carries_herniation(evidence: list[Dataset], tmp_path: Path) -> None:
    """Issue 19: herniation type, position and HIZ per level, coded (SNOMED where pydicom's
    PS3.16 tables have a concept, the declared private scheme where not), on the graded line
    OHIF draws, in the summary; dciodvfy 0 errors."""
    f = _findings(evidence)
    extra = {"L4-L5": (Grade(Condition.DISC_HERNIATION, (0.05, 0.1, 0.15, 0.7)),
                       Grade(Condition.HERNIATION_POSITION, (0.1, 0.8, 0.05, 0.03, 0.02)),
                       Grade(Condition.HIGH_INTENSITY_ZONE, (0.2, 0.8))),
             "L3-L4": (Grade(Condition.DISC_HERNIATION, (0.9, 0.05, 0.03, 0.02)),
                       Grade(Condition.HIGH_INTENSITY_ZONE, (0.95, 0.05)))}
    levels = tuple(LevelFindings(lf.level, lf.grades + extra.get(lf.level.name, ())) for lf in f.levels)
    sr = build_findings_sr(Findings(f.study_uid, f.region, f.model, levels, f.missing), evidence,
                           _identity(evidence, ResultKind.SR))
    ds = _roundtrip(sr, tmp_path / "sr.dcm")
    grades = grades_from_sr(ds)
    assert grades[("disc_herniation", "L4-L5")] == "Disc extrusion"
    assert grades[("herniation_position", "L4-L5")] == "Paracentral, left"
    assert grades[("high_intensity_zone", "L4-L5")] == "Present"
    assert grades[("disc_herniation", "L3-L4")] == "None" and grades[("high_intensity_zone", "L3-L4")] == "Absent"
    assert ("herniation_position", "L3-L4") not in grades and ("disc_herniation", "L5-S1") not in grades
    schemes = {(it.ConceptCodeSequence[0].CodeMeaning, it.ConceptCodeSequence[0].CodingSchemeDesignator)
               for it in _walk(ds) if it.get("ValueType") == "CODE"}
    assert {("None", "SCT"), ("Present", "SCT"), ("Absent", "SCT"), ("Disc extrusion", "99SPINENODE")} <= schemes
    text = subprocess.run(["/usr/bin/dsrdump", "+Pl", "+Pt", str(tmp_path / "sr.dcm")], capture_output=True,
                          text=True).stdout
    assert '"Comment")="canal SEVERE, Pfirrmann 3, EXTRUSION paracentral L, HIZ"' in text
    assert '"Comment")="canal normal/mild, Pfirrmann 3"' in text  # L3-L4: no herniation, no HIZ: nothing said
    assert "disc herniation extrusion (p=0.70); position of the disc herniation left paracentral (p=0.80)" in text


def test_findings_sr_linear_measurements(evidence: list[Dataset], tmp_path: Path) -> None:
    findings = _findings(evidence)
    lv = findings.levels[1].level
    ms = {lv.name: [LinearMeasurement(CANAL_AP_DIAMETER, lv.name, 11.52, lv.sop_instance_uid, (30, 20), (40, 21)),
                    LinearMeasurement(DISC_HEIGHT, lv.name, 9.0, lv.sop_instance_uid, (25, 18), (25, 27))]}
    ax = next(ds for ds in evidence if ds.SeriesDescription == "AX T2")
    ring = [(32 + 6 * np.cos(t), 30 + 4 * np.sin(t)) for t in np.linspace(0, 2 * np.pi, 12, endpoint=False)]
    area = AreaMeasurement(DURAL_SAC_AREA, lv.name, 152.34, str(ax.SeriesInstanceUID), str(ax.SOPInstanceUID),
                           (*ring, ring[0]))
    sr = build_findings_sr(findings, evidence, _identity(evidence, ResultKind.SR), measurements=ms,
                           areas={lv.name: area})
    ds = _roundtrip(sr, tmp_path / "sr.dcm")
    groups = hd.sr.srread(tmp_path / "sr.dcm").content.get_image_measurement_groups()
    l45 = next(g for g in groups if g.finding_sites[0].value.value == "84020006")
    nums = l45.get_measurements()
    assert [(n.name.meaning, n.value, n.unit.value) for n in nums] == [
        ("Spinal canal AP diameter", 11.52, "mm"), ("Disc height", 9.0, "mm")]
    assert [(n.name.value, n.name.scheme_designator) for n in nums] == [("81827009", "SCT"), ("121207", "DCM")]
    assert [n.finding_sites[0].value.value for n in nums] == ["61853006", "84020006"]
    # the area: a group of its own right after the level's, its outline on the axial image
    after = groups[groups.index(l45) + 1]
    assert after.tracking_identifier.endswith(":PlanarFreehandROI:dural sac L4-L5")
    assert after.finding_sites[0].value.value == "84020006"
    (sac,) = after.get_measurements()
    assert (sac.name.meaning, sac.name.value, sac.name.scheme_designator, sac.value, sac.unit.value) == (
        "Dural sac cross-sectional area", "42798000", "SCT", 152.3, "mm2")
    assert sac.finding_sites[0].value.value == "DURAL_SAC"
    outline = next(it for it in sac[0].ContentSequence if it.ValueType == "SCOORD")
    assert outline.GraphicType == "POLYLINE" and len(outline.GraphicData) == 2 * 13
    assert list(outline.GraphicData[:2]) == list(outline.GraphicData[-2:])  # closed
    ref = outline.ContentSequence[0].ReferencedSOPSequence[0]
    assert ref.ReferencedSOPInstanceUID == ax.SOPInstanceUID
    assert len([g for g in groups if g.tracking_identifier.endswith("L4-L5")]) == 2
    # measured on a frame of a multi-frame axial series: the outline names its frame
    framed = build_findings_sr(findings, evidence, _identity(evidence, ResultKind.SR), measurements=ms,
                               areas={lv.name: replace(area, frame_number=3)})
    scoords = [it for it in _walk(framed) if it.get("ValueType") == "SCOORD" and len(it.GraphicData) > 10]
    assert [int(s.ContentSequence[0].ReferencedSOPSequence[0].ReferencedFrameNumber) for s in scoords] == [3]
    line = next(it for it in nums[0][0].ContentSequence if it.ValueType == "SCOORD")
    assert line.GraphicType == "POLYLINE" and [float(v) for v in line.GraphicData] == [30, 20, 40, 21]
    assert l45.tracking_identifier.endswith(":Length:disc L4-L5")
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"


def _modifier(item: Dataset, concept: str) -> str | None:
    for child in getattr(item, "ContentSequence", []):
        if child.RelationshipType == "HAS CONCEPT MOD" and child.ConceptNameCodeSequence[0].CodeValue == concept:
            return str(child.ConceptCodeSequence[0].CodeValue)
    return None


def _walk(ds: Dataset):  # type: ignore[no-untyped-def]
    for item in getattr(ds, "ContentSequence", []):
        yield item
        yield from _walk(item)


def test_identity_is_deterministic(evidence: list[Dataset]) -> None:
    a = _identity(evidence, ResultKind.SR)
    b = _identity(list(reversed(evidence)), ResultKind.SR)
    assert a.sop_instance_uid == b.sop_instance_uid and a.series_uid == b.series_uid
    c = _identity(evidence[:-1], ResultKind.SR)
    assert c.sop_instance_uid != a.sop_instance_uid and c.series_uid == a.series_uid
    assert _identity(evidence, ResultKind.SEG).series_uid != a.series_uid


def test_not_analysed_sr_and_predecessor(evidence: list[Dataset], tmp_path: Path) -> None:
    first = build_not_analysed_sr("no usable sagittal series", evidence[:10],
                                  _identity(evidence[:10], ResultKind.NOT_ANALYSED_SR), MODEL)
    first_ds = _roundtrip(first, tmp_path / "na1.dcm")
    second = build_not_analysed_sr("no usable sagittal series", evidence,
                                   _identity(evidence, ResultKind.NOT_ANALYSED_SR), MODEL, predecessor=first_ds)
    ds = _roundtrip(second, tmp_path / "na2.dcm")
    assert ds.SOPInstanceUID != first_ds.SOPInstanceUID and ds.SeriesInstanceUID == first_ds.SeriesInstanceUID
    pred = ds.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert pred.ReferencedSOPInstanceUID == first_ds.SOPInstanceUID
    hd.sr.srread(tmp_path / "na2.dcm")
    text = subprocess.run(["/usr/bin/dsrdump", "+Pl", "+Pt", str(tmp_path / "na2.dcm")], capture_output=True, text=True).stdout
    assert "no usable sagittal series" in text and "did not analyse" in text


def test_transitional_segment_flag_in_the_sr(evidence: list[Dataset], tmp_path: Path) -> None:
    """Findings.flags: a TEXT item coded LSTV (99SPINENODE, lumbosacral transitional vertebra), right after the
    disclaimer and before the level lines; without flags there is no such item."""
    from models.levels import TRANSITIONAL_FLAG

    flag = f"{TRANSITIONAL_FLAG} (the disc counted as L5-S1 is rudimentary (3.1 mm, 0.33 of the median height)"
    findings = replace(_findings(evidence), flags=(flag,))
    ds = _roundtrip(build_findings_sr(findings, evidence, _identity(evidence, ResultKind.SR)), tmp_path / "sr.dcm")
    texts = [(it.ConceptNameCodeSequence[0].CodeValue, it.TextValue) for it in _walk(ds)
             if it.ValueType == "TEXT" and it.ConceptNameCodeSequence[0].get("CodingSchemeDesignator") == "99SPINENODE"]
    assert texts[0][0] == "DISCLAIMER" and texts[1] == ("LSTV", flag), texts
    assert texts[2][0] == "SUMMARY"
    plain = _roundtrip(build_findings_sr(_findings(evidence), evidence, _identity(evidence, ResultKind.SR)),
                       tmp_path / "plain.dcm")
    assert not [it for it in _walk(plain) if it.ValueType == "TEXT"
                and it.ConceptNameCodeSequence[0].get("CodeValue") == "LSTV"]
