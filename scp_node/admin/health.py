"""``GET /api/health``: what a load balancer or an admin needs to know, checked for real.

* database: a row is inserted and rolled back (``SELECT 1`` passes on a database
  that refuses every write: read-only, out of space, locked);
* disk: free space in ``DATA_DIR`` against ``DISK_MIN_FREE_MB`` (the receiver refuses
  associations below it), and a small file written, synced and removed there;
* broker: the queue depths can be read;
* workers: how many sent a heartbeat recently.

Unhealthy (HTTP 503) when the database, the disk or the broker fails; no worker online
is reported as ``degraded`` with HTTP 200, since workers on other hosts may start after
the node and the work waits safely in the queue meanwhile.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from spinenode.core.db.models import WorkerHeartbeat
from spinenode.core.db.session import Database
from scp_node.queue_status import workers_seen
from spinenode.core.settings import Settings

log = logging.getLogger(__name__)

PROBE_FILE = ".health-probe"


def database_writable(db: Database) -> bool:
    session = db.read_session()
    try:
        session.execute(insert(WorkerHeartbeat).values(hostname=f"health-probe-{uuid.uuid4().hex}", queues="",
                                                        pid=0))
        session.flush()
        return True
    except Exception as exc:
        log.warning("health: the database refuses a write (%s)", type(exc).__name__)
        return False
    finally:
        try:
            session.rollback()
            session.close()
        except Exception as exc:  # a dead connection: the write already failed above
            log.debug("health: closing the probe session failed (%s)", type(exc).__name__)


def disk_state(data_dir: Path, min_free_bytes: int) -> tuple[str, int]:
    """("ok" | "low" | "not writable", free bytes)."""
    try:
        free = shutil.disk_usage(data_dir).free
        probe = data_dir / PROBE_FILE
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"ok\n" * 1366)  # one 4 KiB page: a full disk refuses it
            os.fsync(fd)
        finally:
            os.close(fd)
            probe.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("health: DATA_DIR is not writable (%s)", exc.strerror or type(exc).__name__)
        return "not writable", 0
    return ("ok" if free >= min_free_bytes else "low"), free


def health_report(settings: Settings, db: Database, depths: Callable[[], dict[str, int | None]]) -> dict[str, Any]:
    problems: list[str] = []
    db_ok = database_writable(db)
    if not db_ok:
        problems.append("database not writable")
    disk, free = disk_state(settings.data_dir, int(settings.disk_min_free_mb * 2**20))
    if disk != "ok":
        problems.append(f"disk {disk}")
    try:
        broker_ok = any(n is not None for n in depths().values())
    except Exception as exc:
        log.warning("health: broker check failed (%s)", type(exc).__name__)
        broker_ok = False
    if not broker_ok:
        problems.append("broker unreachable")
    try:
        online = sum(1 for w in workers_seen(db) if w["online"])
    except Exception:
        online = 0
    status = "unhealthy" if problems else ("degraded" if online == 0 else "ok")
    return {
        "status": status,
        "problems": problems + (["no worker online"] if online == 0 else []),
        "database": "ok" if db_ok else "not writable",
        "disk": {"state": disk, "free_mb": free // 2**20, "min_free_mb": int(settings.disk_min_free_mb)},
        "broker": "ok" if broker_ok else "unreachable",
        "workers_online": online,
    }
