"""The analysis record (workers/record.py) reads back equal from its JSON, at its edges.

A real analyzer output on a phantom study is round-tripped in test_partial_failure.py
(whole and with a series unreadable); here the cases a phantom does not give: no
levels, grades missing at a level, multi-frame references, values as numpy hands them
over, and stored JSON that lacks a part (refused, never filled in).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from models.types import (
    Box,
    Condition,
    Findings,
    FindingsJsonError,
    Grade,
    Level,
    LevelFindings,
    ModelId,
    Region,
)
from workers.record import AnalysisRecord, MaskSet, MasksRef, SeriesUse

MODEL = ModelId("spinenode-test", "0.0.1")


def _back(record: AnalysisRecord) -> AnalysisRecord:
    return AnalysisRecord.from_json(json.loads(json.dumps(record.to_json())))


def _level(name: str, frame: int | None = None, **kw: object) -> Level:
    values: dict[str, object] = {
        "series_uid": "1.2.3", "sop_instance_uid": "1.2.3.4", "slice_index": 7, "box": Box(10.123, 20.0, 30.456, 40.0),
        "confidence": 0.91234, "center_patient": (1.5, -20.25, 130.0), "frame_number": frame}
    values.update(kw)
    return Level(name, **values)  # type: ignore[arg-type]


def test_no_levels_and_no_masks() -> None:
    findings = Findings("9.8.7", Region.CERVICAL, MODEL, (), ("no disc level was found",))
    record = AnalysisRecord.of(findings, (SeriesUse("ct_sagittal", "1.2.3", 40),), None, 2.5)
    assert _back(record) == record
    assert record.to_json()["levels"] == [] and record.to_json()["analysis"]["masks"] is None


def test_partial_failure_grades_missing_and_files_left_out() -> None:
    levels = (
        LevelFindings(_level("L4-L5"), (Grade(Condition.SPINAL_CANAL_STENOSIS, (0.1, 0.2, 0.7)),
                                        Grade(Condition.PFIRRMANN, (0.0, 0.1, 0.6, 0.2, 0.1)))),
        LevelFindings(_level("L5-S1", slice_index=6), ()),  # located, not graded
    )
    findings = Findings("9.8.7", Region.LUMBAR, MODEL, levels,
                        ("sagittal T1 series could not be read (ValueError): neural foraminal narrowing not assessed",))
    used = (SeriesUse("sagittal_t2", "1.2.3", 15), SeriesUse("sagittal_t1", "1.2.5", 13, unreadable=2))
    record = AnalysisRecord.of(findings, used, None, 1.0)
    back = _back(record)
    assert back == record
    assert back.series[1].unreadable == 2 and back.findings.levels[1].grades == ()
    assert back.findings.levels[1].level.slice_index == 6


def test_multi_frame_references_and_numpy_values() -> None:
    level = _level("L3-L4", frame=12, box=Box(*np.float32([10.5, 20.25, 30.125, 40.0625])),
                   confidence=np.float32(0.87654), center_patient=tuple(np.float64([0.123456, -1.0, 2.0])),
                   slice_index=np.int64(11))
    grade = Grade(Condition.LEFT_NEURAL_FORAMINAL_NARROWING, tuple(np.float32([0.33333, 0.33333, 0.33334])))
    findings = Findings("9.8.7", Region.LUMBAR, MODEL, (LevelFindings(level, (grade,)),))
    masks = MasksRef("results/9.8.7/masks-g2.npz", "ab" * 32, (
        MaskSet("1.2.3", ("1.2.3.9",) * 3, (3, 1, 2), ("disc L3-L4", "vertebral bodies", "spinal canal")),))
    record = AnalysisRecord.of(findings, (SeriesUse("sagittal_t2", "1.2.3", 1),), masks, np.float64(3.14159))
    back = _back(record)
    assert back == record
    assert back.findings.levels[0].level.frame_number == 12
    assert back.masks is not None and back.masks.sets[0].frame_numbers == (3, 1, 2)
    assert back.findings.levels[0].level.center_patient == (0.12, -1.0, 2.0)


def test_stored_json_without_a_part_is_refused() -> None:
    findings = Findings("9.8.7", Region.LUMBAR, MODEL, (LevelFindings(_level("L4-L5"), ()),))
    record = AnalysisRecord.of(findings, (), None, 1.0)
    contract_only = findings.to_json()  # Findings JSON as stored before the record existed
    with pytest.raises(FindingsJsonError, match="analysis"):
        AnalysisRecord.from_json(contract_only)
    old_level = record.to_json()
    del old_level["levels"][0]["slice_index"]
    with pytest.raises(FindingsJsonError, match="slice_index"):
        AnalysisRecord.from_json(old_level)
    no_p = record.to_json()
    no_p["levels"][0]["findings"] = {"spinal_canal_stenosis": {"grade": "severe"}}
    with pytest.raises(FindingsJsonError):
        AnalysisRecord.from_json(no_p)
