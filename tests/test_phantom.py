"""The phantom generator: DICOM validity, 3D geometry, ground truth, determinism, contrast."""

from __future__ import annotations

import hashlib
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest

from models import rsna
from models.phantom.anatomy import sample_spine
from models.phantom.config import PhantomConfig
from models.phantom.generate import generate_dataset, study_id_for
from models.phantom.imaging import label_stack, plan_axial, plan_sagittal, signal
from models.phantom.pathology import sample_truth
from models.phantom.render import Tissue, evaluate

DCIODVFY = Path("/usr/bin/dciodvfy")
MATRIX = 128


def _config(region: str = "lumbar", modality: str = "MR",
            axial_block_probability: float = 0.25) -> PhantomConfig:
    return PhantomConfig(region=region, modality=modality, matrix=MATRIX,
                         axial_block_probability=axial_block_probability)


@pytest.fixture(scope="module")
def lumbar(tmp_path_factory: pytest.TempPathFactory) -> rsna.RsnaDataset:
    root = tmp_path_factory.mktemp("lumbar")
    generate_dataset(root, 1, _config(axial_block_probability=0.0), seed=11)
    generate_dataset(root / "block", 1, _config(axial_block_probability=1.0), seed=12)
    return rsna.read_dataset(root)


@pytest.fixture(scope="module")
def lumbar_block(lumbar: rsna.RsnaDataset) -> rsna.RsnaDataset:
    return rsna.read_dataset(lumbar.root / "block")


@pytest.fixture(scope="module")
def cervical_ct(tmp_path_factory: pytest.TempPathFactory) -> rsna.RsnaDataset:
    root = tmp_path_factory.mktemp("cct")
    generate_dataset(root, 1, _config("cervical", "CT"), seed=3)
    return rsna.read_dataset(root)


@pytest.fixture(scope="module")
def cervical_mr(tmp_path_factory: pytest.TempPathFactory) -> rsna.RsnaDataset:
    root = tmp_path_factory.mktemp("cmr")
    generate_dataset(root, 1, _config("cervical", "MR"), seed=4)
    return rsna.read_dataset(root)


# ---------------------------------------------------------------- DICOM validity


@pytest.mark.skipif(not DCIODVFY.exists(), reason="dicom3tools not installed")
@pytest.mark.parametrize("which", ["lumbar", "lumbar_block", "cervical_ct", "cervical_mr"])
def test_dciodvfy_no_errors(which: str, request: pytest.FixtureRequest) -> None:
    data: rsna.RsnaDataset = request.getfixturevalue(which)
    checked = 0
    for s in data.series:
        paths = data.instance_paths(s.study_id, s.series_id)
        for path in (paths[0], paths[-1]):
            res = subprocess.run([str(DCIODVFY), str(path)], capture_output=True, text=True,
                                 timeout=60)
            lines = (res.stdout + res.stderr).splitlines()
            errors = [ln for ln in lines if ln.startswith("Error")]
            assert not errors, f"{s.series_description}: {errors}"
            checked += 1
    assert checked >= 4


def test_headers_are_consistent(lumbar: rsna.RsnaDataset) -> None:
    sid = lumbar.study_ids[0]
    study_uids, frames, names = set(), set(), set()
    for s in lumbar.series_of(sid):
        series_uids = set()
        for path in lumbar.instance_paths(sid, s.series_id):
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            study_uids.add(ds.StudyInstanceUID)
            frames.add(ds.FrameOfReferenceUID)
            series_uids.add(ds.SeriesInstanceUID)
            names.add(str(ds.PatientName))
            assert ds.InstanceNumber == int(path.stem)
            assert ds.BodyPartExamined == "LSPINE"
            assert 0.3 < float(ds.PixelSpacing[0]) < 3.0
        assert len(series_uids) == 1
    assert len(study_uids) == len(frames) == len(names) == 1
    assert names.pop().startswith("PHANTOM^")


# ---------------------------------------------------------------- geometry


def _geometry(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, int, int]:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    iop = np.array(ds.ImageOrientationPatient, float)
    return (np.array(ds.ImagePositionPatient, float), iop[:3], iop[3:],
            float(ds.PixelSpacing[0]), int(ds.Rows), int(ds.Columns))


def _to_patient(path: Path, x: float, y: float) -> np.ndarray:
    ipp, row, col, ps, _, _ = _geometry(path)
    return ipp + x * ps * row + y * ps * col


@pytest.mark.parametrize("which", ["lumbar", "lumbar_block"])
def test_sagittal_level_maps_to_axial_slice_of_that_level(
        which: str, request: pytest.FixtureRequest) -> None:
    data: rsna.RsnaDataset = request.getfixturevalue(which)
    sid = data.study_ids[0]
    slice_levels = rsna.read_slice_levels(data.root)
    (ax,) = data.series_of(sid, rsna.AXIAL_T2)
    ax_paths = data.instance_paths(sid, ax.series_id)
    geoms = [_geometry(p) for p in ax_paths]
    coords = data.coordinates_of(sid)
    for lv in rsna.LUMBAR_LEVELS:
        (canal,) = [c for c in coords
                    if c.condition == rsna.SPINAL_CANAL_STENOSIS and c.level == lv]
        p = _to_patient(data.image_path(sid, canal.series_id, canal.instance_number),
                        canal.x, canal.y)
        best, best_d = -1, np.inf
        for i, (ipp, row, col, ps, rows, cols) in enumerate(geoms):
            rel = p - ipp
            u, v = rel @ row / ps, rel @ col / ps
            d = abs(rel @ np.cross(row, col))
            if 0 <= u < cols and 0 <= v < rows and d < best_d:
                best, best_d = i + 1, d
        assert best > 0, lv
        assert slice_levels[(sid, ax.series_id, best)][0] == lv
        sub = [c.instance_number for c in coords
               if c.condition == rsna.LEFT_SUBARTICULAR_STENOSIS and c.level == lv]
        # Angled stacks: within one slice. An unangled block cuts the steep L5/S1 disc
        # obliquely, so its recess and its canal centre may lie two slices apart.
        tolerance = 1 if which == "lumbar" else 2
        assert abs(sub[0] - best) <= tolerance, (lv, sub, best)
        assert best_d < 5.0


def test_label_coordinates_fall_inside_images(lumbar: rsna.RsnaDataset) -> None:
    for c in lumbar.coordinates:
        ds = pydicom.dcmread(lumbar.image_path(c.study_id, c.series_id, c.instance_number),
                             stop_before_pixels=True)
        assert 0 <= c.x < ds.Columns and 0 <= c.y < ds.Rows, c


# ---------------------------------------------------------------- ground truth files


def test_ground_truth_files_parse(lumbar: rsna.RsnaDataset, cervical_ct: rsna.RsnaDataset) -> None:
    sid = lumbar.study_ids[0]
    assert lumbar.region == "lumbar" and lumbar.targets == rsna.LUMBAR_TARGETS
    assert all(g in rsna.SEVERITIES for g in lumbar.labels[sid].grades.values())
    assert len(lumbar.coordinates_of(sid)) == 25
    assert Counter(c.condition for c in lumbar.coordinates_of(sid)) == {
        c: 5 for c in rsna.CONDITIONS}
    for c in lumbar.coordinates_of(sid):
        (series,) = [s for s in lumbar.series if s.series_id == c.series_id]
        assert series.series_description == rsna.CONDITION_SERIES[c.condition]
    assert sorted(s.series_description for s in lumbar.series_of(sid)) == sorted(
        rsna.SERIES_DESCRIPTIONS)
    assert {lv for (s, lv) in lumbar.pfirrmann if s == sid} == set(rsna.LUMBAR_LEVELS)
    assert cervical_ct.region == "cervical" and cervical_ct.targets == rsna.CERVICAL_TARGETS
    assert {s.series_description for s in cervical_ct.series} == {rsna.SAGITTAL_CT, rsna.AXIAL_CT}


def test_masks_hold_every_disc_the_canal_and_bodies(lumbar: rsna.RsnaDataset) -> None:
    sid = lumbar.study_ids[0]
    (sag,) = lumbar.series_of(sid, rsna.SAGITTAL_T2_STIR)
    m = rsna.read_masks(lumbar.masks_path(sid, sag.series_id))
    assert m.labels.shape[0] == len(lumbar.instance_paths(sid, sag.series_id))
    present = set(np.unique(m.labels).tolist())
    assert {rsna.MASK_VERTEBRAL_BODY, rsna.MASK_SPINAL_CANAL} <= present
    assert {rsna.DISC_LABELS[lv] for lv in rsna.LUMBAR_LEVELS} <= present
    # The canal label at the labelled canal point of each level.
    for c in lumbar.coordinates_of(sid):
        if c.condition == rsna.SPINAL_CANAL_STENOSIS and lumbar.labels[sid].grade(
                c.condition, c.level) != rsna.SEVERE:
            sl = m.slice_of(c.instance_number)
            y, x = int(round(c.y)), int(round(c.x))
            assert rsna.MASK_SPINAL_CANAL in sl[y - 2:y + 3, x - 2:x + 3], c.level


# ---------------------------------------------------------------- determinism


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_deterministic_per_seed(tmp_path: Path) -> None:
    cfg = PhantomConfig.for_region("lumbar", "MR", matrix=64)
    generate_dataset(tmp_path / "a", 1, cfg, seed=5, write_masks=False)
    generate_dataset(tmp_path / "b", 1, cfg, seed=5, write_masks=False)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert sample_truth(5, 0, cfg) == sample_truth(5, 0, cfg)
    assert sample_truth(5, 0, cfg) != sample_truth(6, 0, cfg)
    assert study_id_for(5, 0) != study_id_for(6, 0)
    assert study_id_for(5, 0) != study_id_for(5, 0, "cervical", "CT")


# ---------------------------------------------------------------- grade frequencies


def test_grade_frequencies_over_200_studies() -> None:
    cfg = PhantomConfig()
    counts: dict[str, Counter[str]] = {c: Counter() for c in rsna.CONDITIONS}
    pf: Counter[int] = Counter()
    for i in range(200):
        t = sample_truth(1, i, cfg)
        for (cond, lv), _ in t.narrowing.items():
            counts[cond][t.grade(cond, lv)] += 1
        pf.update(t.pfirrmann.values())
    for cond, cnt in counts.items():
        want = np.mean([cfg.grades.severity[cond][lv] for lv in rsna.LUMBAR_LEVELS], axis=0)
        got = np.array([cnt[g] for g in rsna.SEVERITIES]) / sum(cnt.values())
        assert np.all(np.abs(got - want) < 0.05), (cond, got, want)
        assert 0.68 <= got[0] <= 0.90, (cond, got)
    assert set(pf) == {1, 2, 3, 4, 5}


def test_grade_config_overrides(tmp_path: Path) -> None:
    toml = tmp_path / "g.toml"
    toml.write_text('[severity."Spinal Canal Stenosis"]\n"L4/L5" = [0.2, 0.3, 0.5]\n')
    cfg = PhantomConfig.for_region("lumbar", grade_config=toml)
    sev = [sample_truth(2, i, cfg).grade(rsna.SPINAL_CANAL_STENOSIS, "L4/L5") for i in range(300)]
    assert 0.4 < sev.count(rsna.SEVERE) / 300 < 0.6


# ---------------------------------------------------------------- geometric cause


def test_canal_narrowing_is_geometric() -> None:
    """The dural sac's AP diameter at each disc is the normal one times (1 - narrowing)."""
    cfg = PhantomConfig()
    checked = 0
    for idx in range(6):
        truth = sample_truth(9, idx, cfg)
        sp = sample_spine(np.random.default_rng([9, idx, 2]), truth)
        for lv in rsna.LUMBAR_LEVELS:
            vs = np.arange(0.0, 60.0, 0.05)
            pts = np.stack([sp.level_point(lv, 0.0, v, 0.0) for v in vs])
            t = evaluate(sp, pts).tissue
            inside = np.isin(t, (Tissue.CSF, Tissue.CAUDA, Tissue.CORD))
            ap = inside.sum() * 0.05
            f = truth.narrowing[(rsna.SPINAL_CANAL_STENOSIS, lv)]
            assert ap == pytest.approx(2 * sp.sac_ra * (1 - f), abs=0.6), (idx, lv, f)
            checked += 1
    assert checked == 30


def test_level_is_not_encoded_by_marrow_intensity() -> None:
    cfg = PhantomConfig()
    rows = []
    for idx in range(40):
        sp = sample_spine(np.random.default_rng([3, idx, 2]), sample_truth(3, idx, cfg))
        rows.append([sg.marrow for sg in sp.segments if sg.name in ("L1", "L2", "L3", "L4", "L5")])
    means = np.mean(rows, axis=0)
    assert np.ptp(means) < 0.04


# ---------------------------------------------------------------- contrast


def _tissue_medians(kind: str, plane: str = "sagittal") -> dict[Tissue, float]:
    cfg = PhantomConfig()
    truth = sample_truth(21, 0, cfg)
    sp = sample_spine(np.random.default_rng(1), truth)
    rng = np.random.default_rng(2)
    stack = (plan_sagittal(sp, rng, kind, MATRIX, ct=kind == "CT") if plane == "sagittal"
             else plan_axial(sp, rng, kind, MATRIX, block=False))
    labels = label_stack(sp, stack)
    img = signal(sp, stack, labels, rng, noise=1.0)
    tis = np.stack([lab.tissue for lab in labels])
    assert tis.shape == img.shape
    return {t: float(np.median(img[tis == t])) for t in Tissue if (tis == t).sum() > 20}


def test_tissue_contrast_order() -> None:
    # Fat next to the spine (same coil distance as the marrow): subcutaneous fat far
    # from the posterior coil is darker on purpose (bias field).
    t1 = _tissue_medians("T1")
    assert t1[Tissue.FAT] > t1[Tissue.BODY_MARROW] > t1[Tissue.MUSCLE] > t1[Tissue.CSF]
    t2 = _tissue_medians("T2")
    assert t2[Tissue.CSF] > t2[Tissue.FAT] > t2[Tissue.MUSCLE]
    assert t2[Tissue.CSF] > t2[Tissue.BODY_MARROW] > t2[Tissue.ANNULUS]
    stir = _tissue_medians("STIR")
    assert stir[Tissue.CSF] > stir[Tissue.MUSCLE] > stir[Tissue.FAT]
    ct = _tissue_medians("CT")
    assert (ct[Tissue.BODY_CORTEX] > ct[Tissue.BODY_MARROW] > ct[Tissue.ANNULUS]
            > ct[Tissue.MUSCLE] > ct[Tissue.CSF] > ct[Tissue.SUBCUT_FAT] > -500)


def test_degenerated_discs_are_dark_on_t2() -> None:
    from models.phantom.anatomy import PFIRRMANN_NUCLEUS_T2
    from models.phantom.imaging import tissue_lut

    cfg = PhantomConfig()
    for idx in range(30):
        truth = sample_truth(4, idx, cfg)
        if {1, 2} & set(truth.pfirrmann.values()) and {4, 5} & set(truth.pfirrmann.values()):
            break
    sp = sample_spine(np.random.default_rng(0), truth)
    lut = tissue_lut(sp, "T2", np.random.default_rng(0))
    nuc = {sg.name: lut[i, Tissue.NUCLEUS] for i, sg in enumerate(sp.segments)}
    good = [nuc[lv] for lv, g in truth.pfirrmann.items() if g <= 2]
    bad = [nuc[lv] for lv, g in truth.pfirrmann.items() if g >= 4]
    assert min(good) > max(bad)
    assert list(PFIRRMANN_NUCLEUS_T2) == sorted(PFIRRMANN_NUCLEUS_T2, reverse=True)


# ---------------------------------------------------------------- CLI


def test_cli_phantom_with_preview(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from spinenode_app.cli import app

    out, png = tmp_path / "out", tmp_path / "p.png"
    res = CliRunner().invoke(app, ["phantom", str(out), "--studies", "1", "--matrix", "96",
                                   "--seed", "2", "--preview", str(png)])
    assert res.exit_code == 0, res.output
    assert png.exists() and png.stat().st_size > 10_000
    assert len(rsna.read_dataset(out).labels) == 1
    bad = CliRunner().invoke(app, ["phantom", str(out), "--region", "thoracic"])
    assert bad.exit_code == 2


def test_planning_geometry_over_many_studies() -> None:
    """Without rendering: every labelled point lies inside its image, on the slice whose
    plane passes closest, and each level's canal point maps to an axial slice of it."""
    from models.phantom.generate import _canal_point, _coordinates, _plan

    for region in ("lumbar", "cervical"):
        cfg = PhantomConfig.for_region(region)
        for idx in range(25):
            truth = sample_truth(13, idx, cfg)
            sp = sample_spine(np.random.default_rng([13, idx, 2]), truth)
            plan = _plan(cfg, sp, np.random.default_rng([13, idx, 3]))
            series = {key: (k, st) for k, (key, st) in enumerate(plan)}
            coords = _coordinates(sp, 1, region, series)
            assert len(coords) == (25 if region == "lumbar" else 6)
            for c in coords:
                st = plan[c.series_id][1]
                assert 0 <= c.x < st.cols and 0 <= c.y < st.rows, (region, idx, c)
            ax = dict(plan)["ax_T2"]
            for lv in rsna.levels_of(region):
                i, x, y, d = ax.project(_canal_point(sp, lv))
                assert ax.levels[i] == lv, (region, idx, lv)
                assert abs(d) <= ax.gap, (region, idx, lv, d)
                assert 0 <= x < ax.cols and 0 <= y < ax.rows


def test_series_writer_matches_dcmwrite(tmp_path: Path) -> None:
    from models.phantom.dicom import (SeriesWriter, fill_slice, make_identity, series_spec,
                                      series_template, write_dataset)

    cfg = PhantomConfig()
    sp = sample_spine(np.random.default_rng(1), sample_truth(0, 0, cfg))
    rng = np.random.default_rng(2)
    st = plan_axial(sp, rng, "T2", 32, block=False)
    ident = make_identity(0, 0, 123, "lumbar", "MR", rng)
    spec = series_spec("ax_T2", 1234, 4, "lumbar", rng)
    template = series_template(ident, spec, st)
    writer = SeriesWriter(template)
    px = (np.arange(32 * 32).reshape(32, 32) * 3 % 4000).astype(np.uint16)
    for i in (0, len(st) - 1):
        ds = fill_slice(template, ident, spec, st, i, px)
        writer.write(ds, tmp_path / "fast.dcm")
        write_dataset(ds, tmp_path / "ref.dcm")
        assert (tmp_path / "fast.dcm").read_bytes() == (tmp_path / "ref.dcm").read_bytes()
    back = pydicom.dcmread(tmp_path / "fast.dcm")
    assert back.InstanceNumber == len(st)
    assert np.array_equal(back.pixel_array, px)


@pytest.mark.skipif(not DCIODVFY.exists(), reason="dicom3tools not installed")
def test_dciodvfy_stir(tmp_path: Path) -> None:
    """STIR is drawn for 20 % of studies; check its header explicitly."""
    from models.phantom.dicom import build_dataset, make_identity, series_spec, write_dataset

    sp = sample_spine(np.random.default_rng(1), sample_truth(0, 0, PhantomConfig()))
    rng = np.random.default_rng(3)
    st = plan_sagittal(sp, rng, "STIR", 32)
    ident = make_identity(0, 0, 123, "lumbar", "MR", rng)
    spec = series_spec("sag_STIR", 1232, 2, "lumbar", rng)
    assert spec.ti is not None
    write_dataset(build_dataset(ident, spec, st, 0, np.ones((32, 32), np.uint16)),
                  tmp_path / "stir.dcm")
    res = subprocess.run([str(DCIODVFY), str(tmp_path / "stir.dcm")], capture_output=True,
                         text=True, timeout=60)
    assert not [ln for ln in (res.stdout + res.stderr).splitlines() if ln.startswith("Error")]
    ds = pydicom.dcmread(tmp_path / "stir.dcm")
    assert ds.ScanningSequence == ["IR", "SE"] and float(ds.InversionTime) > 100


def test_foramen_and_recess_narrowing_are_geometric() -> None:
    """Foraminal fat AP diameter = normal x (1 - narrowing); lateral recess depth from the
    disc margin to the superior articular process = normal x (1 - narrowing); and the
    labelled points lie on the foraminal fat/root and on the traversing root."""
    from models.phantom.generate import _foramen_point, _recess_point

    cfg = PhantomConfig()
    for idx in range(4):
        truth = sample_truth(9, idx, cfg)
        sp = sample_spine(np.random.default_rng([9, idx, 2]), truth)
        k = sp.pedicle_w / 4.5
        for lv in rsna.LUMBAR_LEVELS:
            i = sp.segment_index(lv)
            segs = sp.segments
            lo = -(0.5 * segs[i].height + 0.08 * segs[i - 1].height)
            hi = 0.5 * segs[i].height + 0.32 * segs[i + 1].height
            v0, rv = segs[i].half_depth + 5.5 * k, 6.0 * k * 0.8
            for side, sign in (("Left", 1.0), ("Right", -1.0)):
                w = sign * (sp.sac_rw + 2.0 + sp.pedicle_w)
                vs = np.arange(v0 - rv, v0 + rv, 0.02)
                t = evaluate(sp, np.stack([sp.level_point(lv, 0.5 * (lo + hi), v, w)
                                           for v in vs])).tissue
                fat = np.isin(t, (Tissue.FAT, Tissue.ROOT)).sum() * 0.02
                f = truth.narrowing[(f"{side} Neural Foraminal Narrowing", lv)]
                assert fat == pytest.approx(2 * rv * (1 - f), abs=0.6), (idx, lv, side)

                vs = np.arange(0.0, 40.0, 0.02)
                t = evaluate(sp, np.stack([sp.level_point(lv, 0.0, v, sign * (sp.sac_rw - 1.0))
                                           for v in vs])).tissue
                end = np.nonzero(np.isin(t, (Tissue.ANNULUS, Tissue.NUCLEUS)))[0].max()
                bone = np.nonzero(np.isin(t[end:], (Tissue.POST_CORTEX, Tissue.POST_MARROW)))[0]
                # recess_depth = normal depth x (1 - narrowing), drawn by anatomy.py
                drawn = sp.shapes[lv].recess_depth[0 if sign > 0 else 1]
                assert bone.min() * 0.02 == pytest.approx(drawn, abs=0.7), (idx, lv, side)

                left = sign > 0
                at_f = evaluate(sp, _foramen_point(sp, lv, left)[None]).tissue[0]
                at_r = evaluate(sp, _recess_point(sp, lv, left)[None]).tissue[0]
                assert at_f in (Tissue.FAT, Tissue.ROOT), (idx, lv, side, Tissue(at_f))
                assert at_r in (Tissue.ROOT, Tissue.EPIDURAL_FAT), (idx, lv, side, Tissue(at_r))


def test_transitional_segments() -> None:
    """--transitional: a sacralised L5 has a rudimentary L5/S1 disc, a lumbarised S1 a
    rudimentary S1/S2 disc below the lumbar ones (an ungraded disc, 'other disc' in the
    masks); the rest of the anatomy and the truth are the plain study's; lumbar only."""
    from dataclasses import replace

    from models.phantom.anatomy import RUDIMENTARY_DISC_MM

    base = PhantomConfig.for_region("lumbar", "MR", matrix=128)
    spines = {}
    for kind in ("none", "sacralised_l5", "lumbarised_s1"):
        truth = sample_truth(3, 0, replace(base, transitional=kind))
        assert truth.transitional == kind
        spines[kind] = (truth, sample_spine(np.random.default_rng([3, 0, 2]), truth))
    plain = spines["none"][1]
    discs = {k: [(s.name, round(s.height, 3)) for s in sp.segments if s.kind == "disc"] for k, (_, sp) in spines.items()}
    sac = spines["sacralised_l5"][1]
    k = sac.segments[sac.segment_index("L5/S1")].height / RUDIMENTARY_DISC_MM  # the body-size factor
    assert 0.84 <= k <= 1.16
    assert discs["sacralised_l5"][1:] == discs["none"][1:] and discs["sacralised_l5"][0][0] == "L5/S1"
    assert plain.segments[plain.segment_index("L5/S1")].height > 2.5 * sac.segments[sac.segment_index("L5/S1")].height
    lum = spines["lumbarised_s1"][1]
    assert [s.name for s in lum.segments[:5]] == ["S3", "S2", "S1/S2", "S1", "L5/S1"]
    assert discs["lumbarised_s1"][1:] == discs["none"]
    assert lum.segments[2].level is None  # not a graded level
    assert spines["lumbarised_s1"][0].narrowing == spines["none"][0].narrowing
    with pytest.raises(ValueError, match="region lumbar"):
        PhantomConfig.for_region("cervical", "MR", transitional="sacralised_l5")
    with pytest.raises(ValueError, match="transitional must be"):
        PhantomConfig.for_region("lumbar", "MR", transitional="l6")


def test_awkward_variants_of_a_stir_study(tmp_path: Path) -> None:
    """with_localizer and with_repeat find the sagittal STIR when a study has no sagittal T2
    (study 12 of seed 4242 has one; spinenode evaluate --variant stopped on such a study)."""
    from models.analyzer import read_study_dir
    from models.phantom.generate import generate_study
    from models.phantom.variants import apply_variant
    from models.series import classify_series, header_from_datasets

    config = PhantomConfig.for_region("lumbar", "MR", matrix=64, thickness_blur=False)
    result = generate_study(tmp_path, 4242, 12, config, write_masks=False)
    series = read_study_dir(tmp_path / "train_images" / str(result.study_id))
    weightings = sorted(str(classify_series(header_from_datasets(d)).weighting) for d in series.values())
    assert weightings == ["STIR", "T1", "T2"]  # STIR sagittal, T1 sagittal, T2 axial
    assert len(apply_variant(series, "with_localizer")) == 4
    repeated = apply_variant(series, "with_repeat")
    assert sorted(str(classify_series(header_from_datasets(d)).weighting) for d in repeated.values()) == [
        "STIR", "STIR", "STIR", "T1", "T2"]
