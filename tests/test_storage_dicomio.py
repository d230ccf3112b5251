"""Spool writes and header parsing: UID safety, atomicity, truncation, mismatches."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

import dicomgen
from scp_node.dicomio import parse_header
from spinenode.core.errors import InvalidDatasetError, InvalidUIDError, SOPClassMismatchError, StorageError
from spinenode.core.storage import Spool, check_uid


@pytest.mark.parametrize(
    "bad",
    ["", None, "../../etc/passwd", "1.2/3", "1..2", ".1.2", "1.2.", "1.2.3\x00/x", "1" * 65, "1.2.a", "1.2 3"],
)
def test_check_uid_rejects_unsafe(bad: object) -> None:
    with pytest.raises(InvalidUIDError):
        check_uid(bad, "SOPInstanceUID")


def test_check_uid_accepts_and_strips() -> None:
    assert check_uid("1.2.840.10008.5.1.4.1.1.4 ", "x") == "1.2.840.10008.5.1.4.1.1.4"
    assert check_uid("1.2.3\x00", "x") == "1.2.3"


def test_write_is_atomic_and_idempotent(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    rel = spool.write("1.2", "1.2.3", "1.2.3.4", b"abc")
    assert rel == Path("incoming/1.2/1.2.3/1.2.3.4.dcm")
    assert (tmp_path / rel).read_bytes() == b"abc"
    spool.write("1.2", "1.2.3", "1.2.3.4", b"abcd")
    assert (tmp_path / rel).read_bytes() == b"abcd"
    assert [p.name for p in (tmp_path / rel).parent.iterdir()] == ["1.2.3.4.dcm"]


def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = Spool(tmp_path)
    real_fsync = os.fsync

    def full_disk(fd: int) -> None:  # the disk fills up at fsync time
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(StorageError, match="ENOSPC"):
        spool.write("1.2", "1.2.3", "1.2.3.4", b"abc")
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert [p for p in (tmp_path / "incoming").rglob("*") if p.is_file()] == []


def test_partials_are_removed(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    d = tmp_path / "incoming/1.2/1.2.3"
    d.mkdir(parents=True)
    (d / ".1.2.3.4.deadbeef.tmp").write_bytes(b"half")
    (d / "1.2.3.5.dcm").write_bytes(b"whole")
    assert spool.remove_partials() == 1
    assert [p.name for p in spool.iter_instances()] == ["1.2.3.5.dcm"]


@pytest.fixture
def one_file(tmp_path: Path) -> Path:
    return dicomgen.write_study(tmp_path / "s", series=(dicomgen.SeriesSpec("SAG T2", "sagittal", 1),)).paths[0]


def test_parse_valid(one_file: Path) -> None:
    meta = parse_header(one_file.read_bytes())
    assert meta.modality == "MR" and meta.body_part == "LSPINE"
    assert meta.transfer_syntax_uid == "1.2.840.10008.1.2.1"
    assert meta.sop_class_uid == "1.2.840.10008.5.1.4.1.1.4"


def test_parse_truncated_pixels(one_file: Path) -> None:
    data = one_file.read_bytes()
    with pytest.raises(InvalidDatasetError):
        parse_header(data[: len(data) - 1000])


def test_parse_garbage() -> None:
    # Both map to 0xC210 Cannot Understand; which one depends on where the bytes give out.
    with pytest.raises((InvalidDatasetError, InvalidUIDError)):
        parse_header(b"\x00" * 128 + b"DICM" + os.urandom(2000))
    with pytest.raises(InvalidDatasetError):
        parse_header(b"not dicom at all")


def test_parse_missing_or_crafted_uids(one_file: Path, tmp_path: Path) -> None:
    from pydicom import dcmread

    ds = dcmread(one_file)
    del ds.SeriesInstanceUID
    out = tmp_path / "a.dcm"
    ds.save_as(out)
    with pytest.raises(InvalidUIDError, match="SeriesInstanceUID"):
        parse_header(out.read_bytes())
    ds = dcmread(one_file)
    ds.StudyInstanceUID = "../../../../tmp"
    ds.save_as(out)
    with pytest.raises(InvalidUIDError, match="StudyInstanceUID"):
        parse_header(out.read_bytes())


def test_own_results_are_recognised(one_file: Path, tmp_path: Path) -> None:
    """The node's Manufacturer and a result series number mark its own objects; either alone does not."""
    from pydicom import dcmread

    from spinenode.core.result_markers import RESULT_MANUFACTURER

    out = tmp_path / "r.dcm"
    seen = {}
    for manufacturer, number in ((RESULT_MANUFACTURER, 9902), (RESULT_MANUFACTURER, 3), ("ACME", 9901), (None, 9901)):
        ds = dcmread(one_file)
        ds.SeriesNumber = number
        if manufacturer is None:
            del ds.Manufacturer
        else:
            ds.Manufacturer = manufacturer
        ds.save_as(out)
        seen[manufacturer, number] = parse_header(out.read_bytes()).is_own_result
    assert seen == {(RESULT_MANUFACTURER, 9902): True, (RESULT_MANUFACTURER, 3): False,
                    ("ACME", 9901): False, (None, 9901): False}
    assert not parse_header(one_file.read_bytes()).is_own_result


def test_parse_mismatch_with_request(one_file: Path) -> None:
    data = one_file.read_bytes()
    with pytest.raises(SOPClassMismatchError):
        parse_header(data, expected_sop_class="1.2.840.10008.5.1.4.1.1.2")
    with pytest.raises(SOPClassMismatchError):
        parse_header(data, expected_sop_instance="1.2.3")


def test_log_failure_omits_the_exception_message(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from spinenode.core.logs import log_failure

    name = "".join(["PHAN", "TOM^SECRET^NAME"])  # a value from data, not from source code
    try:
        raise ValueError(f"invalid value {name!r} for PN")
    except ValueError as exc:
        log_failure(logging.getLogger("t"), "study %s: failed", "1.2.3", exc=exc)
    assert "ValueError" in caplog.text and "1.2.3" in caplog.text and "test_storage_dicomio.py" in caplog.text
    assert "PHANTOM" not in caplog.text


def _image(photometric: str, rows: int, cols: int, spp: int, bits: int, pixel_tag: str, length: int,
           frames: int = 1) -> bytes:
    """A Part 10 byte string with a native pixel element of ``length`` bytes."""
    from io import BytesIO

    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, cols, spp
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = bits
    if frames > 1:
        ds.NumberOfFrames = frames
    if pixel_tag == "PixelData":
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits - 1, 0
        ds.PixelData = b"\x01" * length
    else:
        setattr(ds, pixel_tag, b"\x01" * length)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@pytest.mark.parametrize(
    ("photometric", "rows", "cols", "spp", "bits", "tag", "needed"),
    [
        ("YBR_FULL_422", 100, 100, 3, 8, "PixelData", 20000),  # 4:2:2: 2 bytes a pixel, not 3
        ("YBR_FULL_422", 3, 5, 3, 8, "PixelData", 3 * (5 + 2 * 3)),  # odd columns: chroma rounded up
        ("YBR_PARTIAL_420", 4, 4, 3, 8, "PixelData", 16 + 2 * 4),  # 4:2:0
        ("RGB", 3, 3, 3, 8, "PixelData", 27),  # odd length (padded to 28 on the wire)
        ("MONOCHROME2", 3, 3, 1, 1, "PixelData", 2),  # 1-bit, packed
        ("MONOCHROME2", 4, 4, 1, 32, "FloatPixelData", 64),
        ("MONOCHROME2", 4, 4, 1, 64, "DoubleFloatPixelData", 128),
    ],
)
def test_native_pixel_lengths(photometric: str, rows: int, cols: int, spp: int, bits: int, tag: str,
                              needed: int) -> None:
    padded = needed + needed % 2
    parse_header(_image(photometric, rows, cols, spp, bits, tag, padded))  # complete: accepted
    short = padded - 2
    with pytest.raises(InvalidDatasetError, match=f"pixel data truncated: {short} of {needed} bytes"):
        parse_header(_image(photometric, rows, cols, spp, bits, tag, short))


def test_pixel_element_cut_off_in_the_stream_is_refused(one_file: Path) -> None:
    data = one_file.read_bytes()
    with pytest.raises(InvalidDatasetError, match="pixel data truncated"):
        parse_header(data[:-1])


def test_truncated_encapsulated_pixel_data_is_refused(tmp_path: Path) -> None:
    from pydicom import dcmread
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    data = _image("MONOCHROME2", 4, 4, 1, 8, "PixelData", 16)
    ds = dcmread(__import__("io").BytesIO(data))
    ds.PixelData = encapsulate([b"\xff\xd8" + b"\x00" * 100 + b"\xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    out = tmp_path / "enc.dcm"
    ds.save_as(out)
    whole = out.read_bytes()
    parse_header(whole)
    with pytest.raises(InvalidDatasetError, match="encapsulated pixel data truncated"):
        parse_header(whole[:-20])


def test_parse_header_file_matches_parse_header(one_file: Path) -> None:
    from scp_node.dicomio import parse_header_file

    assert parse_header_file(one_file) == parse_header(one_file.read_bytes())
