"""Tissue labels at arbitrary patient-space points: the analytic phantom, vectorised.

:func:`evaluate` takes points (N, 3) in patient coordinates (LPS, mm) and returns a
tissue code and a segment index per point. Torso, muscles and vessels are evaluated in
the canonical frame around the centre line; the spine in the mid frame of each segment
(bodies, discs, posterior elements) or of the nearest disc (canal, ligamentum flavum,
lateral recesses, foramina, facets), see :mod:`models.phantom.anatomy`.

Paint order (later wins): torso -> canal envelope (epidural fat) -> vertebral bodies ->
discs -> posterior elements and facets -> dural sac (only on fat) -> ligamentum flavum
-> cord / cauda equina (only in CSF) -> lateral recesses -> foramina (not over bone).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from models import rsna
from models.phantom.anatomy import Spine


class Tissue(IntEnum):
    AIR = 0
    SUBCUT_FAT = 1
    FAT = 2
    MUSCLE = 3
    VISCERA = 4
    BODY_CORTEX = 5
    BODY_MARROW = 6
    POST_CORTEX = 7
    POST_MARROW = 8
    ANNULUS = 9
    NUCLEUS = 10
    CSF = 11
    CORD = 12
    ROOT = 13
    LIGAMENT = 14
    VESSEL = 15
    FLUID = 16
    EPIDURAL_FAT = 17
    CAUDA = 18
    KIDNEY = 19


N_TISSUES = len(Tissue)
_BONE = np.zeros(N_TISSUES, dtype=bool)
_BONE[[Tissue.BODY_CORTEX, Tissue.BODY_MARROW, Tissue.POST_CORTEX, Tissue.POST_MARROW]] = True
#: Depth of a high-intensity zone's centre inside the posterior disc margin (mm). It was
#: 1.6 until issue 19's second pass: a rim of 0.6 mm, under one sagittal pixel, merged the
#: spot with the CSF behind it (it only moved the canal's edge); 3.0 leaves 2 mm of annulus.
HIZ_DEPTH_MM = 3.0

KIND_VERTEBRA, KIND_DISC, KIND_SACRUM = 0, 1, 2


@dataclass(frozen=True)
class Labels:
    """Per-point result: ``tissue`` (uint8 :class:`Tissue`), ``segment`` (int16, -1 none) and
    ``herniated`` (bool, or None where not evaluated): the point is disc material of a
    protrusion or extrusion displaced behind the vertebral outline (:func:`_herniated`, the
    foraminal blob), the ground truth of the SEG's herniated-material segment."""

    tissue: np.ndarray
    segment: np.ndarray
    herniated: np.ndarray | None = None


@dataclass(frozen=True)
class _Tables:
    kind: np.ndarray
    s0: np.ndarray
    height: np.ndarray
    hw: np.ndarray
    hd: np.ndarray
    near_below: np.ndarray
    near_above: np.ndarray
    bulge: np.ndarray
    lf: np.ndarray
    rdepth: np.ndarray  # (n, 2) left, right
    rbulge: np.ndarray
    fnar: np.ndarray
    pf: np.ndarray
    cleft: np.ndarray
    for_lo: np.ndarray
    for_hi: np.ndarray
    is_c2: np.ndarray
    sac_taper: np.ndarray  # sacral pieces: size at the bottom relative to the top
    sac_end_s: float
    bwid: np.ndarray  # central bulge profile width (fraction of the sac half width)
    central: np.ndarray  # bool: a central herniation narrows that profile
    bext: np.ndarray  # circumferential bulge (mm)
    blob: np.ndarray  # (n, 5) w, sigma_w, h, sigma_h, depth
    frag: np.ndarray  # (n, 5)
    blob_for: np.ndarray  # bool: the blob is foraminal
    hern: np.ndarray  # 0 none, 1 bulge, 2 protrusion, 3 extrusion
    hiz: np.ndarray  # bool


_TABLES: dict[int, tuple[Spine, _Tables]] = {}


def _tables(sp: Spine) -> _Tables:
    """Per-segment lookup tables, cached for the few spines being rendered."""
    hit = _TABLES.get(id(sp))
    if hit is not None and hit[0] is sp:
        return hit[1]
    if len(_TABLES) > 8:
        _TABLES.clear()
    tb = _build_tables(sp)
    _TABLES[id(sp)] = (sp, tb)
    return tb


def _build_tables(sp: Spine) -> _Tables:
    segs = sp.segments
    n = len(segs)
    kind = np.array([{"vertebra": 0, "disc": 1, "sacrum": 2}[s.kind] for s in segs])
    below = np.arange(n)
    above = np.arange(n)
    for i in range(n):
        if kind[i] != KIND_DISC:
            b = i - 1 if i > 0 and kind[i - 1] == KIND_DISC else -1
            a = i + 1 if i + 1 < n and kind[i + 1] == KIND_DISC else -1
            below[i] = b if b >= 0 else (a if a >= 0 else i)
            above[i] = a if a >= 0 else below[i]
            if kind[i] == KIND_SACRUM:
                below[i] = above[i] = i
    bulge, lf, pf, cleft = (np.zeros(n, np.float32) for _ in range(4))
    bwid, bext = np.full(n, 0.6, np.float32), np.zeros(n, np.float32)
    blob, frag = np.zeros((n, 5), np.float32), np.zeros((n, 5), np.float32)
    blob[:, 1] = blob[:, 3] = frag[:, 1] = frag[:, 3] = 1.0
    central, blob_for, hiz = (np.zeros(n, bool) for _ in range(3))
    hern = np.zeros(n, np.int8)
    rdepth, rbulge, fnar = (np.zeros((n, 2), np.float32) for _ in range(3))
    lo, hi = np.zeros(n, np.float32), np.zeros(n, np.float32)
    recess_default = 5.5 if sp.region == "lumbar" else 3.5
    rdepth[:] = recess_default
    for i, s in enumerate(segs):
        if s.kind != "disc":
            continue
        sh = sp.shapes[s.name]
        bulge[i], lf[i] = sh.bulge_central, sh.lf_thickening
        pf[i], cleft[i] = sh.pfirrmann, sh.cleft
        rdepth[i], rbulge[i], fnar[i] = sh.recess_depth, sh.recess_bulge, sh.foramen_narrowing
        bwid[i], bext[i], blob[i], frag[i] = sh.bulge_width, sh.bulge_extra, sh.blob, sh.fragment
        central[i] = sh.bulge_width != 0.6
        blob_for[i], hern[i], hiz[i] = sh.blob_foraminal, sh.herniation, sh.hiz
        lo[i] = -(0.5 * s.height + 0.08 * segs[i - 1].height)
        hi[i] = 0.5 * s.height + 0.32 * segs[i + 1].height
    taper = np.ones(n, np.float32)
    for i in range(n):
        if kind[i] == KIND_SACRUM:
            lower = segs[i - 1].half_depth if i > 0 and kind[i - 1] == KIND_SACRUM else \
                0.6 * segs[i].half_depth
            taper[i] = lower / segs[i].half_depth
    sac_end = -1e9
    if sp.region == "lumbar":
        s2 = [s for s in segs if s.kind == "sacrum"]
        sac_end = s2[-2].s0 + 0.5 * s2[-2].height if len(s2) >= 2 else s2[0].s1
    return _Tables(
        kind=kind, s0=np.array([s.s0 for s in segs], np.float32),
        height=np.array([s.height for s in segs], np.float32),
        hw=np.array([s.half_width for s in segs], np.float32),
        hd=np.array([s.half_depth for s in segs], np.float32),
        near_below=below, near_above=above, bulge=bulge, lf=lf, rdepth=rdepth, rbulge=rbulge,
        fnar=fnar, pf=pf, cleft=cleft.astype(bool), for_lo=lo, for_hi=hi,
        is_c2=np.array([s.name == "C2" for s in segs]), sac_taper=taper, sac_end_s=sac_end,
        bwid=bwid, central=central, bext=bext, blob=blob, frag=frag, blob_for=blob_for,
        hern=hern, hiz=hiz,
    )


def _torso(sp: Spine, x: np.ndarray, vy: np.ndarray, vt: np.ndarray, z: np.ndarray,
           tissue: np.ndarray) -> None:
    """Body outline (in ``vt``, a straightened frame), muscles and vessels (in ``vy``)."""
    lumbar = sp.region == "lumbar"
    k = sp.pedicle_w / (4.5 if lumbar else 2.8)
    cv = 0.5 * (sp.skin_post + sp.skin_ant)
    ra = 0.5 * (sp.skin_post - sp.skin_ant)
    ax, av = np.abs(x), np.abs(vt - cv)
    outer = (ax / sp.torso_hw) ** 2.3 + (av / ra) ** 2.3 <= 1.0
    tissue[outer] = Tissue.SUBCUT_FAT
    f = sp.fat_thickness
    inner = (ax / (sp.torso_hw - 0.7 * f)) ** 2.3 + (av / (ra - f)) ** 2.3 <= 1.0
    tissue[inner] = Tissue.MUSCLE  # body wall
    wall = 7.0 * k if lumbar else 3.0 * k
    core = (ax / (sp.torso_hw - 0.7 * f - wall)) ** 2.3 + (av / (ra - f - wall)) ** 2.3 <= 1.0
    tissue[core] = Tissue.VISCERA
    segs = sp.segments
    zc = {s.name: float(sp.mid_c[i, 2]) for i, s in enumerate(segs)}
    if lumbar:
        er = ((ax - 31 * k) / (28 * k)) ** 2 + ((vy - 57 * k) / (17 * k)) ** 2 <= 1.0
        er |= ((ax - 11 * k) / (9 * k)) ** 2 + ((vy - 50 * k) / (14 * k)) ** 2 <= 1.0
        ql = ((ax - 68 * k) / (18 * k)) ** 2 + ((vy - 22 * k) / (9 * k)) ** 2 <= 1.0
        frac = np.clip((zc["L1"] - z) / (zc["L1"] - zc["L5"]), 0.0, 1.0)
        rp = (6.0 + 13.0 * frac) * k
        ps = ((ax - (24 * k + 0.8 * rp)) ** 2 + (vy + 2 * k) ** 2 <= rp**2) & (z < zc["T12"])
        ps &= z > zc["S3"]
        tissue[er | ql | ps] = Tissue.MUSCLE
        kz = (z - 0.5 * (zc["T12"] + zc["L2"])) / (0.5 * (zc["T12"] - zc["L2"]) + 12 * k)
        kidney = ((ax - 68 * k) / (28 * k)) ** 2 + ((vy + 2 * k) / (22 * k)) ** 2 + kz**2 <= 1.0
        tissue[kidney & (tissue == Tissue.VISCERA)] = Tissue.KIDNEY
        zb = zc["L4"]
        drift = np.clip(zb - z, 0.0, None) * 0.45
        aorta = (z > zb) & ((x - 12 * k) ** 2 + (vy + 33 * k) ** 2 <= (10 * k) ** 2)
        ivc = (z > zb) & (((x + 19 * k) / (12 * k)) ** 2 + ((vy + 30 * k) / (8 * k)) ** 2 <= 1)
        ili = (z <= zb) & (z > zc["S2"]) & (((ax - 10 * k - drift) ** 2 + (vy + 30 * k) ** 2)
                                            <= (6.5 * k) ** 2)
        tissue[aorta | ivc | ili] = Tissue.VESSEL
        ilium = (((ax - 72 * k) / (24 * k)) ** 2 + ((vy - 14 * k) / (7 * k)) ** 2 <= 1.0)
        ilium &= (z < zc["L5"]) & (z > zc["S3"] - 10)
        core = (((ax - 72 * k) / (21 * k)) ** 2 + ((vy - 14 * k) / (4.5 * k)) ** 2 <= 1.0)
        tissue[ilium] = Tissue.POST_CORTEX
        tissue[ilium & core] = Tissue.POST_MARROW
    else:
        er = ((ax - 17 * k) / (17 * k)) ** 2 + ((vy - 46 * k) / (26 * k)) ** 2 <= 1.0
        lc = ((ax - 7 * k) / (5 * k)) ** 2 + ((vy + 11 * k) / (3.5 * k)) ** 2 <= 1.0
        tissue[er | lc] = Tissue.MUSCLE
        airway = (x / (9 * k)) ** 2 + ((vy + 27 * k) / (7 * k)) ** 2 <= 1.0
        tissue[airway & inner] = Tissue.AIR
        vessels = ((ax - 22 * k) ** 2 + (vy + 17 * k) ** 2 <= (4 * k) ** 2) | (
            (ax - 29 * k) ** 2 + (vy + 12 * k) ** 2 <= (5 * k) ** 2)
        tissue[vessels] = Tissue.VESSEL
        # Skull base and posterior fossa above C2.
        c2 = next(i for i, sg in enumerate(segs) if sg.name == "C2")
        top = float(sp.mid_c[c2, 2]) + 0.5 * segs[c2].height + 8.0 * k
        head = (z > top) & (vy > -25 * k) & outer
        tissue[head & (vy < 62 * k)] = Tissue.CORD
        occ = head & (vy >= 48 * k - 0.35 * (z - top)) & (vy < 56 * k - 0.35 * (z - top))
        tissue[occ] = Tissue.POST_CORTEX


def evaluate(sp: Spine, points: np.ndarray) -> Labels:
    """Tissue and segment index at patient-space points ``(N, 3)``."""
    pc = sp.to_canonical(np.asarray(points, dtype=np.float32))
    x, y, z = pc[:, 0], pc[:, 1], pc[:, 2]
    cy, cz = sp.curve[:, 1], sp.curve[:, 2]
    curve_y = np.interp(z, cz, cy).astype(np.float32)
    vy = y - curve_y
    slope, icept = np.polyfit(cz, cy, 1)
    vt = y - (0.4 * curve_y + 0.6 * (slope * z + icept)).astype(np.float32)
    tissue = np.zeros(len(pc), np.uint8)
    segment = np.full(len(pc), -1, np.int16)
    herniated = np.zeros(len(pc), bool)
    _torso(sp, x, vy, vt, z, tissue)
    # Everything of the spine lies within this box around the centre line (transverse
    # processes reach about 55 mm laterally, spinous processes about 80 mm back).
    crop = (np.abs(x) < 66) & (vy > -38) & (vy < 105) & (z > cz[0] - 5) & (z < cz[-1])
    idx = np.nonzero(crop)[0]
    if idx.size:
        t_sub, s_sub, h_sub = _spine(sp, pc[idx], tissue[idx])
        tissue[idx] = t_sub
        segment[idx] = s_sub
        herniated[idx] = h_sub
    return Labels(tissue, segment, herniated)


def _spine(sp: Spine, pc: np.ndarray, tissue: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tb = _tables(sp)
    herniated_pts = np.zeros(len(pc), bool)
    lumbar = sp.region == "lumbar"
    k = sp.pedicle_w / (4.5 if lumbar else 2.8)
    n_seg = len(sp.segments)
    yz = pc[:, 1:3]
    bt = sp.boundary_t[:, 1:3].astype(np.float32)
    bp = sp.boundary_p[:, 1:3].astype(np.float32)
    dist = yz @ bt.T - (bp * bt).sum(1)[None, :]  # (M, n_seg - 1)
    seg = (dist > 0).sum(1)
    rows = np.arange(len(pc))
    d_lo = dist[rows, np.clip(seg - 1, 0, n_seg - 2)]
    d_hi = dist[rows, np.clip(seg, 0, n_seg - 2)]
    height = tb.height[seg]
    t = np.where(seg == 0, 1.0 + d_hi / height,
                 np.where(seg == n_seg - 1, d_lo / height, d_lo / np.maximum(d_lo - d_hi, 1e-3)))
    t = t.astype(np.float32)
    c, tt, mm = (a.astype(np.float32) for a in (sp.mid_c, sp.mid_t, sp.mid_m))
    py, pz = pc[:, 1], pc[:, 2]
    ry, rz = py - c[seg, 1], pz - c[seg, 2]
    w = pc[:, 0]
    aw = np.abs(w)
    v_s = ry * mm[seg, 1] + rz * mm[seg, 2]
    kind = tb.kind[seg]
    svals = tb.s0[seg] + t * height
    # Frame of the nearest disc (or the segment itself in the sacrum).
    dseg = np.where(t < 0.5, tb.near_below[seg], tb.near_above[seg])
    ry, rz = py - c[dseg, 1], pz - c[dseg, 2]
    hdd = ry * tt[dseg, 1] + rz * tt[dseg, 2]
    vd = ry * mm[dseg, 1] + rz * mm[dseg, 2]
    side = np.where(w > 0, 0, 1)
    ra, rw, epi = sp.sac_ra, sp.sac_rw, sp.epidural
    dhd = tb.hd[dseg]
    dhw = tb.hw[dseg]
    sac_scale = np.where(tb.kind[dseg] == KIND_SACRUM, 0.6, 1.0).astype(np.float32)
    vc = dhd + epi + ra * sac_scale
    inside = (t > -0.05) & (t < 1.05)

    # Paraspinal fat around the posterior elements (behind the bodies).
    para = (w / (tb.hw[seg] + 8.0 * k)) ** 2 + ((v_s - 24.0 * k) / (22.0 * k)) ** 2 <= 1.0
    para &= (t > -0.1) & (t < 1.1) & (v_s > 0.3 * tb.hd[seg]) & (kind != KIND_SACRUM)
    tissue[(tissue == Tissue.VISCERA) & para] = Tissue.FAT
    # Canal envelope: epidural fat.
    env_ra = np.where(sac_scale < 1.0, ra * sac_scale + 2.0, ra + 5.0)
    env = (w / (rw + 4.5)) ** 2 + ((vd - vc) / env_ra) ** 2 <= 1.0
    tissue[env] = Tissue.EPIDURAL_FAT

    # Vertebral bodies and sacrum.
    hw, hd = tb.hw[seg], tb.hd[seg]
    pexp = 2.4
    sac = kind == KIND_SACRUM
    # The fused sacrum tapers continuously from S1 down (no steps between pieces).
    taper = np.where(sac, tb.sac_taper[seg] + (1.0 - tb.sac_taper[seg]) * np.clip(t, 0, 1), 1.0)
    waist = np.where(sac, taper, 1.0 - 0.035 * np.sin(np.pi * np.clip(t, 0, 1)))
    scale_w, scale_d = hw * waist, hd * waist
    # Rounder in front, a flat posterior wall (pedicles join its corners).
    pv = np.where(v_s > 0, 4.0, pexp).astype(np.float32)
    rho = (aw / scale_w) ** pv + (np.abs(v_s) / scale_d) ** pv
    body = (kind != KIND_DISC) & (t >= 0) & (t <= 1) & (rho <= 1.0)
    dens_r = 5.2 * k * (1.0 - 0.35 * np.clip((t - 0.45) / 0.55, 0, 1))
    dens = tb.is_c2[seg] & (t >= 0.42) & (t <= 1.0) & (w**2 + (v_s + 1) ** 2 <= dens_r**2)
    body = np.where(tb.is_c2[seg] & (t >= 0.42), dens, body)
    hmm = t * height
    # Sacral segments are fused: endplate cortex only at the top of S1.
    top_sac = sac & (seg < n_seg - 1) & (tb.kind[np.clip(seg + 1, 0, n_seg - 1)] != KIND_SACRUM)
    plate = ((hmm < 1.2) & ~sac) | ((height - hmm < 1.2) & (~sac | top_sac))
    edge = (rho ** (1 / pv) > 1.0 - 1.4 / scale_d) | plate
    edge &= ~(tb.is_c2[seg] & (t >= 0.42) & (w**2 + (v_s + 1) ** 2 <= (dens_r - 1.2) ** 2))
    tissue[body] = Tissue.BODY_MARROW
    tissue[body & edge] = Tissue.BODY_CORTEX
    rudiment = sac & body & (height - hmm < 1.6) & ~top_sac & (rho < 0.55)
    tissue[rudiment] = Tissue.ANNULUS
    ala = sac & (t >= 0) & (t <= 1) & (seg >= 0) & (aw < (24 + 26 * t) * k * (hw / (24 * k))) & (
        np.abs(v_s - 0.35 * hd) < 0.45 * hd + 2) & (aw > 0.6 * hw)
    tissue[ala] = np.where(np.abs(v_s[ala] - 0.35 * hd[ala]) > 0.45 * hd[ala],
                           Tissue.POST_CORTEX, Tissue.POST_MARROW)

    # Discs with posterior bulge and nucleus.
    disc_seg = kind == KIND_DISC
    pfs = tb.pf[seg]
    prof = np.clip(1.0 - (2 * t - 1) ** 4, 0, 1)
    b_c = tb.bulge[seg]
    b_mid = epi + b_c  # the disc abuts the sac; any bulge indents it by exactly b_c
    rb = tb.rbulge[seg, side]
    gb = np.maximum(np.maximum(pfs - 2.0, 0.0) * 0.6, tb.bext[seg])
    g_diffuse = np.exp(-((w / (0.6 * rw)) ** 2))
    # A central herniation makes the middle of that profile focal; the midline depth and
    # the profile from 0.75 of the sac half width outwards (the recesses) stay as they were.
    g_focal = np.exp(-((w / (tb.bwid[seg] * rw)) ** 2))
    blend = np.clip((aw - 0.45 * rw) / (0.3 * rw), 0.0, 1.0)
    g_mid = np.where(tb.central[seg], g_focal + (g_diffuse - g_focal) * blend, g_diffuse)
    b_w = (b_mid * g_mid
           + rb * np.exp(-(((aw - (rw - 1)) / 4.0) ** 2))) * prof
    e_w = hd * np.clip(1.0 - (aw / (hw + gb)) ** pexp, 0, None) ** (1 / pexp)
    disc = disc_seg & inside & (aw < hw + gb) & (v_s <= e_w + b_w) & (v_s >= -(e_w + gb * prof))
    nuc = ((w / (0.55 * hw)) ** 2 + ((v_s + 0.1 * hd) / (0.5 * hd)) ** 2
           + ((2 * t - 1) / 0.72) ** 2) <= 1.0
    # Intranuclear cleft: a thin fibrous plate just above the mid-plane (seen on sagittal).
    cleft = tb.cleft[seg] & (np.abs(2 * t - 1.18) < 0.06)
    tissue[disc] = Tissue.ANNULUS
    tissue[disc & nuc & ~cleft & (pfs <= 4)] = Tissue.NUCLEUS
    # Herniated material behind the vertebral outline (central and paracentral), then a
    # high-intensity zone in the posterior annulus.
    near = np.nonzero((tb.kind[dseg] == KIND_DISC) & (tb.hern[dseg] >= 2))[0]
    hw_ = dhw[near]
    outline = dhd[near] * np.clip(1.0 - (aw[near] / hw_) ** pexp, 0, None) ** (1 / pexp)
    for table in (tb.blob, tb.frag):
        ds_ = dseg[near]
        herniated, core = _herniated(table[ds_], w[near], hdd[near], vd[near], outline)
        herniated &= ~tb.blob_for[ds_] & (aw[near] < rw - 4.5) & ~_BONE[tissue[near]]
        sel = near[herniated]
        tissue[sel] = Tissue.ANNULUS
        tissue[near[herniated & (core | (tb.hern[ds_] == 3))]] = Tissue.NUCLEUS
        herniated_pts[sel] = True
    # The HIZ lies inside the annulus with dark annulus all round it (Aprill & Bogduk's
    # definition), so its centre is HIZ_DEPTH_MM inside the posterior disc margin: the
    # 1 mm half depth leaves a rim of HIZ_DEPTH_MM - 1 mm between it and the canal.
    hi_ = np.nonzero(disc_seg & tb.hiz[seg])[0]
    hz = np.isin(tissue[hi_], (Tissue.ANNULUS, Tissue.NUCLEUS)) & (
        (w[hi_] / (2.5 * k)) ** 2 + ((v_s[hi_] - (e_w[hi_] + b_w[hi_] - HIZ_DEPTH_MM)) / 1.0) ** 2
        + ((hmm[hi_] - 0.5 * height[hi_]) / (0.2 * height[hi_] + 0.3)) ** 2 <= 1.0)
    tissue[hi_[hz]] = Tissue.FLUID

    # Posterior elements of vertebrae (segment frame).
    vert = kind == KIND_VERTEBRA
    vcs = hd + epi + ra
    pw = sp.pedicle_w
    wc = rw + 1.5 + pw
    ped_r = 0.45 * (ra + epi)
    ped_q = ((aw - wc) / pw) ** 2 + ((v_s - (hd + ped_r + 2)) / (ped_r + 3)) ** 2 \
        + ((t - 0.62) / 0.3) ** 2
    ped = vert & (ped_q <= 1.0)
    ring_in = (w / (rw + 4.0)) ** 2 + ((v_s - vcs) / (ra + 4.0)) ** 2
    ring_out = (w / (rw + 10.0 * k)) ** 2 + ((v_s - vcs) / (ra + 9.5 * k)) ** 2
    # Laminae: the vertebra's own, plus the lower edge of the one above overlapping
    # the disc level (the interlaminar window holds the ligamentum flavum).
    lam = ((vert & (t > 0.06) & (t < 0.88)) | sac | (disc_seg & (t > 0.55))) & (
        ring_in > 1.0) & (ring_out <= 1.0) & (v_s > vcs - 1.0) & (
        (aw < rw + 4.0 * k) | (vert & (t > 0.3) & (t < 0.9)))  # pars only beside the pedicle
    base = vcs + ra + 3.5 * k
    slope = 0.12 if lumbar else 0.55
    hs = (t - 0.5) * height + slope * (v_s - base)
    sp_w = (4.5 if lumbar else 3.0) * k
    spin = vert & (aw < sp_w) & (v_s > base) & (v_s < base + sp.spinous_len) & (
        hs > -0.45 * height) & (hs < 0.22 * height)
    tp_w0 = wc + pw
    trans = vert & (aw > tp_w0 - 1) & (aw < tp_w0 + sp.transverse_len) & (
        np.abs(v_s - (hd + 0.4 * (ra + epi) + 3)) < 3.2 * k) & (t > 0.45) & (t < 0.85)
    # Dorsal wall of the sacrum (fused laminae) with the median crest.
    dorsal = vc + ra * sac_scale + 1.0
    sacral_back = sac & (t >= 0) & (t <= 1) & (v_s > dorsal) & (
        v_s < dorsal + 5.0 * k + 4.0 * k * (aw < 4.0 * k)) & (aw < 0.8 * hw * waist)
    post = ped | lam | spin | trans | sacral_back
    core = (ped & (ped_q < 0.45)) | (spin & (aw < sp_w - 1.1) & (v_s < base + sp.spinous_len - 1.2)
                                     & (hs > -0.45 * height + 1.2) & (hs < 0.22 * height - 1.2)) | (
        lam & (ring_in > 1.06) & (ring_out < 0.93))
    tissue[post] = Tissue.POST_CORTEX
    tissue[post & core] = Tissue.POST_MARROW

    # Facet joints at every disc level (disc frame).
    at_disc = tb.kind[dseg] == KIND_DISC
    fn = tb.fnar[dseg, side]
    rd = tb.rdepth[dseg, side]
    hyper = 1.0 + 0.25 * np.maximum(fn, np.clip(1.0 - rd / 5.5, 0, 1))
    fw = rw + (6.5 if lumbar else 4.5) * k
    fv = dhd + (17.0 if lumbar else 10.0) * k
    # Hypertrophy widens the facet; its front stays behind the foramen, so the foraminal
    # narrowing is exactly the drawn one.
    frw, frv = 6.5 * k * hyper, 7.0 * k
    fh_lo, fh_hi = (-11 * k, 13 * k) if lumbar else (-6 * k, 7 * k)
    fq = ((aw - fw) / frw) ** 2 + ((vd - fv) / frv) ** 2
    fq3 = fq + ((hdd - 0.5 * (fh_lo + fh_hi)) / (0.5 * (fh_hi - fh_lo))) ** 4
    facet = at_disc & (fq3 <= 1.0)
    joint = facet & (np.abs(-(aw - fw) + (vd - fv)) / np.sqrt(2) < 0.45) & (fq < 0.7)
    tissue[facet] = Tissue.POST_CORTEX
    tissue[facet & (fq < 0.6)] = Tissue.POST_MARROW
    tissue[joint] = Tissue.FLUID

    # Dural sac (only where fat remains), ligamentum flavum, cord/cauda.
    sac_ok = (svals > tb.sac_end_s) | (not lumbar)
    sac_q = (w / rw) ** 2 + ((vd - vc) / (ra * sac_scale)) ** 2
    sac_m = (sac_q <= 1.0) & (tissue == Tissue.EPIDURAL_FAT) & sac_ok
    tissue[sac_m] = Tissue.CSF
    lf_post = tb.lf[dseg]
    g = np.exp(-((hdd / (7.0 * k)) ** 2)) * at_disc
    # inner LF surface: 1 mm of posterior epidural fat away from the disc, exactly
    # lf_post into the sac at the disc's mid-plane.
    extra = (1.0 + lf_post) * g
    side_extra = 0.35 * np.clip(5.5 - rd, 0, None) * g * np.exp(-(((aw - 0.7 * rw) / 4.0) ** 2))
    thick = 3.0 + extra + side_extra
    out_q = (w / (rw + 4.0)) ** 2 + ((vd - vc) / (ra + 4.0)) ** 2
    # Inner LF surface: an arch whose midline apex sits (ra + 4 - thick) behind the canal
    # centre; a thick ligament flattens it and then bulges it forward (buckling).
    front = vc + (ra + 4.0 - thick) * np.sqrt(np.clip(1.0 - (w / (rw + 1.0)) ** 2, 0, 1))
    lf_m = at_disc & (out_q <= 1.0) & (vd > front) & (vd > vc - 0.9 * ra) & (
        np.abs(hdd) < 12 * k) & np.isin(tissue, (Tissue.CSF, Tissue.EPIDURAL_FAT))
    tissue[lf_m] = Tissue.LIGAMENT
    csf = tissue == Tissue.CSF
    if csf.any():
        _neural(sp, tissue, csf, w, vd, vc, svals, lumbar, k)

    # Lateral recesses (subarticular zones) at the disc levels.
    wr = rw - 1.0
    e_r = dhd * np.clip(1.0 - (wr / dhw) ** pexp, 0, None) ** (1 / pexp)
    e_r = e_r + tb.rbulge[dseg, side] + 0.3 * epi
    front = e_r + rd
    zone = at_disc & (np.abs(hdd) < 7.0 * k) & (aw > rw - 4.5) & (aw < rw + 6.5 * k)
    rec_q = ((aw - (rw - 1.0)) / 3.8) ** 2 + ((vd - 0.5 * (e_r + front)) / (0.5 * rd + 0.3)) ** 2
    rec_fat = zone & (rec_q <= 1.0) & ~_BONE[tissue] & (tissue != Tissue.ANNULUS)
    tissue[rec_fat] = Tissue.EPIDURAL_FAT
    # Superior articular process: a rounded bone mass whose front face bounds the recess.
    sap = zone & (vd >= front) & (aw < rw + 0.5) & (
        ((aw - (rw + 1.0)) / (5.5 * k)) ** 2 + ((vd - front - 5.0 * k) / (5.5 * k)) ** 2
        + (hdd / (7.5 * k)) ** 4 <= 1.0)
    tissue[sap] = Tissue.POST_CORTEX
    tissue[sap & (vd > front + 1.2)] = Tissue.POST_MARROW
    rr_v = np.minimum(1.6 * k, 0.45 * rd)
    root = zone & (((aw - (rw - 1.5)) / (1.6 * k)) ** 2
                   + ((vd - 0.5 * (e_r + front)) / np.maximum(rr_v, 0.3)) ** 2 <= 1.0)
    tissue[root] = Tissue.ROOT

    # Neural foramina: fat with the exiting root, effaced by the narrowing.
    lo, hi = tb.for_lo[dseg], tb.for_hi[dseg]
    h0, rh = 0.5 * (lo + hi), 0.5 * (hi - lo)
    v0 = dhd + (5.5 if lumbar else 3.5) * k
    rv0 = (6.0 if lumbar else 3.2) * k * (0.6 + 0.4 * np.clip((hdd - lo) / (2 * rh + 1e-3), 0, 1))
    fzone = at_disc & (aw > rw + 0.5) & (aw < rw + 3.5 + 2 * pw)
    q1 = (((hdd - h0) / np.maximum(rh * (1 - 0.45 * fn), 0.5)) ** 2
          + ((vd - v0) / (rv0 * (1 - fn) + 1e-3)) ** 2)
    soft = ~_BONE[tissue]
    # The foramen's frame: disc and body in front, pedicles above and below, the
    # facet capsule behind; soft tissue there is fibrous (dark), so the fat stands out.
    q0 = ((hdd - h0) / np.maximum(rh, 0.5)) ** 2 + ((vd - v0) / rv0) ** 2
    frame = fzone & soft & (q0 <= 1.7) & (tissue != Tissue.ANNULUS) & (
        np.abs(hdd - h0) > 0.55 * rh)
    tissue[frame] = Tissue.LIGAMENT
    ring = fzone & (q0 <= 1.0) & (q1 > 1.0) & soft
    fat = fzone & (q1 <= 1.0) & soft
    tissue[fat] = Tissue.FAT
    tissue[ring & (vd < v0)] = Tissue.ANNULUS
    tissue[ring & (vd >= v0)] = Tissue.LIGAMENT
    rr = 2.5 * k if lumbar else 1.8 * k
    rc_h = h0 + 0.3 * rh * (1 - 0.45 * fn)
    exit_root = fzone & (((hdd - rc_h) / (rr * (1 - 0.2 * fn))) ** 2
                         + ((vd - v0) / np.minimum(rr, 0.8 * rv0 * (1 - fn) + 0.2)) ** 2 <= 1.0)
    tissue[exit_root & soft] = Tissue.ROOT
    # A foraminal herniation is disc material filling the front of what the narrowing took
    # from the foramen on its side, never the remaining fat.
    ds_ = dseg[near]
    herniated = tb.blob_for[ds_] & (w[near] * tb.blob[ds_, 0] > 0) & ring[near] & (
        vd[near] < v0[near]) & ~_BONE[tissue[near]] & ~exit_root[near]
    tissue[near[herniated]] = Tissue.NUCLEUS
    herniated_pts[near[herniated]] = True
    # what later paint took (facets, recess fat) is no longer disc material
    herniated_pts &= np.isin(tissue, (Tissue.ANNULUS, Tissue.NUCLEUS, Tissue.FLUID))
    return tissue, seg.astype(np.int16), herniated_pts


def _herniated(p: np.ndarray, w: np.ndarray, h: np.ndarray, v: np.ndarray,
               outline: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points inside a half-ellipsoid of herniated material ``p`` = (w, sigma_w, h, sigma_h,
    depth) per point that rises ``depth`` behind the vertebral ``outline``; and its core."""
    r2 = ((w - p[:, 0]) / p[:, 1]) ** 2 + ((h - p[:, 2]) / p[:, 3]) ** 2
    top = outline + p[:, 4] * np.sqrt(np.clip(1.0 - r2, 0, None))
    inside = (p[:, 4] > 0) & (r2 < 1.0) & (v >= outline - 1.0) & (v <= top)
    core = inside & (r2 + ((v - outline) / np.maximum(p[:, 4], 1e-3)) ** 2 < 0.45)
    return inside, core


def _neural(sp: Spine, tissue: np.ndarray, csf: np.ndarray, w: np.ndarray,
            vd: np.ndarray, vc: np.ndarray, svals: np.ndarray, lumbar: bool, k: float) -> None:
    """Cord (cervical; lumbar above the conus) and cauda equina roots inside the CSF."""
    ii = np.nonzero(csf)[0]
    ww, vv, ss, cc = w[ii], vd[ii], svals[ii], vc[ii]
    ra = sp.sac_ra
    ant = cc - ra
    post = cc + ra
    taper = np.clip((ss - sp.conus_s) / 18.0, 0.0, 1.0) ** 0.6 if lumbar else np.ones_like(ss)
    cord = ((ww / (sp.cord_rw * taper + 1e-3)) ** 2
            + ((vv - (cc + 0.05 * ra)) / (sp.cord_ra * taper + 1e-3)) ** 2) <= 1.0
    cord &= taper > 0.05
    sel = ii[cord]
    tissue[sel] = Tissue.CORD
    if lumbar:
        r = 0.95 * k
        hit = np.zeros(ii.size, bool)
        near_conus = np.clip((sp.conus_s + 25.0 - ss) / 25.0, 0.0, 1.0)
        for fx, fy in sp.root_offsets:
            wx = fx * sp.sac_rw * (0.55 + 0.45 * near_conus)
            vy = ant + (post - ant) * (0.5 + 0.5 * fy)
            hit |= (ww - wx) ** 2 + (vv - vy) ** 2 <= r * r
        tissue[ii[hit & ~cord]] = Tissue.CAUDA


def mask_of(sp: Spine, labels: Labels) -> np.ndarray:
    """Segmentation label values (:data:`models.rsna.MASK_LABELS`) per point."""
    t, s = labels.tissue, labels.segment
    out = np.zeros(t.shape, np.uint8)
    out[(t == Tissue.BODY_CORTEX) | (t == Tissue.BODY_MARROW)] = rsna.MASK_VERTEBRAL_BODY
    out[(t == Tissue.CSF) | (t == Tissue.CORD) | (t == Tissue.CAUDA)] = rsna.MASK_SPINAL_CANAL
    disc_values = np.array(
        [rsna.DISC_LABELS.get(sg.name, rsna.MASK_OTHER_DISC) if sg.kind == "disc" else 0
         for sg in sp.segments] + [0], np.uint8)
    is_disc = ((t == Tissue.ANNULUS) | (t == Tissue.NUCLEUS)) & (s >= 0)
    out[is_disc] = np.maximum(disc_values[s[is_disc]], out[is_disc])
    return out
