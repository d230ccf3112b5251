"""Export of result objects to the configured destinations, with a retry policy.

Each destination is served by the exporter its scheme names in the registry
(``spinenode/core/destinations.py``; the exporters are in ``workers/exporters/``):
``AE@HOST:PORT[;tls]`` (no scheme) is DIMSE C-STORE, ``dicomweb+http://HOST:PORT/PATH``
and ``dicomweb+https://...`` are DICOMweb STOW-RS to ``http(s)://HOST:PORT/PATH``. An
exporter takes the objects for one destination and returns one outcome per object.

Transient failures (association refused or aborted, network errors, 0xA7xx) are
retried with exponential backoff and a cap; permanent ones (0xA9xx, 0xCxxx, a
presentation context the destination refuses) fail at once. The attempts, last
status and last error of every (object, destination) pair are in the database.
"""

from __future__ import annotations

import datetime as dt
import importlib

from spinenode.core.destinations import EXPORTERS, scheme_of
from spinenode.core.errors import ConfigError
from workers.exporters.base import Exporter, ObjectToSend, SendOutcome

__all__ = ["Exporter", "ObjectToSend", "SendOutcome", "backoff_seconds", "exporter_for", "next_attempt"]


def backoff_seconds(attempts: int, base: float, cap: float) -> float:
    """Delay before the next attempt after ``attempts`` failures: base * 2**(n-1), capped."""
    return min(cap, base * (2 ** max(0, attempts - 1)))


def next_attempt(now: dt.datetime, attempts: int, base: float, cap: float) -> dt.datetime:
    return now + dt.timedelta(seconds=backoff_seconds(attempts, base, cap))


def exporter_for(destination: str) -> Exporter:
    """The exporter registered for the destination's scheme (exporters keep no state)."""
    scheme = scheme_of(destination)
    target = EXPORTERS.get(scheme)
    if target is None:
        raise ConfigError(f"no exporter for destination scheme {scheme!r}")
    module, _, attr = target.partition(":")
    exporter: Exporter = getattr(importlib.import_module(module), attr)()
    return exporter
