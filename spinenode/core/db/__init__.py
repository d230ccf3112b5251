"""The node's index database (SQLAlchemy 2): studies, series, instances, events, workers."""

from spinenode.core.db.models import (
    Base,
    Event,
    Export,
    ExportState,
    Instance,
    Result,
    Series,
    Study,
    StudyState,
    WorkerHeartbeat,
)
from spinenode.core.db.session import Database

__all__ = [
    "Base", "Database", "Event", "Export", "ExportState", "Instance", "Result", "Series", "Study", "StudyState",
    "WorkerHeartbeat",
]
