"""A montage of one phantom study for people: sagittal T1/T2 (mid and foraminal) and the
axial slice of every level, with the ground truth drawn on (grades; herniation
type-position-migration and HIZ where the study has them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from PIL import Image, ImageDraw

from models import rsna

TILE = 384


def _window(px: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(px, 0.5), np.percentile(px, 99.7)
    return (np.clip((px - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)


def _tile(path: Path, marks: list[tuple[float, float, str]], title: str,
          crop_mm: float = 0.0) -> Image.Image:
    """One image windowed, optionally cropped to ``crop_mm`` around its marks, labelled."""
    ds = pydicom.dcmread(path)
    px = ds.pixel_array.astype(np.float32)
    if ds.Modality == "CT":  # bone window from the header, in Hounsfield units
        px = px * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        c, w = float(ds.WindowCenter[0]), float(ds.WindowWidth[0])
        px = np.clip(px, c - w / 2, c + w / 2)
    if crop_mm > 0 and marks:
        ps = float(ds.PixelSpacing[0])
        xs, ys = [m[0] for m in marks], [m[1] for m in marks]
        half = max(crop_mm / ps / 2, (max(ys) - min(ys)) / 2 + 40 / ps,
                   (max(xs) - min(xs)) / 2 + 40 / ps)
        cx, cy = (max(xs) + min(xs)) / 2, (max(ys) + min(ys)) / 2
        x0 = int(np.clip(cx - half, 0, max(px.shape[1] - 2 * half, 0)))
        y0 = int(np.clip(cy - half, 0, max(px.shape[0] - 2 * half, 0)))
        x1, y1 = min(int(x0 + 2 * half), px.shape[1]), min(int(y0 + 2 * half), px.shape[0])
        win = _window(px)  # window on the whole image, then crop
        marks = [(x - x0, y - y0, t) for x, y, t in marks]
        img = Image.fromarray(win[y0:y1, x0:x1]).convert("RGB")
    else:
        img = Image.fromarray(_window(px)).convert("RGB")
    scale = TILE / max(img.size)
    img = img.resize((round(img.size[0] * scale), round(img.size[1] * scale)), Image.BILINEAR)
    draw = ImageDraw.Draw(img)
    for x, y, text in marks:
        cx, cy = (x + 0.5) * scale, (y + 0.5) * scale
        draw.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], outline=(255, 200, 0))
        draw.text((cx + 6, cy - 6), text, fill=(255, 200, 0))
    draw.text((4, 4), title, fill=(120, 255, 120))
    canvas = Image.new("RGB", (TILE, TILE))
    canvas.paste(img, ((TILE - img.size[0]) // 2, (TILE - img.size[1]) // 2))
    return canvas


_TYPE_TAG = {"bulge": "bulge", "protrusion": "prot", "extrusion": "extr"}
_POS_TAG = {"central": "C", "paracentral_left": "PL", "paracentral_right": "PR",
            "foraminal_left": "FL", "foraminal_right": "FR"}


def herniation_tag(h: rsna.HerniationLabel | None) -> str:
    """Short label of a level's herniation and HIZ, e.g. `` extr-PL-up HIZ`` ('' for none)."""
    if h is None:
        return ""
    out = ""
    if h.herniation in _TYPE_TAG:
        out = " " + _TYPE_TAG[h.herniation]
        if h.position:
            out += "-" + _POS_TAG[h.position]
        if h.migration in ("cranial", "caudal"):
            out += "-up" if h.migration == "cranial" else "-down"
    return out + (" HIZ" if h.hiz else "")


def render_preview(root: Path | str, out_png: Path | str, study_id: int | None = None) -> Path:
    """Write a PNG montage of one study of an RSNA-layout phantom dataset."""
    data = rsna.read_dataset(root)
    sid = study_id if study_id is not None else data.study_ids[0]
    coords = data.coordinates_of(sid)
    tiles: list[Image.Image] = []
    grades = data.labels.get(sid)

    def grade(cond: str, lv: str) -> str:
        g = grades.grade(cond, lv) if grades else None
        return {"Normal/Mild": "", "Moderate": " mod", "Severe": " SEV"}.get(g or "", "")

    hernias = rsna.read_herniation(root)

    def hernia(lv: str) -> str:
        return herniation_tag(hernias.get((sid, lv)))

    for desc, cond in ((rsna.SAGITTAL_T2_STIR, rsna.SPINAL_CANAL_STENOSIS),
                       (rsna.SAGITTAL_CT, rsna.SPINAL_CANAL_STENOSIS),
                       (rsna.SAGITTAL_T1, rsna.LEFT_NEURAL_FORAMINAL_NARROWING),
                       (rsna.SAGITTAL_T1, rsna.RIGHT_NEURAL_FORAMINAL_NARROWING)):
        for s in data.series_of(sid, desc):
            cs = [c for c in coords if c.series_id == s.series_id and c.condition == cond]
            if not cs:
                continue
            inst = int(np.median([c.instance_number for c in cs]))
            marks = [(c.x, c.y, c.level + grade(cond, c.level)
                      + (hernia(c.level) if cond == rsna.SPINAL_CANAL_STENOSIS else ""))
                     for c in cs if abs(c.instance_number - inst) <= 1]
            tiles.append(_tile(data.image_path(sid, s.series_id, inst), marks,
                               f"{desc} #{inst} {cond.split(' Neural')[0]}", crop_mm=170))
        if desc == rsna.SAGITTAL_T2_STIR:
            sag1 = data.series_of(sid, rsna.SAGITTAL_T1)
            c_mid = [c for c in coords if c.condition == rsna.SPINAL_CANAL_STENOSIS]
            if sag1 and c_mid:
                inst = int(np.median([c.instance_number for c in c_mid]))
                marks = [(c.x, c.y, c.level) for c in c_mid]
                tiles.append(_tile(data.image_path(sid, sag1[0].series_id, inst), marks,
                                   f"Sagittal T1 #{inst}", crop_mm=170))
    for s in data.series_of(sid, rsna.AXIAL_T2) + data.series_of(sid, rsna.AXIAL_CT):
        sub = [c for c in coords if c.series_id == s.series_id]
        for lv in dict.fromkeys(c.level for c in sub):
            cs = [c for c in sub if c.level == lv]
            inst = cs[0].instance_number
            marks = [(c.x, c.y, c.condition.split()[0][0] + grade(c.condition, lv)) for c in cs]
            tiles.append(_tile(data.image_path(sid, s.series_id, inst), marks,
                               f"{s.series_description} #{inst} {lv}{hernia(lv)}", crop_mm=120))
    slice_levels = rsna.read_slice_levels(root)
    for s in data.series_of(sid, rsna.AXIAL_T2) + data.series_of(sid, rsna.AXIAL_CT):
        if any(c.series_id == s.series_id for c in coords):
            continue  # already shown with its labels
        best: dict[str, tuple[float, int]] = {}
        for (st, se, inst), (lv, d) in slice_levels.items():
            if st == sid and se == s.series_id and abs(d) < best.get(lv, (1e9, 0))[0]:
                best[lv] = (abs(d), inst)
        for lv in data.labels[sid].grades and rsna.levels_of(data.region):
            if lv in best:
                inst = best[lv][1]
                tiles.append(_tile(data.image_path(sid, s.series_id, inst), [],
                                   f"{s.series_description} #{inst} {lv}"))
    cols = 4 if len(tiles) <= 8 else 5
    n_rows = (len(tiles) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * TILE, n_rows * TILE))
    for i, t in enumerate(tiles):
        sheet.paste(t, ((i % cols) * TILE, (i // cols) * TILE))
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out
