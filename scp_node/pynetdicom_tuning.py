"""Shorter polling sleeps inside pynetdicom's association and DUL reactors.

pynetdicom 3.0 runs two polling threads per association: the DUL reactor sleeps
``DULServiceProvider._run_loop_delay`` (1 ms) whenever it finds nothing to do, and
the acceptor's ``Association._run_reactor`` sleeps a hard-coded ``time.sleep(0.001)``
on every loop. A C-STORE crosses both loops several times, so these sleeps add about
1.3 ms of latency to every instance, which caps one association near 150 images/s
however fast the handler is (docs/performance.md, "Ingest").

:func:`apply` caps both sleeps at :data:`POLL_INTERVAL` (200 us): the DUL delay is set
on every new ``DULServiceProvider``, and ``pynetdicom.association`` gets a ``time``
proxy whose ``sleep(0.001)`` sleeps the cap instead (every other call goes to the
real :mod:`time`). The price is idle CPU while an association is open: each of its two
threads wakes about 5,000 times a second instead of 1,000. Nothing changes when no
association is open.

This touches private attributes, so it runs only on the pynetdicom versions it was
checked against (:data:`CHECKED_VERSIONS`) and only if the internals still look as
expected; otherwise it logs a warning and leaves pynetdicom as it is (slower, still
correct). Re-check the two sleeps in ``association.py`` and ``dul.py`` on upgrades.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

log = logging.getLogger(__name__)

#: Upper bound, in seconds, of one reactor polling sleep once applied.
POLL_INTERVAL = 0.0002
#: pynetdicom versions (major.minor prefixes) whose internals this module was checked on.
CHECKED_VERSIONS = ("3.0.",)
#: The literal delay of ``Association._run_reactor`` in the checked versions.
_ASSOCIATION_REACTOR_SLEEP = 0.001

_applied = False


class _CappedSleepTime:
    """Stands in for :mod:`time` in ``pynetdicom.association``.

    Only the reactor's 1 ms sleep is shortened; longer and shorter sleeps (e.g. the
    0.1 s after a kill, the 0.1 ms waits in the SCU send loops) are passed through.
    """

    def __init__(self, interval: float) -> None:
        self._interval = interval

    def sleep(self, seconds: float) -> None:
        time.sleep(self._interval if seconds == _ASSOCIATION_REACTOR_SLEEP else seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def apply(interval: float = POLL_INTERVAL) -> bool:
    """Cap pynetdicom's reactor polling sleeps at ``interval`` seconds (once per process).

    Returns True if the tuning is in effect, False if this pynetdicom version or its
    internals are not the ones this module knows (a warning is logged).
    """
    global _applied
    if _applied:
        return True
    import pynetdicom
    from pynetdicom import association, dul

    version = str(getattr(pynetdicom, "__version__", "?"))
    if not version.startswith(CHECKED_VERSIONS):
        log.warning("pynetdicom %s is not a checked version (%s): reactor polling left at 1 ms",
                    version, ", ".join(v + "x" for v in CHECKED_VERSIONS))
        return False
    known = getattr(association, "time", None) is time and hasattr(dul.DULServiceProvider, "run_reactor")
    if not known:
        log.warning("pynetdicom %s internals differ from the checked ones: "
                    "reactor polling left at 1 ms", version)
        return False

    original_init = dul.DULServiceProvider.__init__

    @functools.wraps(original_init)
    def init_with_short_delay(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        if getattr(self, "_run_loop_delay", None) is not None:
            self._run_loop_delay = min(self._run_loop_delay, interval)

    dul.DULServiceProvider.__init__ = init_with_short_delay  # type: ignore[method-assign]
    association.time = _CappedSleepTime(interval)  # type: ignore[assignment]
    _applied = True
    log.debug("pynetdicom %s: reactor polling capped at %.0f us", version, interval * 1e6)
    return True
