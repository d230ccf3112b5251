"""A soft time limit for a stage's work that holds in every Celery pool.

Celery enforces a task's ``soft_time_limit`` only in the prefork pool; the worker runs
``--pool=solo`` (GPU hosts) or ``--pool=threads``, where the option is ignored. So the
stages wrap their work in :func:`soft_time_limit`: a timer raises Celery's own
``SoftTimeLimitExceeded`` in the thread doing the work (``PyThreadState_SetAsyncExc``),
and the stage records it as ``FAILED(stage)``. Like Celery's, the limit is soft: the
exception arrives at the next Python instruction, so a single long call into C (one
torch forward pass, one blocking read) finishes first. There is no hard limit in these
pools; a wedged worker is left to the sweep (``REQUEUE_AFTER``).
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from celery.exceptions import SoftTimeLimitExceeded

log = logging.getLogger(__name__)


def _raise_in(thread_id: int, exc: type[BaseException] | None) -> None:
    """Schedule ``exc`` in the thread (None: withdraw one not yet raised)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id),
                                               ctypes.py_object(exc) if exc is not None else None)


#: After the limit, the exception is raised again this often until the block ends: code
#: that catches every exception (a reader that degrades one series) cannot swallow it for good.
REPEAT_SECONDS = 1.0


@contextmanager
def soft_time_limit(seconds: float | None) -> Iterator[None]:
    """Raise ``SoftTimeLimitExceeded`` in this thread when the block runs past ``seconds``,
    and again every :data:`REPEAT_SECONDS` until it ends (no limit for None or 0)."""
    if not seconds:
        yield
        return
    target = threading.get_ident()
    lock = threading.Lock()
    stop = threading.Event()
    state = {"open": True, "fired": False}

    def watch() -> None:
        wait = float(seconds)
        while not stop.wait(wait):
            with lock:
                if not state["open"]:
                    return
                if not state["fired"]:
                    log.warning("soft time limit of %.0f s reached: interrupting the task", seconds)
                state["fired"] = True
                _raise_in(target, SoftTimeLimitExceeded)
            wait = REPEAT_SECONDS

    watcher = threading.Thread(target=watch, name="soft-time-limit", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        with lock:
            state["open"] = False
        stop.set()
        if state["fired"]:
            _raise_in(target, None)  # one raised but not yet arrived: withdrawn
