"""Celery tasks: thin, named, idempotent. Take a study id, refetch state, call the stage
(workers/analyze.py, encode.py, export_stage.py).

Time limits: each stage stops its own work after ``TASK_SOFT_TIME_LIMIT`` in any pool
(workers/timelimit.py) and records ``FAILED(stage)``. The tasks also carry Celery's
``soft_time_limit``, :data:`CELERY_LIMIT_MARGIN` later: Celery enforces it only in the
prefork pool, where it is a backstop should the stage's own limit not be reached.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from typing import TYPE_CHECKING

from spinenode.core.broker import TASK_ANALYZE, TASK_ENCODE, TASK_EXPORT, TaskSender

if TYPE_CHECKING:
    from workers.resources import WorkerApp

log = logging.getLogger(__name__)

#: Seconds after TASK_SOFT_TIME_LIMIT at which Celery's own soft limit (prefork only) fires.
CELERY_LIMIT_MARGIN = 10.0


def celery_soft_time_limit(stage_limit: float) -> float | None:
    """The tasks' Celery ``soft_time_limit`` for a TASK_SOFT_TIME_LIMIT (None: no limit)."""
    return stage_limit + CELERY_LIMIT_MARGIN if stage_limit else None


def register_tasks(app: WorkerApp) -> None:
    from workers.analyze import analyze_study
    from workers.encode import encode_study
    from workers.export_stage import export_study
    from workers.resources import StageTask
    from workers.stage import StageContext

    def run(task: StageTask, stage: Callable[[StageContext, str, int], None], study_uid: str,
            generation: int) -> None:
        from workers.heartbeat import set_current_studies

        res = task.resources

        def working_on(uids: Sequence[str]) -> None:
            set_current_studies(res.db, res.hostname, uids)

        working_on([study_uid])
        try:
            stage(StageContext(res.settings, res.db, res.spool, TaskSender(app), res.analyzers, working_on),
                  study_uid, generation)
        finally:
            working_on([])

    limit = celery_soft_time_limit(app.settings.task_soft_time_limit)

    @app.task(name=TASK_ANALYZE, bind=True, base=StageTask, acks_late=True, reject_on_worker_lost=True,
              soft_time_limit=limit)
    def analyze(self: StageTask, study_uid: str, generation: int) -> None:
        run(self, analyze_study, study_uid, generation)

    @app.task(name=TASK_ENCODE, bind=True, base=StageTask, acks_late=True, reject_on_worker_lost=True,
              soft_time_limit=limit)
    def encode(self: StageTask, study_uid: str, generation: int) -> None:
        run(self, encode_study, study_uid, generation)

    @app.task(name=TASK_EXPORT, bind=True, base=StageTask, acks_late=True, reject_on_worker_lost=True,
              soft_time_limit=limit)
    def export(self: StageTask, study_uid: str, generation: int) -> None:
        run(self, export_study, study_uid, generation)
