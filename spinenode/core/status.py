"""DIMSE status codes used by the node, as named constants (PS3.4 Annex B, PS3.7 Annex C)."""

from __future__ import annotations

from typing import Final

SUCCESS: Final = 0x0000
#: Refused: out of resources (disk full, I/O error, database unavailable).
OUT_OF_RESOURCES: Final = 0xA700
#: Error: data set does not match SOP class.
DATASET_DOES_NOT_MATCH_SOP_CLASS: Final = 0xA900
#: Error: cannot understand (unparseable data set, missing or malformed UIDs).
CANNOT_UNDERSTAND: Final = 0xC210
#: pynetdicom's status when a handler raises; the node's handlers never do.
PROCESSING_FAILURE: Final = 0xC211

NAMES: Final[dict[int, str]] = {
    SUCCESS: "Success",
    OUT_OF_RESOURCES: "Refused: Out of Resources",
    DATASET_DOES_NOT_MATCH_SOP_CLASS: "Error: Data Set Does Not Match SOP Class",
    CANNOT_UNDERSTAND: "Error: Cannot Understand",
    PROCESSING_FAILURE: "Error: Processing Failure",
}


def is_transient(status: int) -> bool:
    """True for statuses where a later retry may succeed (0xA7xx out of resources)."""
    return 0xA700 <= status <= 0xA7FF


def is_permanent_failure(status: int) -> bool:
    """True for refusals a retry cannot fix (0xA9xx, 0xCxxx)."""
    return 0xA900 <= status <= 0xA9FF or 0xC000 <= status <= 0xCFFF
