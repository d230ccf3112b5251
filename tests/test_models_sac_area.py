"""Dural sac area on an axial slice: rays from a point inside the sac end at its edge in
the image (half-maximum against what lies beyond), not at dark nerve roots inside it."""

from __future__ import annotations

import numpy as np
import pytest

from models.sac_area import DURAL_SAC_AREA, measure_sac_area, sac_outline
from models.volume import Volume

SPACING = (0.5, 0.5)


def _axial_slice(shape: tuple[int, int] = (120, 120), centre: tuple[float, float] = (30.0, 30.0),
                 rw: float = 8.0, ra: float = 6.0) -> np.ndarray:
    """T2-like: a bright elliptical sac (CSF 1.0, half-axes ``rw`` left-right, ``ra``
    front-back) holding dark roots (0.3; one a pixel from its back wall), disc annulus (0.13)
    in front, the canal's walls (0.25) at the sides, ligament (0.11) behind; blurred over a
    pixel. (Bright epidural fat right beside the sac is a known limit: models/sac_area.py.)"""
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]]
    x = cols * SPACING[1] - centre[0]
    y = rows * SPACING[0] - centre[1]
    img = np.full(shape, 0.25)
    img[y < -ra + 0.5] = 0.13
    img[y > ra - 0.5] = 0.11
    img[(x / rw) ** 2 + (y / ra) ** 2 <= 1.0] = 1.0
    for rx, ry in ((-3.0, 2.0), (0.0, 3.5), (3.0, 2.5), (1.5, 4.3)):
        img[(x - rx) ** 2 + (y - ry) ** 2 <= 1.0] = 0.3
    for _ in range(2):
        p = np.pad(img, 1, mode="edge")
        img = 0.25 * p[:-2, 1:-1] + 0.5 * p[1:-1, 1:-1] + 0.25 * p[2:, 1:-1]
        p = np.pad(img, 1, mode="edge")
        img = 0.25 * p[1:-1, :-2] + 0.5 * p[1:-1, 1:-1] + 0.25 * p[1:-1, 2:]
    return img


def test_outline_spans_the_sac_across_its_roots() -> None:
    img = _axial_slice()
    seed = (30.0 / SPACING[1] + 2, 30.0 / SPACING[0] - 4)  # off centre, in front of the roots
    got = sac_outline(img, SPACING, seed)
    assert got is not None
    area, outline = got
    assert area == pytest.approx(np.pi * 8.0 * 6.0, rel=0.06)
    ys = (outline[:, 1] * SPACING[0]) - 30.0
    assert ys.max() == pytest.approx(6.0, abs=0.8)  # the back wall, behind the roots


def test_no_area_outside_a_bright_region() -> None:
    img = np.full((80, 80), 0.2)
    assert sac_outline(img, SPACING, (40.0, 40.0)) is None


def test_measure_on_the_nearest_axial_slice() -> None:
    slices = np.stack([_axial_slice(rw=6.0, ra=5.0), _axial_slice(), _axial_slice(rw=6.0, ra=5.0)])
    positions = np.array([[-10.0, -20.0, z] for z in (-4.0, 0.0, 4.0)])
    vol = Volume("1.2.3", ("a", "b", "c"), (1, 2, 3), slices.astype(np.float32), positions,
                 np.array([1.0, 0, 0, 0, 1.0, 0]), SPACING)
    # the sac centre in patient mm: position + 30 mm along rows and columns
    area = measure_sac_area("L4-L5", (20.0, 10.0, 0.7), [vol])
    assert area is not None and area.kind == DURAL_SAC_AREA and area.sop_instance_uid == "b"
    assert area.value_mm2 == pytest.approx(np.pi * 48.0, rel=0.06)
    assert area.outline[0] == area.outline[-1] and len(area.outline) > 40  # closed, SCOORD pixel coordinates
    cols = [p[0] for p in area.outline]
    assert min(cols) == pytest.approx((30.0 - 8.0) / SPACING[1] + 0.5, abs=1.5)
    assert measure_sac_area("L4-L5", (20.0, 10.0, 9.0), [vol]) is None  # no slice within 4 mm
