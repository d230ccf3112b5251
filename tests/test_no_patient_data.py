"""No patient data in any log, and none in the database beyond the index columns.

A phantom lumbar MR study whose patient name, ID and accession number are recognisable
markers goes through every path a test can reach on a running node with PostgreSQL
(where a NUL byte used to be an uncaught ``DataError`` whose traceback printed the
searched patient ID): C-STORE, analysis, SR/SEG/key-image encoding (highdicom warns,
quoting a person name without ``^``), export to a DCMTK storescp, the dashboard search,
the REST API, refused and erroneous requests, a refused C-STORE. Then every log file of
the test and every text column of the database is searched for the markers.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid
from sqlalchemy import create_engine, text

from nodeproc import Node
from peers import StorescpServer, storescu

NAME = "Quokkaname"  # no "^": highdicom's person-name warning quotes it
PATIENT_ID = "QKPID7731"
ACCESSION = "QKACC4409"
MARKERS = (NAME, NAME.upper(), PATIENT_ID, ACCESSION)
ADMIN = "admin-token-for-the-leak-test"
#: (table, column) that must hold the patient ID / accession number: the search index.
INDEX_COLUMNS = {("studies", "patient_id"), ("studies", "accession_number")}


def _phantom_with_markers(out: Path) -> tuple[str, list[Path]]:
    subprocess.run([sys.executable, "-m", "spinenode_app.cli", "phantom", str(out), "--studies", "1", "--region",
                    "lumbar", "--modality", "MR", "--seed", "7"], check=True, capture_output=True)
    files = sorted((out / "train_images").rglob("*.dcm"))
    for path in files:
        ds = dcmread(path)
        ds.PatientName = NAME
        ds.PatientID = PATIENT_ID
        ds.AccessionNumber = ACCESSION
        ds.save_as(path)
    return str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID), files


def _bad_instance(source: Path, out: Path) -> Path:
    """An instance with the markers whose Study Instance UID is not a UID: refused."""
    ds = dcmread(source)
    ds.StudyInstanceUID = f"1.2.{PATIENT_ID}"
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(out)
    return out


def _exercise_http(node: Node, study_uid: str) -> None:
    auth = {"Authorization": f"Bearer {ADMIN}"}
    with httpx.Client(base_url=node.url(""), timeout=30, follow_redirects=False) as c:
        for q in (PATIENT_ID, ACCESSION, PATIENT_ID[:4]):
            r = c.get("/studies", params={"q": q})
            assert r.status_code == 200 and study_uid in r.text
        assert PATIENT_ID in c.get(f"/studies/{study_uid}").text  # shown to the admin, not logged
        assert c.get(f"/api/studies/{study_uid}").status_code == 200
        assert c.get(f"/api/studies/{study_uid}/findings").status_code == 200
        assert c.get("/api/studies").status_code == 200
        # refused before the database: NUL and other control characters
        for path in (f"/studies?q={PATIENT_ID}%00", f"/api/studies/{PATIENT_ID}%00",
                     f"/studies/{ACCESSION}%00", f"/api/studies/{ACCESSION}%0A/findings",
                     f"/studies?q={NAME}%1b"):
            assert c.get(path).status_code == 400, path
        # unknown studies, named by patient data
        assert c.get(f"/api/studies/{PATIENT_ID}").status_code == 404
        assert c.get(f"/studies/{ACCESSION}").status_code == 404
        assert c.get(f"/api/studies/{NAME}/findings").status_code == 404
        assert c.post(f"/api/studies/{PATIENT_ID}/retry", headers=auth).status_code == 404
        assert c.post(f"/studies/{ACCESSION}/retry", data={"token": ADMIN}).status_code == 404
        # a patient ID typed as a token (wrong logins are logged, never their token)
        assert c.post("/login", data={"token": PATIENT_ID, "next": "/"}).status_code == 401
        assert c.post(f"/api/studies/{study_uid}/retry",
                      headers={"Authorization": f"Bearer {NAME}"}).status_code == 401
        assert c.get("/metrics").status_code == 200


def _text_columns(engine: Any) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public' "
            "AND data_type IN ('text', 'character varying', 'json', 'jsonb')")).all()
    return [(str(t), str(c)) for t, c in rows]


def _database_hits(url: str) -> list[str]:
    engine = create_engine(url)
    hits = []
    try:
        columns = _text_columns(engine)
        assert ("studies", "patient_id") in columns and ("events", "detail") in columns
        with engine.connect() as conn:
            for table, column in columns:
                if (table, column) in INDEX_COLUMNS:
                    continue
                for marker in MARKERS:
                    n = conn.execute(text(f'SELECT count(*) FROM "{table}" WHERE "{column}"::text LIKE :m'),
                                     {"m": f"%{marker}%"}).scalar()
                    if n:
                        hits.append(f"{table}.{column} holds {marker} ({n} rows)")
            # the index columns do hold them: the search above found the study by them
            assert conn.execute(text("SELECT count(*) FROM studies WHERE patient_id = :p"),
                                {"p": PATIENT_ID}).scalar() == 1
    finally:
        engine.dispose()
    return hits


def _log_hits(root: Path, skip: list[Path]) -> tuple[list[str], int]:
    """Markers found in any file under ``root`` except DICOM objects (spool, results)."""
    hits, searched = [], 0
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if any(path.is_relative_to(s) for s in skip) or path.suffix == ".dcm":
            continue
        data = path.read_bytes()
        if data[128:132] == b"DICM":
            continue
        searched += 1
        for marker in MARKERS:
            if marker.encode() in data:
                line = next(ln for ln in data.decode(errors="replace").splitlines() if marker in ln)
                hits.append(f"{path.relative_to(root)}: {line[:300]}")
    return hits, searched


@pytest.mark.postgres
@pytest.mark.timeout(600)
def test_patient_data_reaches_no_log_and_no_other_column(
    node_factory: Any, postgres_url: str, tmp_path: Path
) -> None:
    pacs = StorescpServer(tmp_path / "pacs").start()
    try:
        # two receiver processes: the C-STOREs are handled in SCP worker processes, whose
        # logging is configured apart from the node's (as the Celery worker's is)
        node: Node = node_factory(database_url=postgres_url, destinations=pacs.destination,
                                  admin_token=ADMIN, stable_seconds=2, scp_processes=2)
        study_uid, files = _phantom_with_markers(tmp_path / "phantom")
        r = storescu(files, "127.0.0.1", node.dicom_port, "SPINENODE")
        assert r.returncode == 0, r.stderr
        bad = _bad_instance(files[0], tmp_path / "bad" / "bad.dcm")
        refused = storescu([bad], "127.0.0.1", node.dicom_port, "SPINENODE")
        assert "Status" in refused.stdout + refused.stderr or refused.returncode != 0
        final = node.wait_state(study_uid, {"DONE", "FAILED"}, timeout=300)
        assert final["state"] == "DONE", final
        pacs.wait_for_files(3, timeout=60)  # SR, SEG, key image exported
        _exercise_http(node, study_uid)
    finally:
        pacs.stop()
    node.stop()
    log = node.log()
    assert "Exception" not in log and "Traceback" not in log, log[-3000:]
    # the library warnings were there, reduced to their category
    assert "UserWarning (message withheld" in log, "highdicom's person-name warning was captured"
    assert "wrong token from 127.0.0.1 (dashboard login)" in log
    assert "refused 0xC210" in log, "the bad instance was refused and logged (by UID, without patient data)"
    data = node.data_dir
    # the PACS's own files and log are not the node's
    hits, searched = _log_hits(tmp_path, skip=[data / "incoming", data / "results", tmp_path / "phantom",
                                               tmp_path / "bad", pacs.workdir])
    assert searched >= 1, "the node's log was searched"
    hits += _database_hits(postgres_url)
    assert hits == [], "\n".join(hits)


@pytest.mark.postgres
def test_database_errors_carry_no_statement_parameters(postgres_url: str) -> None:
    """PostgreSQL refuses a NUL in text; the error SQLAlchemy raises (and a traceback would
    print) names the statement, not the searched value."""
    from sqlalchemy import select
    from sqlalchemy.exc import DataError

    from spinenode.core.db.models import Study
    from spinenode.core.db.session import Database

    db = Database(postgres_url)
    try:
        db.migrate()
        with pytest.raises(DataError) as info, db.session() as s:
            s.execute(select(Study).where(Study.patient_id == f"{PATIENT_ID}\x00"))
        message = str(info.value)
        assert "parameters hidden" in message and PATIENT_ID not in message
    finally:
        db.dispose()


def test_library_warnings_and_dicom_library_logs_are_reduced_to_their_category(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging
    import warnings

    import highdicom.valuerep

    from spinenode.core.logs import install_redaction

    factory, formatwarning = logging.getLogRecordFactory(), warnings.formatwarning
    caplog.set_level(logging.INFO)
    try:
        install_redaction()
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = logging._showwarning  # type: ignore[attr-defined]  # as captureWarnings set it
            highdicom.valuerep.check_person_name(NAME)
        logging.getLogger("pydicom.valuerep").warning("Invalid value for VR PN: %r", NAME)
        logging.getLogger("highdicom.sr").info("copying %s", PATIENT_ID)
    finally:  # other tests in this process read library messages
        logging.setLogRecordFactory(factory)
        warnings.formatwarning = formatwarning
        logging.captureWarnings(False)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "UserWarning (message withheld" in text
    assert "warning at " in text and "info at " in text
    assert NAME not in text and PATIENT_ID not in text
