"""Small, fast synthetic MR/CT DICOM studies for ingest tests and benchmarks.

Not the realistic phantom (``models/phantom/`` builds that): the pixels here are seeded
noise, but the headers are complete enough that ``dciodvfy`` reports no errors, and the
geometry and sequence attributes are consistent, so series selection and study assembly
see what a scanner would send.

The same ``seed`` gives the same UIDs and pixels: two studies meant to differ need
different seeds.
"""

from __future__ import annotations

import copy
import hashlib
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEGLosslessSV1,
    JPEGLSLossless,
    MRImageStorage,
)

__all__ = [
    "GeneratedStudy",
    "SeriesSpec",
    "compress",
    "make_uid",
    "write_files",
    "write_study",
]

UID_PREFIX = "2.25."

# Image orientation (row direction cosines, column direction cosines) per plane.
ORIENTATIONS: dict[str, tuple[float, ...]] = {
    "sagittal": (0.0, 1.0, 0.0, 0.0, 0.0, -1.0),
    "axial": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    "coronal": (1.0, 0.0, 0.0, 0.0, 0.0, -1.0),
}

# MR sequence parameters per weighting: ScanningSequence, SequenceVariant, ScanOptions,
# TR (ms), TE (ms), TI (ms) or None, echo train length.
_MR_WEIGHTINGS: dict[str, tuple[str, list[str], str, float, float, float | None, int]] = {
    "T1": ("SE", ["SK", "SP"], "", 600.0, 10.0, None, 3),
    "T2": ("SE", ["SK", "SP"], "", 3500.0, 100.0, None, 16),
    "STIR": ("IR", ["SK", "SP", "MP"], "", 4000.0, 50.0, 150.0, 12),
}

COMPRESSION_SYNTAXES: dict[str, UID] = {
    "jpegls": JPEGLSLossless,
    "jpeg-lossless": JPEGLosslessSV1,
}


@dataclass(frozen=True)
class SeriesSpec:
    """One series to generate.

    ``plane`` is sagittal, axial or coronal; ``weighting`` is T1, T2 or STIR for MR
    (ignored for CT).
    """

    description: str
    plane: str
    slices: int
    weighting: str = "T2"

    def __post_init__(self) -> None:
        if self.plane not in ORIENTATIONS:
            raise ValueError(f"plane must be one of {sorted(ORIENTATIONS)}, not {self.plane!r}")
        if self.weighting not in _MR_WEIGHTINGS:
            raise ValueError(f"weighting must be one of {sorted(_MR_WEIGHTINGS)}, "
                             f"not {self.weighting!r}")
        if self.slices < 1:
            raise ValueError("slices must be at least 1")


DEFAULT_SERIES: tuple[SeriesSpec, ...] = (
    SeriesSpec("SAG T2 TSE", "sagittal", 15, "T2"),
    SeriesSpec("SAG T1 TSE", "sagittal", 15, "T1"),
    SeriesSpec("AX T2", "axial", 20, "T2"),
)


@dataclass(frozen=True)
class GeneratedStudy:
    """What was written: UIDs and file paths in series order, then slice order."""

    study_uid: str
    series_uids: list[str]
    paths: list[Path]
    series_paths: dict[str, list[Path]] = field(default_factory=dict)


def make_uid(*parts: object) -> str:
    """A deterministic ``2.25.<decimal>`` UID from the given parts (at most 64 chars)."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return UID_PREFIX + str(int.from_bytes(digest[:16], "big"))


def _ds(value: float) -> str:
    """A DS value: short decimal without trailing zeros."""
    return f"{value:.6g}"


def _file_meta(sop_class: str, sop_instance: str) -> FileMetaDataset:
    """File meta information for an Explicit VR Little Endian file."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "SPINENODE_TEST"
    return meta


@dataclass(frozen=True)
class _StudyInfo:
    study_uid: str
    frame_of_reference_uid: str
    modality: str
    body_part: str
    description: str
    patient_name: str
    patient_id: str
    date: str = "20260101"
    time: str = "120000"


def _study_dataset(info: _StudyInfo) -> Dataset:
    """Patient, study, equipment and frame-of-reference attributes shared by all images."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = MRImageStorage if info.modality == "MR" else CTImageStorage
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = info.date
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = info.time
    ds.AccessionNumber = "ACC" + info.patient_id[-6:]
    ds.Modality = info.modality
    ds.Manufacturer = "SPINENODE"
    ds.ManufacturerModelName = "dicomgen"
    ds.InstitutionName = "SPINENODE TEST"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = info.description
    ds.PatientName = info.patient_name
    ds.PatientID = info.patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.PatientAge = "056Y"
    ds.BodyPartExamined = info.body_part
    ds.StudyInstanceUID = info.study_uid
    ds.StudyID = "1"
    ds.FrameOfReferenceUID = info.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.PatientPosition = "HFS"
    return ds


def _set_sequence_attributes(ds: Dataset, spec: SeriesSpec, modality: str) -> None:
    if modality == "MR":
        sequence, variant, options, tr, te, ti, etl = _MR_WEIGHTINGS[spec.weighting]
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.ScanningSequence = sequence
        ds.SequenceVariant = variant
        ds.ScanOptions = options
        ds.MRAcquisitionType = "2D"
        ds.SequenceName = f"{spec.weighting.lower()}_tse"
        ds.RepetitionTime = _ds(tr)
        ds.EchoTime = _ds(te)
        if ti is not None:
            ds.InversionTime = _ds(ti)
        ds.EchoTrainLength = etl
        ds.NumberOfAverages = "2"
        ds.ImagingFrequency = "63.87"
        ds.ImagedNucleus = "1H"
        ds.MagneticFieldStrength = "1.5"
        ds.FlipAngle = "90" if sequence == "SE" else "180"
    else:
        ds.ImageType = (["ORIGINAL", "PRIMARY", "AXIAL"] if spec.plane == "axial"
                         else ["DERIVED", "SECONDARY", "MPR"])
        ds.KVP = "120"
        ds.AcquisitionNumber = 1
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.ConvolutionKernel = "BONE"


def _slice_geometry(plane: str, index: int, count: int, rows: int, cols: int,
                    spacing: float, step: float) -> tuple[list[float], float]:
    """ImagePositionPatient of slice ``index`` and its SliceLocation.

    Slices are centred on the isocentre along the plane normal; in-plane, the image is
    centred too.  ``step`` is the distance between slice centres.
    """
    orientation = np.array(ORIENTATIONS[plane])
    row_dir, col_dir = orientation[:3], orientation[3:]
    normal = np.cross(row_dir, col_dir)
    offset = (index - (count - 1) / 2.0) * step
    origin = (-row_dir * (cols - 1) * spacing / 2.0 - col_dir * (rows - 1) * spacing / 2.0
              + normal * offset)
    return [round(float(v), 4) for v in origin], round(offset, 4)


def _series_plan(plane: str, modality: str) -> tuple[float, float, float]:
    """(PixelSpacing, SliceThickness, SpacingBetweenSlices) for a plane in mm."""
    if modality == "CT":
        return 0.7, 2.0, 2.0
    return (0.6, 4.0, 4.4) if plane == "sagittal" else (0.7, 4.0, 4.0)


def _pixels(rng: np.random.Generator, rows: int, cols: int, bits: int) -> bytes:
    """Cheap seeded noise in [0, 2**bits) as little-endian uint16 bytes."""
    high = min(1 << bits, 4096)
    return rng.integers(0, high, size=(rows, cols), dtype=np.uint16).astype("<u2").tobytes()


def _set_pixel_module(ds: Dataset, rows: int, cols: int, bits: int, spacing: float) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.PixelSpacing = [_ds(spacing), _ds(spacing)]
    ds.BitsAllocated = 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.WindowCenter = "600"
    ds.WindowWidth = "1200"


def _validate(modality: str, rows: int, cols: int, bits: int) -> None:
    if modality not in ("MR", "CT"):
        raise ValueError(f"modality must be MR or CT, not {modality!r}")
    if not 8 <= bits <= 16:
        raise ValueError("bits (BitsStored) must be between 8 and 16; BitsAllocated is 16")
    if rows < 1 or cols < 1:
        raise ValueError("rows and cols must be positive")


def write_study(
    out_dir: Path | str,
    *,
    seed: int = 0,
    modality: str = "MR",
    body_part: str = "LSPINE",
    study_description: str = "MRI LUMBAR SPINE WO",
    series: Sequence[SeriesSpec] = DEFAULT_SERIES,
    rows: int = 64,
    cols: int = 64,
    bits: int = 16,
    patient_name: str = "PHANTOM^TEST",
    patient_id: str = "PHANTOM-0001",
) -> GeneratedStudy:
    """Write one study, one sub-directory per series, files named by instance number.

    ``bits`` is BitsStored (BitsAllocated is always 16).  Files are Explicit VR Little
    Endian with file meta, MR Image Storage or CT Image Storage.
    """
    _validate(modality, rows, cols, bits)
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    info = _StudyInfo(
        study_uid=make_uid("study", seed, patient_id),
        frame_of_reference_uid=make_uid("for", seed, patient_id),
        modality=modality, body_part=body_part, description=study_description,
        patient_name=patient_name, patient_id=patient_id,
    )
    base = _study_dataset(info)
    series_uids: list[str] = []
    series_paths: dict[str, list[Path]] = {}
    for number, spec in enumerate(series, start=1):
        series_uid = make_uid("series", seed, patient_id, number)
        series_uids.append(series_uid)
        series_paths[series_uid] = _write_series(out / f"{number:03d}", base, spec, number,
                                                 series_uid, rng, rows, cols, bits, seed)
    paths = [p for uid in series_uids for p in series_paths[uid]]
    return GeneratedStudy(info.study_uid, series_uids, paths, series_paths)


def _write_series(directory: Path, base: Dataset, spec: SeriesSpec, number: int,
                  series_uid: str, rng: np.random.Generator, rows: int, cols: int, bits: int,
                  seed: int) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    spacing, thickness, step = _series_plan(spec.plane, base.Modality)
    ds = copy.deepcopy(base)
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = number
    ds.SeriesDescription = spec.description
    ds.ProtocolName = spec.description
    ds.ImageOrientationPatient = [_ds(v) for v in ORIENTATIONS[spec.plane]]
    ds.SliceThickness = _ds(thickness)
    if base.Modality == "MR":
        ds.SpacingBetweenSlices = _ds(step)
    _set_sequence_attributes(ds, spec, base.Modality)
    _set_pixel_module(ds, rows, cols, bits, spacing)
    paths: list[Path] = []
    for index in range(spec.slices):
        position, location = _slice_geometry(spec.plane, index, spec.slices, rows, cols,
                                             spacing, step)
        sop_uid = make_uid("instance", seed, series_uid, index)
        ds.SOPInstanceUID = sop_uid
        ds.InstanceNumber = index + 1
        ds.ImagePositionPatient = [_ds(v) for v in position]
        ds.SliceLocation = _ds(location)
        ds.PixelData = _pixels(rng, rows, cols, bits)
        ds.file_meta = _file_meta(ds.SOPClassUID, sop_uid)
        path = directory / f"{index + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_files(
    n: int,
    out_dir: Path | str,
    rows: int = 512,
    cols: int = 512,
    *,
    seed: int = 0,
    modality: str = "MR",
) -> GeneratedStudy:
    """``n`` images of one sagittal T2 series, quickly, for benchmarks.

    One pixel buffer is shared by all files; only UIDs, instance number and position
    vary.  Returns a :class:`GeneratedStudy` with one series.
    """
    _validate(modality, rows, cols, 16)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    info = _StudyInfo(
        study_uid=make_uid("bench-study", seed, n),
        frame_of_reference_uid=make_uid("bench-for", seed),
        modality=modality, body_part="LSPINE", description="BENCHMARK",
        patient_name="BENCH^TEST", patient_id="BENCH-0001",
    )
    spec = SeriesSpec("SAG T2 TSE", "sagittal", n, "T2")
    ds = _study_dataset(info)
    series_uid = make_uid("bench-series", seed, n)
    spacing, thickness, _ = _series_plan(spec.plane, modality)
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = 1
    ds.SeriesDescription = spec.description
    ds.ImageOrientationPatient = [_ds(v) for v in ORIENTATIONS[spec.plane]]
    ds.SliceThickness = _ds(thickness)
    _set_sequence_attributes(ds, spec, modality)
    _set_pixel_module(ds, rows, cols, 12, spacing)
    ds.PixelData = _pixels(np.random.default_rng(seed), rows, cols, 12)
    paths: list[Path] = []
    for index in range(n):
        sop_uid = make_uid("bench-instance", seed, series_uid, index)
        ds.SOPInstanceUID = sop_uid
        ds.InstanceNumber = index + 1
        ds.ImagePositionPatient = [_ds(-float(index)), "0", "0"]
        ds.file_meta = _file_meta(ds.SOPClassUID, sop_uid)
        path = out / f"{index + 1:06d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return GeneratedStudy(info.study_uid, [series_uid], paths, {series_uid: paths})


def compress(paths: Iterable[Path | str], out_dir: Path | str, kind: str) -> list[Path]:
    """Losslessly re-encode files with DCMTK; output keeps each input's file name.

    ``kind`` is ``"jpegls"`` (dcmcjpls, JPEG-LS lossless 1.2.840.10008.1.2.4.80) or
    ``"jpeg-lossless"`` (dcmcjpeg +e1, JPEG lossless SV1 1.2.840.10008.1.2.4.70).
    Inputs with the same name in different directories would collide: compress them
    into different ``out_dir``.
    """
    if kind == "jpegls":
        command = ["/usr/bin/dcmcjpls", "+el"]
    elif kind == "jpeg-lossless":
        command = ["/usr/bin/dcmcjpeg", "+e1"]
    else:
        raise ValueError(f"kind must be one of {sorted(COMPRESSION_SYNTAXES)}, not {kind!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for path in map(Path, paths):
        target = out / path.name
        result = subprocess.run([*command, str(path), str(target)], capture_output=True,
                                text=True, timeout=120, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise RuntimeError(f"{command[0]} failed on {path.name}: {result.stderr.strip()}")
        written.append(target)
    return written
