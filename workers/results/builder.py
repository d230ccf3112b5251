"""What a result builder is given, and what it is: the encode stage's extension point.

A builder turns an :class:`EncodeInputs` into one DICOM object of its kind, or None
when the study gives it nothing to show (no masks: no SEG). The encode stage
(workers/encode.py) calls every builder of :data:`workers.results.builders.BUILDERS`
in order and writes, records and exports what they return.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydicom.dataset import Dataset

from models.types import SeriesMasks
from workers.record import AnalysisRecord
from workers.results.identity import ResultIdentity, ResultKind


@dataclass(frozen=True)
class EncodeInputs:
    """Everything a builder may use.

    ``evidence`` holds the headers of every source instance of the study, ``masks`` the
    analyzer's masks that the record references (checked against it), ``digest`` the
    digest of the source instances (result instance UIDs depend on it).
    ``source_image(series_uid, sop_instance_uid)`` reads one source image with its
    pixels; ``predecessor(identity)`` is the study's previous SR, if another exists.
    """

    record: AnalysisRecord
    evidence: Sequence[Dataset]
    masks: Sequence[SeriesMasks]
    digest: str
    source_image: Callable[[str, str], Dataset]
    predecessor: Callable[[ResultIdentity], Dataset | None]

    def identity(self, kind: ResultKind) -> ResultIdentity:
        model = self.record.findings.model
        return ResultIdentity(self.record.findings.study_uid, kind, model.name, model.version, self.digest)


@dataclass(frozen=True, slots=True)
class ResultBuilder:
    """One result kind and the function that builds its object."""

    kind: ResultKind
    build: Callable[[EncodeInputs, ResultIdentity], Dataset | None]
