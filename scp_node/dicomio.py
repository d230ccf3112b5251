"""Reading the header fields the node indexes, from received bytes, without pixel decoding."""

from __future__ import annotations

import io
from dataclasses import dataclass

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from scp_node.errors import InvalidDatasetError, SOPClassMismatchError
from scp_node.storage import check_uid

#: How the node's own result objects (SR, SEG, key images) are marked: this
#: Manufacturer and one of these series numbers (``workers.results.identity`` uses both).
RESULT_MANUFACTURER = "spinenode project"
RESULT_SERIES_NUMBERS = frozenset({9901, 9902, 9903})


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

    The pixel data element is read as raw bytes (never decoded) so that a
    truncated stream is detected: the parse fails when the bytes run out.

    Raises
    ------
    InvalidDatasetError
        Unparseable bytes, or a truncated pixel data element.
    InvalidUIDError
        A missing or malformed Study/Series/SOP Instance UID or SOP Class UID.
    SOPClassMismatchError
        The data set's SOP Class/Instance UID differs from the C-STORE request's.
    """
    try:
        ds = dcmread(io.BytesIO(data), force=False)
        # Touch the top-level elements so that lazy parsing errors surface here.
        tags = list(ds.keys())
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, OverflowError, NotImplementedError) as exc:
        raise InvalidDatasetError(f"unparseable data set: {type(exc).__name__}") from None
    except Exception as exc:  # pydicom raises a wide variety on garbage input
        raise InvalidDatasetError(f"unparseable data set: {type(exc).__name__}") from None
    if not tags:
        raise InvalidDatasetError("empty data set")

    sop_class = check_uid(ds.get("SOPClassUID"), "SOPClassUID")
    sop_uid = check_uid(ds.get("SOPInstanceUID"), "SOPInstanceUID")
    study_uid = check_uid(ds.get("StudyInstanceUID"), "StudyInstanceUID")
    series_uid = check_uid(ds.get("SeriesInstanceUID"), "SeriesInstanceUID")
    if expected_sop_class and sop_class != expected_sop_class:
        raise SOPClassMismatchError("SOPClassUID differs from the request's Affected SOP Class UID")
    if expected_sop_instance and sop_uid != expected_sop_instance:
        raise SOPClassMismatchError("SOPInstanceUID differs from the request's Affected SOP Instance UID")

    tsyntax = ds.file_meta.get("TransferSyntaxUID") if ds.file_meta else None
    _check_pixel_length(ds, UID(str(tsyntax)) if tsyntax else None)
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


def _check_pixel_length(ds: Dataset, tsyntax: UID | None) -> None:
    """For native (uncompressed) pixel data, the element must hold every frame."""
    if "PixelData" not in ds or tsyntax is None or tsyntax.is_compressed:
        return
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        bits = int(ds.BitsAllocated)
        spp = int(ds.get("SamplesPerPixel", 1) or 1)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        length = len(ds.PixelData)
    except (AttributeError, ValueError, TypeError) as exc:
        raise InvalidDatasetError(f"pixel module incomplete: {type(exc).__name__}") from None
    expected = (rows * cols * frames * spp * bits + 7) // 8
    if length < expected:
        raise InvalidDatasetError(f"pixel data truncated: {length} of {expected} bytes")
