"""Findings JSON matches the contract in design.md."""

from __future__ import annotations

import json

import numpy as np
import pytest

from models.types import (
    Box, Condition, Findings, Grade, Level, LevelFindings, ModelId, Region, SeriesMasks,
)


def _level() -> Level:
    return Level("L4-L5", "1.2.3", "1.2.3.4", 7, Box(10, 20, 30, 40), 0.9, (0.0, 1.0, 2.0))


def test_findings_json_matches_contract() -> None:
    g = Grade(Condition.SPINAL_CANAL_STENOSIS, (0.05, 0.15, 0.80))
    f = Findings("9.8.7", Region.LUMBAR, ModelId("spinenode", "0.1.0"),
                 (LevelFindings(_level(), (g,)),), ("no usable axial T2 series",))
    d = json.loads(json.dumps(f.to_json()))
    assert d == {
        "study_uid": "9.8.7", "region": "lumbar", "model": {"name": "spinenode", "version": "0.1.0"},
        "levels": [{"level": "L4-L5", "series_uid": "1.2.3", "sop_instance_uid": "1.2.3.4",
                    "box": [10.0, 20.0, 30.0, 40.0], "confidence": 0.9,  # additive (design-notes)
                    "slice_index": 7, "center_patient": [0.0, 1.0, 2.0],  # additive (issue 13)
                    "findings": {"spinal_canal_stenosis": {
                        "grade": "severe", "p": {"normal_mild": 0.05, "moderate": 0.15, "severe": 0.8}}}}],
        "missing": ["no usable axial T2 series"],
    }
    # a caveat on the level names adds "flags" (additive, design-notes); the encode stage reads it back
    from dataclasses import replace

    flagged_findings = replace(f, flags=("transitional lumbosacral segment suspected",))
    flagged = json.loads(json.dumps(flagged_findings.to_json()))
    assert flagged == {**d, "flags": ["transitional lumbosacral segment suspected"]}
    assert Findings.from_json(flagged).flags == ("transitional lumbosacral segment suspected",)
    assert flagged_findings.reported().flags == flagged_findings.flags
    assert Findings.from_json(d).flags == ()


def test_pfirrmann_grade_labels() -> None:
    g = Grade(Condition.PFIRRMANN, (0.1, 0.1, 0.6, 0.1, 0.1))
    assert g.to_json()["grade"] == "3"
    assert set(g.to_json()["p"]) == {"1", "2", "3", "4", "5"}


def test_grade_validates() -> None:
    with pytest.raises(ValueError):
        Grade(Condition.SPINAL_CANAL_STENOSIS, (0.5, 0.5))
    with pytest.raises(ValueError):
        Grade(Condition.SPINAL_CANAL_STENOSIS, (0.5, 0.6, 0.1))
    with pytest.raises(ValueError):
        Box(5, 0, 1, 1)


def test_frozen_and_lookup() -> None:
    lf = LevelFindings(_level(), (Grade(Condition.PFIRRMANN, (0.2,) * 5),))
    with pytest.raises(AttributeError):
        lf.level = _level()  # type: ignore[misc]
    assert lf.grade_of("pfirrmann") is not None
    assert lf.grade_of(Condition.SPINAL_CANAL_STENOSIS) is None
    assert Condition.LEFT_NEURAL_FORAMINAL_NARROWING.rsna_group == "foraminal"
    assert Condition.PFIRRMANN.rsna_group is None


def test_masks_shape_checked() -> None:
    m = SeriesMasks("1", ("a", "b"), np.zeros((2, 4, 4), np.uint8), {1: "L4-L5"})
    assert m.binary(1).shape == (2, 4, 4)
    with pytest.raises(ValueError):
        SeriesMasks("1", ("a",), np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(ValueError):
        SeriesMasks("1", ("a", "b"), np.zeros((2, 4, 4), np.uint8), {0: "bg"})
