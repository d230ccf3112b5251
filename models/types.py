"""Project types of the AI stage: levels, detections, grades and findings.

Frozen dataclasses only. ultralytics ``Results`` and torch tensors are turned
into these where they enter (``detector.py``, ``grader.py``); everything after
that, including the workers that encode SR and SEG, sees these types alone.

``Findings.to_json()`` is the contract's Findings JSON (design.md section 3);
the masks that feed the SEG object travel beside it in :class:`SeriesMasks`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

# defined with the condition table, re-exported here where the types have always been
from models.conditions import PFIRRMANN_GRADES as PFIRRMANN_GRADES
from models.conditions import SEVERITY_GRADES as SEVERITY_GRADES
from models.conditions import Condition as Condition


class ModelsError(Exception):
    """Base class of errors raised by the ``models`` package on purpose."""


class Region(StrEnum):
    LUMBAR = "lumbar"
    CERVICAL = "cervical"


LUMBAR_LEVELS: tuple[str, ...] = ("L1-L2", "L2-L3", "L3-L4", "L4-L5", "L5-S1")
CERVICAL_LEVELS: tuple[str, ...] = ("C2-C3", "C3-C4", "C4-C5", "C5-C6", "C6-C7", "C7-T1")
ALL_LEVELS: tuple[str, ...] = LUMBAR_LEVELS + CERVICAL_LEVELS

LUMBAR_CONDITIONS: tuple[Condition, ...] = tuple(Condition)
CERVICAL_CONDITIONS: tuple[Condition, ...] = (Condition.SPINAL_CANAL_STENOSIS,)


def levels_of(region: Region | str) -> tuple[str, ...]:
    return LUMBAR_LEVELS if Region(region) is Region.LUMBAR else CERVICAL_LEVELS


def conditions_of(region: Region | str) -> tuple[Condition, ...]:
    return LUMBAR_CONDITIONS if Region(region) is Region.LUMBAR else CERVICAL_CONDITIONS


@dataclass(frozen=True, slots=True)
class ModelId:
    """Algorithm identification carried by every AI output."""

    name: str
    version: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version}


@dataclass(frozen=True, slots=True)
class Box:
    """Axis-aligned box in pixel coordinates of one image (column x, row y)."""

    x0: float
    y0: float
    x1: float
    y1: float

    def __post_init__(self) -> None:
        if not (self.x1 >= self.x0 and self.y1 >= self.y0):
            raise ValueError(f"box corners out of order: {self.as_list()}")

    @property
    def center(self) -> tuple[float, float]:
        return ((self.x0 + self.x1) / 2.0, (self.y0 + self.y1) / 2.0)

    def as_list(self) -> list[float]:
        return [round(float(v), 2) for v in (self.x0, self.y0, self.x1, self.y1)]


@dataclass(frozen=True, slots=True)
class Detection:
    """One detected object on one image, as the detector saw it (before level naming)."""

    class_name: str
    confidence: float
    box: Box
    slice_index: int


@dataclass(frozen=True, slots=True)
class Level:
    """A named disc level located on the sagittal series.

    ``center_patient`` is the disc centre in patient coordinates (mm, LPS),
    which maps the level onto the axial series by geometry. ``box`` is on the
    image as sent; ``frame_number`` (1-based) says which frame of a multi-frame
    image it lies on (None for a single-frame image).
    """

    name: str
    series_uid: str
    sop_instance_uid: str
    slice_index: int
    box: Box
    confidence: float
    center_patient: tuple[float, float, float]
    frame_number: int | None = None


@dataclass(frozen=True, slots=True)
class Grade:
    """A calibrated probability vector over a condition's grades."""

    condition: Condition
    probabilities: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.probabilities) != len(self.condition.grades):
            raise ValueError(
                f"{self.condition}: {len(self.probabilities)} probabilities for "
                f"{len(self.condition.grades)} grades"
            )
        total = float(sum(self.probabilities))
        if any(p < 0.0 for p in self.probabilities) or abs(total - 1.0) > 1e-3:
            raise ValueError(f"{self.condition}: probabilities must be >= 0 and sum to 1")

    @property
    def grade(self) -> str:
        return self.condition.grades[int(np.argmax(self.probabilities))]

    def to_json(self) -> dict[str, Any]:
        return {
            "grade": self.grade,
            "p": {g: round(float(p), 4) for g, p in zip(self.condition.grades, self.probabilities)},
        }


#: The name used in the brief; one finding is one graded condition.
ConditionFinding = Grade


@dataclass(frozen=True, slots=True)
class LevelFindings:
    """Everything reported for one level."""

    level: Level
    grades: tuple[Grade, ...] = ()

    def grade_of(self, condition: Condition | str) -> Grade | None:
        c = Condition(condition)
        for g in self.grades:
            if g.condition is c:
                return g
        return None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "level": self.level.name,
            "series_uid": self.level.series_uid,
            "sop_instance_uid": self.level.sop_instance_uid,
        }
        if self.level.frame_number is not None:
            out["frame_number"] = self.level.frame_number  # additive: only for multi-frame sources
        out["box"] = self.level.box.as_list()
        out["confidence"] = round(float(self.level.confidence), 3)  # additive: the detection's
        out["findings"] = {str(g.condition): g.to_json() for g in self.grades}
        return out


@dataclass(frozen=True, slots=True)
class Findings:
    """The findings of one study (design.md, Findings JSON).

    ``missing`` lists, in plain words, what could not be assessed and why
    (for example a study without an axial T2 series).
    """

    study_uid: str
    region: Region
    model: ModelId
    levels: tuple[LevelFindings, ...] = ()
    missing: tuple[str, ...] = ()

    def level(self, name: str) -> LevelFindings | None:
        for lf in self.levels:
            if lf.level.name == name:
                return lf
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "study_uid": self.study_uid,
            "region": str(self.region),
            "model": self.model.to_json(),
            "levels": [lf.to_json() for lf in self.levels],
            "missing": list(self.missing),
        }


@dataclass(frozen=True, slots=True, eq=False)
class SeriesMasks:
    """Label masks on one series, slice by slice, for the SEG object.

    ``labels`` has shape (slices, rows, cols), dtype uint8; value ``k`` means
    structure ``segments[k]`` (0 is background). ``sop_instance_uids[i]`` is the
    source image of slice ``i``; for a multi-frame source ``frame_numbers[i]`` is
    its 1-based frame (empty for single-frame sources).
    """

    series_uid: str
    sop_instance_uids: tuple[str, ...]
    labels: np.ndarray
    segments: Mapping[int, str] = field(default_factory=dict)
    model: ModelId | None = None
    frame_numbers: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.labels.ndim != 3 or self.labels.shape[0] != len(self.sop_instance_uids):
            raise ValueError("labels must be (slices, rows, cols), one slice per SOP instance")
        if self.frame_numbers and len(self.frame_numbers) != len(self.sop_instance_uids):
            raise ValueError("one frame number per slice, or none")
        if 0 in self.segments:
            raise ValueError("segment 0 is background")

    def binary(self, segment: int) -> np.ndarray:
        return self.labels == segment


@dataclass(frozen=True, slots=True)
class AnalysisResult:
    """What the analyzer returns: findings plus masks, and timing."""

    findings: Findings
    masks: tuple[SeriesMasks, ...] = ()
    seconds: float = 0.0


def probabilities_from(values: Sequence[float]) -> tuple[float, ...]:
    """Clip to [0, 1] and renormalise (guards rounding in serialised vectors)."""
    arr = np.clip(np.asarray(values, dtype=float), 0.0, 1.0)
    s = float(arr.sum())
    if s <= 0:
        raise ValueError("probabilities sum to zero")
    return tuple(float(v) for v in arr / s)
