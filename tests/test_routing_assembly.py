"""Study assembly and routing with an injected clock: no sleeps, no broker."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import select

import dicomgen
from scp_node.assembly import is_complete
from spinenode.core.db.models import Event, Study, StudyState
from spinenode.core.db.session import Database
from scp_node.dicomio import parse_header
from scp_node.ingest import Ingestor
from scp_node.routing import StudyFacts, decide, load_rules
from scp_node.scheduler import Scheduler, requeue_studies
from spinenode.core.repository import claim
from spinenode.core.settings import load_settings
from spinenode.core.storage import Spool

T0 = dt.datetime(2026, 11, 22, 8, 0, tzinfo=dt.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


class Enqueued(list[tuple[str, int]]):
    """Records what the scheduler sends (stage, study, generation); can be told the broker is down."""

    down = False

    def __call__(self, stage: str, uid: str, generation: int) -> None:
        if self.down:
            raise ConnectionError("broker down")
        assert stage == "analyze"
        self.append((uid, generation))


@pytest.fixture
def env(tmp_path: Path) -> tuple[Ingestor, Scheduler, Clock, Enqueued, Database]:
    settings = load_settings(data_dir=tmp_path, stable_seconds=60, requeue_after=600)
    db = Database(settings.database_url)
    db.migrate(tmp_path)
    clock = Clock()
    enq = Enqueued()
    ingestor = Ingestor(db, Spool(tmp_path), clock)
    sched = Scheduler(settings, db, enq, load_rules(), clock)
    yield ingestor, sched, clock, enq, db
    db.dispose()


def _ingest(ingestor: Ingestor, paths: list[Path]) -> None:
    for p in paths:
        data = p.read_bytes()
        ingestor.store(parse_header(data), data, "TEST")


def _state(db: Database, uid: str) -> Study:
    with db.session() as s:
        return s.execute(select(Study).where(Study.study_uid == uid)).scalar_one()


def test_is_complete_pure() -> None:
    assert not is_complete(T0, T0 + dt.timedelta(seconds=59.9), 60)
    assert is_complete(T0, T0 + dt.timedelta(seconds=60), 60)


def test_quiet_period_then_queue(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ingestor, sched, clock, enq, db = env
    study = dicomgen.write_study(tmp_path / "st", seed=3)
    _ingest(ingestor, study.paths[:10])
    clock.advance(59)
    _ingest(ingestor, study.paths[10:])  # resets the quiet period
    clock.advance(59)
    assert sched.sweep().completed == []
    assert _state(db, study.study_uid).state == StudyState.RECEIVING
    clock.advance(1)
    report = sched.sweep()
    assert report.completed == [study.study_uid] and report.queued == [study.study_uid]
    st = _state(db, study.study_uid)
    assert st.state == StudyState.QUEUED and st.region == "lumbar"
    assert enq == [(study.study_uid, 0)]
    with db.session() as s:
        states = s.scalars(select(Event.state).where(Event.study_id == st.id).order_by(Event.id)).all()
    assert states == ["RECEIVING", "COMPLETE", "QUEUED"]


def test_resend_is_idempotent(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ingestor, _sched, _clock, _enq, db = env
    study = dicomgen.write_study(tmp_path / "st", seed=4)
    _ingest(ingestor, study.paths)
    _ingest(ingestor, study.paths)
    from sqlalchemy import func

    from spinenode.core.db.models import Instance

    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Instance)) == len(study.paths)
    files = [p for p in (tmp_path / "incoming").rglob("*") if p.is_file()]
    assert len(files) == len(study.paths)


def test_late_instance_reopens_and_stale_work_is_dropped(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ingestor, sched, clock, enq, db = env
    study = dicomgen.write_study(tmp_path / "st", seed=5)
    _ingest(ingestor, study.paths[:-1])
    clock.advance(61)
    sched.sweep()
    assert claim(db, study.study_uid, 0, from_state=StudyState.QUEUED, to_state=StudyState.ANALYZING, stage="analyze")
    _ingest(ingestor, study.paths[-1:])
    st = _state(db, study.study_uid)
    assert st.state == StudyState.RECEIVING and st.generation == 1
    # the old delivery can no longer claim it, the new generation can after the quiet period
    assert not claim(db, study.study_uid, 0, from_state=StudyState.QUEUED, to_state=StudyState.ANALYZING, stage="a")
    clock.advance(61)
    sched.sweep()
    assert enq[-1] == (study.study_uid, 1)


def test_ineligible_study_is_skipped_with_reason(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ingestor, sched, clock, enq, db = env
    head = dicomgen.write_study(tmp_path / "head", seed=6, body_part="HEAD", study_description="MRI BRAIN")
    _ingest(ingestor, head.paths)
    clock.advance(61)
    assert sched.sweep().skipped == [head.study_uid]
    st = _state(db, head.study_uid)
    assert st.state == StudyState.SKIPPED and "HEAD" in (st.reason or "")
    assert enq == []


def test_broker_down_then_up(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ingestor, sched, clock, enq, db = env
    study = dicomgen.write_study(tmp_path / "st", seed=7)
    _ingest(ingestor, study.paths)
    clock.advance(61)
    enq.down = True
    assert sched.sweep().enqueue_failed == [study.study_uid]
    assert _state(db, study.study_uid).state == StudyState.QUEUED  # committed, not lost
    enq.down = False
    sched.sweep()
    assert enq == [(study.study_uid, 0)]


def test_sweep_requeues_stalled_work(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ingestor, sched, clock, enq, db = env
    study = dicomgen.write_study(tmp_path / "st", seed=8)
    _ingest(ingestor, study.paths)
    clock.advance(61)
    sched.sweep()
    claim(db, study.study_uid, 0, from_state=StudyState.QUEUED, to_state=StudyState.ANALYZING, stage="analyze",
          now=clock())
    clock.advance(599)
    assert sched.sweep().requeued == []
    clock.advance(2)  # the worker died: ANALYZING for over REQUEUE_AFTER
    assert sched.sweep().requeued == [study.study_uid]
    assert enq[-1] == (study.study_uid, 0) and len(enq) == 2
    assert _state(db, study.study_uid).state == StudyState.QUEUED


def test_sweep_leaves_a_study_a_live_worker_is_analysing(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """An analysis slower than REQUEUE_AFTER is not requeued while its worker's heartbeat
    names it; once the heartbeat is stale (the worker died) it is."""
    from spinenode.core.db.models import WorkerHeartbeat

    ingestor, sched, clock, enq, db = env
    study = dicomgen.write_study(tmp_path / "st", seed=10)
    _ingest(ingestor, study.paths)
    clock.advance(61)
    sched.sweep()
    claim(db, study.study_uid, 0, from_state=StudyState.QUEUED, to_state=StudyState.ANALYZING, stage="analyze",
          now=clock())
    with db.session() as s:
        s.add(WorkerHeartbeat(hostname="gpu-1", queues="gpu", pid=1, device="cpu", current_study=study.study_uid,
                              started_at=clock(), last_seen=clock()))
    for _ in range(3):  # 3 x REQUEUE_AFTER, the heartbeat kept fresh
        clock.advance(601)
        with db.session() as s:
            row = s.get(WorkerHeartbeat, "gpu-1")
            assert row is not None
            row.last_seen = clock()
        assert sched.sweep().requeued == []
    assert _state(db, study.study_uid).state == StudyState.ANALYZING
    clock.advance(31)  # the worker stopped beating
    assert sched.sweep().requeued == [study.study_uid]
    assert _state(db, study.study_uid).state == StudyState.QUEUED


def test_sweep_leaves_every_study_of_a_live_workers_batch(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """An analysis batch: the worker's heartbeat names all its studies (set_current_studies),
    and the sweep leaves each of them ANALYZING, not only the first, while the heartbeat is
    fresh; once it is stale every one is queued again."""
    from spinenode.core.db.models import WorkerHeartbeat
    from workers.heartbeat import set_current_studies

    ingestor, sched, clock, _enq, db = env
    studies = [dicomgen.write_study(tmp_path / f"st{i}", seed=20 + i) for i in range(3)]
    for st in studies:
        _ingest(ingestor, st.paths)
    clock.advance(61)
    sched.sweep()
    for st in studies:
        claim(db, st.study_uid, 0, from_state=StudyState.QUEUED, to_state=StudyState.ANALYZING, stage="analyze",
              now=clock())
    with db.session() as s:
        s.add(WorkerHeartbeat(hostname="gpu-1", queues="gpu", pid=1, device="cpu", started_at=clock(),
                              last_seen=clock()))
    set_current_studies(db, "gpu-1", [st.study_uid for st in studies])
    for _ in range(2):
        clock.advance(601)
        with db.session() as s:
            row = s.get(WorkerHeartbeat, "gpu-1")
            assert row is not None and row.studies() == [st.study_uid for st in studies]
            assert row.current_study == studies[0].study_uid
            row.last_seen = clock()
        assert sched.sweep().requeued == []
    assert {_state(db, st.study_uid).state for st in studies} == {StudyState.ANALYZING}
    clock.advance(31)  # the worker stopped beating
    assert sorted(sched.sweep().requeued) == sorted(st.study_uid for st in studies)
    set_current_studies(db, "gpu-1", [])
    with db.session() as s:
        row = s.get(WorkerHeartbeat, "gpu-1")
        assert row is not None and row.studies() == [] and row.current_study is None


def test_the_sweep_wakes_when_a_quiet_period_ends_not_a_sweep_interval_later(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Between sweeps the scheduler waits SWEEP_INTERVAL (1 s), or until the oldest
    receiving study's STABLE_SECONDS are up when that comes sooner (never less than
    MIN_PAUSE_S); the study is then complete at that sweep."""
    from scp_node.scheduler import MIN_PAUSE_S

    ingestor, sched, clock, _enq, db = env
    interval = sched.settings.sweep_interval
    assert sched.pause() == interval  # nothing receiving
    study = dicomgen.write_study(tmp_path / "st", seed=31)
    _ingest(ingestor, study.paths)
    assert sched.pause() == interval  # 60 s of quiet to go
    clock.advance(59.7)
    assert sched.pause() == pytest.approx(0.3, abs=1e-6)
    clock.advance(0.3)
    assert sched.sweep().completed == [study.study_uid]
    assert sched.pause() == interval
    other = dicomgen.write_study(tmp_path / "st2", seed=32)
    _ingest(ingestor, other.paths)
    clock.advance(75)  # overdue (a sweep was late): the next one comes at once
    assert sched.pause() == MIN_PAUSE_S


def test_requeue_failed(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ingestor, sched, clock, enq, db = env
    study = dicomgen.write_study(tmp_path / "st", seed=9)
    _ingest(ingestor, study.paths)
    clock.advance(61)
    sched.sweep()
    from study_states import walk_to

    with db.session() as s:
        st = s.execute(select(Study).where(Study.study_uid == study.study_uid)).scalar_one()
        walk_to(s, st, StudyState.FAILED, stage="analyze", detail="boom")
    assert requeue_studies(db, enq, study_uid=None, all_failed=True) == [study.study_uid]
    assert _state(db, study.study_uid).state == StudyState.QUEUED


def test_retry_resumes_at_the_failed_export(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from spinenode.core.db.models import Export, ExportState, Result
    from study_states import walk_to

    ingestor, sched, clock, enq, db = env
    study = dicomgen.write_study(tmp_path / "st", seed=10)
    _ingest(ingestor, study.paths)
    with db.session() as s:
        st = s.execute(select(Study).where(Study.study_uid == study.study_uid)).scalar_one()
        r = Result(study_id=st.id, generation=0, kind="sr", sop_class_uid="1.2", sop_instance_uid="1.2.3",
                   series_instance_uid="1.2.4", path="results/x.dcm", model_name="m", model_version="1",
                   inputs_digest="d")
        s.add(r)
        s.flush()
        s.add(Export(result_id=r.id, study_id=st.id, destination="PACS@h:104", state=ExportState.FAILED,
                     attempts=30, last_status=0xA700, last_error="status 0xA700"))
        walk_to(s, st, StudyState.FAILED, stage="export", detail="PACS@h:104: status 0xA700")
    sent: list[tuple[str, str, int]] = []
    requeue_studies(db, lambda *a: sent.append(a), study_uid=study.study_uid, all_failed=False)
    assert sent == [("export", study.study_uid, 0)]
    assert _state(db, study.study_uid).state == StudyState.EXPORTING
    with db.session() as s:
        e = s.scalars(select(Export)).one()
        assert (e.state, e.attempts) == (ExportState.PENDING, 0)


@pytest.mark.parametrize(
    ("facts", "eligible", "region"),
    [
        (StudyFacts(("MR",), ("LSPINE",), ("SAG T2",)), True, "lumbar"),
        (StudyFacts(("MR",), ("L-SPINE",), ()), True, "lumbar"),
        (StudyFacts(("CT",), ("",), ("CT C-SPINE WO",)), True, "cervical"),
        (StudyFacts(("MR", "SR"), ("SPINE",), ("MRT HWS nativ",)), True, "cervical"),
        (StudyFacts(("MR",), ("SPINE",), ("t2_tse_sag", "MRI LUMBAR SPINE")), True, "lumbar"),
        (StudyFacts(("MR",), ("HEAD",), ("MRI BRAIN",)), False, None),
        (StudyFacts(("CR",), ("LSPINE",), ("XR LSPINE",)), False, None),
        (StudyFacts(("MR",), ("TSPINE",), ("MRI THORACIC SPINE",)), False, None),
    ],
)
def test_eligibility_rules(facts: StudyFacts, eligible: bool, region: str | None) -> None:
    d = decide(facts, load_rules())
    assert (d.eligible, d.region) == (eligible, region), d.reason
    assert d.reason


def test_rules_file_is_data(tmp_path: Path) -> None:
    rules = tmp_path / "r.toml"
    rules.write_text('modalities = ["MR"]\n[[region]]\nname = "lumbar"\nbody_parts = ["LUMBAR"]\ndescriptions = []\n')
    r = load_rules(rules)
    assert not decide(StudyFacts(("CT",), ("LUMBAR",), ()), r).eligible
    assert decide(StudyFacts(("MR",), ("LUMBAR",), ()), r).region == "lumbar"


def test_retention_purges_spool_of_done_studies(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from spinenode.core.db.models import Instance
    from scp_node.scheduler import purge_done_studies

    ingestor, sched, clock, enq, db = env
    done = dicomgen.write_study(tmp_path / "done", seed=91)
    busy = dicomgen.write_study(tmp_path / "busy", seed=92)
    _ingest(ingestor, done.paths)
    _ingest(ingestor, busy.paths)
    from study_states import walk_to

    with db.session() as s:
        st = s.execute(select(Study).where(Study.study_uid == done.study_uid)).scalar_one()
        walk_to(s, st, StudyState.DONE, now=clock())
    spool = tmp_path / "incoming"
    assert purge_done_studies(db, tmp_path, 7, clock() + dt.timedelta(days=6)) == []
    assert purge_done_studies(db, tmp_path, 7, clock() + dt.timedelta(days=8)) == [done.study_uid]
    assert not (spool / done.study_uid).exists() and (spool / busy.study_uid).exists()
    from sqlalchemy import func

    with db.session() as s:
        left = s.scalars(select(Instance.study_id).distinct()).all()
        assert len(left) == 1
        assert s.scalar(select(func.count()).select_from(Study)) == 2  # rows kept
    assert purge_done_studies(db, tmp_path, 7, clock() + dt.timedelta(days=9)) == []  # once
