"""What the three stages share: their context, and how a stage's failure is recorded.

Each stage (``workers/analyze.py``, ``encode.py``, ``export_stage.py``) takes
``(study_uid, generation)``, refetches the study through the study repository
(``spinenode/core/repository.py``, which holds all their SQL), acts only if the study
is still in the stage's state for that generation, settles, and then enqueues the next
stage. Running a stage twice is harmless: result UIDs are deterministic and exports are
claimed row by row.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from celery.exceptions import SoftTimeLimitExceeded

from spinenode.core import repository
from spinenode.core.broker import TaskSender
from spinenode.core.db.session import Database
from spinenode.core.enums import Stage
from spinenode.core.errors import NodeUnreachableError, SpinenodeError
from spinenode.core.logs import log_failure
from spinenode.core.settings import Settings
from workers.analysis import AnalyzerCache
from workers.spool import SpoolAccess
from workers.timelimit import soft_time_limit

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Times a stage of one generation may find the node unreachable and leave the study to
#: the sweep; the next time the stage fails.
NODE_UNREACHABLE_LIMIT = 5
#: How the log names a stage's work.
_WORK = {Stage.ANALYZE: "analysis", Stage.ENCODE: "encoding", Stage.EXPORT: "export"}


@dataclass
class StageContext:
    settings: Settings
    db: Database
    #: The node's files as this host can read them (DATA_DIR, or fetched from NODE_URL).
    spool: SpoolAccess
    send: TaskSender
    #: The worker process's loaded analyzers (its resources'; a fresh cache by default).
    analyzers: AnalyzerCache = field(default_factory=AnalyzerCache)
    #: Names the studies this stage is working on in the worker's heartbeat (an analysis
    #: batch claims several); the sweep leaves them alone while the heartbeat is fresh.
    working_on: Callable[[Sequence[str]], None] = field(default=lambda uids: None)


def over_time(ctx: StageContext, stage: Stage) -> str:
    """The failure detail of a stage stopped by its soft time limit."""
    log.warning("%s stage stopped: soft time limit of %g s exceeded", stage, ctx.settings.task_soft_time_limit)
    return (f"SoftTimeLimitExceeded: the {stage} stage worked longer than TASK_SOFT_TIME_LIMIT "
            f"({ctx.settings.task_soft_time_limit:g} s) and was stopped")


def wait_for_node(ctx: StageContext, study_uid: str, generation: int, stage: Stage,
                  exc: NodeUnreachableError) -> None:
    """The node did not answer (restarting, network): leave the study in its state for
    the sweep to requeue after REQUEUE_AFTER, at most NODE_UNREACHABLE_LIMIT times per
    stage and generation, then FAILED(stage)."""
    log.warning("study %s: %s stage could not reach the node: %s", study_uid, stage, exc)
    repository.leave_for_sweep(ctx.db, study_uid, generation, stage, str(exc),
                               failure=f"{type(exc).__name__}: {exc}", limit=NODE_UNREACHABLE_LIMIT,
                               requeue_after=ctx.settings.requeue_after)


def guarded(ctx: StageContext, study_uid: str, generation: int, stage: Stage, work: Callable[[], T]) -> T | None:
    """``work()`` under the stage's soft time limit, the study's cache entries kept; None
    when it failed, the failure recorded: FAILED(stage) with the error (an unexpected
    exception by its type, its traceback in the log), or, when the node could not be
    reached, left for the sweep."""
    try:
        with ctx.spool.study(study_uid), soft_time_limit(ctx.settings.task_soft_time_limit):
            return work()
    except SoftTimeLimitExceeded:
        repository.fail(ctx.db, study_uid, generation, stage, over_time(ctx, stage))
    except NodeUnreachableError as exc:
        wait_for_node(ctx, study_uid, generation, stage, exc)
    except SpinenodeError as exc:
        log.warning("study %s: %s failed: %s", study_uid, _WORK[stage], exc)
        repository.fail(ctx.db, study_uid, generation, stage, f"{type(exc).__name__}: {exc}")
    except Exception as exc:
        log_failure(log, "study %s: %s failed unexpectedly", study_uid, _WORK[stage], exc=exc)
        repository.fail(ctx.db, study_uid, generation, stage,
                        f"unexpected {type(exc).__name__} (details in the worker log)")
    return None
