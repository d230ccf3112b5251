"""The one exception hierarchy of spinenode.

Every error the node raises on purpose derives from :class:`SpinenodeError`.
``transient`` tells the pipeline whether a retry can help (a PACS that is down)
or the stage must fail at once with its reason recorded.
"""

from __future__ import annotations


class SpinenodeError(Exception):
    """Base class of all spinenode errors."""

    transient: bool = False


class ConfigError(SpinenodeError):
    """A setting is missing or invalid; the node refuses to start."""


class InvalidUIDError(SpinenodeError):
    """A UID is missing, malformed, or unsafe to use as a path component."""


class InvalidDatasetError(SpinenodeError):
    """A received dataset cannot be understood (truncated, garbage, missing attributes)."""


class SOPClassMismatchError(SpinenodeError):
    """The dataset's SOP Class or Instance UID disagrees with the C-STORE request."""


class StorageError(SpinenodeError):
    """Writing to the spool failed (disk full, I/O error)."""

    transient = True


class DatabaseError(SpinenodeError):
    """The index database could not be written."""

    transient = True


class StudyNotFoundError(SpinenodeError):
    """No study with the given Study Instance UID is known."""


class AnalysisError(SpinenodeError):
    """The analysis stage could not produce findings for a study."""


class AnalyzerUnavailableError(AnalysisError):
    """No analyzer (model weights) is installed on this worker."""


class DicomNetworkError(SpinenodeError):
    """A DICOM association to a peer failed (refused, aborted, timed out)."""

    transient = True


class IllegalTransitionError(SpinenodeError):
    """A study was asked to move between two states that the state machine does not link
    (:data:`spinenode.core.states.LEGAL_TRANSITIONS`): a bug or a lost race, never retried."""

    def __init__(self, study_uid: str, previous: str, wanted: str) -> None:
        super().__init__(f"study {study_uid}: {previous} -> {wanted} is not a legal transition")
        self.study_uid = study_uid
        self.previous = previous
        self.wanted = wanted


class InstanceUnavailableError(SpinenodeError):
    """A stage needs a file (an instance, a result, masks) that is neither on this host's
    DATA_DIR nor obtainable from the node; the message names the object and the host."""


class NodeUnreachableError(SpinenodeError):
    """The node's DICOMweb service did not answer a worker (network error or 5xx)."""

    transient = True
