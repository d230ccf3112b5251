"""Reading the header fields the node indexes, from received bytes, without pixel decoding."""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID
from pydicom.uid import DeflatedExplicitVRLittleEndian as DEFLATED

from spinenode.core.errors import InvalidDatasetError, SOPClassMismatchError, SpinenodeError
from spinenode.core.result_markers import RESULT_MANUFACTURER, RESULT_SERIES_NUMBERS
from spinenode.core.storage import check_uid


@dataclass(frozen=True, slots=True)
class InstanceMeta:
    """What the index needs of one instance. Patient-level fields are never logged."""

    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    modality: str | None
    series_number: int | None
    instance_number: int | None
    series_description: str | None
    study_description: str | None
    body_part: str | None
    accession_number: str | None
    patient_id: str | None
    manufacturer: str | None = None

    @property
    def is_own_result(self) -> bool:
        """One of the node's own result objects, sent back to it (a PACS routing rule
        that forwards whole studies): it must not reopen the study it belongs to."""
        return self.manufacturer == RESULT_MANUFACTURER and self.series_number in RESULT_SERIES_NUMBERS


def _text(value: object, limit: int) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text[:limit] or None


def _int(value: object) -> int | None:
    try:
        return int(str(value).strip()) if value not in (None, "") else None
    except ValueError:
        return None


def parse_header(
    data: bytes, *, expected_sop_class: str | None = None, expected_sop_instance: str | None = None
) -> InstanceMeta:
    """Parse a Part 10 byte string (preamble + file meta + data set) down to the pixels.

    The parse stops before the pixel data element; its length is checked from the
    element header against the bytes present and against what the image pixel
    module needs (never decoded, never copied), so a truncated stream is refused.

    Raises
    ------
    InvalidDatasetError
        Unparseable bytes, or a truncated pixel data element.
    InvalidUIDError
        A missing or malformed Study/Series/SOP Instance UID or SOP Class UID.
    SOPClassMismatchError
        The data set's SOP Class/Instance UID differs from the C-STORE request's.
    """
    return _parse(io.BytesIO(data), len(data), expected_sop_class, expected_sop_instance)


def parse_header_file(
    path: Path, *, expected_sop_class: str | None = None, expected_sop_instance: str | None = None
) -> InstanceMeta:
    """:func:`parse_header` for a Part 10 file; elements over 64 KiB before the pixels
    are skipped, not read, so memory stays small whatever the file holds."""
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise InvalidDatasetError(f"cannot read the received data set ({exc.strerror})") from None
    with fh:
        size = os.fstat(fh.fileno()).st_size
        return _parse(fh, size, expected_sop_class, expected_sop_instance, defer_size=_DEFER_BYTES)


_DEFER_BYTES = 64 * 1024
#: Native pixel data elements: Pixel Data, Float Pixel Data, Double Float Pixel Data.
_PIXEL_TAGS = {0x7FE00010: "PixelData", 0x7FE00008: "FloatPixelData", 0x7FE00009: "DoubleFloatPixelData"}
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_UNDEFINED = 0xFFFFFFFF
#: VRs a pixel data element may carry in explicit VR encoding.
_PIXEL_VRS = {b"OB", b"OW", b"OF", b"OD", b"UN"}


def _parse(fp: BinaryIO, size: int, expected_sop_class: str | None, expected_sop_instance: str | None,
           defer_size: int | None = None) -> InstanceMeta:
    try:
        ds = dcmread(fp, force=False, stop_before_pixels=True, defer_size=defer_size)
        pixel_at = fp.tell()
        tags = list(ds.keys())
    except Exception as exc:  # pydicom raises a wide variety on garbage input
        raise InvalidDatasetError(f"unparseable data set: {type(exc).__name__}") from None
    if not tags:
        raise InvalidDatasetError("empty data set")
    try:
        meta = _meta(ds, expected_sop_class, expected_sop_instance)
        tsyntax = UID(meta.transfer_syntax_uid) if meta.transfer_syntax_uid else None
        if tsyntax is not None and tsyntax.is_deflated:
            _check_pixel_length_deflated(fp, ds)
        elif tsyntax is not None:
            _check_pixel_element(fp, pixel_at, size, ds, tsyntax)
    except SpinenodeError:
        raise
    except Exception as exc:  # a value pydicom cannot convert
        raise InvalidDatasetError(f"unreadable header value: {type(exc).__name__}") from None
    return meta


def _meta(ds: Dataset, expected_sop_class: str | None, expected_sop_instance: str | None) -> InstanceMeta:
    sop_class = check_uid(ds.get("SOPClassUID"), "SOPClassUID")
    sop_uid = check_uid(ds.get("SOPInstanceUID"), "SOPInstanceUID")
    study_uid = check_uid(ds.get("StudyInstanceUID"), "StudyInstanceUID")
    series_uid = check_uid(ds.get("SeriesInstanceUID"), "SeriesInstanceUID")
    if expected_sop_class and sop_class != expected_sop_class:
        raise SOPClassMismatchError("SOPClassUID differs from the request's Affected SOP Class UID")
    if expected_sop_instance and sop_uid != expected_sop_instance:
        raise SOPClassMismatchError("SOPInstanceUID differs from the request's Affected SOP Instance UID")
    tsyntax = ds.file_meta.get("TransferSyntaxUID") if ds.file_meta else None
    return InstanceMeta(
        study_uid=study_uid,
        series_uid=series_uid,
        sop_instance_uid=sop_uid,
        sop_class_uid=sop_class,
        transfer_syntax_uid=str(tsyntax or ""),
        modality=_text(ds.get("Modality"), 16),
        series_number=_int(ds.get("SeriesNumber")),
        instance_number=_int(ds.get("InstanceNumber")),
        series_description=_text(ds.get("SeriesDescription"), 128),
        study_description=_text(ds.get("StudyDescription"), 128),
        body_part=_text(ds.get("BodyPartExamined"), 64),
        accession_number=_text(ds.get("AccessionNumber"), 64),
        patient_id=_text(ds.get("PatientID"), 64),
        manufacturer=_text(ds.get("Manufacturer"), 64),
    )


def _check_pixel_element(fp: BinaryIO, at: int, size: int, ds: Dataset, tsyntax: UID) -> None:
    """Read the header of the element at ``at``; if it is native pixel data, check its length."""
    fp.seek(at)
    head = fp.read(12)
    if len(head) < 8:
        return  # no element after the header: no pixel data
    little = tsyntax.is_little_endian
    # pydicom's own rule: a data set that says explicit VR but has no VR here is implicit
    implicit = tsyntax.is_implicit_VR or head[4:6] not in _PIXEL_VRS
    group, elem = struct.unpack("<HH" if little else ">HH", head[:4])
    name = _PIXEL_TAGS.get((group << 16) | elem)
    if name is None:
        return
    if implicit:
        header, length = 8, struct.unpack("<L" if little else ">L", head[4:8])[0]
    elif head[4:6] in _LONG_VRS:
        if len(head) < 12:
            raise InvalidDatasetError("pixel data truncated: element header cut off")
        header, length = 12, struct.unpack("<L" if little else ">L", head[8:12])[0]
    else:
        header, length = 8, struct.unpack("<H" if little else ">H", head[6:8])[0]
    if length == _UNDEFINED:
        if name != "PixelData" or not tsyntax.is_encapsulated:
            raise InvalidDatasetError("native pixel data with undefined length")
        _check_fragments(fp, at + header, size, little)
        return
    present = size - at - header
    if present < length:
        raise InvalidDatasetError(f"pixel data truncated: {max(present, 0)} of {length} bytes")
    if not tsyntax.is_encapsulated:
        _check_native_length(ds, length)


def _check_fragments(fp: BinaryIO, at: int, size: int, little: bool) -> None:
    """Walk the item headers of encapsulated pixel data (seeking over the fragments, never
    reading them) to its sequence delimiter; a stream cut short is refused."""
    fmt = "<HHL" if little else ">HHL"
    pos = at
    while True:
        fp.seek(pos)
        head = fp.read(8)
        if len(head) < 8:
            raise InvalidDatasetError("encapsulated pixel data truncated: no sequence delimiter")
        group, elem, length = struct.unpack(fmt, head)
        if (group, elem) == (0xFFFE, 0xE0DD):
            return
        if (group, elem) != (0xFFFE, 0xE000) or length == _UNDEFINED:
            raise InvalidDatasetError("encapsulated pixel data: not an item")
        pos += 8 + length
        if pos > size:
            raise InvalidDatasetError("encapsulated pixel data truncated: fragment cut short")


def _check_pixel_length_deflated(fp: BinaryIO, ds: Dataset) -> None:
    """Deflated data sets: inflate and read the pixel element (rare; memory as before)."""
    fp.seek(0)
    full = dcmread(fp, force=False)
    for name in _PIXEL_TAGS.values():
        if name in full:
            _check_native_length(full, len(full[name].value))
            return


def native_pixel_bytes(ds: Dataset) -> int:
    """Bytes native pixel data needs for every frame (unpadded), from the image pixel module.

    Understands 1-bit data (packed across frames), YBR_FULL_422 / YBR_PARTIAL_422
    (chroma halved horizontally) and YBR_PARTIAL_420 (halved both ways).
    """
    rows, cols = int(ds.Rows), int(ds.Columns)
    bits = int(ds.BitsAllocated)
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    if spp == 3 and photometric in ("YBR_FULL_422", "YBR_PARTIAL_422"):
        samples = rows * (cols + 2 * ((cols + 1) // 2))
    elif spp == 3 and photometric == "YBR_PARTIAL_420":
        samples = rows * cols + 2 * ((rows + 1) // 2) * ((cols + 1) // 2)
    else:
        samples = rows * cols * spp
    return (samples * frames * bits + 7) // 8


def _check_native_length(ds: Dataset, length: int) -> None:
    try:
        expected = native_pixel_bytes(ds)
    except (AttributeError, ValueError, TypeError) as exc:
        raise InvalidDatasetError(f"pixel module incomplete: {type(exc).__name__}") from None
    if length < expected:
        raise InvalidDatasetError(f"pixel data truncated: {length} of {expected} bytes")


def header_only(path: Path) -> bytes:
    """The stored file cut just before its top-level pixel data: a Part 10 file of the
    header alone, the bytes as received (nothing decoded and encoded again). A file
    without pixel data comes whole. A deflated dataset cannot be cut (its bytes are
    compressed), so it is written again without its pixel data."""
    with path.open("rb") as fh:
        ds = dcmread(fh, stop_before_pixels=True)
        if ds.file_meta.get("TransferSyntaxUID") != DEFLATED:
            end = fh.tell()
            fh.seek(0)
            return fh.read(end)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()
