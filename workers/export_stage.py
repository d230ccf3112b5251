"""The export stage (queue export): EXPORTING -> DONE or FAILED(export).

Due ``exports`` rows are claimed one by one (``PENDING -> SENDING``), sent by the exporter
of their destination's scheme (``workers/export.py``, ``workers/exporters/``), and settled through the study
repository; while a retry is due later the task sends itself again with a countdown.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict

from celery.exceptions import SoftTimeLimitExceeded

from spinenode.core import repository
from spinenode.core.enums import Stage, StudyState
from spinenode.core.errors import SpinenodeError
from workers.export import ObjectToSend, SendOutcome, exporter_for, next_attempt
from workers.stage import StageContext, over_time
from workers.timelimit import soft_time_limit

log = logging.getLogger(__name__)


def export_study(ctx: StageContext, study_uid: str, generation: int, calling_ae: str | None = None) -> None:
    """Send every due export of the study; DONE when all are confirmed."""
    study = repository.fetch(ctx.db, study_uid)
    if study is None or not study.is_at(StudyState.EXPORTING, generation):
        log.info("study %s generation %d: not EXPORTING, delivery dropped", study_uid, generation)
        return
    now = dt.datetime.now(dt.UTC)
    due = repository.due_exports(ctx.db, study.id, now)
    claimed: dict[str, list[ObjectToSend]] = defaultdict(list)
    unavailable: list[SendOutcome] = []
    taken: list[int] = []
    try:
        with ctx.spool.study(study_uid), soft_time_limit(ctx.settings.task_soft_time_limit):
            for row in due:
                if not repository.claim_export(ctx.db, row.export_id, now):
                    continue
                taken.append(row.export_id)
                try:
                    path = ctx.spool.result_path(study_uid, row.series_instance_uid, row.path)
                except SpinenodeError as exc:  # gone for good, or the node is unreachable (transient)
                    unavailable.append(SendOutcome(row.export_id, False, exc.transient, None, str(exc)))
                    continue
                claimed[row.destination].append(ObjectToSend(row.export_id, path, row.sop_class_uid,
                                                             row.sop_instance_uid))
            _record(ctx, unavailable)
            for dest, objects in claimed.items():
                _record(ctx, exporter_for(dest).send(dest, objects, ctx.settings, calling_ae or ctx.settings.ae_title))
    except SoftTimeLimitExceeded:
        # what this task claimed and did not settle fails; a retry of FAILED(export) sends it again
        repository.fail_exports(ctx.db, taken, over_time(ctx, Stage.EXPORT))
    retry_in = repository.settle_exports(ctx.db, study_uid, generation)
    if retry_in is not None:
        ctx.send("export", study_uid, generation, retry_in)


def _record(ctx: StageContext, outcomes: list[SendOutcome]) -> None:
    st = ctx.settings
    repository.record_export_outcomes(
        ctx.db, outcomes, max_attempts=st.export_max_attempts,
        retry_at=lambda now, attempts: next_attempt(now, attempts, st.export_retry_base, st.export_retry_max))
