"""Celery tasks: thin, named, idempotent. Take a study id, refetch state, call the pipeline."""

from __future__ import annotations

import logging
from collections.abc import Callable

from celery import Celery

from spinenode.core.broker import TASK_ANALYZE, TASK_ENCODE, TASK_EXPORT, TaskSender

log = logging.getLogger(__name__)


def register_tasks(app: Celery) -> None:
    from workers.pipeline import StageContext, analyze_study, encode_study, export_study

    def context() -> StageContext:
        ctx = app.spinenode  # type: ignore[attr-defined]
        return StageContext(ctx.settings, ctx.db, ctx.spool, TaskSender(app))

    def run(stage: Callable[[StageContext, str, int], None], study_uid: str, generation: int) -> None:
        from workers.heartbeat import set_current_study

        ctx = app.spinenode  # type: ignore[attr-defined]
        set_current_study(ctx.db, ctx.hostname, study_uid)
        try:
            stage(context(), study_uid, generation)
        finally:
            set_current_study(ctx.db, ctx.hostname, None)

    @app.task(name=TASK_ANALYZE, acks_late=True, reject_on_worker_lost=True)
    def analyze(study_uid: str, generation: int) -> None:
        run(analyze_study, study_uid, generation)

    @app.task(name=TASK_ENCODE, acks_late=True, reject_on_worker_lost=True)
    def encode(study_uid: str, generation: int) -> None:
        run(encode_study, study_uid, generation)

    @app.task(name=TASK_EXPORT, acks_late=True, reject_on_worker_lost=True)
    def export(study_uid: str, generation: int) -> None:
        run(export_study, study_uid, generation)
