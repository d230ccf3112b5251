"""The node's spool served to workers over DICOMweb (WADO-RS, STOW-RS, masks), and the
workers' spool access: a worker whose DATA_DIR holds none of the node's files fetches
what each stage needs and sends its results back; the node keeps them and exports them.

The node's HTTP app runs under uvicorn on a free loopback port (the same app
``spinenode serve`` runs); node and worker share only the database.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom import dcmread
from sqlalchemy import select

import dicomgen
from peers import OrthancServer, free_port, wait_until
from scp_node.admin.app import AdminContext, create_app
from spinenode.core.db.models import Study, StudyState
from spinenode.core.db.session import Database
from scp_node.dicomio import header_only, parse_header
from scp_node.ingest import Ingestor
from spinenode.core.multipart import MultipartError, MultipartSplitter, boundary_of, content_type, iter_multipart
from spinenode.core.settings import Settings, load_settings
from spinenode.core.states import transition
from spinenode.core.storage import Spool
from test_encode_export import Sent, _analysed, _orthanc_objects
from workers.analyze import analyze_study
from workers.encode import encode_study
from workers.dicomweb import DicomWebClient
from workers.export_stage import export_study
from workers.stage import StageContext
from workers.spool import SpoolAccess

TOKEN = "worker-secret-token"


class NodeHttp:
    """The node's admin/DICOMweb app under uvicorn in a thread."""

    def __init__(self, settings: Settings, db: Database) -> None:
        import uvicorn

        self.port = free_port()
        app = create_app(AdminContext(settings, db, lambda *a: None, lambda: {}))
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_until(lambda: self.server.started, 10, what="uvicorn")
        self.url = f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[Settings, Database, Any, NodeHttp]]:
    """A node (settings, database, received study, HTTP) with a two-series study in its spool."""
    settings = load_settings(data_dir=tmp_path / "node", worker_token=TOKEN)
    db = Database(settings.database_url)
    db.migrate(settings.data_dir)
    study = dicomgen.write_study(tmp_path / "src", seed=81, rows=96, cols=96, series=(
        dicomgen.SeriesSpec("SAG T2 TSE", "sagittal", 9, "T2"), dicomgen.SeriesSpec("AX T2", "axial", 6, "T2")))
    ingestor = Ingestor(db, Spool(settings.data_dir))
    for p in study.paths:
        data = p.read_bytes()
        ingestor.store(parse_header(data), data, "TEST")
    http = NodeHttp(settings, db)
    yield settings, db, study, http
    http.close()
    db.dispose()


def _worker(tmp_path: Path, name: str, node_settings: Settings, node_url: str | None, **extra: Any) -> StageContext:
    """A worker host: its own DATA_DIR, the node's database, NODE_URL (or none)."""
    settings = load_settings(data_dir=tmp_path / name, database_url=node_settings.database_url,
                             node_url=node_url or "", worker_token=TOKEN,
                             destinations=node_settings.destinations, **extra)
    db = Database(settings.database_url)
    return StageContext(settings, db, SpoolAccess(settings, db, host=f"{name}-host"), Sent())  # type: ignore[arg-type]


def _queued(db: Database, study_uid: str) -> int:
    """RECEIVING -> COMPLETE -> QUEUED, as the scheduler moves a received study; its generation."""
    with db.session() as s:
        st = s.execute(select(Study).where(Study.study_uid == study_uid)).scalar_one()
        transition(s, st, StudyState.COMPLETE, detail="test")
        transition(s, st, StudyState.QUEUED, detail="test")
        return st.generation


def _split(body: bytes, ctype: str, chunk: int) -> list[bytes]:
    parts: list[io.BytesIO] = []

    def open_part(headers: dict[str, str]) -> io.BytesIO:
        assert headers["content-type"] == "application/dicom"
        parts.append(io.BytesIO())
        return parts[-1]

    splitter = MultipartSplitter(boundary_of(ctype), open_part, lambda sink: None)
    for i in range(0, len(body), chunk):
        splitter.feed(body[i:i + chunk])
    splitter.finish()
    return [p.getvalue() for p in parts]


def test_multipart_round_trip_in_any_chunking(tmp_path: Path) -> None:
    files = []
    for i, payload in enumerate((b"", b"\r\n--x\r\n" * 50, bytes(range(256)) * 40)):
        files.append(tmp_path / f"{i}.bin")
        files[-1].write_bytes(payload)
    boundary = "b0undary"
    body = b"preamble\r\n" + b"".join(iter_multipart(files, boundary, chunk=7))
    for chunk in (1, 3, 64, 10**6):
        assert _split(body, content_type(boundary), chunk) == [f.read_bytes() for f in files]
    with pytest.raises(MultipartError):
        _split(body[:-30], content_type(boundary), 5)  # the closing boundary never comes


def test_header_only_is_the_stored_file_cut_before_its_pixel_data() -> None:
    """On every Part 10 file of pydicom's own test data (explicit and implicit VR, big
    endian, deflated, encapsulated, multi-frame, no pixel data): the header-only file reads
    back as exactly the header pydicom reads, with the same file meta, and is a prefix of
    the file wherever the dataset is not deflated."""
    import warnings

    import pydicom.data
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    warnings.simplefilter("ignore", UserWarning)  # pydicom's deliberately odd samples (this test only)
    checked = deflated = 0
    for path in sorted(Path(pydicom.data.__file__).parent.rglob("*.dcm")):
        try:
            ref = dcmread(path, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - not a Part 10 file (pydicom's raw and broken samples)
            continue
        data = header_only(path)
        got = dcmread(io.BytesIO(data))
        assert got == ref and got.file_meta == ref.file_meta and "PixelData" not in got, path.name
        if ref.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
            deflated += 1
        else:
            assert path.read_bytes().startswith(data), path.name
        checked += 1
    assert checked > 50 and deflated >= 1


def test_wado_rs_serves_study_series_instance_and_metadata_behind_the_token(node: Any) -> None:
    settings, db, study, http = node
    auth = {"Authorization": f"Bearer {TOKEN}"}
    uid = study.study_uid
    sag = [p for p in study.paths if "SAG" in str(dcmread(p, stop_before_pixels=True).SeriesDescription)]
    series_uid = str(dcmread(sag[0], stop_before_pixels=True).SeriesInstanceUID)

    assert httpx.get(f"{http.url}/dicom-web/studies/{uid}").status_code == 401
    assert httpx.get(f"{http.url}/dicom-web/studies/{uid}", headers={"Authorization": "Bearer nope"}).status_code == 401
    r = httpx.get(f"{http.url}/dicom-web/studies/{uid}", headers=auth)
    assert r.status_code == 200 and 'type="application/dicom"' in r.headers["content-type"]
    assert sorted(_split(r.content, r.headers["content-type"], 4096)) == sorted(p.read_bytes() for p in study.paths)

    r = httpx.get(f"{http.url}/dicom-web/studies/{uid}/series/{series_uid}", headers=auth)
    assert sorted(_split(r.content, r.headers["content-type"], 4096)) == sorted(p.read_bytes() for p in sag)
    one = dcmread(sag[3], stop_before_pixels=True)
    r = httpx.get(f"{http.url}/dicom-web/studies/{uid}/series/{series_uid}/instances/{one.SOPInstanceUID}",
                  headers=auth)
    assert _split(r.content, r.headers["content-type"], 4096) == [sag[3].read_bytes()]

    meta = httpx.get(f"{http.url}/dicom-web/studies/{uid}/metadata", headers=auth).json()
    assert len(meta) == len(study.paths) and all("7FE00010" not in m for m in meta)
    assert httpx.get(f"{http.url}/dicom-web/studies/1.2.3/metadata", headers=auth).status_code == 404
    assert httpx.get(f"{http.url}/dicom-web/studies/..%2Fetc", headers=auth).status_code in (400, 404)

    # the workers' header route: each received instance cut before its pixel data, named by
    # its WADO-RS URL; the same headers as the files (and as the metadata above)
    assert httpx.get(f"{http.url}/worker/studies/{uid}/headers").status_code == 401
    r = httpx.get(f"{http.url}/worker/studies/{uid}/headers", headers=auth)
    assert r.status_code == 200 and 'type="application/dicom"' in r.headers["content-type"]
    with DicomWebClient(http.url, token=TOKEN) as client:
        parts = client.retrieve_in_memory(f"/worker/studies/{uid}/headers")
    by_sop = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in study.paths}
    assert len(parts) == len(study.paths)
    for headers, data in parts:
        series, sop = headers["content-location"].split("/")[-3], headers["content-location"].split("/")[-1]
        ref = dcmread(by_sop[sop], stop_before_pixels=True)
        got = dcmread(io.BytesIO(data))
        assert got == ref and "PixelData" not in got and str(got.SeriesInstanceUID) == series
        assert by_sop[sop].read_bytes().startswith(data) and len(data) < by_sop[sop].stat().st_size
    assert httpx.get(f"{http.url}/worker/studies/1.2.3/headers", headers=auth).status_code == 404


def test_worker_routes_are_off_without_a_worker_token(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "n")
    db = Database(settings.database_url)
    db.migrate(settings.data_dir)
    http = NodeHttp(settings, db)
    try:
        r = httpx.get(f"{http.url}/dicom-web/studies/1.2.3", headers={"Authorization": "Bearer x"})
        assert r.status_code == 403 and "WORKER_TOKEN" in r.text
    finally:
        http.close()
        db.dispose()


def test_stow_rs_takes_only_the_nodes_own_results(node: Any, tmp_path: Path) -> None:
    from workers.dicomweb import DicomWebClient

    settings, db, study, http = node
    with DicomWebClient(f"{http.url}/dicom-web", token=TOKEN) as client:
        refused = client.store([study.paths[0]], study.study_uid)  # a source image, not a result
    assert len(refused) == 1 and not refused[0].ok and refused[0].reason == 0x0124
    assert not (settings.data_dir / "results").exists() or not any((settings.data_dir / "results").rglob("*.dcm"))


def test_remote_worker_encodes_and_exports_without_shared_storage(
    node: Any, tmp_path: Path, orthanc_factory: Any
) -> None:
    """Analysis output made on one host, encoding on a second, export on a third; none of
    them sees the node's DATA_DIR. SR, SEG (from the uploaded masks) and key image reach
    Orthanc; the node holds the results."""
    orthanc: OrthancServer = orthanc_factory()
    settings, db, study, http = node
    settings = load_settings(data_dir=settings.data_dir, worker_token=TOKEN, destinations=[orthanc.destination])
    gpu = _worker(tmp_path, "gpu", settings, http.url)
    cpu = _worker(tmp_path, "cpu", settings, http.url, worker_cache_mb=0)
    exp = _worker(tmp_path, "export", settings, http.url)

    sag = [p for p in study.paths if "SAG" in str(dcmread(p, stop_before_pixels=True).SeriesDescription)]
    gen = _analysed(gpu, study.study_uid, sag)  # writes the masks where the analyze stage does
    from workers.analyze import masks_path as _masks_path

    gpu.spool.publish_masks(study.study_uid, gen, _masks_path(gpu, study.study_uid, gen))

    encode_study(cpu, study.study_uid, gen)
    with db.session() as s:
        st = s.execute(select(Study).where(Study.study_uid == study.study_uid)).scalar_one()
        assert st.state == StudyState.EXPORTING, st.reason
    assert cpu.send == [("export", study.study_uid, gen)]  # type: ignore[comparison-overlap]
    results = sorted((settings.data_dir / "results" / study.study_uid).glob("*.dcm"))
    assert len(results) == 3  # stored on the node by STOW-RS
    assert not any((tmp_path / "cpu" / "cache").rglob("*.dcm"))  # a 0 MB cache is emptied after the stage

    export_study(exp, study.study_uid, gen)
    with db.session() as s:
        st = s.execute(select(Study).where(Study.study_uid == study.study_uid)).scalar_one()
        assert st.state == StudyState.DONE, st.reason
    assert sorted(_orthanc_objects(orthanc, study.study_uid)) == ["OT", "SEG", "SR"]
    for ctx in (gpu, cpu, exp):
        assert not (ctx.settings.data_dir / "incoming").exists() or not any(
            (ctx.settings.data_dir / "incoming").rglob("*.dcm"))
        ctx.db.dispose()


def test_missing_files_fail_analyze_naming_instance_and_host(node: Any, tmp_path: Path) -> None:
    """Without NODE_URL (and a DATA_DIR without the files) the analyze stage fails at once,
    naming the instance and the host, instead of "not analysed"; with a NODE_URL whose node
    does not have the file it names the node."""
    settings, db, study, http = node
    gen = _queued(db, study.study_uid)
    lonely = _worker(tmp_path, "lonely", settings, None)
    analyze_study(lonely, study.study_uid, gen)
    with db.session() as s:
        st = s.execute(select(Study).where(Study.study_uid == study.study_uid)).scalar_one()
        assert st.state == StudyState.FAILED and st.failed_stage == "analyze"
        assert "lonely-host" in (st.reason or "") and "NODE_URL" in (st.reason or "")
        sops = {p.stem for p in (settings.data_dir / "incoming").rglob("*.dcm")}
        assert any(sop in (st.reason or "") for sop in sops)
        assert st.findings is None and st.not_analysed_reason is None
    lonely.db.dispose()


def test_remote_analysis_reads_the_headers_in_memory_and_the_selected_series_in_full(
    node: Any, tmp_path: Path
) -> None:
    """A worker without the study's files classifies it from the node's WADO-RS metadata
    held in memory (no header files written), then gives the analyzer the selected series
    with their pixels as the node has them, fetched after the selection."""
    from models.analyzer import AnalyzerError
    from workers.analysis import AnalyzerCache

    class Recording:
        def __init__(self) -> None:
            self.series: dict[str, list[Any]] = {}
            self.selected: set[str] = set()

        def analyze_selected(self, study_uid: str, series: Any, selection: Any, region: str | None) -> Any:
            self.series, self.selected = dict(series), set(selection.series_uids())
            raise AnalyzerError("recorded")

    settings, db, study, http = node
    gen = _queued(db, study.study_uid)
    w = _worker(tmp_path, "far", settings, http.url)
    recording = Recording()
    w.analyzers = AnalyzerCache(lambda *_: recording)
    analyze_study(w, study.study_uid, gen)
    with db.session() as s:
        st = s.execute(select(Study).where(Study.study_uid == study.study_uid)).scalar_one()
        assert st.state == StudyState.ENCODING and st.not_analysed_reason == "recorded", st.reason
    assert not list((tmp_path / "far" / "cache" / "headers").rglob("*.dcm"))  # held in memory, not written
    sources = {str(ds.SOPInstanceUID): (p, ds) for p in study.paths if (ds := dcmread(p, stop_before_pixels=True))}
    assert recording.selected and sum(len(v) for v in recording.series.values()) == len(study.paths)
    for uid, datasets in recording.series.items():
        for ds in datasets:
            path, header = sources[str(ds.SOPInstanceUID)]
            assert str(header.SeriesInstanceUID) == uid and ds.SeriesDescription == header.SeriesDescription
            if uid in recording.selected:
                assert ds.PixelData == dcmread(path).PixelData
            else:
                assert "PixelData" not in ds
    w.db.dispose()


def test_fetched_headers_and_series_and_the_cache_budget(node: Any, tmp_path: Path) -> None:
    """require_headers fetches headers only; require_series fetches one series' full
    files; leaving the study trims the cache to its budget (least recently used first)."""
    settings, db, study, http = node
    w = _worker(tmp_path, "w", settings, http.url, worker_cache_mb=0.05)
    access = w.spool
    sag = [p for p in study.paths if "SAG" in str(dcmread(p, stop_before_pixels=True).SeriesDescription)]
    sag_uid = str(dcmread(sag[0], stop_before_pixels=True).SeriesInstanceUID)
    with access.study(study.study_uid):
        files = access.require_headers(study.study_uid)
        assert len(files) == len(study.paths)
        assert all("headers" in access.absolute(f.rel).parts for f in files)
        header = dcmread(access.absolute(files[0].rel))
        assert "PixelData" not in header and header.SOPInstanceUID == files[0].sop_uid
        access.require_series(study.study_uid, [sag_uid])
        full = [access.absolute(f.rel) for f in files if f.series_uid == sag_uid]
        assert all("full" in p.parts for p in full)
        assert sorted(p.read_bytes() for p in full) == sorted(p.read_bytes() for p in sag)
        assert access.cache_entries()  # kept while the study is in use, over budget or not
    size = sum(p.stat().st_size for p in access.cache.rglob("*") if p.is_file())
    assert size <= 0.05 * 2**20
    w.db.dispose()


def test_encode_fetches_a_series_it_reads_several_images_of_in_one_request(
    node: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A builder reading one image of a series costs one WADO-RS instance request; from
    the second image of that series on, the rest of the series comes in one request
    (the dural sac area reads a whole axial series: it used to be a request per image)."""
    from workers.analyze import masks_path
    from workers.results import builders
    from workers.results.builder import ResultBuilder
    from workers.results.identity import ResultKind

    settings, _db, study, http = node
    gpu = _worker(tmp_path, "gpu", settings, http.url)
    cpu = _worker(tmp_path, "cpu", settings, http.url)
    headers = {p: dcmread(p, stop_before_pixels=True) for p in study.paths}
    sag = [p for p, ds in headers.items() if "SAG" in str(ds.SeriesDescription)]
    axial = [ds for ds in headers.values() if "AX" in str(ds.SeriesDescription)]
    gen = _analysed(gpu, study.study_uid, sag)
    gpu.spool.publish_masks(study.study_uid, gen, masks_path(gpu, study.study_uid, gen))
    read: list[Any] = []

    def reader(inputs: Any, identity: Any) -> None:
        read.extend(inputs.source_image(str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)) for ds in axial)

    monkeypatch.setattr(builders, "BUILDERS", (*builders.BUILDERS, ResultBuilder(ResultKind.KEY_IMAGES, reader)))
    requests: list[str] = []
    client = cpu.spool.client()
    original = client.retrieve
    monkeypatch.setattr(client, "retrieve", lambda path, *a: requests.append(path) or original(path, *a))
    encode_study(cpu, study.study_uid, gen)
    by_sop = {str(ds.SOPInstanceUID): p for p, ds in headers.items()}
    assert [ds.PixelData for ds in read] == [dcmread(by_sop[str(ds.SOPInstanceUID)]).PixelData for ds in axial]
    axial_uid = str(axial[0].SeriesInstanceUID)
    series_requests = [r for r in requests if r.endswith(f"/series/{axial_uid}")]
    instance_requests = [r for r in requests if f"/series/{axial_uid}/instances/" in r]
    assert len(series_requests) == 1 and len(instance_requests) == 1, requests
    for ctx in (gpu, cpu):
        ctx.db.dispose()


def test_worker_fetches_over_https_verified_against_tls_ca(node: Any, tmp_path: Path) -> None:
    """HTTP_TLS: the node's HTTP listener (spinenode_app.node._start_http) serves /dicom-web over
    TLS; a worker with TLS_CA fetches; one without the CA is refused at the handshake and
    the error names the host."""
    from spinenode.core.errors import NodeUnreachableError
    from spinenode_app.node import _start_http
    from test_tls import _openssl

    settings, db, study, _http = node
    d = tmp_path / "pki"
    d.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=spinenode test CA", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "node.key", "-out", "node.csr", "-subj", "/CN=node",
             cwd=d)
    (d / "node.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "node.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "node.crt", "-days", "2", "-extfile", "node.ext", cwd=d)
    port = free_port()
    tls_settings = load_settings(data_dir=settings.data_dir, worker_token=TOKEN, http_tls=True, http_port=port,
                                 tls_cert=d / "node.crt", tls_key=d / "node.key")
    server, thread = _start_http(tls_settings, create_app(AdminContext(tls_settings, db, lambda *a: None,
                                                                      lambda: {})))
    try:
        wait_until(lambda: server.started, 10, what="uvicorn with TLS")  # type: ignore[attr-defined]
        url = f"https://127.0.0.1:{port}"
        trusted = _worker(tmp_path, "trusted", settings, url, tls_ca=d / "ca.crt")
        files = trusted.spool.require_headers(study.study_uid)
        assert all(trusted.spool.absolute(f.rel).exists() for f in files)
        stranger = _worker(tmp_path, "stranger", settings, url)
        with pytest.raises(NodeUnreachableError, match="stranger-host"):
            stranger.spool.require_headers(study.study_uid)
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5)  # no plain HTTP on that port
        trusted.db.dispose()
        stranger.db.dispose()
    finally:
        server.should_exit = True  # type: ignore[attr-defined]
        thread.join(10)


def test_unreachable_node_requeues_the_study_naming_the_host_then_fails(node: Any, tmp_path: Path) -> None:
    """A node that does not answer (nothing listens on NODE_URL's port) is transient: the
    study goes back to QUEUED with a reason naming the worker's host and the node's
    address (admin API), the sweep sends it again only after REQUEUE_AFTER, and after
    NODE_UNREACHABLE_LIMIT such times it is FAILED(analyze) naming them."""
    import datetime as dt

    from scp_node.routing import load_rules
    from scp_node.scheduler import Scheduler
    from workers.stage import NODE_UNREACHABLE_LIMIT

    settings, db, study, http = node
    gen = _queued(db, study.study_uid)
    dead = f"127.0.0.1:{free_port()}"
    w = _worker(tmp_path, "far", settings, f"http://{dead}")
    sent: list[tuple[str, str, int]] = []
    clock = [dt.datetime.now(dt.timezone.utc)]
    sweeper = Scheduler(load_settings(data_dir=settings.data_dir, requeue_after=60), db,
                        lambda *m: sent.append(m), load_rules(), lambda: clock[0])
    for attempt in range(NODE_UNREACHABLE_LIMIT):
        analyze_study(w, study.study_uid, gen)
        row = httpx.get(f"{http.url}/api/studies/{study.study_uid}", timeout=10).json()
        assert row["state"] == "QUEUED" and row["failed_stage"] is None, row
        assert "far-host" in row["reason"] and dead in row["reason"] and "waiting for the node" in row["reason"]
        clock[0] = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=30)
        sweeper.sweep()
        assert sent == [], "sent again before REQUEUE_AFTER"
        clock[0] += dt.timedelta(seconds=31)
        sweeper.sweep()
        assert sent == [("analyze", study.study_uid, gen)]
        sent.clear()
    analyze_study(w, study.study_uid, gen)
    with db.session() as s:
        st = s.execute(select(Study).where(Study.study_uid == study.study_uid)).scalar_one()
        assert st.state == StudyState.FAILED and st.failed_stage == "analyze"
        assert "NodeUnreachableError" in (st.reason or "") and "far-host" in (st.reason or "")
        assert dead in (st.reason or "")
    w.db.dispose()


def test_one_message_analyses_the_waiting_studies_in_one_batch_and_a_bad_one_fails_alone(
    node: Any, tmp_path: Path
) -> None:
    """Two studies QUEUED; the message of the first takes the second along (one batched
    analyzer pass). The first has lost a file (a worker on the node's DATA_DIR, no NODE_URL):
    it alone is FAILED(analyze); the second goes on to ENCODING and its encode is sent. The
    second study's own message, arriving later, is dropped: one analysis per study."""
    settings, db, bad, http = node
    good = dicomgen.write_study(tmp_path / "src2", seed=82, rows=96, cols=96, series=(
        dicomgen.SeriesSpec("SAG T2 TSE", "sagittal", 9, "T2"),))
    ingestor = Ingestor(db, Spool(settings.data_dir))
    for p in good.paths:
        data = p.read_bytes()
        ingestor.store(parse_header(data), data, "TEST")
    gen_bad, gen_good = _queued(db, bad.study_uid), _queued(db, good.study_uid)
    next((settings.data_dir / "incoming" / bad.study_uid).rglob("*.dcm")).unlink()
    named: list[list[str]] = []
    shared = StageContext(settings, Database(settings.database_url), SpoolAccess(settings, db, host="shared-host"),
                          Sent(), working_on=lambda uids: named.append(list(uids)))  # type: ignore[arg-type]
    analyze_study(shared, bad.study_uid, gen_bad)
    # the heartbeat names both studies of the batch, so the sweep leaves both alone
    assert named == [[bad.study_uid, good.study_uid]]
    with db.session() as s:
        states = {st.study_uid: st for st in s.scalars(select(Study)).all()}
        assert states[bad.study_uid].state == StudyState.FAILED and states[bad.study_uid].failed_stage == "analyze"
        assert "shared-host" in (states[bad.study_uid].reason or "")
        assert states[good.study_uid].state == StudyState.ENCODING, states[good.study_uid].reason
    assert shared.send == [("encode", good.study_uid, gen_good)]  # type: ignore[comparison-overlap]
    analyze_study(shared, good.study_uid, gen_good)  # its own message: dropped
    assert shared.send == [("encode", good.study_uid, gen_good)]  # type: ignore[comparison-overlap]
    shared.db.dispose()


def test_worker_routes_follow_their_own_token_under_the_read_policy(tmp_path: Path) -> None:
    """With VIEWER_TOKEN set (reads gated) the worker token still opens /dicom-web, many
    times over, and is not taken for a wrong viewer token; wrong worker tokens count in the
    same limiter: after 5 the address gets 429, the right token included."""
    settings = load_settings(data_dir=tmp_path / "n", worker_token=TOKEN, viewer_token="viewer-secret")
    db = Database(settings.database_url)
    db.migrate(settings.data_dir)
    http = NodeHttp(settings, db)
    try:
        with httpx.Client(base_url=http.url) as c:
            for _ in range(8):
                assert c.get("/dicom-web/studies/1.2.3", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 404
            assert c.get("/api/studies", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 401
            assert c.get("/dicom-web/studies/1.2.3", headers={"Authorization": "Bearer viewer-secret"}).status_code == 401
            for _ in range(4):
                c.get("/dicom-web/studies/1.2.3", headers={"Authorization": "Bearer wrong"})
            assert c.get("/dicom-web/studies/1.2.3", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 429
    finally:
        http.close()
        db.dispose()
