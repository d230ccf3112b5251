"""Receiver counters: the interface (:class:`ReceiverCounters`) and the shared-memory kind.

:class:`scp_node.scp.ScpCounters` counts in one process; :class:`SharedScpCounters`
is backed by one shared-memory array so the node's ``/metrics`` counts what every
receiver process stored (``SCP_PROCESSES`` > 1). Both satisfy
:class:`ReceiverCounters`. Status codes and refusal reasons of the shared kind are a
fixed set; anything else is counted under "other".
"""

from __future__ import annotations

import multiprocessing
from typing import Any, ClassVar, Protocol, runtime_checkable

from spinenode.core import status

STATUSES = (status.OUT_OF_RESOURCES, status.DATASET_DOES_NOT_MATCH_SOP_CLASS, status.CANNOT_UNDERSTAND,
            status.PROCESSING_FAILURE)
REASONS = ("called_ae", "calling_ae", "disk_low", "acse", "busy", "per_address", "reserved", "pdu_too_large",
           "other")
_INSTANCES, _BYTES, _ASSOCIATIONS, _OWN_RESULTS = 0, 1, 2, 3
_FIRST_STATUS = 4
_FIRST_REASON = _FIRST_STATUS + len(STATUSES) + 1  # +1: "other" status


@runtime_checkable
class ReceiverCounters(Protocol):
    """What the C-STORE and association handlers count and ``/metrics`` reads."""

    #: True when the counts live in shared memory, so receiver worker processes
    #: (``scp_node.scp_pool``) can be handed the object and add to it.
    shared_across_processes: ClassVar[bool]
    #: Accepted associations; handlers add to it under :attr:`lock`.
    associations: int

    @property
    def lock(self) -> Any: ...

    @property
    def instances(self) -> int: ...

    @property
    def bytes(self) -> int: ...

    @property
    def own_results(self) -> int: ...

    @property
    def failures(self) -> dict[int, int]: ...

    @property
    def rejected(self) -> dict[str, int]: ...

    def stored(self, nbytes: int) -> None: ...

    def own_result(self) -> None: ...

    def failed(self, code: int) -> None: ...

    def reject(self, reason: str) -> None: ...


class SharedScpCounters:
    """Counters in shared memory; pass the object to spawned processes as an argument."""

    shared_across_processes: ClassVar[bool] = True

    def __init__(self, ctx: Any = None) -> None:
        ctx = ctx or multiprocessing.get_context("spawn")
        self._values = ctx.Array("q", _FIRST_REASON + len(REASONS))

    @property
    def lock(self) -> Any:
        return self._values.get_lock()

    def _add(self, index: int, n: int = 1) -> None:
        with self.lock:
            self._values[index] += n

    @property
    def instances(self) -> int:
        return int(self._values[_INSTANCES])

    @property
    def bytes(self) -> int:
        return int(self._values[_BYTES])

    @property
    def associations(self) -> int:
        return int(self._values[_ASSOCIATIONS])

    @associations.setter
    def associations(self, value: int) -> None:  # ``counters.associations += 1`` under the lock
        self._values[_ASSOCIATIONS] = value

    @property
    def own_results(self) -> int:
        return int(self._values[_OWN_RESULTS])

    @property
    def failures(self) -> dict[int, int]:
        out = {code: int(self._values[_FIRST_STATUS + i]) for i, code in enumerate(STATUSES)}
        out[-1] = int(self._values[_FIRST_STATUS + len(STATUSES)])
        return {k: v for k, v in out.items() if v}

    @property
    def rejected(self) -> dict[str, int]:
        out = {r: int(self._values[_FIRST_REASON + i]) for i, r in enumerate(REASONS)}
        return {k: v for k, v in out.items() if v}

    def stored(self, nbytes: int) -> None:
        with self.lock:
            self._values[_INSTANCES] += 1
            self._values[_BYTES] += nbytes

    def own_result(self) -> None:
        self._add(_OWN_RESULTS)

    def failed(self, code: int) -> None:
        i = STATUSES.index(code) if code in STATUSES else len(STATUSES)
        self._add(_FIRST_STATUS + i)

    def reject(self, reason: str) -> None:
        i = REASONS.index(reason) if reason in REASONS else REASONS.index("other")
        self._add(_FIRST_REASON + i)
