"""Per-field precision and recall of extracted labels against known truth.

A *field* is one condition (e.g. spinal canal stenosis) over every level. For one field:
``precision`` = labels with the true grade / labels extracted, ``recall`` = labels with the
true grade / truth labels (so a missing label costs recall, a wrong one costs both).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from models import rsna


@dataclass(frozen=True)
class FieldScore:
    field: str
    truth: int
    extracted: int
    correct: int

    @property
    def precision(self) -> float:
        return self.correct / self.extracted if self.extracted else 0.0

    @property
    def recall(self) -> float:
        return self.correct / self.truth if self.truth else 0.0

    def as_dict(self) -> dict[str, float | int | str]:
        return {
            "field": self.field,
            "truth": self.truth,
            "extracted": self.extracted,
            "correct": self.correct,
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
        }


@dataclass(frozen=True)
class Mismatch:
    study_id: int
    column: str
    truth: str | None
    extracted: str | None


def score(
    extracted: Mapping[int, Mapping[str, str | None]],
    truth: Mapping[int, Mapping[str, str | None]],
    region: str = "lumbar",
) -> tuple[list[FieldScore], list[Mismatch]]:
    """Field scores (one per condition of the region, then ``all``) and every mismatch.

    Studies of ``truth`` missing from ``extracted`` count as nothing extracted.
    """
    fields = [rsna.condition_slug(c) for c in rsna.conditions_of(region)]
    counts = {f: [0, 0, 0] for f in [*fields, "all"]}
    misses: list[Mismatch] = []
    for sid, row in sorted(truth.items()):
        got = extracted.get(sid, {})
        for col in rsna.targets_of(region):
            cond, _ = rsna.TARGET_INDEX[col]
            f = rsna.condition_slug(cond)
            t, e = row.get(col), got.get(col)
            for k in (f, "all"):
                counts[k][0] += t is not None
                counts[k][1] += e is not None
                counts[k][2] += t is not None and e == t
            if e != t:
                misses.append(Mismatch(sid, col, t, e))
    return [FieldScore(f, *c) for f, c in counts.items()], misses


def score_discs(
    extracted: Mapping[tuple[int, str], tuple[str | None, str, bool | None]],
    truth: Mapping[tuple[int, str], rsna.HerniationLabel],
) -> list[FieldScore]:
    """Herniation fields against ``phantom_herniation.csv`` truth; ``extracted`` maps
    (study, level) to (type, position, hiz) as read (absent: nothing said, counted as no
    herniation and no HIZ, as reports are written).

    ``herniation``: levels with a bulge, protrusion or extrusion (truth) against levels read
    as one (right when the type matches); ``herniation_position``: protrusions and
    extrusions (truth) against levels read with a position; ``hiz``: HIZ present.
    """
    counts = {f: [0, 0, 0] for f in ("herniation", "herniation_position", "hiz")}
    for key in sorted(set(truth) | set(extracted)):
        t = truth.get(key)
        kind, pos, hiz = extracted.get(key, (None, "", None))
        t_kind = t.herniation if t else "none"
        t_pos = t.position if t else ""
        t_hiz = bool(t and t.hiz)
        read = kind not in (None, "none")
        for f, has_t, has_e, right in (
            ("herniation", t_kind != "none", read, read and kind == t_kind),
            ("herniation_position", bool(t_pos), bool(pos), bool(pos) and pos == t_pos),
            ("hiz", t_hiz, bool(hiz), bool(hiz) and t_hiz),
        ):
            counts[f][0] += has_t
            counts[f][1] += has_e
            counts[f][2] += right
    return [FieldScore(f, *c) for f, c in counts.items()]
