"""The study state machine: the legal-move table, transition(), claim(), the typed enum
columns and the database guard of migration 0003 (SQLite and PostgreSQL)."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError, StatementError

from spinenode.core.db.models import Event, Export, Result, Study, utcnow
from spinenode.core.db.session import Database
from spinenode.core.enums import ExportState, ResultKind, Stage, StudyState
from spinenode.core.errors import IllegalTransitionError, SpinenodeError
from spinenode.core.repository import claim
from spinenode.core.states import LEGAL_TRANSITIONS, is_legal, transition

S = StudyState
ALL_PAIRS = list(itertools.product(StudyState, StudyState))
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'index.db'}")
    database.migrate(tmp_path)
    yield database
    database.dispose()


def _study_in(database: Database, uid: str, state: StudyState) -> None:
    with database.session() as s:
        now = utcnow()
        s.add(Study(study_uid=uid, state=state, generation=0, enqueue_count=0, first_received_at=now,
                    last_received_at=now, state_changed_at=now))


def _events(database: Database, uid: str) -> int:
    with database.session() as s:
        return int(s.scalar(select(func.count()).select_from(Event).join(Study).where(Study.study_uid == uid)) or 0)


def test_the_moves_the_code_makes_are_legal() -> None:
    """The moves of ingest, scheduler, pipeline and admin retry (design-notes.md)."""
    made = [
        (S.RECEIVING, S.COMPLETE), (S.COMPLETE, S.QUEUED), (S.COMPLETE, S.SKIPPED),  # scheduler
        (S.QUEUED, S.ANALYZING), (S.ANALYZING, S.ENCODING), (S.ANALYZING, S.FAILED),  # analyze
        (S.ANALYZING, S.QUEUED),  # sweep recovery of a dead worker
        (S.ENCODING, S.EXPORTING), (S.ENCODING, S.DONE), (S.ENCODING, S.FAILED),  # encode
        (S.EXPORTING, S.DONE), (S.EXPORTING, S.FAILED),  # export
        (S.FAILED, S.EXPORTING), (S.FAILED, S.ENCODING),  # retry resumes at the failed stage
    ]
    made += [(state, S.QUEUED) for state in StudyState if state != S.RECEIVING]  # retry starts over
    made += [(state, S.RECEIVING) for state in StudyState]  # a late instance reopens
    assert set(made) == set(LEGAL_TRANSITIONS)


def test_illegal_moves_named() -> None:
    for source, target in [(S.RECEIVING, S.QUEUED), (S.QUEUED, S.FAILED), (S.DONE, S.FAILED),
                           (S.SKIPPED, S.ANALYZING), (S.FAILED, S.DONE), (S.COMPLETE, S.ANALYZING)]:
        assert not is_legal(source, target)
    assert not is_legal("QUEUED", "BOGUS") and is_legal("QUEUED", "ANALYZING")


@pytest.mark.parametrize(("source", "target"), ALL_PAIRS, ids=[f"{a}-{b}" for a, b in ALL_PAIRS])
def test_transition_accepts_legal_and_refuses_every_other(db: Database, source: StudyState,
                                                          target: StudyState) -> None:
    uid = f"1.2.3.{list(StudyState).index(source)}.{list(StudyState).index(target)}"
    _study_in(db, uid, source)
    stage = Stage.EXPORT if target == S.FAILED else None
    if (source, target) in LEGAL_TRANSITIONS:
        with db.session() as s:
            study = s.execute(select(Study).where(Study.study_uid == uid)).scalar_one()
            transition(s, study, target, stage=stage, detail="x")
        with db.session() as s:
            study = s.execute(select(Study).where(Study.study_uid == uid)).scalar_one()
            assert study.state == target and isinstance(study.state, StudyState)
            assert study.failed_stage == (Stage.EXPORT if target == S.FAILED else None)
        assert _events(db, uid) == 1
    else:
        with pytest.raises(IllegalTransitionError) as err, db.session() as s:
            study = s.execute(select(Study).where(Study.study_uid == uid)).scalar_one()
            transition(s, study, target, stage=stage, detail="x")
        assert isinstance(err.value, SpinenodeError) and not err.value.transient
        assert f"{source} -> {target}" in str(err.value)
        with db.session() as s:
            assert s.execute(select(Study.state).where(Study.study_uid == uid)).scalar_one() == source
        assert _events(db, uid) == 0


def test_failed_needs_a_known_stage(db: Database) -> None:
    _study_in(db, "1.9", S.EXPORTING)
    with pytest.raises(IllegalTransitionError), db.session() as s:
        transition(s, s.execute(select(Study)).scalar_one(), S.FAILED, detail="no stage")
    with pytest.raises(ValueError), db.session() as s:
        transition(s, s.execute(select(Study)).scalar_one(), S.FAILED, stage="exprot", detail="typo")
    with db.session() as s:
        assert s.execute(select(Study.state)).scalar_one() == S.EXPORTING


def test_claim_checks_the_table(db: Database) -> None:
    _study_in(db, "1.8", S.DONE)
    with pytest.raises(IllegalTransitionError):
        claim(db, "1.8", 0, from_state=S.DONE, to_state=S.ANALYZING, stage=Stage.ANALYZE)
    _study_in(db, "1.7", S.QUEUED)
    assert claim(db, "1.7", 0, from_state=S.QUEUED, to_state=S.ANALYZING, stage=Stage.ANALYZE)
    with db.session() as s:
        event = s.execute(select(Event).join(Study).where(Study.study_uid == "1.7")).scalar_one()
        assert event.state == S.ANALYZING and event.stage == Stage.ANALYZE


def test_enums_are_their_stored_strings() -> None:
    assert S.QUEUED == "QUEUED" and f"{S.FAILED}({Stage.EXPORT})" == "FAILED(export)"
    assert ResultKind("key-images") is ResultKind.KEY_IMAGES and ExportState.SENT == "SENT"
    from workers.results.identity import ResultKind as FromIdentity

    assert FromIdentity is ResultKind


def _guard(url: str, tmp_path: Path) -> None:
    """An unknown value is refused by the ORM (before SQL) and by the database itself."""
    database = Database(url)
    try:
        database.migrate(tmp_path)
        _study_in(database, "1.5", S.RECEIVING)
        with pytest.raises(StatementError), database.session() as s:
            s.execute(select(Study)).scalar_one().state = "BOGUS"  # type: ignore[assignment]
        bad = [
            "UPDATE studies SET state = 'BOGUS'",
            "UPDATE studies SET failed_stage = 'nowhere'",
            "INSERT INTO events (study_id, at, state, stage, generation) "
            "SELECT id, last_received_at, 'RECEIVING', 'sideways', 0 FROM studies",
            "INSERT INTO events (study_id, at, state, generation) SELECT id, last_received_at, 'done', 0 FROM studies",
        ]
        for sql in bad:
            with pytest.raises(IntegrityError), database.engine.begin() as conn:
                conn.execute(text(sql))
        with database.session() as s:
            study = s.execute(select(Study)).scalar_one()
            r = Result(study_id=study.id, generation=0, kind=ResultKind.SEG, sop_class_uid="1.2",
                       sop_instance_uid="1.2.3", series_instance_uid="1.2.4", path="results/x.dcm",
                       model_name="m", model_version="1", inputs_digest="d")
            s.add(r)
            s.flush()
            s.add(Export(result_id=r.id, study_id=study.id, destination="PACS@h:104", state="PENDING",
                         attempts=0))
        for sql in ["UPDATE results SET kind = 'pdf'", "UPDATE exports SET state = 'LOST'"]:
            with pytest.raises(IntegrityError), database.engine.begin() as conn:
                conn.execute(text(sql))
        # the legal values still pass through raw SQL, NULL stages included
        with database.engine.begin() as conn:
            conn.execute(text("UPDATE studies SET state = 'FAILED', failed_stage = 'encode'"))
            conn.execute(text("UPDATE studies SET failed_stage = NULL"))
            conn.execute(text("UPDATE exports SET state = 'FALLBACK'"))
        with database.session() as s:
            study = s.execute(select(Study)).scalar_one()
            assert study.state is S.FAILED and study.failed_stage is None
            assert s.execute(select(Result.kind)).scalar_one() is ResultKind.SEG
            assert s.execute(select(Export.state)).scalar_one() is ExportState.FALLBACK
        # 0003 goes down and up again on a database with rows
        from alembic import command
        from alembic.config import Config

        from spinenode.core.db.session import MIGRATIONS_DIR

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.attributes["engine"] = database.engine
        command.downgrade(cfg, "0002")
        with database.engine.begin() as conn:
            conn.execute(text("UPDATE exports SET state = 'LOST'"))  # no guard at 0002
            conn.execute(text("UPDATE exports SET state = 'SENT'"))
        database.migrate(tmp_path)
        with pytest.raises(IntegrityError), database.engine.begin() as conn:
            conn.execute(text("UPDATE exports SET state = 'LOST'"))
    finally:
        database.dispose()


def test_database_refuses_unknown_values_sqlite(tmp_path: Path) -> None:
    _guard(f"sqlite:///{tmp_path / 'guard.db'}", tmp_path)


@pytest.mark.postgres
def test_database_refuses_unknown_values_postgres(postgres_url: str, tmp_path: Path) -> None:
    _guard(postgres_url, tmp_path)



def test_architecture_doc_lists_the_legal_moves() -> None:
    """docs/architecture.md's transition table is the code's table, row for row."""
    doc = (ROOT / "docs" / "architecture.md").read_text()
    section = doc.split("## Study states", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| ((?:`\w+`(?:, )?)+) \| `(\w+)` \|", section, re.M)
    assert rows, "no transition table under '## Study states'"
    documented: list[tuple[StudyState, StudyState]] = []
    for sources, target in rows:
        names = re.findall(r"`(\w+)`", sources)
        states = list(StudyState) if names == ["any"] else [S(n) for n in names]
        documented += [(state, S(target)) for state in states]
    assert sorted(documented) == sorted(LEGAL_TRANSITIONS)  # no pair missing, none twice
