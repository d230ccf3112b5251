"""A tiny synthetic RSNA-layout dataset for the models tests (not the phantom generator).

Geometry is simple and known: the spine runs along patient z, discs are
ellipsoids at fixed heights, the canal lies behind them, foramina at x = +-15 mm
(left = +x in LPS). Other test modules import :func:`make_dataset`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from models import rsna

DISC_Z = {"L1/L2": 40.0, "L2/L3": 10.0, "L3/L4": -20.0, "L4/L5": -50.0, "L5/S1": -80.0}
OTHER_DISC_Z = 70.0
SAG_IOP = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
AX_IOP = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
SAG_SPACING = 1.5
SAG_SHAPE = (150, 128)
SAG_ORIGIN_YZ = (-60.0, 100.0)
SAG_X = tuple(float(x) for x in np.arange(-16, 17, 4))  # 9 slices


def _write(path: Path, study_uid: str, series_uid: str, inst: int, pos: tuple[float, float, float],
           iop: tuple[float, ...], img: np.ndarray, spacing: float, tr: float, te: float, desc: str) -> None:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    sop = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.Modality = "MR"
    ds.BodyPartExamined = "LSPINE"
    ds.SeriesDescription = desc
    ds.RepetitionTime, ds.EchoTime = tr, te
    ds.InstanceNumber = inst
    ds.ImagePositionPatient = [float(v) for v in pos]
    ds.ImageOrientationPatient = list(iop)
    ds.PixelSpacing = [spacing, spacing]
    ds.SliceThickness = 3.0
    ds.Rows, ds.Columns = img.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = np.clip(img * 1000, 0, 65535).astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def _sagittal(x: float, t1: bool, rng: np.random.Generator, severity: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = SAG_SHAPE
    i, j = np.mgrid[0:rows, 0:cols]
    y = SAG_ORIGIN_YZ[0] + j * SAG_SPACING
    z = SAG_ORIGIN_YZ[1] - i * SAG_SPACING
    img = 0.1 + 0.02 * rng.standard_normal(SAG_SHAPE)
    lab = np.zeros(SAG_SHAPE, np.uint8)
    lateral = abs(x) <= 18
    zs = [OTHER_DISC_Z, *DISC_Z.values(), -110.0]
    for za, zb in zip(zs[:-1], zs[1:]):  # vertebral bodies between discs
        body = (np.abs(y) <= 15) & (z < za - 5) & (z > zb + 5) & lateral
        img[body] = 0.45 if not t1 else 0.6
        lab[body] = rsna.MASK_VERTEBRAL_BODY
    canal_w = np.full(SAG_SHAPE, 6.0)
    for lv, zd in DISC_Z.items():
        canal_w = np.where(np.abs(z - zd) < 6, 6.0 - 1.8 * severity.get(lv, 0), canal_w)
    canal = (np.abs(y - 24) <= canal_w) & (abs(x) <= 7)
    img[canal] = 0.95 if not t1 else 0.3
    lab[canal] = rsna.MASK_SPINAL_CANAL
    for name, zd in [("other", OTHER_DISC_Z), *DISC_Z.items()]:
        disc = ((y / 16) ** 2 + ((z - zd) / 4) ** 2 <= 1) & lateral
        img[disc] = 0.8 if not t1 else 0.5
        lab[disc] = rsna.MASK_OTHER_DISC if name == "other" else rsna.DISC_LABELS[name]
    return img.astype(np.float32), lab


def make_dataset(root: Path, n_studies: int = 3, seed: int = 0, axial: bool = True) -> rsna.RsnaDataset:
    """Write ``n_studies`` lumbar studies with masks, labels and Pfirrmann grades."""
    rng = np.random.default_rng(seed)
    labels: list[rsna.StudyLabels] = []
    coords: list[rsna.LabelCoordinate] = []
    series: list[rsna.SeriesInfo] = []
    pf: dict[tuple[int, str], int] = {}
    for s in range(n_studies):
        sid = 1000 + s
        suid = generate_uid()
        sev = {lv: int(rng.integers(0, 3)) for lv in DISC_Z}
        grades = {rsna.target_column(c, lv): rsna.SEVERITIES[sev[lv]] for c in rsna.LUMBAR_CONDITIONS for lv in DISC_Z}
        labels.append(rsna.StudyLabels(sid, grades))
        for lv in DISC_Z:
            pf[(sid, lv)] = 1 + int(rng.integers(0, 5))
        for ser_id, desc, t1 in ((sid * 10 + 1, rsna.SAGITTAL_T2_STIR, False), (sid * 10 + 2, rsna.SAGITTAL_T1, True)):
            series.append(rsna.SeriesInfo(sid, ser_id, desc))
            uid = generate_uid()
            masks = []
            for k, x in enumerate(SAG_X):
                img, lab = _sagittal(x, t1, rng, sev)
                pos = (x, SAG_ORIGIN_YZ[0], SAG_ORIGIN_YZ[1])
                path = root / "train_images" / str(sid) / str(ser_id) / f"{k + 1}.dcm"
                _write(path, suid, uid, k + 1, pos, SAG_IOP, img, SAG_SPACING,
                       500.0 if t1 else 3000.0, 10.0 if t1 else 100.0, desc)
                masks.append(lab)
            rsna.write_masks(root / "masks" / str(sid) / f"{ser_id}.npz", np.stack(masks), range(1, len(SAG_X) + 1))
            mid = len(SAG_X) // 2 + 1
            for lv, zd in DISC_Z.items():
                row = (SAG_ORIGIN_YZ[1] - zd) / SAG_SPACING
                if not t1:
                    coords.append(rsna.LabelCoordinate(sid, ser_id, mid, rsna.SPINAL_CANAL_STENOSIS, lv,
                                                       (24 - SAG_ORIGIN_YZ[0]) / SAG_SPACING, row))
                else:
                    # left foramen at x=+16 (slice 9), right at x=-16 (slice 1)
                    for cond, inst in ((rsna.LEFT_NEURAL_FORAMINAL_NARROWING, len(SAG_X)),
                                       (rsna.RIGHT_NEURAL_FORAMINAL_NARROWING, 1)):
                        coords.append(rsna.LabelCoordinate(sid, ser_id, inst, cond, lv,
                                                           (20 - SAG_ORIGIN_YZ[0]) / SAG_SPACING, row))
        if axial:
            ser_id = sid * 10 + 3
            series.append(rsna.SeriesInfo(sid, ser_id, rsna.AXIAL_T2))
            uid = generate_uid()
            inst = 0
            for lv, zd in DISC_Z.items():
                for dz in (-3.0, 0.0, 3.0):
                    inst += 1
                    img = 0.1 + 0.02 * rng.standard_normal((64, 64))
                    ii, jj = np.mgrid[0:64, 0:64]
                    xx, yy = -48 + jj * 1.5, -40 + ii * 1.5
                    img[(xx / 18) ** 2 + (yy / 14) ** 2 <= 1] = 0.7
                    img[((xx - 10) ** 2 + (yy - 24) ** 2 <= (8 - 2 * sev[lv]) ** 2)] = 0.95
                    img[((xx + 10) ** 2 + (yy - 24) ** 2 <= (8 - 2 * sev[lv]) ** 2)] = 0.95
                    path = root / "train_images" / str(sid) / str(ser_id) / f"{inst}.dcm"
                    _write(path, suid, uid, inst, (-48.0, -40.0, zd + dz), AX_IOP, img.astype(np.float32),
                           1.5, 4000.0, 90.0, rsna.AXIAL_T2)
                    if dz == 0.0:  # recesses at x = +-10 (left = +x), y = 24
                        for cond, xr in ((rsna.LEFT_SUBARTICULAR_STENOSIS, 10.0),
                                         (rsna.RIGHT_SUBARTICULAR_STENOSIS, -10.0)):
                            coords.append(rsna.LabelCoordinate(sid, ser_id, inst, cond, lv,
                                                               (xr + 48) / 1.5, (24 + 40) / 1.5))
    rsna.write_labels(root, labels)
    rsna.write_coordinates(root, coords)
    rsna.write_series_descriptions(root, series)
    rsna.write_pfirrmann(root, pf)
    return rsna.read_dataset(root)


def test_synthetic_dataset_reads_back(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path, n_studies=1)
    assert ds.study_ids == (1000,)
    assert len(ds.series_of(1000)) == 3
    assert ds.labels[1000].class_index(rsna.SPINAL_CANAL_STENOSIS, "L4/L5") in (0, 1, 2)
    mv = rsna.read_masks(ds.masks_path(1000, 10001))
    assert (mv.labels == rsna.DISC_LABELS["L4/L5"]).any()
