"""Encode and export stages with findings and masks, against a real Orthanc.

The analyzer is bypassed (its output is written to the study row as the analyze
stage would), so this runs without model weights; the Celery path is covered by
the process tests.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
from pydicom import dcmread
from sqlalchemy import select

import dicomgen
from study_states import walk_to
from models.types import Box, Condition, Findings, Grade, Level, LevelFindings, ModelId, Region, SeriesMasks
from peers import OrthancServer, dciodvfy
from spinenode.core.db.models import Result, Study, StudyState
from spinenode.core.db.session import Database
from scp_node.dicomio import parse_header
from scp_node.ingest import Ingestor
from spinenode.core.settings import load_settings
from spinenode.core.storage import Spool
from workers.spool import SpoolAccess
from workers.analyze import masks_path
from workers.encode import encode_study
from workers.export_stage import export_study
from workers.stage import StageContext
from workers.record import AnalysisRecord, MaskSet, MasksRef, SeriesUse
from workers.results.seg import save_masks

MODEL = ModelId("spinenode-test-model", "0.0.1")


class Sent(list[tuple[str, str, int]]):
    def __call__(self, stage: str, uid: str, generation: int, countdown: float = 0.0) -> None:
        self.append((stage, uid, generation))


def _analysed(ctx: StageContext, study_uid: str, paths: list[Path]) -> int:
    """Put the study where the analyze stage leaves it: ENCODING with findings and masks."""
    sag = [dcmread(p, stop_before_pixels=True) for p in paths if "SAG T2" in str(dcmread(p, stop_before_pixels=True).SeriesDescription)]
    mid = sag[len(sag) // 2]
    levels = tuple(
        LevelFindings(
            Level(name, str(mid.SeriesInstanceUID), str(mid.SOPInstanceUID), len(sag) // 2,
                  Box(30, 20 + 20 * i, 60, 26 + 20 * i), 0.9, (0.0, 0.0, 0.0)),
            (Grade(Condition.SPINAL_CANAL_STENOSIS, (0.1, 0.1, 0.8) if name == "L4-L5" else (0.8, 0.1, 0.1)),),
        )
        for i, name in enumerate(("L4-L5", "L5-S1"))
    )
    findings = Findings(study_uid, Region.LUMBAR, MODEL, levels)
    labels = np.zeros((len(sag), 96, 96), dtype=np.uint8)
    labels[len(sag) // 2, 20:26, 30:60] = 1
    labels[len(sag) // 2, 40:46, 30:60] = 2
    masks = SeriesMasks(str(mid.SeriesInstanceUID), tuple(str(d.SOPInstanceUID) for d in sorted(
        sag, key=lambda d: int(d.InstanceNumber))), labels, {1: "disc L4-L5", 2: "disc L5-S1"}, MODEL)
    with ctx.db.session() as s:
        st = s.execute(select(Study).where(Study.study_uid == study_uid)).scalar_one()
        generation = st.generation
    sha256 = save_masks([masks], masks_path(ctx, study_uid, generation))
    record = AnalysisRecord.of(
        findings, (SeriesUse("sagittal_t2", str(mid.SeriesInstanceUID), len(sag)),),
        MasksRef(ctx.spool.masks_rel(study_uid, generation).as_posix(), sha256, (MaskSet.of(masks),)), 1.0)
    with ctx.db.session() as s:
        st = s.execute(select(Study).where(Study.study_uid == study_uid)).scalar_one()
        st.findings = record.to_json()
        walk_to(s, st, StudyState.ENCODING, stage="analyze", detail="test")
    return generation


def _orthanc_objects(orthanc: OrthancServer, study_uid: str) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for iid in orthanc.study_instances(study_uid):
        ds = dcmread(io.BytesIO(orthanc.download(iid)))
        out.setdefault(str(ds.Modality), []).append(ds)
    return out


def test_encode_export_sr_seg_keyimage_and_reanalysis(tmp_path: Path, orthanc_factory: Any) -> None:
    orthanc: OrthancServer = orthanc_factory()
    settings = load_settings(data_dir=tmp_path / "data", destinations=[orthanc.destination])
    db = Database(settings.database_url)
    db.migrate(settings.data_dir)
    spool = Spool(settings.data_dir)
    ctx = StageContext(settings, db, SpoolAccess(settings, db), Sent())  # type: ignore[arg-type]
    ingestor = Ingestor(db, spool)
    study = dicomgen.write_study(tmp_path / "src", seed=71, rows=96, cols=96, series=(
        dicomgen.SeriesSpec("SAG T2 TSE", "sagittal", 9, "T2"), dicomgen.SeriesSpec("AX T2", "axial", 6, "T2")))
    for p in study.paths[:-1]:
        data = p.read_bytes()
        ingestor.store(parse_header(data), data, "TEST")

    gen = _analysed(ctx, study.study_uid, study.paths[:-1])
    encode_study(ctx, study.study_uid, gen)
    assert ctx.send == [("export", study.study_uid, gen)]  # type: ignore[comparison-overlap]
    export_study(ctx, study.study_uid, gen)
    with db.session() as s:
        st = s.execute(select(Study).where(Study.study_uid == study.study_uid)).scalar_one()
        assert st.state == StudyState.DONE, st.reason
        kinds = sorted(s.scalars(select(Result.kind)).all())
    assert kinds == ["key-images", "seg", "sr"]

    objs = _orthanc_objects(orthanc, study.study_uid)
    assert sorted(objs) == ["OT", "SEG", "SR"]  # the key image is a secondary capture (OT)
    first_sr = objs["SR"][0]
    for modality in ("SR", "SEG", "OT"):
        path = tmp_path / f"{modality}.dcm"
        objs[modality][0].save_as(path)
        assert dciodvfy(path).errors == [], modality
    hd.seg.segread(tmp_path / "SEG.dcm")
    hd.sr.srread(tmp_path / "SR.dcm")

    # a late instance reopens the study; the re-analysis gives a new SR naming the old one
    data = study.paths[-1].read_bytes()
    ingestor.store(parse_header(data), data, "TEST")
    gen2 = _analysed(ctx, study.study_uid, study.paths)
    assert gen2 == gen + 1
    encode_study(ctx, study.study_uid, gen2)
    export_study(ctx, study.study_uid, gen2)
    objs = _orthanc_objects(orthanc, study.study_uid)
    assert len(objs["SR"]) == 2 and len({d.SeriesInstanceUID for d in objs["SR"]}) == 1
    newest = next(d for d in objs["SR"] if d.SOPInstanceUID != first_sr.SOPInstanceUID)
    pred = newest.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert pred.ReferencedSOPInstanceUID == first_sr.SOPInstanceUID
    db.dispose()


def _encode_and_export(tmp_path: Path, destination: str, seed: int) -> tuple[StageContext, Any, int]:
    """A one-series study received, analysed (as the analyze stage leaves it), encoded and
    exported once to ``destination``; returns the stage context, the study and its generation."""
    settings = load_settings(data_dir=tmp_path / "data", destinations=[destination])
    db = Database(settings.database_url)
    db.migrate(settings.data_dir)
    spool = Spool(settings.data_dir)
    ctx = StageContext(settings, db, SpoolAccess(settings, db), Sent())  # type: ignore[arg-type]
    study = dicomgen.write_study(tmp_path / "src", seed=seed, rows=96, cols=96, series=(
        dicomgen.SeriesSpec("SAG T2 TSE", "sagittal", 9, "T2"),))
    ingestor = Ingestor(db, spool)
    for p in study.paths:
        data = p.read_bytes()
        ingestor.store(parse_header(data), data, "TEST")
    gen = _analysed(ctx, study.study_uid, study.paths)
    encode_study(ctx, study.study_uid, gen)
    export_study(ctx, study.study_uid, gen)
    return ctx, study, gen


SC_ONLY_PROFILE = """[[TransferSyntaxes]]
[Uncompressed]
TransferSyntax1 = LocalEndianExplicit
TransferSyntax2 = LittleEndianImplicit
[[PresentationContexts]]
[ScOnly]
PresentationContext1 = VerificationSOPClass\\Uncompressed
PresentationContext2 = SecondaryCaptureImageStorage\\Uncompressed
[[Profiles]]
[ScOnly]
PresentationContexts = ScOnly
"""


def test_destination_refusing_sr_and_seg_gets_the_key_image(tmp_path: Path) -> None:
    """A viewer/PACS that accepts only secondary captures: SR and SEG fall back to the key image."""
    from peers import StorescpServer
    from spinenode.core.db.models import Export, ExportState

    cfg = tmp_path / "sc-only.cfg"
    cfg.write_text(SC_ONLY_PROFILE)
    with StorescpServer(tmp_path / "pacs", extra_args=("-xf", str(cfg), "ScOnly")) as pacs:
        ctx, study, _gen = _encode_and_export(tmp_path, pacs.destination, seed=72)
        db = ctx.db
        with db.session() as s:
            st = s.execute(select(Study).where(Study.study_uid == study.study_uid)).scalar_one()
            assert st.state == StudyState.DONE, st.reason
            rows = {k: e for k, e in s.execute(
                select(Result.kind, Export).join(Export, Export.result_id == Result.id)).all()}
            assert rows["key-images"].state == ExportState.SENT
            assert rows["sr"].state == rows["seg"].state == ExportState.FALLBACK
            assert "presentation context" in (rows["sr"].last_error or "")
            assert "key images sent instead" in (st.events[-1].detail or "")
        received = pacs.wait_for_files(1)
        assert len(received) == 1 and dcmread(received[0], stop_before_pixels=True).SeriesNumber == 9903
        db.dispose()


def test_permanent_refusal_fails_the_export_with_its_status(tmp_path: Path) -> None:
    """A destination that answers 0xA900 (data set does not match SOP class) to everything:
    no retry, FAILED(export) with the status code. DCMTK storescp and Orthanc cannot be
    told to refuse, so this peer is a minimal pynetdicom SCP (a real association on TCP)."""
    from pynetdicom import AE, AllStoragePresentationContexts, evt
    from pynetdicom.sop_class import Verification

    from peers import free_port
    from spinenode.core.db.models import Export, ExportState

    ae = AE(ae_title="REFUSER")
    ae.add_supported_context(Verification)
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax)
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False,
                             evt_handlers=[(evt.EVT_C_STORE, lambda event: 0xA900)])
    try:
        ctx, study, gen = _encode_and_export(tmp_path, f"REFUSER@127.0.0.1:{port}", seed=73)
        db, sent = ctx.db, ctx.send
        with db.session() as s:
            st = s.execute(select(Study).where(Study.study_uid == study.study_uid)).scalar_one()
            assert st.state == StudyState.FAILED and st.failed_stage == "export"
            assert "0xA900" in (st.reason or "")
            exports = s.scalars(select(Export)).all()
            assert {e.state for e in exports} == {ExportState.FAILED}
            assert {e.last_status for e in exports} == {0xA900} and {e.attempts for e in exports} == {1}
        assert sent.count(("export", study.study_uid, gen)) == 1  # type: ignore[attr-defined]  # no retry
        db.dispose()
    finally:
        server.shutdown()


DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


def test_dicomweb_destination_gets_results_by_stow_rs(tmp_path: Path, orthanc_factory: Any) -> None:
    """A DESTINATIONS entry dicomweb+http://... goes through the STOW-RS exporter to Orthanc's
    DICOMweb plugin (no C-STORE: Orthanc's DICOM port is not the one named)."""
    from spinenode.core.db.models import Export, ExportState

    orthanc: OrthancServer = orthanc_factory(extra_config={
        "Plugins": [DICOMWEB_PLUGIN], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}})
    dest = f"dicomweb+http://127.0.0.1:{orthanc.http_port}/dicom-web"
    ctx, study, _gen = _encode_and_export(tmp_path, dest, seed=74)
    with ctx.db.session() as s:
        st = s.execute(select(Study).where(Study.study_uid == study.study_uid)).scalar_one()
        assert st.state == StudyState.DONE, st.reason
        exports = s.scalars(select(Export)).all()
        assert {e.destination for e in exports} == {dest} and {e.state for e in exports} == {ExportState.SENT}
    objs = _orthanc_objects(orthanc, study.study_uid)
    assert sorted(objs) == ["OT", "SEG", "SR"]
    with ctx.db.session() as s:
        ours = {r.sop_instance_uid: r.path for r in s.scalars(select(Result)).all()}
    for modality, (ds,) in objs.items():  # what the node wrote, one object each
        assert str(ds.SOPInstanceUID) in ours, modality
    ctx.db.dispose()


def test_unreachable_dicomweb_destination_is_retried(tmp_path: Path) -> None:
    from peers import free_port
    from spinenode.core.db.models import Export, ExportState

    dest = f"dicomweb+http://127.0.0.1:{free_port()}/dicom-web"
    ctx, study, gen = _encode_and_export(tmp_path, dest, seed=75)
    with ctx.db.session() as s:
        st = s.execute(select(Study).where(Study.study_uid == study.study_uid)).scalar_one()
        assert st.state == StudyState.EXPORTING
        exports = s.scalars(select(Export)).all()
        assert {e.state for e in exports} == {ExportState.PENDING} and {e.attempts for e in exports} == {1}
        assert all("unreachable" in (e.last_error or "") for e in exports)
    assert ("export", study.study_uid, gen) in ctx.send  # type: ignore[operator]  # the retry is scheduled
    ctx.db.dispose()


def test_exporter_registry_and_destination_settings(tmp_path: Path) -> None:
    import pytest

    from spinenode.core.errors import ConfigError
    from spinenode.core.destinations import EXPORTERS
    from workers.export import exporter_for
    from workers.exporters.dimse import DimseExporter
    from workers.exporters.stow import StowExporter

    assert isinstance(exporter_for("PACS@10.0.0.5:104;tls"), DimseExporter)
    assert isinstance(exporter_for("dicomweb+https://pacs.example/dicom-web"), StowExporter)
    assert set(EXPORTERS) == {"dimse", "dicomweb+http", "dicomweb+https"}
    for scheme in EXPORTERS:  # every registration names a class with the Exporter's send
        assert callable(exporter_for(f"{scheme}://h/p" if scheme != "dimse" else "A@h:104").send)
    with pytest.raises(ConfigError):
        exporter_for("ftp://x/y")
    s = load_settings(data_dir=tmp_path, destinations="PACS@10.0.0.5:104, dicomweb+http://10.0.0.6:8042/dicom-web/")
    assert s.destinations == ["PACS@10.0.0.5:104", "dicomweb+http://10.0.0.6:8042/dicom-web"]
    for bad in ("http://10.0.0.6/dicom-web", "dicomweb+ftp://x/y", "dicomweb+http://"):
        with pytest.raises(ConfigError):
            load_settings(data_dir=tmp_path, destinations=bad)


def test_missing_result_file_fails_the_export_at_once_naming_the_host(tmp_path: Path,
                                                                      storescp_server: Any) -> None:
    """A result file that is gone (another host's disk, deleted) cannot come back by waiting:
    FAILED(export) after one attempt with the object and host named (it was retried as a
    network error for hours before)."""
    import socket

    from spinenode.core.db.models import Export, ExportState

    settings = load_settings(data_dir=tmp_path / "data", destinations=[storescp_server.destination])
    db = Database(settings.database_url)
    db.migrate(settings.data_dir)
    spool = Spool(settings.data_dir)
    ctx = StageContext(settings, db, SpoolAccess(settings, db), Sent())  # type: ignore[arg-type]
    study = dicomgen.write_study(tmp_path / "src", seed=76, rows=96, cols=96, series=(
        dicomgen.SeriesSpec("SAG T2 TSE", "sagittal", 9, "T2"),))
    ingestor = Ingestor(db, spool)
    for p in study.paths:
        data = p.read_bytes()
        ingestor.store(parse_header(data), data, "TEST")
    gen = _analysed(ctx, study.study_uid, study.paths)
    encode_study(ctx, study.study_uid, gen)
    with db.session() as s:
        sr = s.execute(select(Result).where(Result.kind == "sr")).scalar_one()
        (settings.data_dir / sr.path).unlink()
    export_study(ctx, study.study_uid, gen)
    with db.session() as s:
        st = s.execute(select(Study).where(Study.study_uid == study.study_uid)).scalar_one()
        assert st.state == StudyState.FAILED and st.failed_stage == "export"
        failed = s.execute(select(Export).join(Result, Result.id == Export.result_id)
                           .where(Result.kind == "sr")).scalar_one()
        assert failed.state == ExportState.FAILED and failed.attempts == 1
        assert sr.sop_instance_uid in (failed.last_error or "") and socket.gethostname() in (failed.last_error or "")
    assert ctx.send.count(("export", study.study_uid, gen)) == 1  # type: ignore[attr-defined]  # no retry queued
    db.dispose()


def test_masks_written_on_another_host_fail_the_encode_instead_of_dropping_the_seg(tmp_path: Path) -> None:
    """The analyze stage saved masks, but they are not on this host and there is no node to
    ask (a DATA_DIR whose incoming/ is shared and results/ is not): FAILED(encode) naming
    the masks and the host, never findings without their SEG."""
    settings = load_settings(data_dir=tmp_path / "data", destinations=[])
    db = Database(settings.database_url)
    db.migrate(settings.data_dir)
    spool = Spool(settings.data_dir)
    ctx = StageContext(settings, db, SpoolAccess(settings, db, host="cpu-host"), Sent())  # type: ignore[arg-type]
    study = dicomgen.write_study(tmp_path / "src", seed=77, rows=96, cols=96, series=(
        dicomgen.SeriesSpec("SAG T2 TSE", "sagittal", 9, "T2"),))
    ingestor = Ingestor(db, spool)
    for p in study.paths:
        data = p.read_bytes()
        ingestor.store(parse_header(data), data, "TEST")
    gen = _analysed(ctx, study.study_uid, study.paths)
    masks_path(ctx, study.study_uid, gen).unlink()  # on the analysis host only
    encode_study(ctx, study.study_uid, gen)
    with db.session() as s:
        st = s.execute(select(Study).where(Study.study_uid == study.study_uid)).scalar_one()
        assert st.state == StudyState.FAILED and st.failed_stage == "encode"
        assert "masks" in (st.reason or "") and "cpu-host" in (st.reason or "")
        assert s.scalars(select(Result)).all() == []
    db.dispose()


def test_export_proposes_explicit_then_implicit_little_endian_only(tmp_path: Path) -> None:
    """DCMTK storescp accepting every transfer syntax (``+xa``) used to pick Deflated from
    pynetdicom's default list; export now proposes Explicit VR Little Endian, then Implicit,
    so the PACS stores Explicit VR Little Endian files that dciodvfy reads with 0 errors."""
    from peers import StorescpServer
    from workers.exporters.dimse import PROPOSED_TRANSFER_SYNTAXES

    assert PROPOSED_TRANSFER_SYNTAXES == ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")
    with StorescpServer(tmp_path / "pacs") as pacs:  # +xa: accepts all, prefers compressed/deflated
        ctx, study, _gen = _encode_and_export(tmp_path, pacs.destination, seed=74)
        received = pacs.wait_for_files(3)
        assert len(received) == 3
        for path in received:
            ds = dcmread(path)
            assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1", (ds.Modality, ds.file_meta.TransferSyntaxUID)
            assert dciodvfy(path).errors == [], ds.Modality
        ctx.db.dispose()


DEFLATED_ONLY_PROFILE = """[[TransferSyntaxes]]
[Deflated]
TransferSyntax1 = DeflatedLittleEndianExplicit
[Uncompressed]
TransferSyntax1 = LittleEndianImplicit
[[PresentationContexts]]
[DeflatedOnly]
PresentationContext1 = VerificationSOPClass\\Uncompressed
PresentationContext2 = Comprehensive3DSRStorage\\Deflated
PresentationContext3 = SegmentationStorage\\Deflated
PresentationContext4 = SecondaryCaptureImageStorage\\Deflated
[[Profiles]]
[DeflatedOnly]
PresentationContexts = DeflatedOnly
"""


def test_destination_option_asks_for_deflated(tmp_path: Path) -> None:
    """A destination given as ``AE@HOST:PORT;ts=deflate`` gets Deflated Explicit VR Little
    Endian proposed: DCMTK storescp with a profile that accepts only Deflated for the three
    result classes receives all three objects deflated (written bit-preserving)."""
    from peers import StorescpServer

    cfg = tmp_path / "deflated-only.cfg"
    cfg.write_text(DEFLATED_ONLY_PROFILE)
    with StorescpServer(tmp_path / "pacs", extra_args=("-xf", str(cfg), "DeflatedOnly")) as pacs:
        ctx, study, _gen = _encode_and_export(tmp_path, f"{pacs.destination};ts=deflate", seed=75)
        with ctx.db.session() as s:
            st = s.execute(select(Study).where(Study.study_uid == study.study_uid)).scalar_one()
            assert st.state == StudyState.DONE, st.reason
        received = pacs.wait_for_files(3)
        assert len(received) == 3
        for path in received:
            ds = dcmread(path)
            assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1.99", (ds.Modality, ds.file_meta)
        ctx.db.dispose()
