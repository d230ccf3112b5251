"""Sampled 3D anatomy of one phantom spine.

The spine is built in a *canonical* frame (x to the patient's left, y posterior,
z superior, millimetres, as DICOM LPS) along a curved centre line in the y-z plane
(lordosis, sacral kyphosis), then placed in patient space by a small rotation and a
translation (``patient = origin + rotation @ canonical``).

Segments (vertebral bodies, discs, the sacrum) are stacked along the centre line
between *boundary planes* perpendicular to it, so discs are wedge-shaped where the
spine curves. Each segment has a mid frame (centre ``C``, superior tangent ``T``,
posterior direction ``M``) in which its cross-section is evaluated; level-related
structures (canal, ligamentum flavum, lateral recesses, foramina, facets) use the
frame of the nearest disc. :mod:`models.phantom.render` evaluates all of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from models import rsna
from models.phantom.pathology import HerniationTruth, StudyTruth

#: Disc height factor and nucleus T2 brightness (relative to CSF) per Pfirrmann grade.
PFIRRMANN_HEIGHT = (1.0, 1.0, 0.9, 0.72, 0.45)
PFIRRMANN_NUCLEUS_T2 = (0.92, 0.78, 0.5, 0.28, 0.14)
#: Height of a rudimentary disc at a transitional lumbosacral segment (mm, before body size).
RUDIMENTARY_DISC_MM = 3.0


@dataclass(frozen=True)
class LevelShape:
    """Geometric causes at one disc (all mm unless said; sides are (left, right)).

    ``bulge_central`` is the posterior displacement of the disc margin in the midline
    beyond the vertebral body; ``lf_thickening`` how far the ligamentum flavum's inner
    surface moves into the canal; ``recess_depth`` the remaining lateral-recess depth
    and ``recess_bulge`` the posterolateral disc bulge there; ``foramen_narrowing`` the
    fraction of the foraminal fat diameter lost.

    Herniation (:func:`herniation_shape`, no effect on the graded geometry above):
    ``bulge_width`` the width of the central bulge's profile (fraction of the sac half
    width; 0.6 diffuse, narrower for a central herniation); ``bulge_extra`` a circumferential
    bulge beyond the vertebral outline (mm); ``blob`` and ``fragment`` two half-ellipsoids of
    herniated disc material behind the vertebral outline, each ``(w, sigma_w, h, sigma_h,
    depth)`` in the disc frame (w to the left, h superior; depth 0: none);
    ``blob_foraminal`` whether the blob lies in a foramen; ``herniation`` 0 none, 1 bulge,
    2 protrusion, 3 extrusion; ``hiz`` a high-intensity zone in the posterior annulus.
    """

    bulge_central: float
    lf_thickening: float
    recess_depth: tuple[float, float]
    recess_bulge: tuple[float, float]
    foramen_narrowing: tuple[float, float]
    pfirrmann: int
    cleft: bool
    bulge_width: float = 0.6
    bulge_extra: float = 0.0
    blob: tuple[float, float, float, float, float] = (0.0, 1.0, 0.0, 1.0, 0.0)
    fragment: tuple[float, float, float, float, float] = (0.0, 1.0, 0.0, 1.0, 0.0)
    blob_foraminal: bool = False
    herniation: int = 0
    hiz: bool = False


@dataclass(frozen=True)
class Segment:
    """One stacked segment: ``kind`` is ``vertebra``, ``disc`` or ``sacrum``."""

    kind: str
    name: str
    s0: float
    s1: float
    half_width: float
    half_depth: float
    marrow: float
    level: str | None  # graded level name for discs, else None

    @property
    def height(self) -> float:
        return self.s1 - self.s0


@dataclass(frozen=True)
class Spine:
    """Everything the renderer needs about one sampled spine.

    Arrays: ``boundary_p``/``boundary_t`` (n_seg-1, 3) canonical boundary points and
    superior tangents; ``mid_c``/``mid_t``/``mid_m`` (n_seg, 3) segment mid frames;
    ``curve`` (n, 3) the centre line (s, y, z) sampled every 0.5 mm.
    """

    region: str
    origin: np.ndarray
    rotation: np.ndarray
    curve: np.ndarray
    segments: tuple[Segment, ...]
    boundary_p: np.ndarray
    boundary_t: np.ndarray
    mid_c: np.ndarray
    mid_t: np.ndarray
    mid_m: np.ndarray
    shapes: dict[str, LevelShape]
    sac_ra: float  # dural sac half AP diameter
    sac_rw: float  # dural sac half width
    epidural: float  # anterior epidural gap
    pedicle_w: float
    spinous_len: float
    transverse_len: float
    cord_ra: float
    cord_rw: float
    conus_s: float  # cord ends here (lumbar); -inf for cervical
    skin_post: float
    skin_ant: float
    torso_hw: float
    fat_thickness: float
    root_offsets: np.ndarray  # (n, 2) cauda equina roots, fractions of (width, AP)

    def to_patient(self, canonical: np.ndarray) -> np.ndarray:
        return self.origin + canonical @ self.rotation.T

    def to_canonical(self, patient: np.ndarray) -> np.ndarray:
        r = self.rotation.astype(np.float32)
        return (patient.astype(np.float32) - self.origin.astype(np.float32)) @ r

    def segment_index(self, name: str) -> int:
        for i, s in enumerate(self.segments):
            if s.name == name:
                return i
        raise KeyError(name)

    def canal_center_v(self, seg: int) -> float:
        return self.segments[seg].half_depth + self.epidural + self.sac_ra

    def level_point(self, level: str, h: float, v: float, w: float) -> np.ndarray:
        """Patient coordinates of (height, posterior, left) mm in a disc's mid frame."""
        i = self.segment_index(level)
        p = self.mid_c[i] + h * self.mid_t[i] + v * self.mid_m[i] + np.array([w, 0.0, 0.0])
        return self.to_patient(p)

    def level_frame(self, level: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(centre, superior normal, posterior direction) of a disc in patient space."""
        i = self.segment_index(level)
        r = self.rotation
        return self.to_patient(self.mid_c[i]), r @ self.mid_t[i], r @ self.mid_m[i]


def _rotation(rng: np.random.Generator, max_deg: tuple[float, float, float]) -> np.ndarray:
    ax, ay, az = (math.radians(rng.uniform(-m, m)) for m in max_deg)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _segment_plan(region: str, rng: np.random.Generator, k: float,
                  truth: StudyTruth) -> list[tuple[str, str, float, float, float]]:
    """(kind, name, height, half_width, half_depth) from the bottom up."""
    def jit(x: float, sd: float = 0.06) -> float:
        return x * float(np.clip(rng.normal(1.0, sd), 1 - 2.5 * sd, 1 + 2.5 * sd))

    plan: list[tuple[str, str, float, float, float]] = []
    if region == "lumbar":
        plan.append(("sacrum", "S3", jit(20.0) * k, 13.0 * k, 8.5 * k))
        plan.append(("sacrum", "S2", jit(20.0) * k, 18.0 * k, 11.5 * k))
        if truth.transitional == "lumbarised_s1":  # a rudimentary disc frees S1 from the sacrum
            plan.append(("disc", "S1/S2", RUDIMENTARY_DISC_MM * k, 0.0, 0.0))
        plan.append(("sacrum", "S1", jit(26.0) * k, 24.0 * k, 16.0 * k))
        verts = ["L5", "L4", "L3", "L2", "L1", "T12", "T11", "T10"]
        vh = [27.0, 27.0, 27.0, 26.0, 25.0, 23.0, 22.0, 21.0]
        vw = [25.0, 24.0, 23.0, 22.0, 21.0, 19.5, 18.5, 18.0]
        vd = [17.5, 17.5, 17.0, 16.5, 16.0, 15.0, 14.5, 14.0]
        discs = ["L5/S1", "L4/L5", "L3/L4", "L2/L3", "L1/L2", "T12/L1", "T11/T12", "T10/T11"]
        dh = [10.5, 11.0, 10.0, 9.0, 8.0, 7.0, 6.0, 5.5]
    else:
        verts = ["T2", "T1", "C7", "C6", "C5", "C4", "C3", "C2"]
        vh = [18.0, 16.0, 14.0, 13.5, 13.5, 13.5, 13.5, 32.0]
        vw = [13.0, 12.5, 10.5, 9.5, 9.0, 8.5, 8.5, 8.5]
        vd = [9.5, 9.0, 8.5, 8.0, 8.0, 8.0, 8.0, 8.0]
        discs = ["T1/T2", "C7/T1", "C6/C7", "C5/C6", "C4/C5", "C3/C4", "C2/C3"]
        dh = [4.5, 5.0, 5.5, 5.5, 5.5, 5.0, 4.5]
        plan.append(("vertebra", verts[0], jit(vh[0]) * k, vw[0] * k, vd[0] * k))
        verts, vh, vw, vd = verts[1:], vh[1:], vw[1:], vd[1:]
    for name_d, hd, name_v, hv, w, d in zip(discs, dh, verts, vh, vw, vd):
        pf = truth.pfirrmann.get(name_d, 2)
        height = jit(hd, 0.1) * k * PFIRRMANN_HEIGHT[pf - 1]
        if name_d == "L5/S1" and truth.transitional == "sacralised_l5":
            height = RUDIMENTARY_DISC_MM * k
        plan.append(("disc", name_d, height, 0.0, 0.0))
        plan.append(("vertebra", name_v, jit(hv, 0.04) * k, w * k, d * k))
    return plan


def _level_shape(rng: np.random.Generator, truth: StudyTruth, level: str,
                 sac_ra: float, recess_depth: float) -> LevelShape:
    """Turn the truth's narrowings at a level into geometric causes."""
    n = truth.narrowing
    sides = ("Left", "Right")
    pf = truth.pfirrmann.get(level, 2)
    if (rsna.SPINAL_CANAL_STENOSIS, level) not in n:
        return LevelShape(rng.uniform(0.0, 1.0), 0.0, (recess_depth, recess_depth),
                          (0.0, 0.0), (0.0, 0.0), pf, bool(rng.random() < 0.3))
    f_c = n[(rsna.SPINAL_CANAL_STENOSIS, level)]
    loss = f_c * 2.0 * sac_ra
    alpha = rng.uniform(0.35, 0.7)
    depth, rb, fn = [], [], []
    for side in sides:
        f_s = n.get((f"{side} Subarticular Stenosis", level), 0.0)
        beta = rng.uniform(0.2, 0.5)
        depth.append(recess_depth * (1.0 - f_s))
        rb.append(beta * f_s * recess_depth)
        fn.append(n.get((f"{side} Neural Foraminal Narrowing", level), 0.0))
    return LevelShape(
        bulge_central=alpha * loss, lf_thickening=(1.0 - alpha) * loss,
        recess_depth=(depth[0], depth[1]), recess_bulge=(rb[0], rb[1]),
        foramen_narrowing=(fn[0], fn[1]), pfirrmann=pf, cleft=bool(pf == 2 or rng.random() < 0.2),
    )


HERNIATION_CODE = {"none": 0, "bulge": 1, "protrusion": 2, "extrusion": 3}


def herniation_shape(sh: LevelShape, h: HerniationTruth, disc_h: float, k: float,
                     sac_rw: float, epidural: float, pedicle_w: float, lumbar: bool) -> LevelShape:
    """Add a level's herniation and HIZ to its shape, deterministically (no random draws).

    The graded geometry is kept: a central herniation is the existing midline disc
    indentation made focal (its depth at the midline unchanged); a paracentral one stays
    between the midline and the lateral recess; a foraminal one is painted only where the
    foraminal narrowing already removed the fat (see :mod:`models.phantom.render`).
    """
    code = HERNIATION_CODE[h.kind]
    scale = k * (1.0 if lumbar else 0.6)
    out = replace(sh, herniation=code, hiz=h.hiz)
    if code == 1:
        return replace(out, bulge_extra=(2.2 + 1.0 * h.size) * scale)
    if code < 2:
        return out
    depth = ((2.5 + 2.0 * h.size) if code == 2 else (4.0 + 2.5 * h.size)) * scale
    side = 1.0 if h.position.endswith("left") else -1.0
    if h.position == "central":
        width = 0.3 if code == 2 else 0.22
        mid = epidural + sh.bulge_central  # the midline depth stays what it was
        out = replace(out, bulge_width=width,
                      blob=(0.0, width * sac_rw, 0.0, 0.45 * disc_h, mid))
        w0, sw = 0.0, width * sac_rw
        cap = mid
    elif h.position.startswith("paracentral"):
        w0, sw = side * 0.45 * sac_rw, 0.22 * sac_rw
        # rise ``depth`` beyond the disc margin drawn there (central bulge + recess bulge)
        rb = sh.recess_bulge[0 if side > 0 else 1]
        margin = ((epidural + sh.bulge_central) * math.exp(-(0.45 / 0.6) ** 2)
                  + rb * math.exp(-(((0.45 * sac_rw) - (sac_rw - 1.0)) / 4.0) ** 2))
        depth += margin
        out = replace(out, blob=(w0, sw, 0.0, 0.45 * disc_h, depth))
        cap = depth
    else:
        w0 = side * (sac_rw + 2.0 + pedicle_w)
        return replace(out, blob=(w0, 2.5 * k, 0.0, 0.5 * disc_h, depth), blob_foraminal=True)
    if code == 3:
        if h.migration == "none":  # mushroom above and below the disc, capped at the midline
            frag = (w0, sw, 0.0, 0.9 * disc_h, min(depth, cap) if w0 == 0.0 else depth)
        else:
            sign = 1.0 if h.migration == "cranial" else -1.0
            hc = sign * (0.5 * disc_h + 0.5 * h.migration_mm * k)
            frag = (w0, sw, hc, 0.5 * disc_h + 0.5 * h.migration_mm * k, depth)
        out = replace(out, fragment=frag)
    return out


def sample_spine(rng: np.random.Generator, truth: StudyTruth) -> Spine:
    """Sample the anatomy of one study around its ground truth."""
    region = truth.region
    lumbar = region == "lumbar"
    k = float(np.clip(rng.normal(1.0, 0.07), 0.84, 1.16))
    plan = _segment_plan(region, rng, k, truth)
    total = sum(p[2] for p in plan) + (40.0 if lumbar else 30.0)
    # Centre-line angle phi(s) (degrees from vertical, positive = top tilted anterior).
    n_base = (4 if truth.transitional == "lumbarised_s1" else 3) if lumbar else 1
    # top of the sacrum (lumbar) / of the lowest vertebra (cervical)
    s_junction = sum(p[2] for p in plan[:n_base])
    if lumbar:
        phi_j = rng.uniform(30.0, 46.0)
        lordosis = rng.uniform(35.0, 65.0)
        phi_bottom = phi_j - rng.uniform(30.0, 45.0)
        lumbar_len = sum(p[2] for p in plan[n_base:n_base + 10])
    else:
        phi_j = rng.uniform(12.0, 28.0)
        lordosis = rng.uniform(8.0, 40.0)
        phi_bottom = phi_j + 5.0
        lumbar_len = sum(p[2] for p in plan[1:13])
    s = np.arange(0.0, total, 0.5)
    phi = np.where(
        s < s_junction,
        phi_bottom + (phi_j - phi_bottom) * s / s_junction,
        phi_j - lordosis * np.clip((s - s_junction) / lumbar_len, 0.0, 1.3),
    )
    ph = np.radians(phi)
    y = np.concatenate([[0.0], np.cumsum(-np.sin(ph[:-1]) * 0.5)])
    z = np.concatenate([[0.0], np.cumsum(np.cos(ph[:-1]) * 0.5)])

    def at(sv: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        yy, zz, pp = (float(np.interp(sv, s, a)) for a in (y, z, ph))
        return (np.array([0.0, yy, zz]), np.array([0.0, -math.sin(pp), math.cos(pp)]),
                np.array([0.0, math.cos(pp), math.sin(pp)]))

    segs: list[Segment] = []
    s0 = 0.0
    for i, (kind, name, h, hw, hd) in enumerate(plan):
        if kind == "disc":  # a disc takes the cross-section of the vertebra above
            hw, hd = plan[i + 1][3], plan[i + 1][4]
        segs.append(Segment(kind, name, s0, s0 + h, hw, hd,
                            float(rng.normal(1.0, 0.05)),
                            name if name in truth.pfirrmann else None))
        s0 += h
    bp, bt = zip(*[at(sg.s1)[:2] for sg in segs[:-1]])
    mids = [at(0.5 * (sg.s0 + sg.s1)) for sg in segs]
    # Reference body (L3 / C5) at the canonical origin.
    ref = next(sg for sg in segs if sg.name == ("L3" if lumbar else "C5"))
    shift = at(0.5 * (ref.s0 + ref.s1))[0]
    curve = np.stack([s, y - shift[1], z - shift[2]], axis=1)
    sac_ra = k * (rng.uniform(7.0, 8.5) if lumbar else rng.uniform(6.0, 7.2))
    sac_rw = k * (rng.uniform(10.0, 12.0) if lumbar else rng.uniform(10.0, 11.5))
    recess = k * (rng.uniform(5.0, 6.5) if lumbar else 3.5)
    shapes = {sg.name: _level_shape(rng, truth, sg.name, sac_ra, recess)
              for sg in segs if sg.kind == "disc"}
    epidural = 1.5 * k if lumbar else 1.0 * k
    pedicle_w = k * (4.5 if lumbar else 2.8)
    for sg in segs:
        if sg.kind == "disc" and sg.name in truth.herniation:
            shapes[sg.name] = herniation_shape(shapes[sg.name], truth.herniation[sg.name],
                                               sg.height, k, sac_rw, epidural, pedicle_w, lumbar)
    conus = -1e9
    if lumbar:
        l1 = next(sg for sg in segs if sg.name == "L1")
        conus = l1.s0 + rng.uniform(-0.3, 1.2) * l1.height
    rot = _rotation(rng, (5.0, 2.0, 3.0))
    origin = np.array([rng.normal(0.0, 6.0), rng.normal(45.0 if lumbar else 20.0, 8.0),
                       rng.normal(0.0, 8.0)])
    skin_post = k * (rng.uniform(88.0, 120.0) if lumbar else rng.uniform(70.0, 90.0))
    n_roots = 18
    roots = np.stack([rng.uniform(-0.8, 0.8, n_roots), rng.uniform(-0.1, 0.75, n_roots)], axis=1)
    return Spine(
        region=region, origin=origin, rotation=rot, curve=curve, segments=tuple(segs),
        boundary_p=np.array(bp) - shift, boundary_t=np.array(bt),
        mid_c=np.array([m[0] for m in mids]) - shift, mid_t=np.array([m[1] for m in mids]),
        mid_m=np.array([m[2] for m in mids]), shapes=shapes,
        sac_ra=sac_ra, sac_rw=sac_rw, epidural=epidural, pedicle_w=pedicle_w,
        spinous_len=k * (rng.uniform(26.0, 34.0) if lumbar else rng.uniform(18.0, 26.0)),
        transverse_len=k * (rng.uniform(18.0, 28.0) if lumbar else 8.0),
        cord_ra=k * (3.8 if lumbar else 3.9), cord_rw=k * (4.6 if lumbar else 6.5),
        conus_s=conus, skin_post=skin_post,
        skin_ant=-k * (rng.uniform(110.0, 175.0) if lumbar else rng.uniform(55.0, 70.0)),
        torso_hw=k * (rng.uniform(135.0, 175.0) if lumbar else rng.uniform(52.0, 66.0)),
        fat_thickness=k * (rng.uniform(8.0, 38.0) if lumbar else rng.uniform(5.0, 14.0)),
        root_offsets=roots,
    )
