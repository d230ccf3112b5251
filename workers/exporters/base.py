"""What every exporter takes and gives: the objects for one destination, one outcome each."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from spinenode.core.settings import Settings


@dataclass(frozen=True, slots=True)
class ObjectToSend:
    export_id: int
    path: Path
    sop_class_uid: str
    sop_instance_uid: str


@dataclass(frozen=True, slots=True)
class SendOutcome:
    export_id: int
    ok: bool
    transient: bool
    status: int | None
    error: str | None
    #: The destination did not accept a presentation context for this SOP class.
    context_refused: bool = False


class Exporter(Protocol):
    """Sends result objects to one destination; one outcome per object, never raises."""

    def send(self, destination: str, objects: Sequence[ObjectToSend], settings: Settings,
             calling_ae: str) -> list[SendOutcome]: ...
