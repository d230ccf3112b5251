"""Bad input beyond the header: non-image objects, absurd sizes, lying transfer syntax,
images without pixels. The receiver answers with a status; the pipeline ends with a
"not analysed" SR instead of a crash."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless, MRImageStorage
from sqlalchemy import select

import dicomgen
from nodeproc import Node, dataset_bytes
from rawscu import send_raw, write_raw
from spinenode.core import status
from spinenode.core.db.models import Instance

BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"


def _sr_document(study_uid: str, tmp: Path) -> Path:
    from pydicom.dataset import Dataset, FileMetaDataset

    ds = Dataset()
    ds.SOPClassUID = BASIC_TEXT_SR
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.77.1"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.77.2"
    ds.Modality = "SR"
    ds.PatientName = "PHANTOM^SR"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path = tmp / "sr.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_non_image_absurd_and_lying_objects(node_factory: Any, tmp_path: Path) -> None:
    node: Node = node_factory()
    study = dicomgen.write_study(tmp_path / "s", seed=121, series=(dicomgen.SeriesSpec("SAG T2", "sagittal", 1),))
    src = dcmread(study.paths[0])
    # absurd dimensions: 65535 x 65535 declared, a few bytes present
    huge = copy.deepcopy(src)
    huge.Rows = huge.Columns = 65535
    huge.SOPInstanceUID = huge.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.77.3"
    huge_path = tmp_path / "huge.dcm"
    huge.save_as(huge_path, enforce_file_format=True)
    # the context says JPEG-LS, the bytes are native pixels: stored as received (the node
    # does not decode on receipt); the analysis stage will say it cannot read them
    lying = write_raw(tmp_path / "lying.dcm", MRImageStorage, "1.2.826.0.1.3680043.8.498.77.4", JPEGLSLossless,
                      dataset_bytes(study.paths[0]).replace(str(src.SOPInstanceUID).encode(),
                                                            b"1.2.826.0.1.3680043.8.498.77.4".ljust(
                                                                len(str(src.SOPInstanceUID)), b"\0")))
    sr = _sr_document(str(src.StudyInstanceUID), tmp_path)
    statuses = send_raw(node.dicom_port, [sr, huge_path, lying], [
        (BASIC_TEXT_SR, ExplicitVRLittleEndian), (MRImageStorage, ExplicitVRLittleEndian),
        (MRImageStorage, JPEGLSLossless)])
    assert statuses[0] == status.SUCCESS  # a PACS routes whole studies: SR documents are accepted
    assert statuses[1] == status.CANNOT_UNDERSTAND  # pixel data far shorter than declared
    assert statuses[2] == status.SUCCESS
    assert statuses[-1] == status.SUCCESS and node.alive()


def test_images_without_pixels_get_a_not_analysed_sr(node_factory: Any, tmp_path: Path) -> None:
    node: Node = node_factory()
    study = dicomgen.write_study(tmp_path / "s", seed=122)
    stripped = tmp_path / "stripped"
    stripped.mkdir()
    files = []
    for p in study.paths:
        ds = dcmread(p)
        del ds.PixelData
        out = stripped / p.name.replace(".dcm", f"-{len(files)}.dcm")
        ds.save_as(out, enforce_file_format=True)
        files.append(out)
    statuses = send_raw(node.dicom_port, files, [(MRImageStorage, ExplicitVRLittleEndian)])
    assert set(statuses) == {status.SUCCESS}  # stored as sent: a header-only image is not malformed DICOM
    final = node.wait_state(study.study_uid, {"DONE", "FAILED"}, timeout=120)
    weights = Path(__file__).resolve().parents[1] / "models" / "weights" / "manifest.json"
    if weights.exists():
        assert final["state"] == "DONE", final
        assert [r["kind"] for r in final["results"]] == ["not-analysed-sr"]
        assert "could not" in (final["not_analysed_reason"] or "")
    else:
        assert final["failed_stage"] == "analyze"
    with node.db.session() as s:
        assert len(s.scalars(select(Instance.id)).all()) == len(files)
