"""Series classification from geometry and sequence, on generated headers."""

from __future__ import annotations

from pathlib import Path

from pydicom import dcmread

import dicomgen
from models.series import (
    Plane,
    SeriesClass,
    SeriesHeader,
    SliceGeometry,
    Weighting,
    classify_series,
    header_from_datasets,
    plane_of,
    select_series,
)


def _classes(tmp_path: Path, series: tuple[dicomgen.SeriesSpec, ...], modality: str = "MR") -> list[SeriesClass]:
    st = dicomgen.write_study(tmp_path / "s", series=series, modality=modality)
    return [
        classify_series(header_from_datasets([dcmread(p, stop_before_pixels=True) for p in st.series_paths[uid]]))
        for uid in st.series_uids
    ]


def test_classifies_lumbar_protocol(tmp_path: Path) -> None:
    c = _classes(tmp_path, dicomgen.DEFAULT_SERIES + (dicomgen.SeriesSpec("STIR SAG", "sagittal", 12, "STIR"),))
    assert [(x.plane, x.weighting) for x in c] == [
        (Plane.SAGITTAL, Weighting.T2), (Plane.SAGITTAL, Weighting.T1),
        (Plane.AXIAL, Weighting.T2), (Plane.SAGITTAL, Weighting.STIR),
    ]
    assert all(x.usable for x in c)
    assert c[0].n_slices == 15 and c[0].slice_spacing_mm and c[0].coverage_mm
    sel = select_series(c)
    assert (sel.sagittal_t2, sel.sagittal_t1, sel.axial_t2) == (c[0].series_uid, c[1].series_uid, c[2].series_uid)
    assert sel.missing == ()
    assert sel.series_uids() == {c[0].series_uid, c[1].series_uid, c[2].series_uid}  # not the spare STIR


def test_weighting_from_numbers_not_description(tmp_path: Path) -> None:
    # A T1 series described as "T2" is still T1: TR/TE decide.
    c = _classes(tmp_path, (dicomgen.SeriesSpec("SAG T2 (mislabelled)", "sagittal", 10, "T1"),))
    assert c[0].weighting == Weighting.T1


def test_missing_inputs_are_reported(tmp_path: Path) -> None:
    c = _classes(tmp_path, (dicomgen.SeriesSpec("SAG T2", "sagittal", 12, "T2"),
                            dicomgen.SeriesSpec("COR T2", "coronal", 12, "T2")))
    assert not c[1].usable and "coronal" in c[1].reason
    sel = select_series(c)
    assert sel.sagittal_t2 == c[0].series_uid
    assert sel.series_uids() == {c[0].series_uid}
    assert any("foraminal" in m for m in sel.missing) and any("subarticular" in m for m in sel.missing)


def test_too_few_slices_and_ct(tmp_path: Path) -> None:
    c = _classes(tmp_path, (dicomgen.SeriesSpec("SAG", "sagittal", 3, "T2"),))
    assert not c[0].usable
    ct = _classes(tmp_path / "ct", (dicomgen.SeriesSpec("SAG BONE", "sagittal", 20),), modality="CT")
    assert ct[0].weighting == Weighting.CT and ct[0].usable
    assert select_series(ct).ct_sagittal == ct[0].series_uid


def test_plane_of_oblique_and_angled_axial() -> None:
    import math

    a = math.radians(15)  # an axial block angled along a disc stays axial
    assert plane_of((1, 0, 0, 0, math.cos(a), -math.sin(a))) == Plane.AXIAL
    b = math.radians(45)
    assert plane_of((1, 0, 0, 0, math.cos(b), -math.sin(b))) == Plane.OBLIQUE
    assert plane_of(None) == Plane.UNKNOWN


def test_localizer_is_not_usable() -> None:
    sl = tuple(SliceGeometry(str(i), i, (0.0, 0.0, float(i)), (1, 0, 0, 0, 1, 0), (1.0, 1.0), 64, 64) for i in range(9))
    h = SeriesHeader("1.2", "MR", "LOCALIZER", repetition_time=10, echo_time=3, image_type="ORIGINAL\\PRIMARY\\LOCALIZER", slices=sl)
    assert classify_series(h).usable is False


def test_angled_axial_blocks_classify_the_same_in_any_order() -> None:
    """Phantom seed 8: five axial blocks of 3 slices, one tilted past 35 degrees. The plane is the
    one most slices lie in, so the node (arrival order) and the analyzer (instance order) agree;
    before, the first largest stack decided and 'oblique plane is not used' came and went."""
    import math
    import random

    def block(level: int, deg: float) -> list[SliceGeometry]:
        a = math.radians(deg)
        iop = (1.0, 0.0, 0.0, 0.0, math.cos(a), -math.sin(a))
        return [SliceGeometry(f"{level}.{i}", 3 * level + i + 1, (0.0, 0.0, 40.0 * level + 4.0 * i), iop,
                              (0.7, 0.7), 256, 256) for i in range(3)]

    slices = [s for lv, deg in enumerate((40.0, 20.0, 10.0, 0.0, -5.0)) for s in block(lv, deg)]
    classes = set()
    rng = random.Random(8)
    for _ in range(20):
        rng.shuffle(slices)
        c = classify_series(SeriesHeader("1.2", "MR", "AX T2", repetition_time=4000, echo_time=100,
                                         slices=tuple(slices)))
        classes.add((c.plane, c.usable, c.reason, c.coverage_mm, c.n_stacks))
    assert len(classes) == 1
    plane, usable, reason, _, n_stacks = classes.pop()
    assert (plane, usable, reason, n_stacks) == (Plane.AXIAL, True, "", 5)


def test_series_fields_come_from_the_first_instance_whatever_the_file_order() -> None:
    from pydicom.dataset import Dataset

    def ds(n: int, te: float) -> Dataset:
        d = Dataset()
        d.SeriesInstanceUID, d.SOPInstanceUID, d.InstanceNumber, d.Modality = "1.2", f"1.2.{n}", n, "MR"
        d.RepetitionTime, d.EchoTime = 3000, te
        return d

    a = header_from_datasets([ds(2, 20.0), ds(1, 100.0)])
    b = header_from_datasets([ds(1, 100.0), ds(2, 20.0)])
    assert a == b and a.echo_time == 100.0


def test_three_plane_survey_is_a_localizer_whatever_its_labels() -> None:
    iops = ((0, 1, 0, 0, 0, -1), (1, 0, 0, 0, 0, -1), (1, 0, 0, 0, 1, 0))
    sl = tuple(SliceGeometry(f"{p}.{i}", 3 * p + i, (float(i), 0.0, 0.0), iop, (1.0, 1.0), 256, 256)
               for p, iop in enumerate(iops) for i in range(9))
    c = classify_series(SeriesHeader("1.2", "MR", "T2 SAG", repetition_time=3000, echo_time=100,
                                     image_type="ORIGINAL\\PRIMARY", slices=sl))
    assert not c.usable and c.reason.startswith("localizer") and "3 planes" in c.reason


def test_repeated_series_chosen_by_coverage_quality_then_the_later_run() -> None:
    def cls(uid: str, number: int | None, coverage: float = 80.0, pixel: float = 0.6, n: int = 15) -> SeriesClass:
        return SeriesClass(uid, "MR", Plane.SAGITTAL, Weighting.T2, n, 1, 4.0, coverage, pixel, True, "", number)

    first, repeat = cls("1.2.9", 3), cls("1.2.1", 103)
    short, coarse = cls("1.2.5", 203, coverage=40.0, n=9), cls("1.2.6", 303, pixel=0.9)
    for order in ([first, repeat, short, coarse], [coarse, short, repeat, first], [repeat, first, coarse, short]):
        assert select_series(order).sagittal_t2 == "1.2.1"
    # no series numbers: the UID decides, never the order
    a, b = cls("1.2.7", None), cls("1.2.8", None)
    assert select_series([a, b]).sagittal_t2 == select_series([b, a]).sagittal_t2 == "1.2.7"
    assert SeriesClass.from_dict(repeat.as_dict()) == repeat
