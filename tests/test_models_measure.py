"""Linear measurements from masks: disc height along the disc's short axis, canal AP
diameter behind the disc along its long axis, on straight and tilted discs; and the
error summary spinenode evaluate reports."""

from __future__ import annotations

import numpy as np
import pytest

from models.measure import CANAL_AP_DIAMETER, DISC_HEIGHT, compare_to_truth, measure_level, measure_levels
from models.metrics import absolute_error_summary
from models.types import Box, Level, ModelId, SeriesMasks

SPACING = (0.5, 0.5)  # mm per pixel (rows, columns)


def _level(name: str = "L4-L5") -> Level:
    return Level(name, "s", "u1", 1, Box(0, 0, 1, 1), 0.9, (0.0, 0.0, 0.0))


def _rotated_rect(shape: tuple[int, int], centre: tuple[float, float], length_mm: float, height_mm: float,
                  angle_deg: float) -> np.ndarray:
    """A filled rectangle (long side along ``angle``) on a grid of SPACING, by pixel centres."""
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]]
    x = cols * SPACING[1] - centre[0]
    y = rows * SPACING[0] - centre[1]
    a = np.deg2rad(angle_deg)
    u = x * np.cos(a) + y * np.sin(a)
    v = -x * np.sin(a) + y * np.cos(a)
    return (np.abs(u) <= length_mm / 2) & (np.abs(v) <= height_mm / 2)


@pytest.mark.parametrize("angle", [0.0, 15.0, -25.0])
def test_disc_height_and_canal_diameter(angle: float) -> None:
    shape = (200, 200)
    centre = (40.0, 50.0)  # mm (x, y)
    disc = _rotated_rect(shape, centre, 36.0, 9.0, angle)
    a = np.deg2rad(angle)
    # the canal: a band 12 mm deep starting 4 mm behind the disc's posterior edge (towards +x)
    canal_centre = (centre[0] + (18 + 4 + 6) * np.cos(a), centre[1] + (18 + 4 + 6) * np.sin(a))
    canal = _rotated_rect(shape, canal_centre, 12.0, 60.0, angle)
    found = {m.kind: m for m in measure_level(_level(), disc, canal, SPACING)}
    assert found[DISC_HEIGHT].value_mm == pytest.approx(9.0, abs=0.6)
    assert found[CANAL_AP_DIAMETER].value_mm == pytest.approx(12.0, abs=0.6)
    # the canal line starts behind the disc, on its long axis, in pixel coordinates
    (x0, y0), (x1, y1) = found[CANAL_AP_DIAMETER].p0, found[CANAL_AP_DIAMETER].p1
    assert np.hypot((x1 - x0) * SPACING[1], (y1 - y0) * SPACING[0]) == pytest.approx(
        found[CANAL_AP_DIAMETER].value_mm, abs=1e-6)
    assert x0 * SPACING[1] > centre[0] + 18 * np.cos(a) - 1


def test_no_canal_gives_disc_height_only_and_levels_by_segment() -> None:
    labels = np.zeros((3, 100, 100), dtype=np.uint8)
    labels[1, 40:58, 20:80] = 1  # 18 px = 9 mm
    masks = SeriesMasks("s", ("u0", "u1", "u2"), labels, {1: "disc L4-L5"}, ModelId("m", "1"))
    out = measure_levels([_level("L4-L5"), _level("L5-S1")], masks, SPACING)
    assert list(out) == ["L4-L5"] and [m.kind for m in out["L4-L5"]] == [DISC_HEIGHT]
    assert out["L4-L5"][0].value_mm == pytest.approx(9.0, abs=0.3)
    # SCOORD coordinates: rows 40-57 span from the top edge of row 40 to the bottom edge of row 57
    rows = sorted(p[1] for p in (out["L4-L5"][0].p0, out["L4-L5"][0].p1))
    assert rows == [pytest.approx(40.0, abs=0.2), pytest.approx(58.0, abs=0.2)]


def test_compare_to_truth_and_summary() -> None:
    shape = (200, 200)
    truth = _rotated_rect(shape, (40.0, 50.0), 36.0, 9.0, 0.0)
    pred = _rotated_rect(shape, (40.0, 50.0), 36.0, 10.0, 0.0)
    predicted = {"L4-L5": measure_level(_level(), pred, None, SPACING)}
    (err,) = compare_to_truth([_level()], predicted, {"L4-L5": truth}, None, SPACING)
    assert err.kind == DISC_HEIGHT and err.error_mm == pytest.approx(1.0, abs=0.6)
    summary = absolute_error_summary([1.0, -2.0, 0.5, 3.0])
    assert summary == {"n": 4, "median_abs_error": 1.5, "mean_abs_error": 1.625, "p90_abs_error": pytest.approx(2.7),
                       "bias": 0.625}


def test_mean_thickness_of_straight_tilted_and_curved_discs() -> None:
    """Area over long-axis extent: a 40 x 5 px band at 0.5 mm is 2.5 mm thick, tilted or
    not; a thin curved band whose centroid lies outside it is measured too."""
    from models.measure import mean_thickness_mm

    band = np.zeros((64, 64), bool)
    band[30:35, 10:50] = True
    assert mean_thickness_mm(band, (0.5, 0.5)) == pytest.approx(2.5, abs=0.05)
    rr, cc = np.mgrid[0:128, 0:128]
    tilted = np.abs((rr - 64) * np.cos(0.5) - (cc - 64) * np.sin(0.5)) < 2.5  # 5 px thick line
    tilted &= (rr - 64) ** 2 + (cc - 64) ** 2 < 40 ** 2
    assert mean_thickness_mm(tilted, (0.5, 0.5)) == pytest.approx(2.5, rel=0.1)
    r = np.hypot(rr - 100, cc - 64)
    arc = (r > 60) & (r < 64) & (rr < 70)  # 4 px thick, the centroid outside the arc
    assert not arc[int(np.nonzero(arc)[0].mean()), int(np.nonzero(arc)[1].mean())]
    assert 2.0 * 0.8 < mean_thickness_mm(arc, (0.5, 0.5)) < 2.0 * 1.25  # type: ignore[operator]
    assert mean_thickness_mm(np.zeros((8, 8), bool), (1.0, 1.0)) is None


@pytest.mark.parametrize("angle", [0.0, 20.0])
def test_canal_ends_move_to_the_sac_edges_in_the_image(angle: float) -> None:
    """A canal mask that reaches 1.5 mm too far forward (the gap the disc mask leaves) and
    0.5 mm short behind is 1 mm too long on the mask alone; on the image (a bright 12 mm
    sac, a dark root inside, blurred over a pixel) the half-maximum edges give the same
    length as the sac's own mask (evaluate's truth)."""
    shape = (200, 200)
    centre = (40.0, 50.0)
    a = np.deg2rad(angle)
    disc = _rotated_rect(shape, centre, 36.0, 9.0, angle)
    along = np.array([np.cos(a), np.sin(a)])

    def band(front_mm: float, depth_mm: float) -> np.ndarray:
        mid = 18 + front_mm + depth_mm / 2
        return _rotated_rect(shape, (centre[0] + mid * along[0], centre[1] + mid * along[1]), depth_mm, 60.0, angle)

    sac = band(2.0, 12.0)
    mask = band(0.5, 13.0) & ~disc
    image = np.where(sac, 1.0, 0.12)
    image[band(6.0, 1.0) & _rotated_rect(shape, centre, 80.0, 1.0, angle)] = 0.3  # a root on the line
    for _ in range(2):  # partial volume: a 1-2-1 blur along both axes
        p = np.pad(image, 1, mode="edge")
        image = 0.25 * p[:-2, 1:-1] + 0.5 * p[1:-1, 1:-1] + 0.25 * p[2:, 1:-1]
        p = np.pad(image, 1, mode="edge")
        image = 0.25 * p[1:-1, :-2] + 0.5 * p[1:-1, 1:-1] + 0.25 * p[1:-1, 2:]
    on_mask = {m.kind: m for m in measure_level(_level(), disc, mask, SPACING)}
    on_image = {m.kind: m for m in measure_level(_level(), disc, mask, SPACING, image)}
    truth = {m.kind: m for m in measure_level(_level(), disc, sac, SPACING)}
    assert on_mask[CANAL_AP_DIAMETER].value_mm - truth[CANAL_AP_DIAMETER].value_mm == pytest.approx(1.0, abs=0.3)
    assert on_image[CANAL_AP_DIAMETER].value_mm == pytest.approx(truth[CANAL_AP_DIAMETER].value_mm, abs=0.25)
    (x0, y0), (x1, y1) = on_image[CANAL_AP_DIAMETER].p0, on_image[CANAL_AP_DIAMETER].p1
    assert np.hypot((x1 - x0) * SPACING[1], (y1 - y0) * SPACING[0]) == pytest.approx(
        on_image[CANAL_AP_DIAMETER].value_mm, abs=1e-6)
    # the near end sits on the sac's front edge (about 2 mm behind the disc), as on the sac's mask
    def depth(p: tuple[float, float]) -> float:
        return (p[0] * SPACING[1] - centre[0]) * np.cos(a) + (p[1] * SPACING[0] - centre[1]) * np.sin(a)

    assert depth(on_image[CANAL_AP_DIAMETER].p0) == pytest.approx(depth(truth[CANAL_AP_DIAMETER].p0), abs=0.25)
    assert on_image[DISC_HEIGHT].value_mm == on_mask[DISC_HEIGHT].value_mm


def test_a_sac_darker_than_its_surroundings_keeps_the_mask_ends() -> None:
    """CT (or T1): the disc and the ligament are brighter than the sac, so there is no bright
    sac edge to find; the mask's ends stay."""
    shape = (200, 200)
    centre = (40.0, 50.0)
    disc = _rotated_rect(shape, centre, 36.0, 9.0, 0.0)
    sac = _rotated_rect(shape, (centre[0] + 18 + 2 + 6, centre[1]), 12.0, 60.0, 0.0)
    mask = _rotated_rect(shape, (centre[0] + 18 + 0.5 + 6.5, centre[1]), 13.0, 60.0, 0.0) & ~disc
    image = np.where(disc, 88.0, np.where(sac, 8.0, 62.0))  # HU: annulus, CSF, ligament
    on_mask = {m.kind: m for m in measure_level(_level(), disc, mask, SPACING)}
    on_image = {m.kind: m for m in measure_level(_level(), disc, mask, SPACING, image)}
    assert on_image[CANAL_AP_DIAMETER] == on_mask[CANAL_AP_DIAMETER]
