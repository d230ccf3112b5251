"""Study state transitions: every change is a row in ``events`` with a timestamp."""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy.orm import Session

from scp_node.db.models import Event, Study, StudyState, utcnow

log = logging.getLogger(__name__)


def record_event(
    session: Session,
    study: Study,
    *,
    state: StudyState | str | None = None,
    stage: str | None = None,
    detail: str | None = None,
    now: dt.datetime | None = None,
) -> None:
    """Append an event without changing the state (e.g. 'series classified')."""
    session.add(
        Event(
            study_id=study.id,
            at=now or utcnow(),
            state=str(state or study.state),
            stage=stage,
            generation=study.generation,
            detail=detail,
        )
    )


def transition(
    session: Session,
    study: Study,
    state: StudyState,
    *,
    stage: str | None = None,
    detail: str | None = None,
    now: dt.datetime | None = None,
) -> None:
    """Move ``study`` to ``state`` and record the event (in the caller's transaction).

    ``FAILED`` needs ``stage``; ``SKIPPED`` and ``FAILED`` keep ``detail`` as the
    reason shown to admins. Logs carry the Study Instance UID and states only.
    """
    now = now or utcnow()
    previous = study.state
    study.state = state
    study.state_changed_at = now
    if state == StudyState.FAILED:
        study.failed_stage = stage
        study.reason = detail
    elif state == StudyState.SKIPPED:
        study.failed_stage = None
        study.reason = detail
    elif state in (StudyState.RECEIVING, StudyState.QUEUED):
        study.failed_stage = None
        study.reason = None
    record_event(session, study, state=state, stage=stage, detail=detail, now=now)
    log.info(
        "study %s: %s -> %s%s", study.study_uid, previous, state, f" ({stage})" if stage else ""
    )
