"""The study state machine: the one table of legal moves, and the moves themselves.

Every change of ``studies.state`` goes through :func:`transition` (or, for the
atomic claim of a stage, :func:`spinenode.core.repository.claim`, which checks the same
table) and is a row in ``events`` with a timestamp. A move that is not in
:data:`LEGAL_TRANSITIONS` raises :class:`~spinenode.core.errors.IllegalTransitionError`
and changes nothing. ``docs/architecture.md`` shows the table; a test holds the
two together.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from types import MappingProxyType

from sqlalchemy.orm import Session

from spinenode.core.db.models import Event, Study, utcnow
from spinenode.core.enums import Stage, StudyState
from spinenode.core.errors import IllegalTransitionError

log = logging.getLogger(__name__)

S = StudyState

#: States from which an admin retry starts the study over at analysis (QUEUED).
_RETRY_FROM = (S.COMPLETE, S.QUEUED, S.ANALYZING, S.ENCODING, S.EXPORTING, S.DONE, S.SKIPPED, S.FAILED)


def _table() -> dict[tuple[StudyState, StudyState], str]:
    moves: dict[tuple[StudyState, StudyState], str] = {
        (S.RECEIVING, S.COMPLETE): "scheduler: no new instance for STABLE_SECONDS",
        (S.COMPLETE, S.QUEUED): "scheduler: eligible (routing rules), enqueued for analysis",
        (S.COMPLETE, S.SKIPPED): "scheduler: not eligible; the reason is kept",
        (S.QUEUED, S.ANALYZING): "analyze stage claims the study (repository.claim)",
        (S.ANALYZING, S.ENCODING): "analyze: findings stored, or the reason it was not analysed",
        (S.ANALYZING, S.FAILED): "analyze failed (FAILED(analyze))",
        (S.ANALYZING, S.QUEUED): "sweep: ANALYZING for over REQUEUE_AFTER (worker died); the worker could not "
                                 "reach the node (retried by the sweep); or admin retry",
        (S.ENCODING, S.EXPORTING): "encode: results written, one export row per destination",
        (S.ENCODING, S.DONE): "encode: results written, no DESTINATIONS configured",
        (S.ENCODING, S.FAILED): "encode failed (FAILED(encode))",
        (S.EXPORTING, S.DONE): "export: every object confirmed by every destination (or key-image fallback)",
        (S.EXPORTING, S.FAILED): "export: a destination failed for good (FAILED(export))",
        (S.FAILED, S.EXPORTING): "admin retry of FAILED(export): only the failed exports are sent again",
        (S.FAILED, S.ENCODING): "admin retry of FAILED(encode): the results are encoded again",
        # Two associations reopening one study at once (PostgreSQL, read committed):
        # the second sees RECEIVING and reopens it again.
        (S.RECEIVING, S.RECEIVING): "ingest: a concurrent reopen (generation + 1)",
    }
    for source in _RETRY_FROM:
        moves.setdefault((source, S.QUEUED), "admin retry: start over at analysis")
    for source in StudyState:
        moves.setdefault((source, S.RECEIVING), "ingest: a new instance reopens the study (generation + 1)")
    return moves


#: (from, to) -> who makes the move and why. Every other pair is refused.
LEGAL_TRANSITIONS: Mapping[tuple[StudyState, StudyState], str] = MappingProxyType(_table())


def is_legal(source: StudyState | str, target: StudyState | str) -> bool:
    """Is ``source -> target`` in :data:`LEGAL_TRANSITIONS`? (Unknown names are not.)"""
    try:
        return (StudyState(source), StudyState(target)) in LEGAL_TRANSITIONS
    except ValueError:
        return False


def require_legal(study_uid: str, source: StudyState | str, target: StudyState | str) -> None:
    """Raise :class:`IllegalTransitionError` unless ``source -> target`` is legal."""
    if not is_legal(source, target):
        raise IllegalTransitionError(study_uid, str(source), str(target))


def record_event(
    session: Session,
    study: Study,
    *,
    state: StudyState | str | None = None,
    stage: Stage | str | None = None,
    detail: str | None = None,
    now: dt.datetime | None = None,
) -> None:
    """Append an event without changing the state (e.g. 'series classified')."""
    session.add(
        Event(
            study_id=study.id,
            at=now or utcnow(),
            state=StudyState(state or study.state),
            stage=Stage(stage) if stage is not None else None,
            generation=study.generation,
            detail=detail,
        )
    )


def transition(
    session: Session,
    study: Study,
    state: StudyState,
    *,
    stage: Stage | str | None = None,
    detail: str | None = None,
    now: dt.datetime | None = None,
) -> None:
    """Move ``study`` to ``state`` and record the event (in the caller's transaction).

    Raises :class:`IllegalTransitionError` (and changes nothing) when the move is not
    in :data:`LEGAL_TRANSITIONS`, or when ``FAILED`` comes without ``stage``. ``SKIPPED``
    and ``FAILED`` keep ``detail`` as the reason shown to admins. Logs carry the Study
    Instance UID and states only.
    """
    previous = study.state
    require_legal(study.study_uid, previous, state)
    if state == StudyState.FAILED and stage is None:
        raise IllegalTransitionError(study.study_uid, str(previous), "FAILED without a stage")
    stage = Stage(stage) if stage is not None else None
    now = now or utcnow()
    study.state = state
    study.state_changed_at = now
    if state == StudyState.FAILED:
        study.failed_stage = stage
        study.reason = detail
    elif state == StudyState.SKIPPED:
        study.failed_stage = None
        study.reason = detail
    else:
        study.failed_stage = None
        study.reason = None
    record_event(session, study, state=state, stage=stage, detail=detail, now=now)
    log.info(
        "study %s: %s -> %s%s", study.study_uid, previous, state, f" ({stage})" if stage else ""
    )
