"""Celery tasks: thin, named, idempotent. Take a study id, refetch state, call the pipeline."""

from __future__ import annotations

import logging

from celery import Celery

from scp_node.broker import TASK_ANALYZE

log = logging.getLogger(__name__)


def register_tasks(app: Celery) -> None:
    @app.task(name=TASK_ANALYZE, bind=True, acks_late=True, reject_on_worker_lost=True)
    def analyze(self, study_uid: str, generation: int) -> None:  # type: ignore[no-untyped-def]
        from workers.heartbeat import set_current_study
        from workers.pipeline import analyze_study

        ctx = self.app.spinenode
        set_current_study(ctx.db, ctx.hostname, study_uid)
        try:
            analyze_study(ctx.db, ctx.spool, ctx.settings, study_uid, generation)
        finally:
            set_current_study(ctx.db, ctx.hostname, None)
