"""The enumerations stored in the database: study state, pipeline stage, result kind, export state.

They are ``StrEnum``: a member equals its stored string (``StudyState.QUEUED ==
"QUEUED"``, ``Stage.EXPORT == "export"``), so comparisons with plain strings, JSON,
f-strings and the values already in the database keep working. The columns that
hold them are typed with these enums (:mod:`spinenode.core.db.models`) and guarded by a
CHECK constraint (migration 0003). The legal moves between study states are in
:mod:`spinenode.core.states`.
"""

from __future__ import annotations

from enum import StrEnum


class StudyState(StrEnum):
    RECEIVING = "RECEIVING"
    COMPLETE = "COMPLETE"
    QUEUED = "QUEUED"
    ANALYZING = "ANALYZING"
    ENCODING = "ENCODING"
    EXPORTING = "EXPORTING"
    DONE = "DONE"
    SKIPPED = "SKIPPED"
    FAILED = "FAILED"


class Stage(StrEnum):
    """A pipeline stage: the Celery task that runs it (``spinenode.core.broker.STAGES``) and the
    ``stage`` of FAILED(stage, error)."""

    ANALYZE = "analyze"
    ENCODE = "encode"
    EXPORT = "export"


class ResultKind(StrEnum):
    """A DICOM object the node produces for a study (``results.kind``)."""

    SR = "sr"
    NOT_ANALYSED_SR = "not-analysed-sr"
    SEG = "seg"
    KEY_IMAGES = "key-images"


class ExportState(StrEnum):
    PENDING = "PENDING"
    SENDING = "SENDING"
    SENT = "SENT"
    #: The destination refused this SOP class (SR/SEG); the key images stand in for it.
    FALLBACK = "FALLBACK"
    FAILED = "FAILED"
