"""Worker liveness in the database (works with every broker, including the embedded one)."""

from __future__ import annotations

import logging
import os
import threading

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

    def beat(self, current_study: str | None = None, *, set_current: bool = False) -> None:
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
            if set_current and row is not None:
                row.current_study = current_study

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


def set_current_study(db: Database, hostname: str, study_uid: str | None) -> None:
    try:
        with db.session() as s:
            s.execute(
                update(WorkerHeartbeat)
                .where(WorkerHeartbeat.hostname == hostname)
                .values(current_study=study_uid, last_seen=utcnow())
            )
    except SQLAlchemyError as exc:
        log.warning("current study not recorded: %s", type(exc).__name__)
