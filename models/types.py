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
from models.conditions import HERNIATION_GRADES as HERNIATION_GRADES
from models.conditions import HERNIATION_POSITION_GRADES as HERNIATION_POSITION_GRADES
from models.conditions import HIZ_GRADES as HIZ_GRADES
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

#: Decimals the Findings JSON keeps: pixel coordinates and mm, detection confidence,
#: probabilities. :meth:`Findings.reported` rounds to them, so that what is stored
#: reads back equal (``Findings.from_json(f.to_json()) == f.reported()``).
PIXEL_DECIMALS = 2
CONFIDENCE_DECIMALS = 3
PROBABILITY_DECIMALS = 4


class FindingsJsonError(ValueError):
    """Stored Findings JSON that lacks a field or holds a value of the wrong kind."""


def _field(data: Mapping[str, Any], key: str, where: str) -> Any:
    try:
        return data[key]
    except (KeyError, TypeError):
        raise FindingsJsonError(f"{where}: no {key!r}") from None


#: What the detector and grader report (the herniation model adds HERNIATION_CONDITIONS).
LUMBAR_CONDITIONS: tuple[Condition, ...] = (
    Condition.SPINAL_CANAL_STENOSIS, Condition.LEFT_NEURAL_FORAMINAL_NARROWING,
    Condition.RIGHT_NEURAL_FORAMINAL_NARROWING, Condition.LEFT_SUBARTICULAR_STENOSIS,
    Condition.RIGHT_SUBARTICULAR_STENOSIS, Condition.PFIRRMANN,
)
HERNIATION_CONDITIONS: tuple[Condition, ...] = (
    Condition.DISC_HERNIATION, Condition.HERNIATION_POSITION, Condition.HIGH_INTENSITY_ZONE,
)
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

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelId:
        return cls(str(_field(data, "name", "model")), str(_field(data, "version", "model")))


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
        return [round(float(v), PIXEL_DECIMALS) for v in (self.x0, self.y0, self.x1, self.y1)]

    @classmethod
    def from_list(cls, values: Sequence[float]) -> Box:
        if len(values) != 4:
            raise FindingsJsonError(f"a box has 4 numbers, not {len(values)}")
        return cls(*(float(v) for v in values))


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

    def reported(self) -> Level:
        """This level at the precision of the Findings JSON."""
        return Level(self.name, self.series_uid, self.sop_instance_uid, int(self.slice_index),
                     Box.from_list(self.box.as_list()), round(float(self.confidence), CONFIDENCE_DECIMALS),
                     _centre(self.center_patient), self.frame_number)


def _centre(values: Sequence[float]) -> tuple[float, float, float]:
    if len(values) != 3:
        raise FindingsJsonError(f"a centre has 3 coordinates, not {len(values)}")
    x, y, z = (round(float(v), PIXEL_DECIMALS) for v in values)
    return (x, y, z)


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
            "p": {g: round(float(p), PROBABILITY_DECIMALS) for g, p in zip(self.condition.grades, self.probabilities)},
        }

    @classmethod
    def from_json(cls, condition: Condition | str, data: Mapping[str, Any]) -> Grade:
        """The probabilities as stored (not renormalised: they are what was reported)."""
        c = Condition(condition)
        p = _field(data, "p", str(c))
        return cls(c, tuple(float(_field(p, g, f"{c} p")) for g in c.grades))

    def reported(self) -> Grade:
        return Grade(self.condition, tuple(round(float(p), PROBABILITY_DECIMALS) for p in self.probabilities))


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
        out["confidence"] = round(float(self.level.confidence), CONFIDENCE_DECIMALS)  # additive: the detection's
        # additive (issue 13): where the level lies, so that the record reads back whole
        out["slice_index"] = int(self.level.slice_index)
        out["center_patient"] = list(_centre(self.level.center_patient))
        out["findings"] = {str(g.condition): g.to_json() for g in self.grades}
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LevelFindings:
        where = f"level {data.get('level', '?') if isinstance(data, Mapping) else '?'}"
        frame = data.get("frame_number") if isinstance(data, Mapping) else None
        level = Level(
            name=str(_field(data, "level", where)),
            series_uid=str(_field(data, "series_uid", where)),
            sop_instance_uid=str(_field(data, "sop_instance_uid", where)),
            slice_index=int(_field(data, "slice_index", where)),
            box=Box.from_list(_field(data, "box", where)),
            confidence=float(_field(data, "confidence", where)),
            center_patient=_centre(_field(data, "center_patient", where)),
            frame_number=int(frame) if frame is not None else None,
        )
        grades = tuple(Grade.from_json(c, f) for c, f in dict(_field(data, "findings", where)).items())
        return cls(level, grades)

    def reported(self) -> LevelFindings:
        return LevelFindings(self.level.reported(), tuple(g.reported() for g in self.grades))


@dataclass(frozen=True, slots=True)
class Findings:
    """The findings of one study (design.md, Findings JSON).

    ``missing`` lists, in plain words, what could not be assessed and why
    (for example a study without an axial T2 series); ``flags`` the caveats a
    reader must know before trusting the level names (a suspected transitional
    lumbosacral segment, :func:`models.levels.transitional_signs`).
    """

    study_uid: str
    region: Region
    model: ModelId
    levels: tuple[LevelFindings, ...] = ()
    missing: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()

    def level(self, name: str) -> LevelFindings | None:
        for lf in self.levels:
            if lf.level.name == name:
                return lf
        return None

    def to_json(self) -> dict[str, Any]:
        """The contract's Findings JSON; ``flags`` only when there is a caveat (an additive key)."""
        out: dict[str, Any] = {
            "study_uid": self.study_uid,
            "region": str(self.region),
            "model": self.model.to_json(),
            "levels": [lf.to_json() for lf in self.levels],
            "missing": list(self.missing),
        }
        if self.flags:
            out["flags"] = list(self.flags)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Findings:
        """The inverse of :meth:`to_json`: ``from_json(f.to_json()) == f.reported()``.

        Raises :class:`FindingsJsonError` when a field is missing (JSON written before a
        field was added is refused, never filled with a stand-in value)."""
        return cls(
            study_uid=str(_field(data, "study_uid", "findings")),
            region=Region(_field(data, "region", "findings")),
            model=ModelId.from_json(_field(data, "model", "findings")),
            levels=tuple(LevelFindings.from_json(lv) for lv in _field(data, "levels", "findings")),
            missing=tuple(str(m) for m in data.get("missing", ())),
            flags=tuple(str(f) for f in data.get("flags", ())),
        )

    def reported(self) -> Findings:
        """These findings at the precision of the Findings JSON (what the record carries)."""
        return Findings(self.study_uid, self.region, self.model, tuple(lf.reported() for lf in self.levels),
                        self.missing, self.flags)


#: Segment titles of :class:`SeriesMasks`: a disc is ``DISC_SEGMENT + level`` ("disc L4-L5"),
#: its herniated material ``HERNIATED_SEGMENT + level`` (models.herniated_material).
DISC_SEGMENT = "disc "
HERNIATED_SEGMENT = "herniated material "
BODIES_SEGMENT = "vertebral bodies"
CANAL_SEGMENT = "spinal canal"


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
    #: wall seconds of the analyzer pass, shared out over the studies of its batch
    seconds: float = 0.0
    #: CPU seconds of this process (every thread) in that pass, shared out the same way
    cpu_seconds: float = 0.0
    #: studies analysed in the same pass
    batch: int = 1


def probabilities_from(values: Sequence[float]) -> tuple[float, ...]:
    """Clip to [0, 1] and renormalise (guards rounding in serialised vectors)."""
    arr = np.clip(np.asarray(values, dtype=float), 0.0, 1.0)
    s = float(arr.sum())
    if s <= 0:
        raise ValueError("probabilities sum to zero")
    return tuple(float(v) for v in arr / s)
