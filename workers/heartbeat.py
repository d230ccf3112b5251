"""Worker liveness in the database (works with every broker, including the embedded one)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence

from sqlalchemy import delete, update
from sqlalchemy.exc import SQLAlchemyError

from spinenode.core.db.models import WorkerHeartbeat, utcnow
from spinenode.core.db.session import Database

log = logging.getLogger(__name__)


class Heartbeat:
    def __init__(self, db: Database, hostname: str, queues: list[str], device: str) -> None:
        self.db = db
        self.hostname = hostname
        self.queues = ",".join(queues)
        self.device = device

    def beat(self) -> None:
        now = utcnow()
        with self.db.session() as s:
            row = s.get(WorkerHeartbeat, self.hostname)
            if row is None:
                s.add(WorkerHeartbeat(
                    hostname=self.hostname, queues=self.queues, pid=os.getpid(), device=self.device,
                    started_at=now, last_seen=now,
                ))
            else:
                row.last_seen = now
                row.pid = os.getpid()

    def run(self, stop: threading.Event, interval: float) -> None:
        while not stop.is_set():
            try:
                self.beat()
            except SQLAlchemyError as exc:
                log.warning("heartbeat not written: %s", type(exc).__name__)
            stop.wait(interval)

    def remove(self) -> None:
        try:
            with self.db.session() as s:
                s.execute(delete(WorkerHeartbeat).where(WorkerHeartbeat.hostname == self.hostname))
        except SQLAlchemyError:
            pass


def set_current_studies(db: Database, hostname: str, study_uids: Sequence[str]) -> None:
    """Name the studies this worker is working on in its heartbeat row (none: idle).

    An analysis batch names every study it claimed: the node's sweep leaves a study alone
    while a live worker names it (``scp_node/scheduler.py``)."""
    uids = [u for u in study_uids if u]
    try:
        with db.session() as s:
            s.execute(
                update(WorkerHeartbeat)
                .where(WorkerHeartbeat.hostname == hostname)
                .values(current_study=uids[0] if uids else None,
                        current_studies=" ".join(uids) if uids else None, last_seen=utcnow())
            )
    except SQLAlchemyError as exc:
        log.warning("current studies not recorded: %s", type(exc).__name__)

