"""Group commit (issue 18): concurrent stores share a round; nothing is acknowledged
before its own file is durable and its row committed; one bad instance fails alone."""

from __future__ import annotations

import dataclasses
import shutil
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from sqlalchemy import select

import dicomgen
from peers import wait_until
from spinenode.core import status
from spinenode.core.db.models import Instance
from spinenode.core.db.session import Database
from scp_node.dicomio import parse_header_file
from spinenode.core.errors import DatabaseError, StorageError
from scp_node.group_commit import GroupCommitter
from scp_node.ingest import GroupCommit, Ingestor, Placed
from scp_node.scp import ScpCounters, handle_store
from spinenode.core.settings import load_settings
from spinenode.core.storage import Spool

SERIES = (dicomgen.SeriesSpec("SAG T2", "sagittal", 6), dicomgen.SeriesSpec("AX T2", "axial", 6))


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> dicomgen.GeneratedStudy:
    return dicomgen.write_study(tmp_path_factory.mktemp("gc-study"), seed=18, rows=32, cols=32, series=SERIES)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(load_settings(data_dir=tmp_path).database_url)
    database.migrate(tmp_path)
    yield database
    database.dispose()


def _received(spool: Spool, source: Path) -> Path:
    """A copy of ``source`` where the receiver leaves an arriving data set."""
    target = spool.receiving / f"{source.parent.name}-{source.name}"
    shutil.copyfile(source, target)
    return target


def _rows(db: Database) -> dict[str, str]:
    with db.session() as s:
        return dict(s.execute(select(Instance.sop_instance_uid, Instance.path)).all())


def test_a_waiting_store_returns_only_after_its_round(tmp_path: Path) -> None:
    """The handler side of the committer is released by the round's end, never before."""
    entered, gate = threading.Event(), threading.Event()
    seen: list[list[int]] = []

    def commit_round(items: Sequence[int]) -> list[BaseException | None]:
        seen.append(list(items))
        entered.set()
        assert gate.wait(30)
        return [None if i != 3 else StorageError("disk on fire") for i in items]

    committer: GroupCommitter[int] = GroupCommitter(commit_round, window=0.0, max_items=8)
    outcome: dict[int, str] = {}

    def store(i: int) -> None:
        with committer.arrival() as arrival:
            try:
                arrival.commit(i)
                outcome[i] = "ok"
            except StorageError:
                outcome[i] = "refused"

    first = threading.Thread(target=store, args=(0,))
    first.start()
    assert entered.wait(30)  # round 1 (item 0) is running and held
    others = [threading.Thread(target=store, args=(i,)) for i in range(1, 6)]
    for t in others:
        t.start()
    wait_until(lambda: committer.queued() == 5, 30, interval=0.01, what="five instances handed in")
    first.join(0.2)
    assert first.is_alive() and not outcome, "a store returned while its round was still running"
    gate.set()
    for t in (first, *others):
        t.join(30)
    assert outcome == {0: "ok", 1: "ok", 2: "ok", 3: "refused", 4: "ok", 5: "ok"}
    assert seen == [[0], [1, 2, 3, 4, 5]]  # the five waiting shared one round
    assert committer.stats().rounds == 2
    committer.stop()


def test_a_broken_round_refuses_every_instance_of_it() -> None:
    def commit_round(items: Sequence[int]) -> list[BaseException | None]:
        raise RuntimeError("bug")

    committer: GroupCommitter[int] = GroupCommitter(commit_round, window=0.0, max_items=8)
    with committer.arrival() as arrival, pytest.raises(StorageError, match="round failed"):
        arrival.commit(1)
    committer.stop()


def test_concurrent_stores_share_rounds_and_are_durable_when_they_return(
        tmp_path: Path, db: Database, study: dicomgen.GeneratedStudy) -> None:
    spool = Spool(tmp_path)
    ingestor = Ingestor(db, spool, group_commit=GroupCommit(window_s=0.5, max_items=32))
    start = threading.Barrier(len(study.paths))
    checked: list[str] = []
    problems: list[str] = []

    def store(path: Path) -> None:
        received = _received(spool, path)
        meta = parse_header_file(received)
        start.wait(30)
        ingestor.store_file(meta, received, "TEST")
        # acknowledged: the row must be committed (seen from another connection) and the
        # file in place under its final name
        rows = _rows(db)
        if meta.sop_instance_uid not in rows or not (tmp_path / rows[meta.sop_instance_uid]).is_file():
            problems.append(meta.sop_instance_uid)
        checked.append(meta.sop_instance_uid)

    threads = [threading.Thread(target=store, args=(p,)) for p in study.paths]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(checked) == len(study.paths) and not problems
    assert ingestor.committer is not None
    stats = ingestor.committer.stats()
    assert stats.items == len(study.paths) and stats.rounds < len(study.paths)
    assert not spool._unsynced  # every new directory's entry was fsynced
    assert not list(spool.receiving.iterdir())
    ingestor.close()


def test_one_bad_instance_fails_alone(tmp_path: Path, db: Database, study: dicomgen.GeneratedStudy) -> None:
    """A row the database refuses, and a directory that cannot be fsynced, fail only their
    own instances; the rest of the round is committed."""
    spool = Spool(tmp_path)
    ingestor = Ingestor(db, spool)  # commit_round called directly, no committer thread
    first, second = study.series_paths[study.series_uids[0]], study.series_paths[study.series_uids[1]]
    placed: list[Placed] = []
    for path in (*first[:3], second[0]):
        received = _received(spool, path)
        meta, size = parse_header_file(received), received.stat().st_size
        rel = spool.place(meta.study_uid, meta.series_uid, meta.sop_instance_uid, received)
        placed.append(Placed(meta, rel, size, "TEST"))
    # the database refuses the second row (NOT NULL), the second series' directory is gone
    placed[1] = dataclasses.replace(placed[1], meta=dataclasses.replace(placed[1].meta, sop_class_uid=None))
    shutil.rmtree(tmp_path / placed[3].rel.parent)
    errors = ingestor.commit_round(placed)
    assert errors[0] is None and errors[2] is None
    assert isinstance(errors[1], DatabaseError)
    assert isinstance(errors[3], StorageError)
    rows = _rows(db)
    assert set(rows) == {placed[0].meta.sop_instance_uid, placed[2].meta.sop_instance_uid}


def test_handler_maps_a_failed_round_to_out_of_resources(
        tmp_path: Path, db: Database, study: dicomgen.GeneratedStudy) -> None:
    """Through the C-STORE handler: the instance whose row fails gets 0xA700, never success."""
    spool = Spool(tmp_path)
    ingestor = Ingestor(db, spool, group_commit=GroupCommit(window_s=0.0, max_items=4))
    counters = ScpCounters()
    good, bad = study.paths[0], study.paths[1]

    class Event:  # what handle_store reads of a pynetdicom event
        def __init__(self, path: Path, sop_class: str | None) -> None:
            meta = parse_header_file(path)
            self.dataset_path = str(_received(spool, path))
            self.request = type("Rq", (), {"AffectedSOPInstanceUID": meta.sop_instance_uid,
                                           "AffectedSOPClassUID": sop_class})()
            self.assoc = type("A", (), {"requestor": type("R", (), {"ae_title": "TEST"})(),
                                        "dul": None})()

    ok = Event(good, parse_header_file(good).sop_class_uid)
    assert handle_store(ok, ingestor, counters) == status.SUCCESS
    # make the database refuse the next row: the instances table is dropped under it
    with db.session() as s:
        s.connection().exec_driver_sql("DROP TABLE instances")
    refused = Event(bad, parse_header_file(bad).sop_class_uid)
    assert handle_store(refused, ingestor, counters) == status.OUT_OF_RESOURCES
    assert counters.instances == 1 and counters.failures == {status.OUT_OF_RESOURCES: 1}
    ingestor.close()
