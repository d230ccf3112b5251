"""Multi-frame images (Enhanced MR/CT and their Legacy Converted forms) as per-frame datasets.

A scanner that sends a series as one multi-frame instance puts each frame's
geometry and sequence parameters in functional groups: shared by every frame
(SharedFunctionalGroupsSequence) or per frame (PerFrameFunctionalGroupsSequence).
:func:`expand_frames` turns such an instance into one plain dataset per frame
with the single-frame attributes the rest of the package reads
(ImagePositionPatient, ImageOrientationPatient, PixelSpacing, SliceThickness,
RescaleSlope/Intercept, RepetitionTime, EchoTime, InversionTime, ImageType), so
classification, selection and volume assembly treat it exactly like a
single-frame series. Each frame dataset keeps the instance's SOP Instance UID
and carries its 1-based frame number as the Python attribute ``frame_number``
(0 on single-frame images, see :func:`frame_number_of`), which results use to
reference the frame (SR SCOORD ReferencedFrameNumber, SEG source frames).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

#: Top-level elements not copied into the frame datasets.
_DROP = frozenset({
    "PixelData", "FloatPixelData", "DoubleFloatPixelData", "NumberOfFrames",
    "SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence",
    "ExtendedOffsetTable", "ExtendedOffsetTableLengths",
})
#: (functional group sequence, attribute in its item, single-frame keyword)
_GROUPS: tuple[tuple[str, str, str], ...] = (
    ("PlanePositionSequence", "ImagePositionPatient", "ImagePositionPatient"),
    ("PlaneOrientationSequence", "ImageOrientationPatient", "ImageOrientationPatient"),
    ("PixelMeasuresSequence", "PixelSpacing", "PixelSpacing"),
    ("PixelMeasuresSequence", "SliceThickness", "SliceThickness"),
    ("PixelMeasuresSequence", "SpacingBetweenSlices", "SpacingBetweenSlices"),
    ("PixelValueTransformationSequence", "RescaleSlope", "RescaleSlope"),
    ("PixelValueTransformationSequence", "RescaleIntercept", "RescaleIntercept"),
    ("MRTimingAndRelatedParametersSequence", "RepetitionTime", "RepetitionTime"),
    ("MREchoSequence", "EffectiveEchoTime", "EchoTime"),
    ("MRImageFrameTypeSequence", "FrameType", "ImageType"),
    ("CTImageFrameTypeSequence", "FrameType", "ImageType"),
    ("FrameVOILUTSequence", "WindowCenter", "WindowCenter"),
    ("FrameVOILUTSequence", "WindowWidth", "WindowWidth"),
)
_CONVERTED = ("UnassignedSharedConvertedAttributesSequence", "UnassignedPerFrameConvertedAttributesSequence")


def is_multiframe(ds: Any) -> bool:
    """An image with functional groups or more than one frame."""
    if "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds:
        return True
    try:
        return int(ds.get("NumberOfFrames", 1) or 1) > 1
    except (TypeError, ValueError):
        return False


def frame_number_of(ds: Any) -> int:
    """The 1-based frame a dataset from :func:`expand_frames` came from; 0 for a single-frame image."""
    return int(getattr(ds, "frame_number", 0) or 0)


def _item(seq_owner: Any, keyword: str) -> Any | None:
    seq = seq_owner.get(keyword) if seq_owner is not None else None
    return seq[0] if seq else None


def _frame_header(ds: Any, shared: Any, per: Any, number: int) -> Dataset:
    out = Dataset()
    for elem in ds:
        if elem.keyword and elem.keyword not in _DROP:
            out.add(elem)
    # Legacy Converted: the source images' attributes that have no functional group
    for group in (shared, per):
        for keyword in _CONVERTED:
            item = _item(group, keyword)
            if item is not None:
                for elem in item:
                    out.add(elem)
    for group in (shared, per):  # per-frame values override shared ones
        if group is None:
            continue
        for seq, attr, target in _GROUPS:
            item = _item(group, seq)
            if item is not None and attr in item and item[attr].value not in (None, ""):
                setattr(out, target, item[attr].value)
        mod = _item(group, "MRModifierSequence")
        if mod is not None and mod.get("InversionTimes"):
            times = mod.InversionTimes
            out.InversionTime = float(times) if isinstance(times, (int, float)) else float(times[0])
    out.frame_number = number  # a Python attribute, not a DICOM element
    return out


def expand_frames(ds: Any) -> list[Any]:
    """One dataset per frame of a multi-frame image (``[ds]`` for a single-frame one).

    With pixel data present, every frame's pixels are decoded once and stored
    uncompressed in its frame dataset; header-only reads give header-only frames.
    """
    if not is_multiframe(ds):
        return [ds]
    n = int(ds.get("NumberOfFrames", 1) or 1)
    shared = _item(ds, "SharedFunctionalGroupsSequence")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    frames = [_frame_header(ds, shared, per_frame[i] if i < len(per_frame) else None, i + 1) for i in range(n)]
    if "PixelData" in ds:
        arr = np.asarray(ds.pixel_array)
        arr = arr.reshape((n, *arr.shape[-2:])) if arr.ndim == 2 or n == 1 else arr
        for f, a in zip(frames, arr):
            f.file_meta = FileMetaDataset()
            f.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            f.BitsAllocated = a.dtype.itemsize * 8
            f.PixelRepresentation = 1 if a.dtype.kind == "i" else 0
            f.PixelData = np.ascontiguousarray(a).tobytes()
    return frames


def expand_series(datasets: Iterable[Any]) -> list[Any]:
    """Every multi-frame image of a series expanded into its frames; single frames kept as they are."""
    return [f for ds in datasets for f in expand_frames(ds)]


def expand_study(series: Mapping[str, Sequence[Any]]) -> dict[str, list[Any]]:
    """:func:`expand_series` for every series of a study (series UID -> datasets)."""
    return {uid: expand_series(dss) for uid, dss in series.items()}
