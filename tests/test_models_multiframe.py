"""Enhanced MR/CT multi-frame images read frame by frame from their functional groups."""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from models.multiframe import expand_frames, frame_number_of, is_multiframe
from models.series import Plane, Weighting, classify_series, header_from_datasets, select_series
from models.volume import canonical_volume, volume_from_datasets

SAG = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]


def _item(**kw: object) -> Dataset:
    d = Dataset()
    for k, v in kw.items():
        setattr(d, k, v)
    return d


def _enhanced(modality: str = "MR", tr: float = 3500.0, te: float = 100.0, ti: float | None = None,
              n: int = 9, order: list[int] | None = None) -> tuple[Dataset, np.ndarray]:
    """An Enhanced MR (or CT) image of n sagittal frames 4 mm apart, frames stored in ``order``."""
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 3000, (n, 12, 10), dtype=np.uint16)
    order = order or list(range(n))
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4.1" if modality == "MR" else "1.2.840.10008.5.1.4.1.1.2.1"
    ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.InstanceNumber = "1.2.3.4", "1.2.3", 1
    ds.Modality, ds.SeriesDescription, ds.ImageType = modality, "sag", ["ORIGINAL", "PRIMARY"]
    ds.Rows, ds.Columns, ds.NumberOfFrames = 12, 10, n
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    shared = _item(
        PixelMeasuresSequence=Sequence([_item(PixelSpacing=[0.8, 0.9], SliceThickness=3.5)]),
        PlaneOrientationSequence=Sequence([_item(ImageOrientationPatient=SAG)]),
        PixelValueTransformationSequence=Sequence([_item(RescaleSlope=2, RescaleIntercept=-5)]),
    )
    if modality == "MR":
        shared.MRTimingAndRelatedParametersSequence = Sequence([_item(RepetitionTime=tr)])
        shared.MREchoSequence = Sequence([_item(EffectiveEchoTime=te)])
        if ti is not None:
            shared.MRModifierSequence = Sequence([_item(InversionRecovery="YES", InversionTimes=[ti])])
    else:
        shared.CTImageFrameTypeSequence = Sequence([_item(FrameType=["ORIGINAL", "PRIMARY", "AXIAL"])])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    ds.PerFrameFunctionalGroupsSequence = Sequence([
        _item(PlanePositionSequence=Sequence([_item(ImagePositionPatient=[4.0 * k - 16.0, -50.0, 60.0])]))
        for k in order
    ])
    ds.PixelData = pixels[order].tobytes()
    return ds, pixels


def test_enhanced_mr_frames_carry_their_functional_groups() -> None:
    ds, _ = _enhanced()
    assert is_multiframe(ds)
    frames = expand_frames(ds)
    assert len(frames) == 9 and [frame_number_of(f) for f in frames] == list(range(1, 10))
    f = frames[3]
    assert [float(v) for v in f.ImagePositionPatient] == [-4.0, -50.0, 60.0]
    assert [float(v) for v in f.PixelSpacing] == [0.8, 0.9] and float(f.SliceThickness) == 3.5
    assert (float(f.RepetitionTime), float(f.EchoTime)) == (3500.0, 100.0)
    assert f.SOPInstanceUID == "1.2.3.4" and "NumberOfFrames" not in f
    header_only = expand_frames(_strip_pixels(ds))
    assert len(header_only) == 9 and "PixelData" not in header_only[0]


def _strip_pixels(ds: Dataset) -> Dataset:
    out = Dataset(ds)
    del out.PixelData
    return out


def test_enhanced_series_classified_and_selected_like_single_frame() -> None:
    t2, _ = _enhanced(tr=3500, te=100)
    stir, _ = _enhanced(tr=4000, te=50, ti=150)
    stir.SeriesInstanceUID = "1.2.4"
    t1, _ = _enhanced(tr=600, te=10)
    t1.SeriesInstanceUID = "1.2.5"
    classes = [classify_series(header_from_datasets([_strip_pixels(d)])) for d in (t2, stir, t1)]
    assert [(c.plane, c.weighting, c.n_slices, c.usable) for c in classes] == [
        (Plane.SAGITTAL, Weighting.T2, 9, True), (Plane.SAGITTAL, Weighting.STIR, 9, True),
        (Plane.SAGITTAL, Weighting.T1, 9, True)]
    assert classes[0].slice_spacing_mm == 4.0 and classes[0].coverage_mm == 36.0
    sel = select_series(classes)
    assert (sel.sagittal_t2, sel.sagittal_t1) == ("1.2.3", "1.2.5")
    ct, _ = _enhanced("CT")
    c = classify_series(header_from_datasets([ct]))
    assert (c.plane, c.weighting, c.usable) == (Plane.SAGITTAL, Weighting.CT, True)


def test_enhanced_volume_sorted_by_geometry_with_frame_numbers() -> None:
    order = [4, 0, 8, 2, 6, 1, 7, 3, 5]  # frames stored out of spatial order
    ds, pixels = _enhanced(order=order)
    vol = canonical_volume(volume_from_datasets([ds]))
    assert vol.shape == (9, 12, 10) and vol.sop_instance_uids == ("1.2.3.4",) * 9
    # the canonical sagittal stack runs along -x (right to left is +x in LPS: normal = row x col)
    xs = vol.positions[:, 0]
    assert np.all(np.diff(xs) < 0)
    for k in range(9):
        spatial = int(round((xs[k] + 16.0) / 4.0))
        assert vol.frame_numbers[k] == order.index(spatial) + 1
        assert vol.frame_of(k) == vol.frame_numbers[k]
        np.testing.assert_array_equal(vol.pixels[k], pixels[spatial].astype(np.float32) * 2 - 5)
