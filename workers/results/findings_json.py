"""Findings back from the contract's JSON (as stored on the study row) for encoding.

The JSON carries what the SR needs (level name, source instance, box, grades and
probabilities); detector-internal fields absent from it get neutral values.
"""

from __future__ import annotations

from typing import Any

from models.types import Box, Condition, Findings, Grade, Level, LevelFindings, ModelId, Region, probabilities_from


def findings_from_json(data: dict[str, Any]) -> Findings:
    levels = []
    for lv in data.get("levels", []):
        level = Level(
            name=lv["level"], series_uid=lv["series_uid"], sop_instance_uid=lv["sop_instance_uid"],
            slice_index=-1, box=Box(*lv["box"]), confidence=float(lv.get("confidence", 0.0)),
            center_patient=(0.0, 0.0, 0.0), frame_number=lv.get("frame_number"),
        )
        grades = []
        for cond, f in lv.get("findings", {}).items():
            c = Condition(cond)
            grades.append(Grade(c, probabilities_from([f["p"][g] for g in c.grades])))
        levels.append(LevelFindings(level, tuple(grades)))
    return Findings(
        study_uid=data["study_uid"], region=Region(data["region"]),
        model=ModelId(data["model"]["name"], data["model"]["version"]),
        levels=tuple(levels), missing=tuple(data.get("missing", [])),
    )
