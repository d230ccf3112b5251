"""Key image for viewers that render neither SR nor SEG: a secondary capture of the
source sagittal slice with boxes, level labels and grades drawn, and the AI
disclaimer burned in below the image, centred (clear of viewer overlays)."""

from __future__ import annotations

from collections import Counter

import highdicom as hd
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset

from models import conditions
from models.types import Findings, LevelFindings
from workers.results.builder import EncodeInputs
from workers.results.identity import MANUFACTURER, ResultIdentity

BANNER = "AI RESULT - NOT A DIAGNOSIS"
#: Outline colour by the worst severity at a level.
COLOURS = {"normal_mild": (80, 200, 80), "moderate": (240, 190, 40), "severe": (235, 60, 60)}
MIN_SIDE = 768
#: Body Part Examined (PS3.16 CID 4031 defined terms) by region, when the source lacks it.
BODY_PARTS = {"lumbar": "LSPINE", "cervical": "CSPINE"}
#: The caveat's text spans at most this fraction of the width (clear of corner overlays).
BANNER_MAX_WIDTH = 0.6
BANNER_MARGIN = 10


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(pixels, (1.0, 99.5))
    scaled = np.clip((pixels.astype(np.float32) - lo) / max(float(hi - lo), 1e-6), 0.0, 1.0)
    return (scaled * 255.0).astype(np.uint8)


def _worst(lf: LevelFindings) -> str:
    order = ("normal_mild", "moderate", "severe")
    grades = [g.grade for g in lf.grades if g.grade in order]
    return max(grades, key=order.index) if grades else "normal_mild"


def _label(lf: LevelFindings) -> str:
    """'L4-L5: canal moderate, L foramen severe, extrusion left paracentral, HIZ' (moderate and worse
    only, protrusions and extrusions with their position and a HIZ, in the words of the
    condition table; a left/right pair with the same grade said once)."""
    by = {g.condition: g.grade for g in lf.grades}

    def shown(grade: str | None) -> bool:
        return grade is not None and conditions.GRADES[grade].concern > 0

    parts = [f"{spec.short} {conditions.grade_label(by[c])}" for c, spec in conditions.CONDITIONS.items()
             if spec.laterality is None and spec.group != conditions.HERNIATION_GROUP and shown(by.get(c))]
    if (hern := conditions.herniation_phrase(by, min_concern=1, prose=True)) is not None:
        parts.append(hern)
    for left, right in conditions.pairs():
        gl, gr = by.get(left.condition), by.get(right.condition)
        if gl == gr and shown(gl):
            parts.append(f"{left.group} L+R {conditions.grade_label(gl)}")
            continue
        parts += [f"{spec.short} {conditions.grade_label(g)}" for spec, g in ((left, gl), (right, gr)) if shown(g)]
    return f"{lf.level.name}: " + (", ".join(parts) if parts else "no moderate/severe finding")


def render(source: Dataset, findings: Findings) -> np.ndarray:
    """RGB uint8 image of ``source`` with the findings of the levels on it drawn."""
    sop = str(source.SOPInstanceUID)
    pixels = source.pixel_array
    frame: int | None = None
    if int(source.get("NumberOfFrames", 1) or 1) > 1:  # a multi-frame source: the frame most levels lie on
        frames = [lf.level.frame_number for lf in findings.levels
                  if lf.level.sop_instance_uid == sop and lf.level.frame_number]
        frame = max(set(frames), key=frames.count) if frames else 1
        pixels = pixels[frame - 1]
    gray = _to_uint8(pixels)
    scale = max(1, int(np.ceil(MIN_SIDE / max(gray.shape))))
    img = Image.fromarray(gray).convert("RGB").resize((gray.shape[1] * scale, gray.shape[0] * scale),
                                                      Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=max(12, img.width // 48))
    for lf in findings.levels:
        if lf.level.sop_instance_uid != sop or (frame is not None and lf.level.frame_number != frame):
            continue
        b = lf.level.box
        colour = COLOURS[_worst(lf)]
        draw.rectangle([b.x0 * scale, b.y0 * scale, b.x1 * scale, b.y1 * scale], outline=colour, width=2)
        label = _label(lf)
        x, y = b.x1 * scale + 6, b.y0 * scale
        if x + font.getlength(label) > img.width - 4:  # would run off the image: below the box instead
            x, y = max(4.0, img.width - 4 - font.getlength(label)), b.y1 * scale + 4
        draw.text((x, y), label, fill=colour, font=font, stroke_width=2, stroke_fill=(0, 0, 0))
    lines = [BANNER, f"{findings.model.name} {findings.model.version} - PRELIMINARY, UNVERIFIED"]
    return np.asarray(_with_banner(img, lines), dtype=np.uint8)


def _with_banner(img: Image.Image, lines: list[str]) -> Image.Image:
    """``img`` above a black band holding ``lines``, centred and at most
    :data:`BANNER_MAX_WIDTH` of the width: viewers put their overlays in the corners and
    OHIF its cine control over the top centre of a secondary capture, so the caveat goes
    bottom centre, below the anatomy."""
    size = max(14, img.width // 32)
    while True:
        font = ImageFont.load_default(size=size)
        widths = [font.getlength(line) for line in lines]
        if max(widths) <= BANNER_MAX_WIDTH * img.width or size <= 10:
            break
        size -= 1
    step = size + 8
    band = len(lines) * step + 2 * BANNER_MARGIN
    out = Image.new("RGB", (img.width, img.height + band), (0, 0, 0))
    out.paste(img, (0, 0))
    draw = ImageDraw.Draw(out)
    y = img.height + BANNER_MARGIN
    for line, width in zip(lines, widths):
        draw.text(((img.width - width) / 2, y), line, fill=(255, 255, 0), font=font)
        y += step
    return out


def build_key_image(source: Dataset, findings: Findings, identity: ResultIdentity) -> hd.sc.SCImage:
    """Secondary Capture of the annotated slice, in the source study."""
    pixels = render(source, findings)
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=pixels,
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=identity.series_uid,
        series_number=identity.series_number,
        sop_instance_uid=identity.sop_instance_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        patient_orientation=("P", "F"),
        transfer_syntax_uid="1.2.840.10008.1.2.1",
    )
    sc.SeriesDescription = identity.series_description
    # Laterality (Type 2C) is absent for an unpaired body part; dciodvfy can tell only when
    # Body Part Examined says which part it is (without it: an error; empty: a warning).
    sc.BodyPartExamined = str(source.get("BodyPartExamined") or "") or BODY_PARTS[str(findings.region)]
    if "Laterality" in sc:
        del sc.Laterality
    sc.BurnedInAnnotation = "YES"
    sc.ImageComments = f"{BANNER}. {findings.model.name} {findings.model.version}. PRELIMINARY, UNVERIFIED."
    sc.DerivationDescription = "AI findings drawn on the source sagittal image"
    return sc


def build_result(inputs: EncodeInputs, identity: ResultIdentity) -> Dataset | None:
    """The key image (builders.BUILDERS): the source image most levels lie on (the first
    of them on a tie), with every level on it drawn; none without levels."""
    levels = [lf.level for lf in inputs.record.findings.levels]
    if not levels:
        return None
    counts = Counter(lv.sop_instance_uid for lv in levels)
    sop = max(counts, key=lambda uid: counts[uid])
    series_uid = next(lv.series_uid for lv in levels if lv.sop_instance_uid == sop)
    return build_key_image(inputs.source_image(series_uid, sop), inputs.record.findings, identity)
