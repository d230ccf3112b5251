"""SR objects: dciodvfy 0 errors, strict read-back with highdicom, readable as text."""

from __future__ import annotations

import subprocess
from pathlib import Path

import highdicom as hd
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

import dicomgen
from models.types import Box, Condition, Findings, Grade, Level, LevelFindings, ModelId, Region
from peers import dciodvfy
from workers.results.identity import ResultIdentity, ResultKind, inputs_digest
from workers.results.sr import build_findings_sr, build_not_analysed_sr

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
    groups = parsed.content.get_planar_roi_measurement_groups()
    assert len(groups) == 3
    sites = sorted(g.finding_sites[0].value.value for g in groups)
    assert sites == ["62551000", "715056000", "84020006"]
    l45 = next(g for g in groups if g.finding_sites[0].value.value == "84020006")
    evals = {e.name.meaning: e.value.meaning for e in l45.get_qualitative_evaluations()}
    assert evals["Spinal canal stenosis"] == "Severe"
    sop_uids = {str(d.SOPInstanceUID) for d in evidence}
    assert str(l45.roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID) in sop_uids
    text = subprocess.run(["/usr/bin/dsrdump", "+Pl", "+Pt", str(tmp_path / "sr.dcm")], capture_output=True, text=True).stdout
    assert "L4-L5: spinal canal stenosis severe (p=0.80)" in text
    assert "NOT A DIAGNOSIS" in text and "spinenode-test-model" in text


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
