"""Deterministic identities of result objects: UIDs, series numbers, equipment.

UIDs live under ``2.25`` (UUID-derived UIDs, PS3.5 B.2): the decimal form of a
UUID computed from a SHA-256 of the parts, so the same study, inputs, model
version and object kind always give the same UID, and anything else a new one.

- the *series* UID depends on (study, model version, kind): a re-analysis of the
  same study lands in the same result series;
- the *instance* UID depends on (study, inputs, model version, kind): a re-analysis
  after new instances arrived is a new SR, which references its predecessor.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from spinenode.core.result_markers import RESULT_MANUFACTURER, RESULT_SERIES_NUMBERS
from spinenode.core.enums import ResultKind as ResultKind  # results.kind: defined with the stored enums

UID_ROOT: Final = "2.25."
MANUFACTURER: Final = RESULT_MANUFACTURER  # the receiver recognises its own results by it
DEVICE_NAME: Final = "spinenode"


#: Fixed series numbers per kind, never random (the viewer sorts by them).
SERIES_NUMBERS: Final[dict[ResultKind, int]] = {
    ResultKind.SR: 9901,
    ResultKind.NOT_ANALYSED_SR: 9901,
    ResultKind.SEG: 9902,
    ResultKind.KEY_IMAGES: 9903,
}

assert set(SERIES_NUMBERS.values()) == RESULT_SERIES_NUMBERS

SERIES_DESCRIPTIONS: Final[dict[ResultKind, str]] = {
    ResultKind.SR: "AI spine findings (PRELIMINARY)",
    ResultKind.NOT_ANALYSED_SR: "AI spine findings (PRELIMINARY)",
    ResultKind.SEG: "AI spine segmentation (PRELIMINARY)",
    ResultKind.KEY_IMAGES: "AI spine key images (PRELIMINARY)",
}


def derived_uid(*parts: str) -> str:
    """A ``2.25.<decimal UUID>`` UID from the parts (at most 64 characters)."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()
    value = uuid.UUID(bytes=digest[:16], version=5)
    uid = UID_ROOT + str(value.int)
    assert len(uid) <= 64
    return uid


def inputs_digest(sop_instance_uids: Iterable[str]) -> str:
    """Digest of the instances a result was computed from (order does not matter)."""
    h = hashlib.sha256()
    for uid in sorted(set(sop_instance_uids)):
        h.update(uid.encode("ascii"))
        h.update(b"\n")
    return h.hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class ResultIdentity:
    """Everything that names one result object."""

    study_uid: str
    kind: ResultKind
    model_name: str
    model_version: str
    inputs: str

    @property
    def series_uid(self) -> str:
        return derived_uid("series", self.study_uid, self.model_name, self.model_version, self.kind)

    @property
    def sop_instance_uid(self) -> str:
        return derived_uid("sop", self.study_uid, self.model_name, self.model_version, self.kind, self.inputs)

    @property
    def series_number(self) -> int:
        return SERIES_NUMBERS[self.kind]

    @property
    def series_description(self) -> str:
        return SERIES_DESCRIPTIONS[self.kind]

    def sub_uid(self, *parts: str) -> str:
        """Further UIDs owned by this object (tracking identifiers, device UID)."""
        return derived_uid("sub", self.sop_instance_uid, *parts)
