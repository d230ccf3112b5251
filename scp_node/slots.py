"""Association slots shared fairly between calling addresses.

A flood of idle associations from one address must not lock other senders out
(issue 16: 50 idle associations took all 16 slots for about 50 s). Three rules,
checked when an A-ASSOCIATE-RQ arrives, before negotiation:

1. at most ``max_associations`` associations in all (``busy``);
2. at most ``max_associations_per_address`` from one IP address (``per_address``);
3. the last ``reserved_associations`` free slots go only to an address that holds
   none yet (``reserved``), so a new sender always finds room while one or a few
   addresses hold the rest.

The idle timeout (``NETWORK_TIMEOUT``) then frees what a flood holds. Limits apply per
receiver process (with ``SCP_PROCESSES`` > 1, per worker process). Pure bookkeeping:
the caller sends the A-ASSOCIATE-RJ, logs and counts.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any


class AssociationSlots:
    """Which associations hold a slot, by calling address; thread-safe."""

    def __init__(self, total: int, per_address: int, reserved: int) -> None:
        self.total = total
        self.per_address = per_address or total
        self.reserved = min(reserved, max(0, total - 1))
        self._lock = threading.Lock()
        # association (a pynetdicom Thread) -> address; gone once the thread object is
        self._held: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()

    def _live(self) -> list[str]:
        return [addr for assoc, addr in list(self._held.items()) if _alive(assoc)]

    def admit(self, assoc: Any, address: str) -> str | None:
        """Take a slot for ``assoc`` from ``address``; returns the refusal reason or None."""
        with self._lock:
            live = self._live()
            mine = live.count(address)
            free = self.total - len(live)
            if free <= 0:
                return "busy"
            if mine >= self.per_address:
                return "per_address"
            if mine > 0 and free <= self.reserved:
                return "reserved"
            self._held[assoc] = address
            return None

    def release(self, assoc: Any) -> None:
        with self._lock:
            self._held.pop(assoc, None)

    def held(self) -> dict[str, int]:
        """Slots held per address (for logs and tests)."""
        with self._lock:
            out: dict[str, int] = {}
            for addr in self._live():
                out[addr] = out.get(addr, 0) + 1
            return out


def _alive(assoc: Any) -> bool:
    is_alive = getattr(assoc, "is_alive", None)
    return bool(is_alive()) if callable(is_alive) else True
