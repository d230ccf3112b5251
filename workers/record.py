"""The analysis record: everything the analyze stage hands to the encode stage.

It holds the findings (per level: source instance and frame, slice index, centre, box,
detection confidence, grades with their probabilities), the series the analysis used
and what for, and the reference to the masks file the SEG is made from. It is stored
as the study's Findings JSON (``studies.findings``, what the API serves) with one
additive key, ``analysis``; :meth:`AnalysisRecord.from_json` reads back exactly what
:meth:`AnalysisRecord.to_json` wrote, and refuses JSON that lacks a part (written
before the record existed): the study is then analysed again, never encoded from
stand-in values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from models.types import Findings, FindingsJsonError, SeriesMasks
from spinenode.core.errors import AnalysisError
from spinenode.core.repository import ANALYSIS_RECORD_KEY

#: The additive key of the Findings JSON that holds the rest of the record (the study
#: repository knows it too: a retry analyses a study stored without it again).
RECORD_KEY: Final = ANALYSIS_RECORD_KEY


class AnalysisRecordError(AnalysisError):
    """The stored record cannot be read, or the masks file is not the one it references:
    the encode stage fails; analysing the study again writes both anew."""


def _get(data: Mapping[str, Any], key: str, where: str) -> Any:
    try:
        return data[key]
    except (KeyError, TypeError):
        raise FindingsJsonError(f"{where}: no {key!r}") from None


@dataclass(frozen=True, slots=True)
class SeriesUse:
    """One selected series and what it was used for.

    ``role`` is the selection's role (``sagittal_t2``, ``sagittal_t1``, ``axial_t2``,
    ``ct_sagittal``: models/series.py says which conditions each serves); ``instances``
    were read with pixels, ``unreadable`` could not be read and were left out."""

    role: str
    series_uid: str
    instances: int
    unreadable: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"role": self.role, "series_uid": self.series_uid, "instances": self.instances,
                "unreadable": self.unreadable}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SeriesUse:
        return cls(str(_get(data, "role", "series")), str(_get(data, "series_uid", "series")),
                   int(_get(data, "instances", "series")), int(_get(data, "unreadable", "series")))


@dataclass(frozen=True, slots=True)
class MaskSet:
    """What one set of masks lies on: a series, the source image of each slice (and its
    frame, for a multi-frame source), and the segment labels 1..N."""

    series_uid: str
    sop_instance_uids: tuple[str, ...]
    frame_numbers: tuple[int, ...]
    segments: tuple[str, ...]

    @classmethod
    def of(cls, masks: SeriesMasks) -> MaskSet:
        return cls(masks.series_uid, tuple(masks.sop_instance_uids), tuple(int(f) for f in masks.frame_numbers),
                   tuple(masks.segments[k] for k in sorted(masks.segments)))

    def matches(self, masks: SeriesMasks) -> bool:
        return MaskSet.of(masks) == self

    def to_json(self) -> dict[str, Any]:
        return {"series_uid": self.series_uid, "sop_instance_uids": list(self.sop_instance_uids),
                "frame_numbers": list(self.frame_numbers), "segments": list(self.segments)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MaskSet:
        return cls(str(_get(data, "series_uid", "masks")),
                   tuple(str(u) for u in _get(data, "sop_instance_uids", "masks")),
                   tuple(int(f) for f in _get(data, "frame_numbers", "masks")),
                   tuple(str(s) for s in _get(data, "segments", "masks")))


@dataclass(frozen=True, slots=True)
class MasksRef:
    """The masks file (``path`` relative to DATA_DIR, its sha256) and what it holds."""

    path: str
    sha256: str
    sets: tuple[MaskSet, ...]

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "sets": [m.to_json() for m in self.sets]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MasksRef:
        return cls(str(_get(data, "path", "masks")), str(_get(data, "sha256", "masks")),
                   tuple(MaskSet.from_json(m) for m in _get(data, "sets", "masks")))


@dataclass(frozen=True, slots=True)
class AnalysisRecord:
    """What the analyze stage found and used; the encode stage's only input besides the
    source headers. ``findings`` is at the precision of the Findings JSON
    (:meth:`Findings.reported`); ``seconds`` is the analyzer's time."""

    findings: Findings
    series: tuple[SeriesUse, ...]
    masks: MasksRef | None
    seconds: float

    @classmethod
    def of(cls, findings: Findings, series: Sequence[SeriesUse], masks: MasksRef | None,
           seconds: float) -> AnalysisRecord:
        """A record of an analyzer outcome, its values at the precision they are stored at."""
        return cls(findings.reported(), tuple(series), masks, round(float(seconds), 3))

    def to_json(self) -> dict[str, Any]:
        return {
            **self.findings.to_json(),
            RECORD_KEY: {
                "seconds": self.seconds,
                "series": [u.to_json() for u in self.series],
                "masks": self.masks.to_json() if self.masks is not None else None,
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AnalysisRecord:
        """Raises :class:`FindingsJsonError` (a ValueError) for JSON without the record's parts."""
        rest = _get(data, RECORD_KEY, "findings (stored without an analysis record: analyse the study again)")
        masks = _get(rest, "masks", RECORD_KEY)
        return cls(
            findings=Findings.from_json(data),
            series=tuple(SeriesUse.from_json(u) for u in _get(rest, "series", RECORD_KEY)),
            masks=MasksRef.from_json(masks) if masks is not None else None,
            seconds=float(_get(rest, "seconds", RECORD_KEY)),
        )
