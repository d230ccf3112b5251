"""Helpers shared by the report templates: truth per level, grade wording, level lists."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from models import rsna
from models.phantom.pathology import StudyTruth

#: Wording keys a template turns into words, with the grade each one means.
WORDING_GRADE = {
    "none": 0,
    "mild": 0,
    "moderate": 1,
    "mild_moderate": 1,
    "severe": 2,
    "moderate_severe": 2,
    "critical": 2,
}

LEFT_RIGHT = {
    "foramen": (rsna.LEFT_NEURAL_FORAMINAL_NARROWING, rsna.RIGHT_NEURAL_FORAMINAL_NARROWING),
    "recess": (rsna.LEFT_SUBARTICULAR_STENOSIS, rsna.RIGHT_SUBARTICULAR_STENOSIS),
}


def wording(truth: StudyTruth, condition: str, level: str, rng: np.random.Generator) -> str:
    """A wording key that is true of the phantom's narrowing (see :data:`WORDING_GRADE`)."""
    f = truth.narrowing[(condition, level)]
    g = rsna.SEVERITIES.index(truth.grade(condition, level))
    if g == 0:
        if f < 0.12:
            return "none"
        return "mild" if f > 0.2 or rng.random() < 0.5 else "none"
    if g == 1:
        return "mild_moderate" if f < 0.42 and rng.random() < 0.5 else "moderate"
    if f > 0.85 and rng.random() < 0.5:
        return "critical"
    return "moderate_severe" if f < 0.75 and rng.random() < 0.5 else "severe"


@dataclass(frozen=True)
class LevelFormat:
    """How a template writes levels: ``disc(lv)`` for one level, ``span(a, b)`` for a run."""

    disc: Callable[[str], str]
    span: Callable[[str, str], str]


def _v(lv: str) -> tuple[str, str]:
    a, b = lv.split("/")
    return a, b


def fmt_dash(lv: str) -> str:  # L4-L5
    a, b = _v(lv)
    return f"{a}-{b}"


def fmt_short(lv: str) -> str:  # L4-5, L5-S1
    a, b = _v(lv)
    return f"{a}-{b[1:]}" if a[0] == b[0] else f"{a}-{b}"


def fmt_slash_short(lv: str) -> str:  # L4/5, L5/S1
    a, b = _v(lv)
    return f"{a}/{b[1:]}" if a[0] == b[0] else f"{a}/{b}"


def fmt_slash(lv: str) -> str:  # L4/L5
    return lv


def fmt_endash(lv: str) -> str:  # L4\u20135
    a, b = _v(lv)
    return f"{a}\u2013{b[1:]}" if a[0] == b[0] else f"{a}\u2013{b}"


def runs(levels: Sequence[str], order: Sequence[str]) -> list[list[str]]:
    """Consecutive runs of ``levels`` in region order."""
    idx = sorted(order.index(lv) for lv in levels)
    out: list[list[str]] = []
    for i in idx:
        if out and order.index(out[-1][-1]) == i - 1:
            out[-1].append(order[i])
        else:
            out.append([order[i]])
    return out


def level_list(
    levels: Sequence[str], order: Sequence[str], fmt: LevelFormat, min_run: int = 3
) -> str:
    """ "L1-L2, L3-L4 and L5-S1" with runs of ``min_run`` or more as spans."""
    parts: list[str] = []
    for r in runs(levels, order):
        if len(r) >= min_run:
            parts.append(fmt.span(r[0], r[-1]))
        else:
            parts.extend(fmt.disc(lv) for lv in r)
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]
