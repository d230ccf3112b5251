"""DICOM objects of a phantom study: MR Image Storage / CT Image Storage, one file per slice.

Identifiers are synthetic and say so (``PHANTOM^...``); UIDs are derived
deterministically from (seed, study index, series, instance).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from models.phantom.imaging import SliceStack

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
#: UID prefix of phantom objects (pydicom's registered root for generated UIDs).
UID_PREFIX = "1.2.826.0.1.3680043.8.498."
IMPLEMENTATION_UID = UID_PREFIX + "1"

SERIES_NAMES: dict[str, tuple[str, ...]] = {
    "sag_T1": ("SAG T1", "t1_tse_sag", "SAG T1 TSE", "Sag T1 FSE", "T1 SAG"),
    "sag_T2": ("SAG T2 TSE", "t2_tse_sag", "SAG T2", "Sag T2 FSE", "T2 SAG"),
    "sag_STIR": ("STIR SAG", "SAG STIR", "t2_tirm_sag", "Sag STIR"),
    "ax_T2": ("AX T2", "t2_tse_tra", "AX T2 TSE", "Ax T2 FSE", "T2 AXIAL"),
    "sag_CT": ("SAG BONE 2mm", "Sag Reformat", "SAG REFORMAT BONE"),
    "ax_CT": ("AX BONE 3mm", "Axial 3mm", "AXIAL BONE"),
}
STUDY_NAMES: dict[tuple[str, str], tuple[str, ...]] = {
    ("lumbar", "MR"): ("MRI LUMBAR SPINE W/O CONTRAST", "MR L-SPINE", "MRI LS SPINE", "LWS nativ"),
    ("cervical", "MR"): ("MRI CERVICAL SPINE W/O CONTRAST", "MR C-SPINE", "HWS nativ"),
    ("lumbar", "CT"): ("CT LUMBAR SPINE W/O CONTRAST", "CT L-SPINE"),
    ("cervical", "CT"): ("CT CERVICAL SPINE W/O CONTRAST", "CT C-SPINE"),
}


@dataclass(frozen=True)
class StudyIdentity:
    """Synthetic patient and study identifiers shared by every object of a study."""

    seed: int
    index: int
    study_id: int
    region: str
    modality: str
    study_uid: str
    frame_uid: str
    patient_name: str
    patient_id: str
    birth_date: str
    sex: str
    study_date: str
    study_time: str
    accession: str
    description: str
    field_strength: float

    def uid(self, *parts: object) -> str:
        return generate_uid(prefix=UID_PREFIX, entropy_srcs=[
            "spinenode-phantom", self.region, self.modality, str(self.seed), str(self.index),
            *map(str, parts)])


def make_identity(seed: int, index: int, study_id: int, region: str, modality: str,
                  rng: np.random.Generator) -> StudyIdentity:
    def uid(*parts: object) -> str:
        return generate_uid(prefix=UID_PREFIX, entropy_srcs=[
            "spinenode-phantom", region, modality, str(seed), str(index), *map(str, parts)])

    age = int(rng.integers(25, 86))
    day = date(2024, 1, 1) + timedelta(days=int(rng.integers(0, 700)))
    birth = day - timedelta(days=365 * age + int(rng.integers(0, 365)))
    return StudyIdentity(
        seed=seed, index=index, study_id=study_id, region=region, modality=modality,
        study_uid=uid("study"), frame_uid=uid("frame"),
        patient_name=f"PHANTOM^{region.upper()}^{seed}-{index}",
        patient_id=f"PHANTOM-{seed}-{index:06d}", birth_date=birth.strftime("%Y%m%d"),
        sex=str(rng.choice(["F", "M"])), study_date=day.strftime("%Y%m%d"),
        study_time=f"{int(rng.integers(7, 20)):02d}{int(rng.integers(0, 60)):02d}00",
        accession=f"PH{study_id}", description=str(rng.choice(STUDY_NAMES[(region, modality)])),
        field_strength=float(rng.choice([1.5, 3.0])),
    )


@dataclass(frozen=True)
class SeriesSpec:
    """What is constant over one series."""

    key: str  # "sag_T1", "sag_T2", "sag_STIR", "ax_T2", "sag_CT", "ax_CT"
    series_id: int
    series_number: int
    description: str
    tr: float
    te: float
    ti: float | None
    echo_train: int
    body_part: str


def series_spec(key: str, series_id: int, number: int, region: str,
                rng: np.random.Generator) -> SeriesSpec:
    weighting = key.split("_")[1]
    tr, te, ti, etl = 0.0, 0.0, None, 1
    if weighting == "T1":
        tr, te, etl = rng.uniform(400, 700), rng.uniform(8, 14), int(rng.integers(3, 6))
    elif weighting == "T2":
        tr, te, etl = rng.uniform(2800, 5000), rng.uniform(85, 120), int(rng.integers(14, 26))
    elif weighting == "STIR":
        tr, te, etl = rng.uniform(3500, 6000), rng.uniform(40, 70), int(rng.integers(10, 20))
        ti = rng.uniform(140, 180)
    part = "LSPINE" if region == "lumbar" else "CSPINE"
    return SeriesSpec(key, series_id, number, str(rng.choice(SERIES_NAMES[key])),
                      round(tr, 1), round(te, 2), None if ti is None else round(ti, 1), etl, part)


def _ds(v: float) -> str:
    s = f"{v:.6g}"
    return s if len(s) <= 16 else f"{v:.8f}"[:16]


def series_template(ident: StudyIdentity, spec: SeriesSpec, stack: SliceStack) -> Dataset:
    """The attributes shared by every image of a series (see :func:`fill_slice`)."""
    ct = ident.modality == "CT"
    sop_class = CT_IMAGE_STORAGE if ct else MR_IMAGE_STORAGE
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = ident.uid("series", spec.series_number, "instance", 1)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_UID
    meta.ImplementationVersionName = "SPINENODE_PH"
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = ident.study_date
    hh, mm = int(ident.study_time[:2]), int(ident.study_time[2:4])
    minutes = hh * 60 + mm + 4 * spec.series_number
    ds.StudyTime = ident.study_time
    ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = \
        f"{minutes // 60 % 24:02d}{minutes % 60:02d}00"
    ds.AccessionNumber = ident.accession
    ds.Modality = ident.modality
    ds.Manufacturer = "spinenode phantom"
    ds.InstitutionName = "Synthetic Phantom"
    ds.ReferringPhysicianName = ""
    ds.StationName = "PHANTOM"
    ds.StudyDescription = ident.description
    ds.SeriesDescription = spec.description
    ds.ManufacturerModelName = "spinenode phantom"
    ds.PatientName = ident.patient_name
    ds.PatientID = ident.patient_id
    ds.PatientBirthDate = ident.birth_date
    ds.PatientSex = ident.sex
    ds.PatientIdentityRemoved = "NO"
    ds.BodyPartExamined = spec.body_part
    ds.SoftwareVersions = "spinenode-phantom 1"
    ds.ProtocolName = spec.description
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = ident.study_uid
    ds.SeriesInstanceUID = ident.uid("series", spec.series_number)
    ds.StudyID = str(ident.study_id)[-16:]
    ds.SeriesNumber = spec.series_number
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.FrameOfReferenceUID = ident.frame_uid
    ds.PositionReferenceIndicator = ""
    ds.ImagePositionPatient = [0, 0, 0]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceThickness = _ds(stack.thickness)
    ds.SpacingBetweenSlices = _ds(stack.gap)
    ds.SliceLocation = "0"
    ds.PixelSpacing = [_ds(stack.spacing), _ds(stack.spacing)]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = stack.rows, stack.cols
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.BurnedInAnnotation = "NO"
    if ct:
        derived = stack.plane == "sagittal"
        ds.ImageType = ["DERIVED", "SECONDARY", "REFORMATTED"] if derived else \
            ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.KVP = "120"
        ds.DataCollectionDiameter = "500"
        ds.ReconstructionDiameter = _ds(stack.spacing * stack.cols)
        ds.GantryDetectorTilt = "0"
        ds.TableHeight = "150"
        ds.RotationDirection = "CW"
        ds.ExposureTime = "800"
        ds.XRayTubeCurrent = "250"
        ds.ConvolutionKernel = "BONE"
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.WindowCenter, ds.WindowWidth = ["400", "40"], ["1800", "400"]
        ds.WindowCenterWidthExplanation = ["BONE", "SOFT TISSUE"]
    else:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        stir = spec.ti is not None
        ds.ScanningSequence = ["IR", "SE"] if stir else "SE"
        ds.SequenceVariant = ["SK", "SP"]
        ds.ScanOptions = "IR" if stir else ""
        ds.MRAcquisitionType = "2D"
        ds.SequenceName = "*tir2d1" if stir else "*tse2d1"
        ds.RepetitionTime = _ds(spec.tr)
        ds.EchoTime = _ds(spec.te)
        if stir:
            ds.InversionTime = _ds(spec.ti)
        ds.EchoTrainLength = spec.echo_train
        ds.NumberOfAverages = "2"
        ds.ImagingFrequency = _ds(42.577 * ident.field_strength)
        ds.ImagedNucleus = "1H"
        ds.EchoNumbers = "1"
        ds.MagneticFieldStrength = _ds(ident.field_strength)
        ds.PercentSampling = "100"
        ds.PercentPhaseFieldOfView = "100"
        ds.PixelBandwidth = "200"
        ds.FlipAngle = "150" if spec.tr > 1500 else "90"
        ds.ReceiveCoilName = "SPINE"
        ds.AcquisitionMatrix = [0, stack.cols, stack.rows, 0]
        ds.InPlanePhaseEncodingDirection = "ROW" if stack.plane == "sagittal" else "COL"
        ds.WindowCenter = "1"
        ds.WindowWidth = "2"
    ds.PixelData = b""
    ds["PixelData"].VR = "OW"
    return ds


def fill_slice(ds: Dataset, ident: StudyIdentity, spec: SeriesSpec, stack: SliceStack, i: int,
               pixels: np.ndarray) -> Dataset:
    """Set the per-image attributes of a series template *in place* and return it."""
    sop_uid = ident.uid("series", spec.series_number, "instance", i + 1)
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.SOPInstanceUID = sop_uid
    ds.ContentTime = ds.SeriesTime[:4] + f"{min(i, 59):02d}"
    ds.InstanceNumber = i + 1
    ds.ImagePositionPatient = [_ds(float(v)) for v in stack.positions[i]]
    ds.ImageOrientationPatient = [_ds(round(float(v), 6)) for v in
                                  (*stack.row_dirs[i], *stack.col_dirs[i])]
    ds.SliceLocation = _ds(float(stack.centre(i) @ stack.normal(i)))
    if ident.modality != "CT":
        hi = float(np.percentile(pixels[::4, ::4], 99.5))
        ds.WindowCenter = _ds(round(max(hi, 1.0) / 2.0, 1))
        ds.WindowWidth = _ds(round(max(hi, 1.0), 1))
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint16).tobytes()
    ds["PixelData"].VR = "OW"
    return ds


def build_dataset(ident: StudyIdentity, spec: SeriesSpec, stack: SliceStack, i: int,
                  pixels: np.ndarray) -> Dataset:
    """One image of a series (a fresh dataset). ``pixels`` are stored values (uint16)."""
    return fill_slice(series_template(ident, spec, stack), ident, spec, stack, i, pixels)


def write_dataset(ds: Dataset, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)


#: Attributes that :func:`fill_slice` changes per image.
_PER_IMAGE_TAGS = frozenset({
    0x00080018, 0x00080033, 0x00200013, 0x00200032, 0x00200037, 0x00201041,
    0x00281050, 0x00281051, 0x7FE00010,
})


class SeriesWriter:
    """Writes the images of one series fast: the elements shared by every image are
    encoded once (explicit VR little endian), only the per-image ones each time.

    The bytes equal what ``pydicom.dcmwrite(..., enforce_file_format=True)`` writes.
    """

    def __init__(self, template: Dataset) -> None:
        self._chunks: list[tuple[int, bytes | None]] = []
        for elem in template:  # iterates in tag order
            if int(elem.tag) in _PER_IMAGE_TAGS:
                self._chunks.append((int(elem.tag), None))
            else:
                fp = self._buffer()
                write_data_element(fp, elem)
                self._chunks.append((int(elem.tag), fp.getvalue()))

    @staticmethod
    def _buffer() -> DicomBytesIO:
        fp = DicomBytesIO()
        fp.is_little_endian = True
        fp.is_implicit_VR = False
        return fp

    def write(self, ds: Dataset, path: Path) -> None:
        """Write ``ds`` (the template after :func:`fill_slice`) to ``path``."""
        fp = self._buffer()
        fp.write(b"\0" * 128 + b"DICM")
        write_file_meta_info(fp, ds.file_meta, enforce_standard=True)
        for tag, chunk in self._chunks:
            if chunk is None:
                write_data_element(fp, ds[tag])
            else:
                fp.write(chunk)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(fp.getvalue())
