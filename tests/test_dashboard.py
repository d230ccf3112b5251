"""The admin dashboard: real app, real SQLite database, real filesystem broker, uvicorn on a
free loopback port, pages read back from headless Chromium.

Screenshots go to the test's tmp dir; with ``SPINENODE_SCREENSHOTS=docs/img`` they are also
written there (``docs/img/dashboard.png``, ``docs/img/dashboard-study.png``).
"""

from __future__ import annotations

import datetime as dt
import os
import random
import re
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from peers import free_port, wait_until
from scp_node.admin.app import AdminContext, create_app
from spinenode.core.broker import TaskSender, make_celery, queue_depths
from spinenode.core.db.models import (
    Event,
    Export,
    ExportState,
    Instance,
    Result,
    Series,
    Study,
    StudyState,
    WorkerHeartbeat,
    utcnow,
)
from spinenode.core.db.session import Database
from spinenode.core.settings import Settings, load_settings
from spinenode.core.states import record_event, transition

ADMIN_TOKEN = "s3cret-admin-token"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ROOT = "1.2.826.0.1.3680043.10.1234"
SR, SEG, SC = "1.2.840.10008.5.1.4.1.1.88.34", "1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.7"
N_HISTORY = 36
P = StudyState


@dataclass
class Seeded:
    uids: dict[str, str]  # a name per state (and a few more) -> study UID
    counts: dict[str, int]


# --- seeding -----------------------------------------------------------------------------
def _series(s: Session, study: Study, n: int, rng: random.Random, classified: bool) -> None:
    spec = [
        (1, "SAG T1 TSE", "sagittal", "T1", "sagittal_t1", 15),
        (2, "SAG T2 TSE", "sagittal", "T2", "sagittal_t2", 15),
        (3, "AX T2 TSE L3-S1", "axial", "T2", "axial_t2", 24),
        (4, "3-PLANE LOC", "oblique", "unknown", None, 3),
    ][:n]
    for number, desc, plane, weighting, role, slices in spec:
        se_uid = f"{study.study_uid}.{number}"
        c = None
        if classified:
            c = {"series_uid": se_uid, "modality": "MR", "plane": plane, "weighting": weighting,
                 "n_slices": slices, "n_stacks": 1, "slice_spacing_mm": 4.0, "coverage_mm": 56.0,
                 "pixel_spacing_mm": 0.6, "usable": role is not None,
                 "reason": "" if role else "localizer: too few slices", "role": role}
        se = Series(study_id=study.id, series_uid=se_uid, modality="MR", series_number=number,
                    description=desc, body_part="LSPINE", classification=c)
        s.add(se)
        s.flush()
        for i in range(rng.randint(3, 6) if n > 1 else slices):
            s.add(Instance(study_id=study.id, series_id=se.id, sop_instance_uid=f"{se_uid}.{i + 1}",
                           sop_class_uid="1.2.840.10008.5.1.4.1.1.4", transfer_syntax_uid="1.2.840.10008.1.2.1",
                           instance_number=i + 1, path=f"incoming/{study.study_uid}/{se_uid}/{i + 1}.dcm",
                           size_bytes=180_000, calling_ae="PACS", received_at=study.first_received_at))


def _findings(uid: str) -> dict[str, Any]:
    def grade(g: str, probs: tuple[float, float, float]) -> dict[str, Any]:
        return {"grade": g, "p": dict(zip(("normal_mild", "moderate", "severe"), probs, strict=True))}

    levels = []
    table = {
        "L1-L2": ("normal_mild", "normal_mild", "normal_mild", "2"),
        "L2-L3": ("normal_mild", "normal_mild", "moderate", "3"),
        "L3-L4": ("moderate", "moderate", "normal_mild", "3"),
        "L4-L5": ("severe", "moderate", "severe", "4"),
        "L5-S1": ("normal_mild", "severe", "moderate", "4"),
    }
    probs = {"normal_mild": (0.86, 0.11, 0.03), "moderate": (0.18, 0.67, 0.15), "severe": (0.04, 0.16, 0.80)}
    for name, (canal, foramen, sub, pf) in table.items():
        levels.append({
            "level": name, "series_uid": f"{uid}.2", "sop_instance_uid": f"{uid}.2.8", "box": [100, 120, 160, 150],
            "findings": {
                "spinal_canal_stenosis": grade(canal, probs[canal]),
                "left_neural_foraminal_narrowing": grade(foramen, probs[foramen]),
                "right_neural_foraminal_narrowing": grade("normal_mild", probs["normal_mild"]),
                "left_subarticular_stenosis": grade(sub, probs[sub]),
                "right_subarticular_stenosis": grade("normal_mild", probs["normal_mild"]),
                "pfirrmann": {"grade": pf, "p": {g: (0.7 if g == pf else 0.075) for g in "12345"}},
            },
        })
    return {"study_uid": uid, "region": "lumbar", "model": {"name": "spinenode-lumbar", "version": "1.2.0"},
            "levels": levels, "missing": []}


Step = tuple[StudyState | None, float, str | None, str]  # state (None: an event only), seconds, stage, detail


def _add_study(s: Session, uid: str, t0: dt.datetime, steps: list[Step],
               *, accession: str, patient: str, rng: random.Random, n_series: int = 3,
               classified: bool = True) -> Study:
    study = Study(study_uid=uid, state=P.RECEIVING, modality="MR", body_part="LSPINE",
                  study_description="MRI LUMBAR SPINE W/O", accession_number=accession, patient_id=patient,
                  first_received_at=t0, last_received_at=t0 + dt.timedelta(seconds=12), state_changed_at=t0)
    s.add(study)
    s.flush()
    record_event(s, study, state=P.RECEIVING, detail="first instance received", now=t0)
    _series(s, study, n_series, rng, classified)
    for state, at, stage, detail in steps:
        if state is None:
            record_event(s, study, stage=stage, detail=detail, now=t0 + dt.timedelta(seconds=at))
            continue
        if state == P.QUEUED:
            study.region = "lumbar"
            study.enqueue_count += 1
        transition(s, study, state, stage=stage, detail=detail, now=t0 + dt.timedelta(seconds=at))
    return study


def _pipeline(t_analyze: float, t_export: float) -> list[Step]:
    return [
        (P.COMPLETE, 72, None, "no new instance for 60 s"),
        (P.QUEUED, 72.4, None, "lumbar MR: eligible"),
        (P.ANALYZING, 73, "analyze", ""),
        (None, 73.8, "analyze", "4 series classified, 3 usable; axial T2 does not cover L1-L2"),
        (P.ENCODING, 73 + t_analyze, "analyze", "5 levels graded"),
        (P.EXPORTING, 75 + t_analyze, "encode", "written: sr, seg, key-images"),
        (P.DONE, 75 + t_analyze + t_export, "export", "3 object(s) confirmed by every destination"),
    ]


def _results(s: Session, study: Study, now: dt.datetime, fallback: bool) -> None:
    for kind, cls, number in (("sr", SR, 1), ("seg", SEG, 2), ("key-images", SC, 3)):
        r = Result(study_id=study.id, generation=0, kind=kind, sop_class_uid=cls,
                   sop_instance_uid=f"{ROOT}.9.{study.id}.{number}.1", series_instance_uid=f"{ROOT}.9.{study.id}.{number}",
                   path=f"results/{study.study_uid}/{kind}.dcm", model_name="spinenode-lumbar", model_version="1.2.0",
                   inputs_digest="0" * 64, created_at=now)
        s.add(r)
        s.flush()
        for dest in ("PACS@10.20.0.5:104", "VNA@10.20.0.9:11112"):
            refused = fallback and dest.startswith("VNA") and kind == "seg"
            s.add(Export(result_id=r.id, study_id=study.id, destination=dest,
                         state=ExportState.FALLBACK if refused else ExportState.SENT,
                         attempts=1, last_status=0x0122 if refused else 0x0000,
                         last_error=("presentation context for Segmentation Storage refused by VNA; "
                                     "the key images stand in for it") if refused else None,
                         next_attempt_at=now, updated_at=now, sent_at=None if refused else now))


def seed(db: Database, now: dt.datetime, send: TaskSender) -> Seeded:
    rng = random.Random(7)
    uids: dict[str, str] = {}
    with db.session() as s:
        # history: studies done over the last 23 hours, for the charts and stage percentiles
        for i in range(N_HISTORY):
            t0 = now - dt.timedelta(hours=23, minutes=10) + dt.timedelta(minutes=i * 38 + rng.randint(0, 20))
            uid = f"{ROOT}.1.{i + 1}"
            st = _add_study(s, uid, t0, _pipeline(rng.uniform(6, 40), rng.uniform(1, 6)),
                            accession=f"H{2000 + i}", patient=f"PH{i:04d}", rng=rng, n_series=2)
            _results(s, st, t0 + dt.timedelta(minutes=2), fallback=False)
        # one study in each state, received over the last half hour
        base = now - dt.timedelta(minutes=30)
        full = _pipeline(21.4, 3.2)
        plans: dict[str, list[Step]] = {
            "RECEIVING": [],
            "COMPLETE": full[:1],
            "QUEUED": full[:2],
            "ANALYZING": full[:3],
            "ENCODING": full[:5],
            "EXPORTING": full[:6],
            "DONE": full,
            "SKIPPED": [full[0], (P.SKIPPED, 72.5, None, "not eligible: BodyPartExamined HEAD, "
                                  "description 'MRI BRAIN' match no spine rule")],
            "FAILED": full[:4] + [(P.FAILED, 75.5, "analyze",
                                   "AnalyzerUnavailableError: weights grader-lumbar 1.2.0: sha256 mismatch")],
            "FAILED_EXPORT": full[:6] + [(P.FAILED, 150, "export",
                                          "ARCHIVE@10.20.0.7:104: Association rejected after 4 attempt(s)")],
        }
        for i, (name, steps) in enumerate(plans.items()):
            uid = f"{ROOT}.2.{i + 1}"
            t0 = base + dt.timedelta(minutes=i * 3)
            if name == "RECEIVING":
                t0 = now - dt.timedelta(seconds=20)
            st = _add_study(s, uid, t0, steps, accession=f"ACC-{name}-{100 + i}", patient=f"PID{5000 + i}",
                            rng=rng, n_series=1 if name == "SKIPPED" else 4,
                            classified=name not in ("RECEIVING", "COMPLETE", "QUEUED", "SKIPPED"))
            if name == "SKIPPED":
                st.body_part, st.study_description, st.region = "HEAD", "MRI BRAIN", None
            if name in ("ANALYZING", "ENCODING", "EXPORTING", "DONE", "FAILED"):
                st.selection = {"sagittal_t2": f"{uid}.2", "sagittal_t1": f"{uid}.1", "axial_t2": f"{uid}.3",
                                "ct_sagittal": None,
                                "missing": ["axial T2 does not cover L1-L2: subarticular not assessed there"]}
            if name in ("EXPORTING", "DONE"):
                st.findings = _findings(uid)
                _results(s, st, t0 + dt.timedelta(seconds=96), fallback=name == "DONE")
            if name == "EXPORTING":
                for e in s.scalars(select(Export).where(Export.study_id == st.id, Export.destination.like("VNA%"))):
                    e.state, e.attempts, e.last_status, e.sent_at = ExportState.PENDING, 3, None, None
                    e.last_error = "ConnectionRefusedError: [Errno 111] Connection refused"
                    e.next_attempt_at = now + dt.timedelta(seconds=75)
            uids[name] = uid
        s.add_all([
            WorkerHeartbeat(hostname="gpu-01.spine.local", queues="gpu", pid=4211, device="cuda:0 NVIDIA H100 80GB",
                            current_study=uids["ANALYZING"], started_at=now - dt.timedelta(days=2),
                            last_seen=now - dt.timedelta(seconds=2)),
            WorkerHeartbeat(hostname="node-01.spine.local", queues="cpu,export", pid=3120, device="cpu",
                            current_study=None, started_at=now - dt.timedelta(days=2),
                            last_seen=now - dt.timedelta(seconds=4)),
            WorkerHeartbeat(hostname="gpu-02.spine.local", queues="gpu", pid=881, device="cuda:0 NVIDIA L4",
                            current_study=None, started_at=now - dt.timedelta(days=9),
                            last_seen=now - dt.timedelta(hours=3)),
        ])
    send("analyze", uids["QUEUED"], 0)  # what the scheduler did after committing QUEUED
    counts = {str(state): 1 for state in StudyState}
    counts["DONE"] += N_HISTORY
    counts["FAILED"] += 1
    return Seeded(uids, counts)


# --- the app as a server ---------------------------------------------------------------------
@dataclass
class Served:
    url: str
    db: Database
    celery: Any
    seeded: Seeded
    tmp: Path


def _serve(app: Any) -> tuple[uvicorn.Server, threading.Thread, int]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False))
    thread = threading.Thread(target=server.run, name="dashboard-http", daemon=True)
    thread.start()
    wait_until(lambda: server.started, 20, what="uvicorn to start")
    return server, thread, port


def _served(tmp: Path) -> Iterator[Served]:
    settings = load_settings(data_dir=tmp / "data", admin_token=ADMIN_TOKEN, ae_title="SPINENODE")
    db = Database(settings.database_url)
    db.migrate(settings.data_dir)
    celery = make_celery(settings)
    sender = TaskSender(celery)
    seeded = seed(db, utcnow(), sender)
    app = create_app(AdminContext(settings, db, sender, lambda: queue_depths(celery)))
    server, thread, port = _serve(app)
    try:
        yield Served(f"http://127.0.0.1:{port}", db, celery, seeded, tmp)
    finally:
        server.should_exit = True
        thread.join(10)
        db.dispose()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The seeded node for the page tests; nothing changes its data."""
    yield from _served(tmp_path_factory.mktemp("dashboard"))


@pytest.fixture
def served_rw(tmp_path: Path) -> Iterator[Served]:
    """A freshly seeded node for each retry test (they change states)."""
    yield from _served(tmp_path)


# --- Chromium --------------------------------------------------------------------------------
def chromium(tmp: Path, *args: str) -> str:
    if CHROMIUM is None:
        pytest.fail("chromium is not installed: run scripts/install-test-deps.sh")
    profile = tmp / f"chromium-{uuid.uuid4().hex[:8]}"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--hide-scrollbars", f"--user-data-dir={profile}", *args]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    return out


def dom(served: Served, path: str, *extra: str) -> str:
    html = chromium(served.tmp, *extra, "--dump-dom", served.url + path)
    assert "<main>" in html, html[:500]
    return html


def text_of(html: str) -> str:
    """Visible text, tags dropped and white space folded (good enough for assertions)."""
    body = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body)).replace("&amp;", "&")


def screenshot(served: Served, path: str, name: str, height: int) -> Path:
    out = served.tmp / name
    chromium(served.tmp, f"--screenshot={out}", f"--window-size=1400,{height}", served.url + path)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    target = os.environ.get("SPINENODE_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out, Path(target) / name)
    return out


def _state(db: Database, uid: str) -> Study:
    with db.session() as s:
        return s.execute(select(Study).where(Study.study_uid == uid)).scalar_one()


# --- pages -----------------------------------------------------------------------------------
def test_overview_shows_states_queues_workers_and_charts(served: Served) -> None:
    # virtual time lets the 5 s auto-refresh run once: what is asserted is the refreshed page
    html = dom(served, "/", "--virtual-time-budget=6000")
    assert re.search(r'id="live-stamp">updated \d\d:\d\d:\d\d UTC<', html), "the live refresh ran"
    for state, n in served.seeded.counts.items():
        m = re.search(rf'data-count="{state}">(\d+)<', html)
        assert m and int(m.group(1)) == n, (state, m and m.group(1))
    assert re.search(r'data-queue="gpu">\s*<div class="n">1<', html), "the QUEUED study's message in gpu"
    text = text_of(html)
    assert "gpu-01.spine.local" in text and "cuda:0 NVIDIA H100 80GB" in text
    assert "2 of 3 online" in text
    assert served.seeded.uids["ANALYZING"][-14:] in text  # the study the GPU worker is on
    assert f'id="done-24h">{N_HISTORY + 1}<' in html
    # the charts: one bar per hour with studies done, a latency line
    assert html.count('class="bar-done"') >= 12
    assert "<polyline" in html and 'class="line-latency"' in html
    stages = re.search(r'data-stage="total">(.*?)</tr>', html, re.S)
    assert stages and re.search(r"\d+(\.\d)? s|min", stages.group(1)), "p50/p95 of the total time"
    screenshot(served, "/", "dashboard.png", 1130)


def test_studies_filter_and_search(served: Served) -> None:
    uids = served.seeded.uids
    html = dom(served, "/studies?state=FAILED")
    rows = re.findall(r'<tr data-uid="([^"]+)"', html)
    assert sorted(rows) == sorted([uids["FAILED"], uids["FAILED_EXPORT"]])
    text = text_of(html)
    assert "sha256 mismatch" in text and "analyze" in text
    html = dom(served, "/studies?q=ACC-DONE")
    assert re.findall(r'<tr data-uid="([^"]+)"', html) == [uids["DONE"]]
    assert "badge st-DONE" in html


def test_study_page_timeline_series_findings_results_exports(served: Served) -> None:
    uid = served.seeded.uids["DONE"]
    html = dom(served, f"/studies/{uid}")
    text = text_of(html)
    assert uid in text and "PID5006" in text and "ACC-DONE-106" in text
    timeline = re.search(r'id="timeline">(.*?)</ol>', html, re.S)
    assert timeline is not None
    states = re.findall(r'<li class="c-(\w+)">', timeline.group(1))
    assert states == ["RECEIVING", "COMPLETE", "QUEUED", "ANALYZING", "ANALYZING", "ENCODING", "EXPORTING", "DONE"]
    assert "+20.6 s" in text  # ENCODING 20.6 s after the classification event
    assert "sagittal T2/STIR" in text and "axial T2" in text and "localizer: too few slices" in text
    assert "subarticular not assessed there" in text  # what is missing
    l45 = re.search(r'data-level="L4-L5">(.*?)</tr>', html, re.S)
    assert l45 and "severe" in l45.group(1) and "p 0.80" in l45.group(1)
    assert "spinenode-lumbar 1.2.0" in text
    assert "Comprehensive 3D SR" in text and "Segmentation" in text
    assert f"{ROOT}.9." in text  # result SOP Instance UIDs
    assert "presentation context for Segmentation Storage refused by VNA" in text
    assert "FALLBACK" in text and "0x0122 Refused: SOP Class Not Supported" in text and "0x0000 Success" in text
    screenshot(served, f"/studies/{uid}", "dashboard-study.png", 2090)


def test_study_page_for_exporting_and_failed(served: Served) -> None:
    text = text_of(dom(served, f"/studies/{served.seeded.uids['EXPORTING']}"))
    assert "ConnectionRefusedError: [Errno 111] Connection refused" in text and "PENDING" in text
    html = dom(served, "/failures")
    text = text_of(html)
    assert "sha256 mismatch" in text and "Association rejected after 4 attempt(s)" in text
    assert "Retry all failed (2)" in text
    assert "MRI BRAIN" in text  # skipped, with the reason


def test_search_by_patient_id_logs_no_patient_data(served: Served, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    r = httpx.get(served.url + "/studies", params={"q": "PID5006"})
    assert r.status_code == 200
    assert re.findall(r'<tr data-uid="([^"]+)"', r.text) == [served.seeded.uids["DONE"]]
    r = httpx.get(served.url + f"/studies/{served.seeded.uids['DONE']}")
    assert "PID5006" in r.text
    server_side = [r.getMessage() for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    assert not [m for m in server_side if "PID5006" in m or "ACC-DONE" in m]


def test_unknown_study_is_404(served: Served) -> None:
    r = httpx.get(served.url + "/studies/1.2.3.999")
    assert r.status_code == 404 and "no study" in r.text


def test_pages_escape_and_set_headers(served: Served) -> None:
    r = httpx.get(served.url + "/studies", params={"q": "<script>alert(1)</script>"})
    assert r.status_code == 200
    assert "<script>alert(1)" not in r.text and "&lt;script&gt;alert(1)" in r.text
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert r.headers["cache-control"] == "no-store"


# --- retry -----------------------------------------------------------------------------------
def _gpu_depth(served: Served) -> int:
    n = queue_depths(served.celery)["gpu"]
    assert n is not None
    return n


def test_retry_needs_the_admin_token_then_requeues(served_rw: Served) -> None:
    uid = served_rw.seeded.uids["FAILED"]
    url = f"{served_rw.url}/studies/{uid}/retry"
    depth = _gpu_depth(served_rw)
    with httpx.Client(follow_redirects=False) as c:
        assert c.post(url).status_code == 401
        assert c.post(url, data={"token": "wrong"}).status_code == 401
        cross = c.post(url, data={"token": ADMIN_TOKEN}, headers={"Origin": "http://evil.example"})
        assert cross.status_code == 403
        assert _state(served_rw.db, uid).state == P.FAILED
        r = c.post(url, data={"token": ADMIN_TOKEN})
        assert r.status_code == 303 and r.headers["location"] == f"/studies/{uid}?requeued=1"
    st = _state(served_rw.db, uid)
    assert st.state == P.QUEUED and st.failed_stage is None and st.reason is None
    with served_rw.db.session() as s:
        last = s.scalars(select(Event).where(Event.study_id == st.id).order_by(Event.id.desc())).first()
        assert last is not None and last.detail == "retry requested (was FAILED(analyze))"
    assert _gpu_depth(served_rw) == depth + 1  # the analyze task is in the broker


def test_login_then_retry_all_failed(served_rw: Served) -> None:
    with httpx.Client(base_url=served_rw.url, follow_redirects=False) as c:
        assert c.post("/failures/retry").status_code == 401
        bad = c.post("/login", data={"token": "nope", "next": "/failures"})
        assert bad.status_code == 401 and "not valid" in bad.text
        r = c.post("/login", data={"token": ADMIN_TOKEN, "next": "https://evil.example/"})
        assert r.status_code == 303 and r.headers["location"] == "/"  # never off-site
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        assert ADMIN_TOKEN not in cookie
        page = c.get("/failures")
        assert "signed in as admin" in page.text and 'name="token"' not in page.text
        failed = [served_rw.seeded.uids["FAILED"], served_rw.seeded.uids["FAILED_EXPORT"]]
        depth = _gpu_depth(served_rw)
        r = c.post("/failures/retry")
        assert r.status_code == 303 and r.headers["location"] == "/failures?requeued=2"
        assert "Requeued 2 failed studies" in c.get(r.headers["location"]).text
        assert c.post("/logout").status_code == 303
        assert c.post("/failures/retry").status_code == 401
    # each resumes at the stage that failed: analysis again, or only the export
    assert _state(served_rw.db, failed[0]).state == P.QUEUED
    assert _state(served_rw.db, failed[1]).state == P.EXPORTING
    assert _gpu_depth(served_rw) == depth + 1
    assert queue_depths(served_rw.celery)["export"] >= 1
    with served_rw.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Study).where(Study.state == P.FAILED)) == 0


def test_retry_refused_without_configured_token_and_viewer_token_gates_reads(served_rw: Served) -> None:
    def nothing_sent(*_args: Any) -> None:
        raise AssertionError("nothing may be enqueued")

    base = load_settings(data_dir=served_rw.tmp / "data")
    assert base.admin_token == ""
    viewer: Settings = load_settings(data_dir=served_rw.tmp / "data", admin_token=ADMIN_TOKEN,
                                     viewer_token="viewer-pass")
    servers = [_serve(create_app(AdminContext(st, served_rw.db, nothing_sent, lambda: {}))) for st in (base, viewer)]
    try:
        (_, _, open_port), (_, _, gated_port) = servers
        with httpx.Client(base_url=f"http://127.0.0.1:{open_port}", follow_redirects=False) as c:
            r = c.post(f"/studies/{served_rw.seeded.uids['DONE']}/retry", data={"token": "anything"})
            assert r.status_code == 403 and "ADMIN_TOKEN" in r.text
            assert c.get("/studies").status_code == 200  # reads are open without a viewer token
        with httpx.Client(base_url=f"http://127.0.0.1:{gated_port}", follow_redirects=False) as c:
            r = c.get("/studies")
            assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")
            assert c.get("/api/studies").status_code == 401  # one policy: the API too
            assert c.post("/login", data={"token": "viewer-pass"}).status_code == 303
            page = c.get("/studies")
            assert page.status_code == 200 and "signed in as viewer" in page.text
            assert c.get("/api/studies").status_code == 200  # the session reads the API as well
            r = c.post(f"/studies/{served_rw.seeded.uids['DONE']}/retry")
            assert r.status_code == 401  # a viewer may read, not retry
    finally:
        for server, thread, _ in servers:
            server.should_exit = True
            thread.join(10)


def test_retry_with_the_broker_down_is_503_and_the_study_stays_requeued(served_rw: Served) -> None:
    """A Redis broker nobody listens on: REST and dashboard answer 503, not a bare 500, and the
    study is committed as QUEUED so that the scheduler's sweep sends it once the broker is back."""
    settings = load_settings(data_dir=served_rw.tmp / "data", admin_token=ADMIN_TOKEN,
                             broker_url=f"redis://127.0.0.1:{free_port()}/0")
    down = TaskSender(make_celery(settings))
    down.app.conf.broker_connection_timeout = 1.0
    down.app.conf.task_publish_retry_policy = {"max_retries": 1, "interval_start": 0, "interval_step": 0.1}
    server, thread, port = _serve(create_app(AdminContext(settings, served_rw.db, down, lambda: {})))
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", follow_redirects=False, timeout=60) as c:
            uid = served_rw.seeded.uids["FAILED"]
            r = c.post(f"/api/studies/{uid}/retry", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
            assert r.status_code == 503 and "broker could not be reached" in r.json()["detail"]
            assert _state(served_rw.db, uid).state == P.QUEUED
            uid = served_rw.seeded.uids["FAILED_EXPORT"]
            r = c.post(f"/studies/{uid}/retry", data={"token": ADMIN_TOKEN})
            assert r.status_code == 503 and "broker could not be reached" in r.text
            assert _state(served_rw.db, uid).state == P.EXPORTING
    finally:
        server.should_exit = True
        thread.join(10)
