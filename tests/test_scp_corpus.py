"""pydicom's test corpus (pip ``pydicom-data`` plus the files shipped inside pydicom),
sent by C-STORE to a running node (issue 15 item 5): every file is either stored byte
for byte or refused with the status its content calls for.

The files are read from the installed packages; ``get_testdata_files`` is never called
(it downloads what is missing).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import data_store  # pip pydicom-data (test extras)
import pytest
from pydicom import dcmread
from pydicom.uid import UID
from pynetdicom import AE
from pynetdicom import _config as pynetdicom_config
from sqlalchemy import select

from nodeproc import Node, dataset_bytes
from spinenode.core import status
from spinenode.core.db.models import Instance
from scp_node.scp import NOT_ACCEPTED_SOP_CLASSES
from spinenode.core.storage import check_uid


def corpus_files() -> list[Path]:
    import pydicom

    roots = [Path(data_store.__file__).parent / "data", Path(pydicom.__file__).parent / "data" / "test_files"]
    skip = {".dump", ".txt", ".json", ".gz", ".icc", ".py", ".pyc"}
    return sorted(p for root in roots for p in root.rglob("*")
                  if p.is_file() and p.suffix.lower() not in skip and "__pycache__" not in p.parts)


def non_patient_files(out: Path) -> list[Path]:
    """A Hanging Protocol and a Color Palette instance (Non-Patient Object Storage: no patient,
    study or series): pydicom's corpus has none, so they are written here, minimal but with
    the identifying modules their IODs require."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    out.mkdir(parents=True, exist_ok=True)
    files = []
    for name, sop_class, fields in (
        ("hanging-protocol.dcm", "1.2.840.10008.5.1.4.38.1",
         {"HangingProtocolName": "SPINE MR", "HangingProtocolLevel": "SITE", "NumberOfPriorsReferenced": 0}),
        ("color-palette.dcm", "1.2.840.10008.5.1.4.39.1", {"ContentLabel": "HOTIRON"}),
    ):
        ds = Dataset()
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, generate_uid()
        ds.InstanceCreationDate, ds.InstanceCreationTime = "20261203", "120000"
        for key, value in fields.items():
            setattr(ds, key, value)
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = sop_class, ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.save_as(out / name, enforce_file_format=True)
        files.append(out / name)
    return files


def _sendable(path: Path) -> tuple[str, str, str] | None:
    """(SOP Class, SOP Instance, transfer syntax) from the file meta, or None if the file
    is not a Part 10 file a C-STORE SCU could send."""
    try:
        meta = dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"]).file_meta
        return (check_uid(meta.MediaStorageSOPClassUID, "class"), check_uid(meta.MediaStorageSOPInstanceUID, "uid"),
                check_uid(meta.TransferSyntaxUID, "ts"))
    except Exception:
        return None  # no file meta, or UIDs a C-STORE request cannot carry


#: Outcome of a file whose presentation context the node rejected at negotiation.
CONTEXT_REJECTED = -2


def expected_status(path: Path, meta: tuple[str, str, str]) -> tuple[int, str]:
    """What the node must answer, from the file's content, with the reason."""
    if meta[0] in NOT_ACCEPTED_SOP_CLASSES:
        return CONTEXT_REJECTED, "a non-patient object or DICOMDIR (README: what the receiver accepts)"
    try:
        ds = dcmread(path, stop_before_pixels=True)
    except Exception as exc:
        return status.CANNOT_UNDERSTAND, f"pydicom cannot read it ({type(exc).__name__})"
    uids = {}
    for name in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        try:
            uids[name] = check_uid(ds.get(name), name)
        except Exception:
            return status.CANNOT_UNDERSTAND, f"{name} missing or invalid"
    if (uids["SOPClassUID"], uids["SOPInstanceUID"]) != meta[:2]:
        return status.DATASET_DOES_NOT_MATCH_SOP_CLASS, "file meta UIDs differ from the data set's"
    full = dcmread(path)
    if len(full) == 0:
        return status.CANNOT_UNDERSTAND, "pydicom reads no element from it (truncated)"
    if UID(meta[2]).is_encapsulated and "PixelData" in full:
        from pydicom.encaps import generate_fragments

        try:
            sum(1 for _ in generate_fragments(full.PixelData))
        except Exception:
            return status.CANNOT_UNDERSTAND, "encapsulated pixel data cut short"
    if not UID(meta[2]).is_encapsulated:
        # native pixels: pydicom's own expected length (4:2:2 and friends included)
        from pydicom.pixels.utils import get_expected_length

        for name in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
            if name in full and len(full[name].value) < get_expected_length(full, "bytes"):
                return status.CANNOT_UNDERSTAND, "native pixel data shorter than the image needs"
    return status.SUCCESS, "valid"


def _batches(items: list[Any], contexts_per_assoc: int = 100) -> Iterator[list[Any]]:
    batch: list[Any] = []
    seen: set[tuple[str, str]] = set()
    for item in items:
        cx = (item[1][0], item[1][2])
        if cx not in seen and len(seen) >= contexts_per_assoc:
            yield batch
            batch, seen = [], set()
        seen.add(cx)
        batch.append(item)
    if batch:
        yield batch


@pytest.mark.timeout(600)
def test_pydicom_corpus_is_stored_byte_for_byte_or_refused_rightly(node_factory: Any, tmp_path: Path) -> None:
    node: Node = node_factory(stable_seconds=3600)
    non_patient = non_patient_files(tmp_path / "non-patient")
    files = corpus_files() + non_patient
    assert len(files) > 230, len(files)
    sendable = [(p, m) for p in files if (m := _sendable(p)) is not None]
    assert len(sendable) > 150, len(sendable)
    got: dict[Path, int] = {}
    previous = pynetdicom_config.STORE_SEND_CHUNKED_DATASET
    pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True  # send the file's bytes as they are
    try:
        for batch in _batches(sendable):
            ae = AE(ae_title="CORPUS")
            for cx in sorted({(m[0], m[2]) for _, m in batch}):
                ae.add_requested_context(cx[0], [cx[1]])
            assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title="SPINENODE")
            assert assoc.is_established
            accepted = {(cx.abstract_syntax, cx.transfer_syntax[0]) for cx in assoc.accepted_contexts}
            try:
                for path, meta in batch:
                    if (meta[0], meta[2]) not in accepted:
                        got[path] = CONTEXT_REJECTED
                        continue
                    rsp = assoc.send_c_store(path)
                    got[path] = int(rsp.Status) if rsp is not None and "Status" in rsp else -1
            finally:
                assoc.release()
    finally:
        pynetdicom_config.STORE_SEND_CHUNKED_DATASET = previous

    with node.db.session() as s:
        stored = dict(s.execute(select(Instance.sop_instance_uid, Instance.path)).all())
    wrong = []
    by_status: dict[int, int] = {}
    for path, meta in sendable:
        want, why = expected_status(path, meta)
        code = got[path]
        by_status[code] = by_status.get(code, 0) + 1
        if code != want:
            wrong.append(f"{path.name}: 0x{code:04X}, expected 0x{want:04X} ({why})")
        elif code == status.SUCCESS:
            rel = stored.get(meta[1])
            if rel is None or dataset_bytes(node.data_dir / rel) != dataset_bytes(path):
                # the same SOP Instance UID may be in the corpus twice: the later copy wins
                twins = [p for p, m in sendable if m[1] == meta[1]]
                if rel is None or not any(dataset_bytes(node.data_dir / rel) == dataset_bytes(t) for t in twins):
                    wrong.append(f"{path.name}: acknowledged but not stored byte for byte")
    print({f"0x{k:04X}": v for k, v in sorted(by_status.items())}, f"of {len(sendable)} sendable,",
          f"{len(files) - len(sendable)} not Part 10")
    assert not wrong, "\n".join(wrong)
    # Hanging Protocol and Color Palette: refused at negotiation (presentation context result 3,
    # abstract syntax not supported) while the association's other contexts go on; nothing stored
    assert [got[p] for p in non_patient] == [CONTEXT_REJECTED, CONTEXT_REJECTED]
    with node.db.session() as s:
        assert s.execute(select(Instance.sop_instance_uid).where(Instance.sop_instance_uid.in_(
            [str(dcmread(p).SOPInstanceUID) for p in non_patient]))).all() == []
    assert by_status.get(status.SUCCESS, 0) > 150
    assert node.alive()
