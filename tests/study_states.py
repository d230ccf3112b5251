"""Put a study into a state for a test by legal moves only (spinenode.core.states.LEGAL_TRANSITIONS).

Tests that need a study in, say, FAILED(export) used to jump there with one
``transition()``; the state machine refuses such jumps, so this walks the
shortest legal path instead (each step a real ``transition()`` with its event).
"""

from __future__ import annotations

import datetime as dt
from collections import deque

from sqlalchemy.orm import Session

from spinenode.core.db.models import Study
from spinenode.core.enums import Stage, StudyState
from spinenode.core.states import LEGAL_TRANSITIONS, transition

#: The state a stage works in: FAILED(stage) is reached from it.
STAGE_STATE = {Stage.ANALYZE: StudyState.ANALYZING, Stage.ENCODE: StudyState.ENCODING,
               Stage.EXPORT: StudyState.EXPORTING}


def legal_path(source: StudyState, target: StudyState) -> list[StudyState]:
    """The shortest list of states after ``source`` that ends in ``target`` (empty if equal)."""
    came: dict[StudyState, StudyState | None] = {source: None}
    todo = deque([source])
    while todo:
        here = todo.popleft()
        if here == target:
            break
        for (a, b) in LEGAL_TRANSITIONS:
            if a == here and b not in came and b != StudyState.RECEIVING:
                came[b] = here
                todo.append(b)
    if target not in came:
        raise ValueError(f"no legal path {source} -> {target}")
    path: list[StudyState] = []
    step: StudyState | None = target
    while step is not None and step != source:
        path.append(step)
        step = came[step]
    return path[::-1]


def walk_to(s: Session, study: Study, target: StudyState, *, stage: Stage | str | None = None,
            detail: str = "test", now: dt.datetime | None = None) -> None:
    """Move ``study`` to ``target`` (FAILED: through the state of ``stage``) by legal transitions."""
    here = StudyState(study.state)
    if target == StudyState.FAILED:
        if stage is None:
            raise ValueError("FAILED needs a stage")
        walk_to(s, study, STAGE_STATE[Stage(stage)], detail=detail, now=now)
        transition(s, study, StudyState.FAILED, stage=stage, detail=detail, now=now)
        return
    for step in legal_path(here, target):
        transition(s, study, step, stage=stage if step == target else None, detail=detail, now=now)
