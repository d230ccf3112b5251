"""Phantom disc herniation and high-intensity zones: truth, frequencies, drawing, and that
they leave the graded geometry (canal, foramina, recesses) and the existing truth untouched."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from models import rsna
from models.phantom.anatomy import Spine, sample_spine
from models.phantom.config import HerniationFrequencies, PhantomConfig
from models.phantom.generate import generate_dataset
from models.phantom.pathology import StudyTruth, sample_truth
from models.phantom.preview import herniation_tag, render_preview
from models.phantom.render import Tissue, evaluate

LEVELS = rsna.LUMBAR_LEVELS
DISC = (Tissue.ANNULUS, Tissue.NUCLEUS)


def _many() -> PhantomConfig:
    """Every level herniated (half protrusions, half extrusions), HIZ at half the levels."""
    base = HerniationFrequencies.realistic("lumbar")
    return PhantomConfig(herniation=base.with_overrides({
        "types": {lv: [0.0, 0.0, 0.5, 0.5] for lv in LEVELS},
        "positions": [0.4, 0.15, 0.15, 0.15, 0.15],
        "hiz": {lv: 0.5 for lv in LEVELS},
    }))


def _none() -> PhantomConfig:
    return PhantomConfig(herniation=HerniationFrequencies.none("lumbar"))


def _spines(cfg: PhantomConfig, seed: int, idx: int) -> tuple[StudyTruth, Spine]:
    truth = sample_truth(seed, idx, cfg)
    return truth, sample_spine(np.random.default_rng([seed, idx, 2]), truth)


def _profile(sp: Spine, lv: str, h: float, w: float, vs: np.ndarray) -> np.ndarray:
    return evaluate(sp, np.stack([sp.level_point(lv, h, v, w) for v in vs])).tissue


def test_existing_truth_is_unchanged_by_herniation() -> None:
    for idx in range(50):
        a, b = sample_truth(8, idx, _none()), sample_truth(8, idx, _many())
        assert a.narrowing == b.narrowing and a.pfirrmann == b.pfirrmann
        assert all(h.kind == "none" and not h.hiz for h in a.herniation.values())


def test_default_is_no_herniation() -> None:
    """The shipped models were trained on phantoms without herniation: the default keeps it
    off, so default phantoms are what they were."""
    for idx in range(20):
        t = sample_truth(2, idx, PhantomConfig())
        assert all(h.kind == "none" and not h.hiz for h in t.herniation.values())
    assert PhantomConfig.for_region("lumbar").hernias == HerniationFrequencies.none("lumbar")


def test_frequencies_over_2000_studies() -> None:
    cfg = PhantomConfig(herniation=HerniationFrequencies.realistic("lumbar"))
    kinds: Counter[tuple[str, str]] = Counter()
    pos: Counter[str] = Counter()
    hiz: Counter[str] = Counter()
    n = 2000
    for idx in range(n):
        for lv, h in sample_truth(5, idx, cfg).herniation.items():
            kinds[(lv, h.kind)] += 1
            hiz[lv] += h.hiz
            if h.kind in ("protrusion", "extrusion"):
                pos[h.position] += 1
                assert h.position in rsna.HERNIATION_POSITIONS
                assert h.migration == "none" or (h.kind == "extrusion" and h.migration_mm >= 3)
            else:
                assert h.position == "" and h.migration == "none"
    for lv in LEVELS:
        for k, p in zip(rsna.HERNIATION_TYPES, cfg.hernias.types[lv]):
            assert kinds[(lv, k)] / n == pytest.approx(p, abs=0.03), (lv, k)
        assert hiz[lv] / n == pytest.approx(cfg.hernias.hiz[lv], abs=0.025), lv
    assert set(pos) == set(rsna.HERNIATION_POSITIONS)


def test_graded_geometry_is_unchanged_by_herniation() -> None:
    """Canal AP at the midline, foraminal fat and recess depth: the same with and without."""
    positions: Counter[str] = Counter()
    canal_vs = np.arange(0.0, 60.0, 0.05)
    for idx in range(8):
        t_h, sp_h = _spines(_many(), 9, idx)
        _, sp_n = _spines(_none(), 9, idx)
        k = sp_h.pedicle_w / 4.5
        for lv in LEVELS:
            positions[t_h.hernia(lv).position] += 1
            a, b = (np.isin(_profile(sp, lv, 0.0, 0.0, canal_vs), (Tissue.CSF, Tissue.CAUDA,
                                                                  Tissue.CORD)).sum()
                    for sp in (sp_h, sp_n))
            assert abs(int(a) - int(b)) <= 1, (idx, lv, t_h.hernia(lv))
            i = sp_h.segment_index(lv)
            segs = sp_h.segments
            lo = -(0.5 * segs[i].height + 0.08 * segs[i - 1].height)
            hi = 0.5 * segs[i].height + 0.32 * segs[i + 1].height
            v0 = segs[i].half_depth + 5.5 * k
            for sign in (1.0, -1.0):
                w = sign * (sp_h.sac_rw + 2.0 + sp_h.pedicle_w)
                vs = np.arange(v0 - 8.0, v0 + 8.0, 0.02)
                fa, fb = (np.isin(_profile(sp, lv, 0.5 * (lo + hi), w, vs),
                                  (Tissue.FAT, Tissue.ROOT)).sum() for sp in (sp_h, sp_n))
                assert fa == fb, (idx, lv, sign, t_h.hernia(lv))
                vs = np.arange(0.0, 40.0, 0.02)
                ra, rb = (_profile(sp, lv, 0.0, sign * (sp_h.sac_rw - 1.0), vs)
                          for sp in (sp_h, sp_n))
                assert np.array_equal(np.isin(ra, (Tissue.EPIDURAL_FAT, Tissue.ROOT)),
                                      np.isin(rb, (Tissue.EPIDURAL_FAT, Tissue.ROOT))), (idx, lv)
    assert positions["central"] and positions["foraminal_left"] + positions["foraminal_right"]


def test_herniation_and_hiz_are_drawn_where_the_truth_says() -> None:
    seen: Counter[str] = Counter()
    for idx in range(8):
        t_h, sp_h = _spines(_many(), 9, idx)
        _, sp_n = _spines(_none(), 9, idx)
        for lv in LEVELS:
            h = t_h.hernia(lv)
            w0, _, h0, _, depth = sp_h.shapes[lv].blob
            i = sp_h.segment_index(lv)
            hd, hw = sp_h.segments[i + 1].half_depth, sp_h.segments[i + 1].half_width
            outline = hd * max(1.0 - (abs(w0) / hw) ** 2.4, 0.0) ** (1 / 2.4)
            if h.position.startswith("paracentral"):
                p = sp_h.level_point(lv, h0, outline + 0.9 * depth, w0)[None]
                with_h, without = evaluate(sp_h, p).tissue[0], evaluate(sp_n, p).tissue[0]
                assert with_h in DISC and without not in DISC, (idx, lv, h, Tissue(without))
                seen["paracentral"] += 1
            if h.position.startswith("foraminal"):  # only where the narrowing took the fat
                lo = -(0.5 * sp_h.segments[i].height + 0.08 * sp_h.segments[i - 1].height)
                hi = 0.5 * sp_h.segments[i].height + 0.32 * sp_h.segments[i + 1].height
                vs = np.arange(0.0, 40.0, 0.05)
                a, b = (_profile(sp, lv, 0.5 * (lo + hi), w0, vs) for sp in (sp_h, sp_n))
                assert (a == Tissue.NUCLEUS).sum() > 5 and (b == Tissue.NUCLEUS).sum() == 0
                assert np.array_equal(np.isin(a, (Tissue.FAT, Tissue.ROOT)),
                                      np.isin(b, (Tissue.FAT, Tissue.ROOT)))
                other = _profile(sp_h, lv, 0.5 * (lo + hi), -w0, vs)
                assert (other == Tissue.NUCLEUS).sum() == 0
                seen["foraminal"] += 1
            if h.migration != "none":
                _, _, fh, _, fd = sp_h.shapes[lv].fragment
                p = sp_h.level_point(lv, fh, outline + 0.4 * fd, w0)[None]
                assert evaluate(sp_h, p).tissue[0] == Tissue.NUCLEUS, (idx, lv, h)
                seen["migrated"] += 1
            vs = np.arange(0.0, 30.0, 0.05)
            fluid = (_profile(sp_h, lv, 0.0, 0.0, vs) == Tissue.FLUID).sum()
            assert (fluid > 0) == h.hiz, (idx, lv, h)
            assert (_profile(sp_n, lv, 0.0, 0.0, vs) == Tissue.FLUID).sum() == 0
            seen["hiz"] += h.hiz
    assert seen["paracentral"] and seen["foraminal"] and seen["migrated"] and seen["hiz"]


def test_bulge_widens_the_disc() -> None:
    cfg = PhantomConfig(herniation=HerniationFrequencies.realistic("lumbar").with_overrides(
        {"types": {lv: [0.0, 1.0, 0.0, 0.0] for lv in LEVELS}}))
    ws = np.arange(-40.0, 40.0, 0.05)
    for idx in range(3):
        t_b, sp_b = _spines(cfg, 4, idx)
        _, sp_n = _spines(_none(), 4, idx)
        for lv in LEVELS:
            assert t_b.hernia(lv).kind == "bulge"
            widths = []
            for sp in (sp_b, sp_n):
                pts = np.stack([sp.level_point(lv, 0.0, 0.0, w) for w in ws])
                widths.append(np.isin(evaluate(sp, pts).tissue, DISC).sum() * 0.05)
            assert widths[0] > widths[1] + 1.0, (idx, lv, widths)


def test_config_overrides_and_refusals(tmp_path: Path) -> None:
    toml = tmp_path / "h.toml"
    toml.write_text('[herniation.types]\n"L4/L5" = [0.0, 0.0, 0.0, 1.0]\n'
                    '[herniation.hiz]\n"L4/L5" = 1.0\n')
    cfg = PhantomConfig.for_region("lumbar", grade_config=toml, herniation="realistic")
    assert all(sample_truth(1, i, cfg).hernia("L4/L5").kind == "extrusion" for i in range(20))
    assert all(sample_truth(1, i, cfg).hernia("L4/L5").hiz for i in range(20))
    base = HerniationFrequencies.realistic("lumbar")
    with pytest.raises(ValueError):
        HerniationFrequencies.preset("some", "lumbar")
    for bad in ({"types": {"L4/L5": [0.5, 0.5, 0.5, 0.5]}}, {"types": {"L9/L10": [1, 0, 0, 0]}},
                {"hiz": {"L4/L5": 1.5}}, {"positions": [1.0]}, {"sizes": [1]}):
        with pytest.raises(ValueError):
            base.with_overrides(bad)


def test_side_file_and_preview(tmp_path: Path) -> None:
    generate_dataset(tmp_path, 1, PhantomConfig(matrix=64, herniation=_many().herniation),
                     seed=6)
    rows = rsna.read_herniation(tmp_path)
    truth = sample_truth(6, 0, _many())
    assert len(rows) == 5
    for (sid, lv), r in rows.items():
        h = truth.hernia(lv)
        assert (r.herniation, r.position, r.migration, r.hiz) == (h.kind, h.position,
                                                                  h.migration, h.hiz)
        assert herniation_tag(r).startswith((" prot-", " extr-"))
    assert herniation_tag(rsna.HerniationLabel(1, "L4/L5", "extrusion", "paracentral_left",
                                               "cranial", 5.0, True)) == " extr-PL-up HIZ"
    assert herniation_tag(rsna.HerniationLabel(1, "L4/L5", "none", "", "none", 0.0, False)) == ""
    assert rsna.read_dataset(tmp_path).labels  # the RSNA files still read as before
    png = render_preview(tmp_path, tmp_path / "p.png")
    assert png.stat().st_size > 10_000


def test_cli_herniation_preset(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from spinenode_app.cli import app

    toml = tmp_path / "h.toml"
    toml.write_text('[herniation.types]\n"L5/S1" = [0.0, 0.0, 1.0, 0.0]\n')
    res = CliRunner().invoke(app, ["phantom", str(tmp_path / "o"), "-n", "1", "--matrix", "64",
                                   "--no-masks", "--herniation", "realistic", "--grade-config",
                                   str(toml)])
    assert res.exit_code == 0, res.output
    rows = rsna.read_herniation(tmp_path / "o")
    assert next(r for (_, lv), r in rows.items() if lv == "L5/S1").herniation == "protrusion"
    res = CliRunner().invoke(app, ["phantom", str(tmp_path / "x"), "--herniation", "many"])
    assert res.exit_code == 2 and "none or realistic" in res.output


def _all_hiz() -> PhantomConfig:
    base = HerniationFrequencies.realistic("lumbar")
    return PhantomConfig(herniation=base.with_overrides({"hiz": {lv: 1.0 for lv in LEVELS}}))


def test_hiz_is_surrounded_by_annulus() -> None:
    """Aprill and Bogduk's HIZ lies inside the annulus, dark annulus behind it too: on the
    midline at mid-height at least 1.5 mm of disc lies between the spot and the canal (it
    was 0.6 mm, under one pixel, so the spot merged with the CSF)."""
    vs = np.arange(0.0, 35.0, 0.05)
    n = 0
    for idx in range(6):
        t, sp = _spines(_all_hiz(), 11, idx)
        for lv in LEVELS:
            prof = _profile(sp, lv, 0.0, 0.0, vs)
            fluid = np.nonzero(prof == Tissue.FLUID)[0]
            assert fluid.size, (idx, lv)
            behind = prof[fluid[-1] + 1:]
            rim = np.argmax(~np.isin(behind, DISC)) * 0.05  # disc material up to the first non-disc
            assert rim >= 1.5, (idx, lv, rim, t.hernia(lv))
            n += 1
    assert n == 30


def test_every_hiz_reaches_the_sagittal_images() -> None:
    """The sagittal labels are evaluated coarse to fine: a 2 mm HIZ inside a block whose four
    corners were annulus was skipped, so levels whose truth said HIZ showed nothing on the
    slice through it (4 clinical-size studies, seed 1977: 3 of 9 before the fix). Every HIZ
    level has HIZ pixels on the sagittal slice nearest its centre (the generator's own plan)."""
    from models.phantom.generate import _plan, _rng, make_identity, study_id_for
    from models.phantom.imaging import label_stack

    cfg = PhantomConfig(herniation=HerniationFrequencies.realistic("lumbar").with_overrides({
        "types": {lv: [0.25, 0.25, 0.25, 0.25] for lv in LEVELS}, "positions": [0.2] * 5,
        "hiz": {lv: 0.5 for lv in LEVELS}}))
    vs = np.arange(0.0, 35.0, 0.05)
    checked, missing = 0, []
    for idx in range(4):
        truth = sample_truth(1977, idx, cfg)
        sp = sample_spine(_rng(1977, idx, 2), truth)
        rng = _rng(1977, idx, 3)
        make_identity(1977, idx, study_id_for(1977, idx, "lumbar", "MR"), "lumbar", "MR", rng)
        stack = _plan(cfg, sp, rng)[0][1]
        labels = label_stack(sp, stack)
        normal = np.cross(stack.row_dirs[0], stack.col_dirs[0])
        for lv in LEVELS:
            if not truth.hernia(lv).hiz:
                continue
            fluid = vs[_profile(sp, lv, 0.0, 0.0, vs) == Tissue.FLUID]
            centre = sp.level_point(lv, 0.0, float(fluid.mean()), 0.0)
            k = int(np.argmin(np.abs((centre - stack.positions) @ normal)))
            seg = sp.segment_index(lv)
            lab = labels[k]
            checked += 1
            if not ((lab.tissue == Tissue.FLUID) & (lab.segment == seg)).any():
                missing.append((idx, lv))
    assert checked >= 8 and not missing, missing


def test_enriched_training_config_loads() -> None:
    """The training-only frequencies the herniation model 0.2.0 was trained with (model card)."""
    path = Path(__file__).resolve().parents[1] / "models" / "phantom" / "herniation_enriched.toml"
    cfg = PhantomConfig.for_region("lumbar", "MR", herniation="realistic", grade_config=path)
    assert all(cfg.hernias.hiz[lv] == 0.4 for lv in LEVELS)
    assert all(cfg.hernias.types[lv] == (0.25, 0.25, 0.3, 0.2) for lv in LEVELS)


def test_herniated_truth_marks_the_displaced_material_and_nothing_else(tmp_path: Path) -> None:
    """``Labels.herniated`` (the SEG segment's ground truth) is disc tissue, on exactly the
    points the herniation added (where the same spine without herniation has no disc), and
    the side file carries it; a study without herniation has none."""
    for idx in range(3):
        t_h, sp_h = _spines(_many(), 9, idx)
        _, sp_n = _spines(_none(), 9, idx)
        lv = LEVELS[3]
        w0, _, h0, _, depth = sp_h.shapes[lv].blob
        # a sagittal line through the herniation, from the disc centre backwards
        vs = np.arange(0.0, 40.0, 0.1)
        pts = np.stack([sp_h.level_point(lv, h0, v, w0) for v in vs])
        a, b = evaluate(sp_h, pts), evaluate(sp_n, pts)
        assert a.herniated is not None and b.herniated is not None and not b.herniated.any()
        assert a.herniated.any(), (idx, t_h.hernia(lv))
        assert np.isin(a.tissue[a.herniated], DISC + (Tissue.FLUID,)).all()
        # everything the herniation added is marked (a central one makes the existing
        # midline bulge focal: it adds nothing there, and that bulge is the herniation)
        added = np.isin(a.tissue, DISC) & ~np.isin(b.tissue, DISC)
        assert (a.herniated | ~added).all()
        # and nothing inside the vertebral outline but the herniation's 1 mm base
        i = sp_h.segment_index(lv)
        hd, hw = sp_h.segments[i + 1].half_depth, sp_h.segments[i + 1].half_width
        outline = hd * max(1.0 - (abs(w0) / hw) ** 2.4, 0.0) ** (1 / 2.4)
        assert vs[a.herniated].min() >= outline - 1.0 - 0.2, (idx, t_h.hernia(lv))
    generate_dataset(tmp_path / "h", 1, PhantomConfig(matrix=64, herniation=_many().herniation), seed=6)
    generate_dataset(tmp_path / "n", 1, PhantomConfig(matrix=64, herniation=_none().herniation), seed=6)
    for root, expect in ((tmp_path / "h", True), (tmp_path / "n", False)):
        files = sorted((root / "masks").glob("*/*.npz"))
        assert len(files) == 2
        vols = [rsna.read_masks(f) for f in files]
        assert all(v.herniated is not None and v.herniated.shape == v.labels.shape for v in vols)
        assert any(bool(v.herniated.any()) for v in vols) is expect  # type: ignore[union-attr]
