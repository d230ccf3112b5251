"""Slice planning (where every image lies in patient space) and tissue contrast.

A :class:`SliceStack` is one series' geometry: the top-left pixel centre of each
slice (ImagePositionPatient), the row and column directions (ImageOrientationPatient),
pixel spacing and slice thickness. :func:`render_stack` evaluates the phantom on every
pixel and turns tissue into signal: per-tissue MR intensities (or Hounsfield units),
texture, partial-volume blur, a coil bias field and Rician (MR) or Gaussian (CT) noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models import rsna
from models.phantom.anatomy import PFIRRMANN_NUCLEUS_T2, Spine
from models.phantom.render import N_TISSUES, Labels, Tissue, evaluate

T = Tissue
#: Mean signal per tissue (fractions of full scale for MR, HU for CT).
CONTRAST: dict[str, dict[Tissue, float]] = {
    "T1": {T.AIR: 0.0, T.SUBCUT_FAT: 1.0, T.FAT: 0.93, T.MUSCLE: 0.3, T.VISCERA: 0.4,
           T.BODY_CORTEX: 0.05, T.BODY_MARROW: 0.66, T.POST_CORTEX: 0.07, T.POST_MARROW: 0.6,
           T.ANNULUS: 0.28, T.NUCLEUS: 0.34, T.CSF: 0.12, T.CORD: 0.42, T.ROOT: 0.36,
           T.LIGAMENT: 0.2, T.VESSEL: 0.04, T.FLUID: 0.14, T.EPIDURAL_FAT: 0.9, T.CAUDA: 0.34,
           T.KIDNEY: 0.45},
    "T2": {T.AIR: 0.0, T.SUBCUT_FAT: 0.78, T.FAT: 0.7, T.MUSCLE: 0.18, T.VISCERA: 0.34,
           T.BODY_CORTEX: 0.04, T.BODY_MARROW: 0.44, T.POST_CORTEX: 0.05, T.POST_MARROW: 0.4,
           T.ANNULUS: 0.13, T.NUCLEUS: 0.9, T.CSF: 1.0, T.CORD: 0.38, T.ROOT: 0.28,
           T.LIGAMENT: 0.11, T.VESSEL: 0.04, T.FLUID: 0.85, T.EPIDURAL_FAT: 0.66, T.CAUDA: 0.3,
           T.KIDNEY: 0.55},
    "STIR": {T.AIR: 0.0, T.SUBCUT_FAT: 0.05, T.FAT: 0.06, T.MUSCLE: 0.22, T.VISCERA: 0.38,
             T.BODY_CORTEX: 0.03, T.BODY_MARROW: 0.17, T.POST_CORTEX: 0.04, T.POST_MARROW: 0.16,
             T.ANNULUS: 0.14, T.NUCLEUS: 0.85, T.CSF: 1.0, T.CORD: 0.45, T.ROOT: 0.35,
             T.LIGAMENT: 0.1, T.VESSEL: 0.04, T.FLUID: 0.9, T.EPIDURAL_FAT: 0.07, T.CAUDA: 0.36,
             T.KIDNEY: 0.62},
    "CT": {T.AIR: -1000.0, T.SUBCUT_FAT: -100.0, T.FAT: -90.0, T.MUSCLE: 50.0, T.VISCERA: 38.0,
           T.BODY_CORTEX: 950.0, T.BODY_MARROW: 230.0, T.POST_CORTEX: 850.0,
           T.POST_MARROW: 260.0, T.ANNULUS: 88.0, T.NUCLEUS: 72.0, T.CSF: 8.0, T.CORD: 32.0,
           T.ROOT: 30.0, T.LIGAMENT: 62.0, T.VESSEL: 45.0, T.FLUID: 14.0,
           T.EPIDURAL_FAT: -85.0, T.CAUDA: 28.0, T.KIDNEY: 35.0},
}


@dataclass(frozen=True)
class SliceStack:
    """Geometry of one series.

    ``row_dirs[i]`` is the direction of increasing column index of slice ``i``,
    ``col_dirs[i]`` of increasing row index (ImageOrientationPatient order);
    ``positions[i]`` the centre of its top-left pixel (ImagePositionPatient). Angled
    axial stacks differ in orientation per level. For axial series ``levels[i]`` is the
    nearest graded disc level and ``distances[i]`` the signed distance (mm) of the
    slice centre from that disc's mid-plane; empty for sagittal series.
    """

    kind: str  # "T1", "T2", "STIR", "CT"
    plane: str  # "sagittal" or "axial"
    rows: int
    cols: int
    spacing: float
    row_dirs: np.ndarray
    col_dirs: np.ndarray
    positions: np.ndarray
    thickness: float
    gap: float
    levels: tuple[str, ...] = ()
    distances: tuple[float, ...] = ()

    def __len__(self) -> int:
        return len(self.positions)

    def normal(self, i: int) -> np.ndarray:
        return np.cross(self.row_dirs[i], self.col_dirs[i])

    def centre(self, i: int) -> np.ndarray:
        half = 0.5 * self.spacing
        return (self.positions[i] + (self.cols - 1) * half * self.row_dirs[i]
                + (self.rows - 1) * half * self.col_dirs[i])

    def points(self, i: int, offset: float = 0.0) -> np.ndarray:
        """Patient coordinates (rows*cols, 3) of slice ``i``'s pixel centres."""
        r, c = np.mgrid[0:self.rows, 0:self.cols].astype(np.float32)
        base = self.positions[i] + offset * self.normal(i)
        return (base[None, :] + c.reshape(-1, 1) * self.spacing * self.row_dirs[i][None, :]
                + r.reshape(-1, 1) * self.spacing * self.col_dirs[i][None, :])

    def project(self, p: np.ndarray, candidates: Sequence[int] | None = None
                ) -> tuple[int, float, float, float]:
        """(slice index, column x, row y, signed distance mm) of the slice nearest ``p``."""
        best = (-1, 0.0, 0.0, float("inf"))
        for i in (candidates if candidates is not None else range(len(self))):
            rel = p - self.positions[i]
            d = float(rel @ self.normal(i))
            if abs(d) < abs(best[3]):
                best = (i, float(rel @ self.row_dirs[i] / self.spacing),
                        float(rel @ self.col_dirs[i] / self.spacing), d)
        return best


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _small_rotation(rng: np.random.Generator, deg: float) -> np.ndarray:
    a = np.radians(rng.uniform(-deg, deg, 3))
    cx, sx, cy, sy = np.cos(a[0]), np.sin(a[0]), np.cos(a[1]), np.sin(a[1])
    cz, sz = np.cos(a[2]), np.sin(a[2])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def plan_sagittal(sp: Spine, rng: np.random.Generator, kind: str, matrix: int | None,
                  ct: bool = False) -> SliceStack:
    """A sagittal stack covering both foramina, centred near the middle level.

    Slices run from the patient's right to left (increasing x). The lowest graded disc
    is kept at least 8 mm inside the field of view, so it is sometimes near the edge.
    """
    lumbar = sp.region == "lumbar"
    if ct:
        n, thick, gap = int(rng.choice([21, 25, 29])), 2.0, 2.0
        fov = rng.uniform(260.0, 300.0) if lumbar else rng.uniform(200.0, 240.0)
        mat = matrix or 512
    else:
        n = int(rng.choice([15, 17, 19])) if lumbar else int(rng.choice([13, 15, 17]))
        thick = rng.uniform(3.0, 4.0) if lumbar else rng.uniform(2.5, 3.0)
        gap = thick + (rng.uniform(0.3, 0.6) if lumbar else rng.uniform(0.2, 0.5))
        fov = rng.uniform(270.0, 330.0) if lumbar else rng.uniform(220.0, 260.0)
        mat = matrix or int(rng.choice([320, 384, 448, 512]))
    # The technologist aligns the sagittal block to the spine on the localizer.
    rot = sp.rotation @ _small_rotation(rng, 1.5)
    normal = _unit(rot @ np.array([1.0, 0.0, 0.0]))
    row_dir = _unit(rot @ np.array([0.0, 1.0, 0.0]))
    col_dir = _unit(np.cross(normal, row_dir))
    if col_dir[2] > 0:
        col_dir = -col_dir
    ref = sp.to_patient(np.zeros(3))
    centre = ref + np.array([0.0, rng.normal(25.0 if lumbar else 15.0, 8.0),
                             rng.normal(0.0, 18.0 if lumbar else 10.0)])
    centre = centre + normal * rng.normal(0.0, 1.2)
    low = sp.level_frame("L5/S1" if lumbar else "C7/T1")[0]
    margin = fov / 2.0 - 8.0
    if low[2] < centre[2] - margin:
        centre[2] = low[2] + margin
    spacing = fov / mat
    xs = (np.arange(n) - (n - 1) / 2.0) * gap * np.sign(normal[0])
    slice_c = centre[None, :] + xs[:, None] * normal[None, :]
    positions = slice_c - 0.5 * (mat - 1) * spacing * (row_dir + col_dir)[None, :]
    return SliceStack(kind, "sagittal", mat, mat, spacing, np.repeat(row_dir[None], n, 0),
                      np.repeat(col_dir[None], n, 0), positions, float(thick), float(gap))


def plan_axial(sp: Spine, rng: np.random.Generator, kind: str, matrix: int | None,
               block: bool, ct: bool = False) -> SliceStack:
    """Axial images: stacks angled along each graded disc, or one unangled block."""
    lumbar = sp.region == "lumbar"
    levels = rsna.levels_of(sp.region)
    fov = rng.uniform(180.0, 220.0) if lumbar else rng.uniform(140.0, 180.0)
    mat = matrix or (512 if ct else int(rng.choice([256, 320, 384, 448])))
    spacing = fov / mat
    if ct:
        thick, gap = 3.0, 3.0
    else:
        thick = rng.uniform(3.5, 4.5) if lumbar else rng.uniform(2.5, 3.5)
        gap = thick + rng.uniform(0.0, 0.5)
    shift = (rng.normal(0.0, 4.0), rng.normal(18.0 if lumbar else 12.0, 4.0))
    centres: list[np.ndarray] = []
    rows_d: list[np.ndarray] = []
    cols_d: list[np.ndarray] = []
    if block:
        rot = _small_rotation(rng, 2.0)
        normal = _unit(rot @ np.array([0.0, 0.0, 1.0]))
        row_dir = _unit(rot @ np.array([1.0, 0.0, 0.0]) - normal * (rot[0, 2]))
        col_dir = _unit(np.cross(normal, row_dir))
        lo, hi = sp.level_frame(levels[-1])[0], sp.level_frame(levels[0])[0]
        for zz in np.arange(lo[2] - 8.0, hi[2] + 8.0 + 1e-6, gap):
            c = lo + (zz - lo[2]) / max(hi[2] - lo[2], 1e-3) * (hi - lo)
            centres.append(c + shift[0] * row_dir + shift[1] * col_dir)
            rows_d.append(row_dir)
            cols_d.append(col_dir)
    else:
        per = 5 if ct else int(rng.choice([3, 4, 5]))
        for lv in levels:
            c, n, _ = sp.level_frame(lv)
            n = _unit(_small_rotation(rng, 2.5) @ n)
            row_dir = _unit(np.array([1.0, 0.0, 0.0]) - n * n[0])
            col_dir = _unit(np.cross(n, row_dir))
            for j in range(per):
                off = (j - (per - 1) / 2.0) * gap
                centres.append(c + off * n + shift[0] * row_dir + shift[1] * col_dir)
                rows_d.append(row_dir)
                cols_d.append(col_dir)
    rd, cd = np.array(rows_d), np.array(cols_d)
    tl = np.array(centres) - 0.5 * (mat - 1) * spacing * (rd + cd)
    names, dists = [], []
    frames = [sp.level_frame(lv) for lv in levels]
    for cen in centres:
        d = [float((cen - c) @ n) for c, n, _ in frames]
        j = int(np.argmin(np.abs(d)))
        names.append(levels[j])
        dists.append(round(d[j], 2))
    return SliceStack(kind, "axial", mat, mat, spacing, rd, cd, tl, float(thick), float(gap),
                      tuple(names), tuple(dists))


#: Tissues thinner than a coarse block: blocks touching them are always refined.
_THIN = np.zeros(N_TISSUES, dtype=bool)
_THIN[[Tissue.CSF, Tissue.CAUDA, Tissue.NUCLEUS, Tissue.FLUID, Tissue.ROOT]] = True


#: Tissues whose signal or mask label depends on the segment (level) they belong to.
_PER_SEGMENT = np.zeros(N_TISSUES, dtype=bool)
_PER_SEGMENT[[Tissue.BODY_MARROW, Tissue.BODY_CORTEX, Tissue.ANNULUS, Tissue.NUCLEUS]] = True


def acquisition_size(stack: SliceStack) -> int:
    """Acquired matrix (labels are evaluated there, images interpolated to display size
    as scanners do): about 1.15 mm sagittal, 0.85 mm axial, never above the display matrix."""
    fov = stack.spacing * stack.cols
    target = 1.15 if stack.plane == "sagittal" else 0.85
    if stack.kind == "CT":
        target = 0.6
    return int(min(stack.cols, max(64, round(fov / target))))


def _plane_points(stack: SliceStack, i: int, n: int, rr: np.ndarray, cc: np.ndarray,
                  offset: float = 0.0) -> np.ndarray:
    """Points of acquisition-grid pixels (rr, cc) of slice i (grid of n x n over the FOV),
    ``offset`` mm along the slice normal."""
    sp_acq = stack.spacing * stack.cols / n
    edge = stack.positions[i] - 0.5 * stack.spacing * (stack.row_dirs[i] + stack.col_dirs[i])
    edge = edge + offset * stack.normal(i)
    u = (cc.astype(np.float32) + 0.5) * sp_acq
    v = (rr.astype(np.float32) + 0.5) * sp_acq
    return (edge[None, :] + u[:, None] * stack.row_dirs[i][None, :]
            + v[:, None] * stack.col_dirs[i][None, :])


def evaluate_slice(sp: Spine, stack: SliceStack, i: int, n: int, stride: int = 3,
                   dilate: bool = False) -> Labels:
    """Labels of slice ``i`` on an n x n grid, coarse to fine.

    Nodes every ``stride`` pixels are evaluated first; a block whose four corners agree
    (same tissue, same segment where that matters, none of them a thin tissue) is
    filled, the others (and with ``dilate`` their neighbours) are evaluated pixel by
    pixel. With the defaults about 0.05-0.1 % of pixels differ from a full evaluation
    (edges of structures thinner than a block), at 3-5 times the speed.
    """
    nodes = np.arange(0, n + stride - 1, stride)
    nodes[-1] = min(nodes[-1], n - 1)
    nodes = np.unique(np.minimum(nodes, n - 1))
    rr, cc = np.meshgrid(nodes, nodes, indexing="ij")
    coarse = evaluate(sp, _plane_points(stack, i, n, rr.ravel(), cc.ravel()))
    ct = coarse.tissue.reshape(rr.shape)
    cs = coarse.segment.reshape(rr.shape)
    assert coarse.herniated is not None
    ch = coarse.herniated.reshape(rr.shape)
    # herniated material is a key of its own: a block it crosses is refined (its truth mask)
    key = ct.astype(np.int32) * 1000 + np.where(_PER_SEGMENT[ct], cs, 0) + ch * 100_000
    same = ((key[:-1, :-1] == key[1:, :-1]) & (key[:-1, :-1] == key[:-1, 1:])
            & (key[:-1, :-1] == key[1:, 1:]))
    thin = _THIN[ct]
    # A high-intensity zone (2 mm deep) can lie wholly inside a block whose corners are all
    # annulus: every block touching the disc of a level with a HIZ is evaluated pixel by pixel.
    hiz_seg = np.array([s.kind == "disc" and s.name in sp.shapes and bool(sp.shapes[s.name].hiz)
                        for s in sp.segments] + [False])
    thin |= np.isin(ct, (Tissue.ANNULUS, Tissue.NUCLEUS)) & hiz_seg[np.clip(cs, -1, len(sp.segments) - 1)]
    thin_b = thin[:-1, :-1] | thin[1:, :-1] | thin[:-1, 1:] | thin[1:, 1:]
    refine = ~same | thin_b
    grow = refine.copy()
    if dilate:
        grow[1:] |= refine[:-1]
        grow[:-1] |= refine[1:]
        grow[:, 1:] |= refine[:, :-1]
        grow[:, :-1] |= refine[:, 1:]
    # Block index of every pixel.
    bi = np.minimum(np.searchsorted(nodes, np.arange(n), side="right") - 1, len(nodes) - 2)
    tissue = ct[:-1, :-1][bi[:, None], bi[None, :]].copy()
    segment = cs[:-1, :-1][bi[:, None], bi[None, :]].copy()
    herniated = ch[:-1, :-1][bi[:, None], bi[None, :]].copy()
    todo = grow[bi[:, None], bi[None, :]]
    pr, pc = np.nonzero(todo)
    if pr.size:
        fine = evaluate(sp, _plane_points(stack, i, n, pr, pc))
        tissue[pr, pc] = fine.tissue
        segment[pr, pc] = fine.segment
        herniated[pr, pc] = fine.herniated
    return Labels(tissue, segment, herniated)


def label_stack(sp: Spine, stack: SliceStack) -> list[Labels]:
    """Tissue labels of every slice on its acquisition grid."""
    n = acquisition_size(stack)
    return [evaluate_slice(sp, stack, i, n) for i in range(len(stack))]


#: Coarse grid step (acquisition pixels) of the off-centre samples for slice thickness.
_THICK_STEP = 4


def thickness_labels(sp: Spine, stack: SliceStack) -> list[tuple[Labels, Labels]]:
    """Labels a third of the slice thickness either side of every slice's centre plane, on
    a grid 3x coarser than the acquisition grid: :func:`signal` blends them in as the
    partial-volume (slice-thickness) blur of a thick slice."""
    n = acquisition_size(stack)
    m = -(-n // _THICK_STEP)
    idx = np.minimum(np.arange(m) * _THICK_STEP + _THICK_STEP // 2, n - 1)
    rr, cc = np.meshgrid(idx, idx, indexing="ij")
    out = []
    for i in range(len(stack)):
        pair = []
        for off in (-stack.thickness / 3.0, stack.thickness / 3.0):
            lab = evaluate(sp, _plane_points(stack, i, n, rr.ravel(), cc.ravel(), off))
            pair.append(Labels(lab.tissue.reshape(m, m), lab.segment.reshape(m, m)))
        out.append((pair[0], pair[1]))
    return out


def _interp_index(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    u = (np.arange(n_out, dtype=np.float32) + 0.5) * (n_in / n_out) - 0.5
    u = np.clip(u, 0, n_in - 1)
    i0 = np.floor(u).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (u - i0).astype(np.float32)


def upsample(img: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Bilinear interpolation to the display matrix."""
    if img.shape == (rows, cols):
        return img
    r0, r1, fr = _interp_index(rows, img.shape[0])
    c0, c1, fc = _interp_index(cols, img.shape[1])
    a = img[r0] * (1 - fr[:, None]) + img[r1] * fr[:, None]
    return a[:, c0] * (1 - fc[None, :]) + a[:, c1] * fc[None, :]


def upsample_labels(lab: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Nearest-neighbour interpolation of a label image to the display matrix."""
    if lab.shape == (rows, cols):
        return lab
    ri = np.minimum(((np.arange(rows) + 0.5) * lab.shape[0] / rows).astype(int), lab.shape[0] - 1)
    ci = np.minimum(((np.arange(cols) + 0.5) * lab.shape[1] / cols).astype(int), lab.shape[1] - 1)
    return lab[ri[:, None], ci[None, :]]


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Unit-variance random field, smooth on the scale of shape / cells (bilinear)."""
    g = rng.standard_normal((cells + 1, cells + 1), dtype=np.float32)
    return upsample(g, shape[0], shape[1])


def _blur(img: np.ndarray, passes: int) -> np.ndarray:
    for _ in range(passes):
        p = np.pad(img, 1, mode="edge")
        img = 0.25 * p[:-2, 1:-1] + 0.5 * p[1:-1, 1:-1] + 0.25 * p[2:, 1:-1]
        p = np.pad(img, 1, mode="edge")
        img = 0.25 * p[1:-1, :-2] + 0.5 * p[1:-1, 1:-1] + 0.25 * p[1:-1, 2:]
    return img


def tissue_lut(sp: Spine, kind: str, rng: np.random.Generator) -> np.ndarray:
    """(n_segments + 1, n_tissues) signal table; the last row is for points off the spine."""
    base = np.array([CONTRAST[kind][Tissue(i)] for i in range(N_TISSUES)], np.float32)
    if kind != "CT":
        base = base * rng.normal(1.0, 0.04, N_TISSUES).astype(np.float32)
    n = len(sp.segments)
    lut = np.repeat(base[None, :], n + 1, axis=0)
    for i, sg in enumerate(sp.segments):
        if kind == "CT":
            lut[i, Tissue.BODY_MARROW] += (sg.marrow - 1.0) * 300.0
            continue
        lut[i, Tissue.BODY_MARROW] *= sg.marrow
        if sg.kind == "disc":
            pf = sp.shapes[sg.name].pfirrmann
            if kind in ("T2", "STIR"):
                scale = 0.95 if kind == "STIR" else 1.0
                lut[i, Tissue.NUCLEUS] = PFIRRMANN_NUCLEUS_T2[pf - 1] * scale
                lut[i, Tissue.ANNULUS] *= 1.0 - 0.1 * (pf - 1) / 4
            else:
                lut[i, Tissue.NUCLEUS] = base[Tissue.NUCLEUS] * (1.0 - 0.12 * (pf - 1) / 4)
    return lut


def signal(sp: Spine, stack: SliceStack, labels: list[Labels], rng: np.random.Generator,
           noise: float, thick: list[tuple[Labels, Labels]] | None = None) -> np.ndarray:
    """Pixel values (n_slices, rows, cols) float32: MR in 0..~1, CT in HU.

    With ``thick`` (:func:`thickness_labels`) each slice is 60 % its centre plane and
    20 % each of the planes a third of the thickness away (slice-thickness blur).
    """
    lut = tissue_lut(sp, stack.kind, rng)
    flat = lut.ravel()
    marrow_t = np.zeros(N_TISSUES, np.float32)
    marrow_t[[Tissue.BODY_MARROW, Tissue.POST_MARROW]] = 1.0
    ct = stack.kind == "CT"
    n = len(stack)
    out = np.empty((n, stack.rows, stack.cols), np.float32)
    coil_y = sp.to_patient(np.array([0.0, sp.skin_post, 0.0]))[1]
    n_acq = labels[0].tissue.shape[0]
    step = stack.spacing * stack.cols / n_acq
    rows_a = (np.arange(n_acq, dtype=np.float32)[:, None] + 0.5) * step - 0.5 * stack.spacing
    cols_a = (np.arange(n_acq, dtype=np.float32)[None, :] + 0.5) * step - 0.5 * stack.spacing
    for i in range(n):
        lab = labels[i]
        seg = np.where(lab.segment < 0, len(sp.segments), lab.segment).astype(np.intp)
        img = flat[seg * N_TISSUES + lab.tissue]
        if thick is not None:
            off = []
            for side in thick[i]:
                sseg = np.where(side.segment < 0, len(sp.segments), side.segment).astype(np.intp)
                off.append(upsample(flat[sseg * N_TISSUES + side.tissue], n_acq, n_acq))
            img = (0.6 * img + 0.2 * (off[0] + off[1])).astype(np.float32)
        tex = _smooth_field(rng, img.shape, 12)
        fine = _smooth_field(rng, img.shape, 40)
        bowel = ((tex + fine) * 0.7 * (lab.tissue == Tissue.VISCERA)
                 + 0.5 * fine * marrow_t[lab.tissue])
        if ct:
            img = img + 6.0 * tex + 15.0 * bowel
        else:
            img = img * (1.0 + 0.05 * tex + 0.15 * bowel)
            pts_y = (np.float32(stack.positions[i][1] - coil_y)
                     + cols_a * np.float32(stack.row_dirs[i][1])
                     + rows_a * np.float32(stack.col_dirs[i][1]))
            coil = 0.55 + 0.45 * np.exp(np.minimum(pts_y, 0) / np.float32(140.0))
            img = img * coil * (1.0 + 0.08 * _smooth_field(rng, img.shape, 2))
        img = _blur(img, 1)
        # Noise lives on the acquisition grid; interpolation to the display matrix
        # correlates it, as on real scanners.
        if ct:
            img = img + np.float32(14.0 * noise) * rng.standard_normal(img.shape, dtype=np.float32)
        elif noise > 0:
            sigma = np.float32(0.02 * noise)
            re = img + sigma * rng.standard_normal(img.shape, dtype=np.float32)
            im = sigma * rng.standard_normal(img.shape, dtype=np.float32)
            img = np.sqrt(re * re + im * im)
        out[i] = upsample(img, stack.rows, stack.cols)
    return out
