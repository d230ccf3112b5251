"""What ``spinenode status`` and ``GET /api/queue`` show: states, queues, workers."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select

from spinenode.core.db.models import Study, StudyState, WorkerHeartbeat, utcnow
from spinenode.core.db.session import Database
from spinenode.core.settings import Settings

#: A worker not seen for this long is listed as offline.
WORKER_STALE_S = 30.0


def state_counts(db: Database) -> dict[str, int]:
    with db.session() as s:
        rows = s.execute(select(Study.state, func.count()).group_by(Study.state)).all()
    counts = {str(state): 0 for state in StudyState}
    counts.update({state: int(n) for state, n in rows})
    return counts


def workers_seen(db: Database, now: dt.datetime | None = None) -> list[dict[str, Any]]:
    now = now or utcnow()
    with db.session() as s:
        rows = s.scalars(select(WorkerHeartbeat).order_by(WorkerHeartbeat.hostname)).all()
        return [
            {
                "hostname": w.hostname,
                "queues": w.queues.split(","),
                "pid": w.pid,
                "device": w.device,
                "current_study": w.current_study,
                "current_studies": w.studies(),
                "last_seen": w.last_seen.isoformat(),
                "online": (now - w.last_seen).total_seconds() < WORKER_STALE_S,
            }
            for w in rows
        ]


def summary(db: Database, depths: dict[str, int | None]) -> dict[str, Any]:
    return {"states": state_counts(db), "queues": depths, "workers": workers_seen(db)}


def queue_summary(settings: Settings) -> dict[str, Any]:
    from spinenode.core.broker import make_celery, queue_depths

    db = Database(settings.database_url)
    try:
        db.migrate(settings.data_dir)
        return summary(db, queue_depths(make_celery(settings)))
    finally:
        db.dispose()


def render_summary(data: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    states = Table(title="studies")
    states.add_column("state")
    states.add_column("count", justify="right")
    for state, n in data["states"].items():
        states.add_row(state, str(n))
    console.print(states)
    queues = Table(title="queues")
    queues.add_column("queue")
    queues.add_column("waiting", justify="right")
    for q, n in data["queues"].items():
        queues.add_row(q, "?" if n is None else str(n))
    console.print(queues)
    workers = Table(title="workers")
    for col in ("hostname", "queues", "online", "current study", "last seen"):
        workers.add_column(col)
    for w in data["workers"]:
        workers.add_row(w["hostname"], ",".join(w["queues"]), "yes" if w["online"] else "NO",
                        " ".join(w["current_studies"]), w["last_seen"])
    console.print(workers)
