"""Typed SQLAlchemy 2 models.

Times are stored as timezone-aware UTC datetimes. Patient-level fields
(PatientID, AccessionNumber) are kept for the admin search only and are never
logged.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, DateTime, Enum, ForeignKey, Index, Integer, String, Text, TypeDecorator
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from spinenode.core.enums import ExportState, ResultKind, Stage, StudyState

__all__ = [
    "ACTIVE_STATES", "FINAL_STATES", "Base", "Event", "Export", "ExportState", "Instance", "Result",
    "ResultKind", "Series", "Stage", "Study", "StudyState", "UTCDateTime", "WorkerHeartbeat", "utcnow",
]

#: States in which a worker owns the study.
ACTIVE_STATES = frozenset({StudyState.QUEUED, StudyState.ANALYZING, StudyState.ENCODING, StudyState.EXPORTING})
FINAL_STATES = frozenset({StudyState.DONE, StudyState.SKIPPED, StudyState.FAILED})


class UTCDateTime(TypeDecorator[dt.datetime]):
    """DateTime that always comes back timezone-aware in UTC (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def enum_column_type(enum: type[StrEnum], length: int) -> Enum:
    """A VARCHAR column holding ``enum``'s values (not its names), read back as members.

    Writing a string that is no member's value raises at once (``validate_strings``),
    before the statement reaches the database; the database refuses it as well
    (CHECK constraints on PostgreSQL, triggers on SQLite: migration 0003).
    """
    return Enum(
        enum,
        native_enum=False,
        create_constraint=False,  # the guard is made by migration 0003, per dialect
        length=length,
        validate_strings=True,
        values_callable=lambda members: [m.value for m in members],
    )


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dt.datetime: UTCDateTime, dict[str, Any]: JSON}


class Study(Base):
    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_uid: Mapped[str] = mapped_column(String(64), unique=True)
    state: Mapped[StudyState] = mapped_column(
        enum_column_type(StudyState, 16), index=True, default=StudyState.RECEIVING
    )
    #: Bumped whenever new instances reopen the study; tasks carry it and drop stale work.
    generation: Mapped[int] = mapped_column(Integer, default=0)
    failed_stage: Mapped[Stage | None] = mapped_column(enum_column_type(Stage, 16))
    reason: Mapped[str | None] = mapped_column(Text)
    region: Mapped[str | None] = mapped_column(String(16))
    modality: Mapped[str | None] = mapped_column(String(16))
    body_part: Mapped[str | None] = mapped_column(String(64))
    study_description: Mapped[str | None] = mapped_column(String(128))
    accession_number: Mapped[str | None] = mapped_column(String(64), index=True)
    patient_id: Mapped[str | None] = mapped_column(String(64), index=True)
    selection: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    #: The Findings JSON of the latest analysis (design.md), or None.
    findings: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    #: Why the study was not analysed (a "not analysed" SR says the same), or None.
    not_analysed_reason: Mapped[str | None] = mapped_column(Text)
    enqueue_count: Mapped[int] = mapped_column(Integer, default=0)
    first_received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_received_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    state_changed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    series: Mapped[list[Series]] = relationship(back_populates="study", order_by="Series.id")
    events: Mapped[list[Event]] = relationship(back_populates="study", order_by="Event.id")


class Series(Base):
    __tablename__ = "series"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    series_uid: Mapped[str] = mapped_column(String(64), unique=True)
    modality: Mapped[str | None] = mapped_column(String(16))
    series_number: Mapped[int | None] = mapped_column(Integer)
    description: Mapped[str | None] = mapped_column(String(128))
    body_part: Mapped[str | None] = mapped_column(String(64))
    classification: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    classified_at: Mapped[dt.datetime | None] = mapped_column()

    study: Mapped[Study] = relationship(back_populates="series")
    instances: Mapped[list[Instance]] = relationship(back_populates="series")


class Instance(Base):
    __tablename__ = "instances"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    instance_number: Mapped[int | None] = mapped_column(Integer)
    #: Path relative to DATA_DIR.
    path: Mapped[str] = mapped_column(String(512))
    size_bytes: Mapped[int] = mapped_column(Integer)
    calling_ae: Mapped[str | None] = mapped_column(String(16))
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    series: Mapped[Series] = relationship(back_populates="instances")


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (Index("ix_events_study_at", "study_id", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    state: Mapped[StudyState] = mapped_column(enum_column_type(StudyState, 16))
    stage: Mapped[Stage | None] = mapped_column(enum_column_type(Stage, 16))
    generation: Mapped[int] = mapped_column(Integer, default=0)
    detail: Mapped[str | None] = mapped_column(Text)

    study: Mapped[Study] = relationship(back_populates="events")


class Result(Base):
    """A DICOM object the node produced for a study (SR, SEG, key images)."""

    __tablename__ = "results"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    generation: Mapped[int] = mapped_column(Integer)
    kind: Mapped[ResultKind] = mapped_column(enum_column_type(ResultKind, 32))
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64))
    #: Path relative to DATA_DIR.
    path: Mapped[str] = mapped_column(String(512))
    model_name: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(64))
    inputs_digest: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    exports: Mapped[list[Export]] = relationship(back_populates="result", order_by="Export.id")


class Export(Base):
    """One result object to one destination: attempts, last status, last error."""

    __tablename__ = "exports"
    __table_args__ = (Index("ix_exports_result_dest", "result_id", "destination", unique=True),)

    id: Mapped[int] = mapped_column(primary_key=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("results.id", ondelete="CASCADE"))
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    destination: Mapped[str] = mapped_column(String(128))
    state: Mapped[ExportState] = mapped_column(enum_column_type(ExportState, 16), default=ExportState.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column()

    result: Mapped[Result] = relationship(back_populates="exports")


class WorkerHeartbeat(Base):
    __tablename__ = "workers"

    hostname: Mapped[str] = mapped_column(String(255), primary_key=True)
    queues: Mapped[str] = mapped_column(String(64))
    pid: Mapped[int] = mapped_column(Integer)
    device: Mapped[str | None] = mapped_column(String(128))
    #: the first of ``current_studies`` (what the API and dashboards show)
    current_study: Mapped[str | None] = mapped_column(String(64))
    #: every study the worker is working on (an analysis batch takes several), separated by spaces
    current_studies: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_seen: Mapped[dt.datetime] = mapped_column(default=utcnow)

    def studies(self) -> list[str]:
        """Every study the worker names (a row written before migration 0004 has only ``current_study``)."""
        if self.current_studies:
            return self.current_studies.split()
        return [self.current_study] if self.current_study else []
