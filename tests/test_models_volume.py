"""Volume assembly and the patient <-> voxel geometry used to map levels onto axial slices."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from models.volume import Volume, VolumeError, normalize_image, volume_from_datasets

SAG = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)  # rows along +y (posterior), columns along -z (down)
AX = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _ds(series: str, pos: tuple[float, float, float], iop: tuple[float, ...], inst: int,
        value: int, shape: tuple[int, int] = (8, 10), spacing: float = 0.5) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SeriesInstanceUID = series
    ds.SOPInstanceUID = generate_uid()
    ds.InstanceNumber = inst
    ds.ImagePositionPatient = list(pos)
    ds.ImageOrientationPatient = list(iop)
    ds.PixelSpacing = [spacing, spacing]
    ds.Rows, ds.Columns = shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.RescaleSlope, ds.RescaleIntercept = 2, -1
    ds.PixelData = np.full(shape, value, np.uint16).tobytes()
    return ds


def _sagittal(n: int = 5) -> list[Dataset]:
    # slices along x at -4, -2, 0, 2, 4; given shuffled, with instance numbers that lie
    xs = [-4.0, -2.0, 0.0, 2.0, 4.0][:n]
    dss = [_ds("1.2", (x, -10.0, 50.0), SAG, inst=10 - i, value=i) for i, x in enumerate(xs)]
    return [dss[i] for i in (3, 0, 4, 1, 2)][:n]


def test_sorted_by_geometry_not_instance_number() -> None:
    v = volume_from_datasets(_sagittal())
    assert v.shape == (5, 8, 10)
    # the normal row x col = (0,1,0) x (0,0,-1) = (-1,0,0): sorted right (x=4) to left
    assert np.allclose(v.normal, [-1, 0, 0])
    assert np.allclose(v.positions[:, 0], [4, 2, 0, -2, -4])
    # value i was written at x = xs[i]; rescale 2*i-1
    assert np.allclose(v.pixels[:, 0, 0], [2 * i - 1 for i in (4, 3, 2, 1, 0)])
    assert v.slice_spacing == pytest.approx(2.0)


def test_voxel_patient_round_trip() -> None:
    v = volume_from_datasets(_sagittal())
    p = v.voxel_to_patient(2, 3, 4)  # x=0, y = -10 + col 4 * 0.5, z = 50 - row 3 * 0.5
    assert np.allclose(p, [0.0, -8.0, 48.5])
    assert np.allclose(v.patient_to_voxel(p), [2, 3, 4])
    q = v.voxel_to_patient(1.5, 2.0, 6.0)
    assert np.allclose(v.patient_to_voxel(q), [1.5, 2.0, 6.0])
    assert v.contains_in_plane(p)
    assert not v.contains_in_plane([0.0, 100.0, 48.0])


def test_axial_slices_nearest_a_sagittal_point() -> None:
    sag = volume_from_datasets(_sagittal())
    axial = volume_from_datasets(
        [_ds("1.3", (-20.0, -30.0, z), AX, inst=i, value=i, shape=(6, 6)) for i, z in
         enumerate([30.0, 34.0, 38.0, 42.0, 46.0, 50.0])]
    )
    disc = sag.voxel_to_patient(2, 21, 2)  # z = 50 - row 21 * 0.5 = 39.5
    assert disc[2] == pytest.approx(39.5)
    assert axial.nearest_slices(disc, 1) == (2,)
    assert axial.nearest_slices(disc, 2) == (2, 3)
    assert axial.nearest_slices([0, 0, 100.0], 1, max_distance=5.0) == ()
    assert np.allclose(axial.plane_distances(disc), [9.5, 5.5, 1.5, -2.5, -6.5, -10.5])


def test_largest_stack_kept_and_errors() -> None:
    dss = _sagittal()
    dss.append(_ds("1.2", (0.0, 0.0, 0.0), AX, 99, 0))
    assert volume_from_datasets(dss).shape[0] == 5
    with pytest.raises(VolumeError):
        volume_from_datasets([])
    bad = _sagittal()
    bad[0].Rows = 4
    bad[0].PixelData = np.zeros((4, 10), np.uint16).tobytes()
    with pytest.raises(VolumeError):
        volume_from_datasets(bad)


def test_normalize_image() -> None:
    img = np.arange(100, dtype=float).reshape(10, 10)
    out = normalize_image(img)
    assert out.dtype == np.float32 and out.min() == 0.0 and out.max() == 1.0
    assert not normalize_image(np.ones((4, 4))).any()
    with pytest.raises(VolumeError):
        Volume("x", ("a",), "", np.zeros((2, 2, 2)), np.zeros((2, 3)), np.array(SAG), (1.0, 1.0))  # type: ignore[arg-type]


def test_angled_axial_stacks_pick_the_nearest_block() -> None:
    from models.volume import nearest_in_stacks, volumes_from_datasets

    c, s = np.cos(np.radians(10)), np.sin(np.radians(10))
    tilted = (1.0, 0.0, 0.0, 0.0, c, s)
    block_a = [_ds("1.4", (-20.0, -30.0, z), AX, i, 1, (60, 60)) for i, z in enumerate([0, 4, 8])]
    block_b = [_ds("1.4", (-20.0, -30.0, z), tilted, 10 + i, 2, (60, 60))
               for i, z in enumerate([40, 44, 48])]
    vols = volumes_from_datasets(block_a + block_b)
    assert sorted(v.shape[0] for v in vols) == [3, 3]
    hit = nearest_in_stacks(vols, [-10.0, -20.0, 45.0])
    assert hit is not None
    stack, k, dist = hit
    assert vols[stack].pixels[k, 0, 0] == 2 * 2 - 1  # block b (value 2, rescaled)
    assert dist < 2.5
    assert nearest_in_stacks(vols, [500.0, 0.0, 0.0]) is None


def test_sample_crop_centred_and_spacing_independent() -> None:
    from models.volume import sample_crop

    for spacing, shape in ((0.5, (80, 80)), (1.0, (40, 40))):
        dss = [_ds("1.5", (x, -20.0, 20.0), SAG, i, 0, shape, spacing)
               for i, x in enumerate([-2.0, 0.0, 2.0])]
        v = volume_from_datasets(dss)
        pix = np.zeros(v.shape, np.float32)
        # a bright 4 x 4 mm square centred at patient (x=0, y=-10, z=10)
        i0, j0 = int(round(10 / spacing)), int(round(10 / spacing))
        half = int(round(2 / spacing))
        pix[1, i0 - half:i0 + half, j0 - half:j0 + half] = 1.0
        centre = v.voxel_to_patient(1, i0 - 0.5, j0 - 0.5)
        crop = sample_crop(v, pix, centre, size_px=17, fov_mm=16.0, half_slices=1)
        assert crop.shape == (3, 17, 17)
        assert crop[1, 8, 8] == pytest.approx(1.0)
        assert crop[1, 0, 0] == 0.0 and crop[0].max() == 0.0
        # 1 mm per crop pixel: the square spans about 4 crop pixels whatever the spacing
        assert 3 <= int((crop[1, 8] > 0.5).sum()) <= 5



def test_canonical_volume_keeps_every_voxel_in_place() -> None:
    """Each of the 8 in-plane orientations, with the slices counted either way, gives the
    same canonical array and geometry; the grid maps boxes and arrays back to the source."""
    from models.phantom.variants import IN_PLANE, reorient, reorient_array, reverse_slices
    from models.types import Box
    from models.volume import canonical_volume

    rng = np.random.default_rng(0)
    base = []
    for i, x in enumerate((-4.0, -2.0, 0.0, 2.0)):
        ds = _ds("1.2", (x, -10.0, 50.0), SAG, inst=i + 1, value=0, shape=(6, 9))
        ds.PixelSpacing = [0.5, 0.7]
        ds.PixelData = rng.integers(0, 4000, (6, 9), dtype=np.uint16).tobytes()
        base.append(ds)
    source = volume_from_datasets(base)
    plain = canonical_volume(source)
    assert plain.grid is not None and plain.grid.identity
    box = Box(1.0, 2.0, 4.0, 5.5)
    labels = (plain.pixels > 2000).astype(np.uint8)
    seen = set()
    for op in IN_PLANE:
        for reverse in (False, True):
            dss = [reorient(ds, op) for ds in base]
            dss = reverse_slices(dss) if reverse else dss
            src = volume_from_datasets(dss)
            seen.add((src.orientation.round(3).tobytes(), src.instance_numbers))
            can = canonical_volume(src)
            assert can.grid is not None and can.grid.identity == (op == IN_PLANE[0])
            np.testing.assert_array_equal(can.pixels, plain.pixels)
            np.testing.assert_allclose(can.positions, plain.positions, atol=1e-4)
            np.testing.assert_allclose(can.orientation, plain.orientation, atol=1e-6)
            assert can.pixel_spacing == pytest.approx(plain.pixel_spacing)
            assert can.sop_instance_uids == plain.sop_instance_uids
            # a box found on the canonical grid covers the same patient points on the source image
            k = 1
            sb = can.grid.box_to_source(box)
            sk = src.sop_instance_uids.index(can.sop_instance_uids[k])
            c_centre = can.voxel_to_patient(k, box.center[1] - 0.5, box.center[0] - 0.5)
            s_centre = src.voxel_to_patient(sk, sb.center[1] - 0.5, sb.center[0] - 0.5)
            np.testing.assert_allclose(c_centre, s_centre, atol=1e-4)
            assert (sb.x1 - sb.x0) * (sb.y1 - sb.y0) == pytest.approx((box.x1 - box.x0) * (box.y1 - box.y0))
            # a mask on the canonical grid, laid back, is the mask on the pixels as sent
            by_uid = [source.sop_instance_uids.index(u) for u in can.sop_instance_uids]
            expect = reorient_array((source.pixels > 2000).astype(np.uint8), op)[by_uid]
            np.testing.assert_array_equal(can.grid.array_to_source(labels), expect)
    assert len(seen) == 16  # every variant is sent differently
