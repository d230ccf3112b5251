"""The study repository: conditional state UPDATEs that the stages run on a study.

A stage claims its study with one atomic ``UPDATE ... WHERE state = ... AND generation = ...``,
so a second delivery of the same task, or a study reopened by new instances, loses the race
instead of running the stage twice.
"""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import update

from spinenode.core.db.models import Study, StudyState, utcnow
from spinenode.core.db.session import Database
from spinenode.core.states import record_event, require_legal

log = logging.getLogger(__name__)


def claim(db: Database, study_uid: str, generation: int, *, from_state: StudyState, to_state: StudyState,
          stage: str, now: dt.datetime | None = None) -> bool:
    """Atomically move a study from ``from_state`` to ``to_state`` for this generation.

    Returns False when another delivery already took it or new instances reopened it.
    Raises IllegalTransitionError for a move the state machine does not allow.
    """
    require_legal(study_uid, from_state, to_state)
    now = now or utcnow()
    with db.session() as s:
        claimed = s.execute(
            update(Study)
            .where(Study.study_uid == study_uid, Study.state == from_state, Study.generation == generation)
            .values(state=to_state, state_changed_at=now, reason=None)
            .returning(Study.id)
        ).scalar_one_or_none()
        if claimed is None:
            return False
        study = s.get(Study, claimed)
        assert study is not None
        record_event(s, study, state=to_state, stage=stage, now=now)
    log.info("study %s: %s -> %s (%s)", study_uid, from_state, to_state, stage)
    return True
