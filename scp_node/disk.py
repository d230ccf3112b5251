"""Disk safety: refuse new associations while free space in DATA_DIR is under a watermark."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

#: Seconds a free-space reading is reused (one statvfs per association at most this often).
CACHE_SECONDS = 1.0


class DiskGuard:
    """Admission check for the receiver: a reason to refuse, or None.

    Logs once when serving stops and once when it resumes; the receiver counts the
    refusals under the reason ``disk_low``.
    """

    def __init__(self, path: Path, min_free_bytes: int) -> None:
        self.path = path
        self.min_free_bytes = min_free_bytes
        self._lock = threading.Lock()
        self._checked = 0.0
        self._free = -1
        self._low = False

    def __getstate__(self) -> dict[str, object]:  # sent to SCP worker processes
        return {"path": self.path, "min_free_bytes": self.min_free_bytes}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__init__(state["path"], state["min_free_bytes"])  # type: ignore[misc, arg-type]

    def free_bytes(self) -> int:
        with self._lock:
            now = time.monotonic()
            if now - self._checked >= CACHE_SECONDS or self._free < 0:
                self._free = shutil.disk_usage(self.path).free
                self._checked = now
            return self._free

    def __call__(self) -> str | None:
        free = self.free_bytes()
        low = free < self.min_free_bytes
        if low != self._low:
            self._low = low
            if low:
                log.error("free disk %d MB under the watermark %d MB: refusing new associations",
                          free // 2**20, self.min_free_bytes // 2**20)
            else:
                log.warning("free disk %d MB above the watermark again: accepting associations",
                            free // 2**20)
        return "disk_low" if low else None
