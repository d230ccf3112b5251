"""Write docs/results.md and its images from a `spinenode demo --keep DIR` run.

Usage: .venv/bin/spinenode demo --keep /tmp/demo && .venv/bin/python scripts/results_gallery.py /tmp/demo
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import highdicom as hd
import numpy as np
from PIL import Image
from pydicom import dcmread

REPO = Path(__file__).resolve().parents[1]
COLOURS = [(230, 80, 80), (240, 170, 40), (240, 230, 60), (90, 200, 90), (60, 170, 230), (160, 110, 230),
           (230, 110, 200), (120, 220, 210), (200, 200, 200)]


def _by_series(pacs: Path) -> dict[int, Path]:
    return {int(dcmread(p, stop_before_pixels=True).SeriesNumber): p for p in pacs.glob("*.dcm")}


def _window(a: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(a, (1, 99.5))
    return (np.clip((a - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)


def seg_overlay(seg_path: Path, images: Path, out: Path) -> tuple[list[str], dict[str, int]]:
    """The SEG over the source slice holding the most segments (the middle one), in the
    SEG's own display colours; returns the labels and the number of slices per segment."""
    seg = hd.seg.segread(seg_path)
    per_source: dict[str, set[int]] = {}
    slices: dict[int, set[str]] = {}
    for f in seg.PerFrameFunctionalGroupsSequence:
        uid = str(f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        n = int(f.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        per_source.setdefault(uid, set()).add(n)
        slices.setdefault(n, set()).add(uid)
    src_uid = max(per_source, key=lambda u: len(per_source[u]))
    src = next(p for p in images.rglob("*.dcm") if str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) == src_uid)
    base = np.stack([_window(dcmread(src).pixel_array.astype(np.float32))] * 3, -1).astype(np.float32)
    labels = []
    for desc in seg.SegmentSequence:
        if desc.SegmentNumber not in per_source[src_uid]:
            continue
        mask = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=[src_uid], segment_numbers=[desc.SegmentNumber], ignore_spatial_locations=True,
        )[0, ..., 0].astype(bool)
        lab = hd.color.CIELabColor.from_dicom_value(tuple(int(v) for v in desc.RecommendedDisplayCIELabValue))
        colour = np.array(lab.to_rgb(), dtype=np.float32)
        base[mask] = 0.55 * base[mask] + 0.45 * colour
        labels.append(str(desc.SegmentLabel))
    Image.fromarray(base.astype(np.uint8)).resize((base.shape[1] * 2, base.shape[0] * 2)).save(out)
    counts = {str(d.SegmentLabel): len(slices.get(int(d.SegmentNumber), ())) for d in seg.SegmentSequence}
    return labels, counts


def _short_scoord(line: str, keep: int = 3) -> str:
    """A dsrdump SCOORD line with many points (an outline) cut to its first ``keep`` points."""
    if "SCOORD" not in line or line.count("/") <= keep:
        return line
    start = line.index("(POLYLINE,") + len("(POLYLINE,")
    points = line[start:line.rindex(")>")].split(",")
    return f"{line[:start]}{','.join(points[:keep])}, ... {len(points)} points)>"


def main(demo: Path) -> None:
    pacs = _by_series(demo / "pacs")
    img_dir = REPO / "docs" / "img"
    ki = dcmread(pacs[9903])
    Image.fromarray(ki.pixel_array).save(img_dir / "key_image.png")
    labels, counts = seg_overlay(pacs[9902], demo / "phantom" / "train_images", img_dir / "seg_overlay.png")
    dump = subprocess.run(["/usr/bin/dsrdump", "+Pl", str(pacs[9901])], capture_output=True, text=True).stdout
    lines = dump.splitlines()
    # the header, the first level's group and its dural sac area group, and the plain-text
    # summary at the end
    groups = [i for i, line in enumerate(lines) if "Measurement Group" in line]
    head = lines[: groups[0]]
    shown = 2 if len(groups) > 2 and "dural sac" in lines[groups[1] + 1] else 1
    summary = lines[next(i for i, line in enumerate(lines) if "Qualitative Evaluations" in line) - 1:]
    text = "\n".join(head + [_short_scoord(ln) for ln in lines[groups[0]:groups[shown]]]
                     + ["      ... (the same per level) ..."] + summary)
    md = f"""# What a radiologist sees

Produced by `spinenode demo --keep DIR` (a phantom lumbar MR study, the shipped
phantom-trained weights) and `python scripts/results_gallery.py DIR`. Synthetic
data: the findings say nothing about a real patient, and every object says it is
PRELIMINARY, UNVERIFIED AI output and not a diagnosis.

Three new series arrive in the study: 9901 the SR, 9902 the SEG, 9903 the key image.

## SR (TID 1500), as `dsrdump +Pl` prints it

The header, the measurement groups of the first level, then the plain-text summary per
level. The groups are built for OHIF 3.13 (checked with its own dcmjs/adapters code in
tests/test_viewer_sr.py). Per level, first its group on the sagittal image: its Tracking
Identifier names the cornerstone tool its first measurement imports as
(`Cornerstone3DTools@^0.1.0:Length:disc L4-L5`; OHIF offers "Track measurements" only
for identifiers it knows); the Comment items are the lines OHIF draws first (the level
with "AI, PRELIMINARY, not a diagnosis", then the grades, moderate and severe in
capitals); the NUMs are the measurements: the canal AP diameter and the disc height (mm)
with their 2-point lines on the sagittal image (a level without a measurement: the
detection certainty in % over its box); then Finding = Stenosis and one evaluation per
condition, post-coordinated with Finding Site and Laterality, with the probability of
every grade in % below it. OHIF draws at most five lines per group and no CODE items, so
the probabilities stay out of its way.

Then, where an axial T2 series crosses the disc, the level's dural sac area as a group of
its own (OHIF draws every outline of a group on the image the group is shown on, so the
axial outline cannot share the sagittal group): Tracking Identifier
`Cornerstone3DTools@^0.1.0:PlanarFreehandROI:dural sac L4-L5` (a closed freehand area),
a Comment naming the level, "dural sac area" and the AI caveat, the level's disc as
Finding Site, and one NUM: the area in mm2 (Area, SCT; finding site Dural sac) with its
closed outline (a POLYLINE whose last point is its first) on the axial T2 slice it was
measured on.

```
{text}
```

## In OHIF 3.13.2

Screenshots by tests/test_viewer_ohif.py (`SPINENODE_SCREENSHOTS_DIR=docs/img`, then
converted to JPEG): OHIF's built viewer (npm `@ohif/app` 3.13.2 `dist/`, served from
loopback) against Orthanc with its DICOMweb plugin, in Debian's headless Chromium;
the same builders as the encode stage, on a phantom lumbar MR study analysed with
the shipped weights (another study than the dump above).

The SR opened: per level the level with the AI caveat, its grades, the canal AP
diameter and the disc height; the dashed lines are the measurements. The dural sac
areas are groups of their own on the axial slices, so nothing from the axial images is
drawn here. OHIF asks whether to track:

![OHIF: SR](img/ohif_sr.jpg)

"Yes": one Length per level (the canal AP diameter at the disc) and one freehand area
per level with an axial T2 slice through its disc, labelled with the level in the
measurement panel (10 measurements for 5 levels):

![OHIF: tracked](img/ohif_sr_tracked.jpg)

A dural sac area, clicked in the panel: its outline on the axial T2 slice it was
measured on. OHIF draws the area and perimeter it computes from the outline (here
204 mm2); in the panel it adds "Max: NaN" or "Max: -Infinity" (OHIF's own statistics,
which it does not compute for an imported outline; the SR carries only the area):

![OHIF: dural sac area](img/ohif_sac_area.jpg)

The SEG opened over the sagittal T2, in the node's colours (the tracked measurements
stay), on the slice with most of the herniated material: this phantom has an L4/L5
extrusion migrated cranially, which the herniation model calls a protrusion; its
herniated material is the magenta segment `herniated material L4-L5` behind the lower
L4 body, taken out of the disc and the canal it overlaps:

![OHIF: SEG](img/ohif_seg.jpg)

The key image: OHIF's cine control covers the top centre of a secondary capture and
its overlays the corners, so the caveat is burned in below the image, centred:

![OHIF: key image](img/ohif_key_image.jpg)

## Key image (secondary capture, for viewers without SR/SEG support)

![key image](img/key_image.png)

## SEG (one segment per structure, on every sagittal slice it lies on)

A level the herniation model calls a protrusion or extrusion gets a segment of its own,
`herniated material L4-L5` (the level as in `disc L4-L5`): the disc material the model sees
beyond the disc space at that level. Each pixel belongs to one segment, so the disc
segment is then the disc inside its space (and the canal segment the canal without it). Its codes: category Morphologically Abnormal
Structure (SCT 49755003), type Disc herniation (`DISC_HERNIATION` in the private scheme
`99SPINENODE`, as in the SR: PS3.16 holds no herniation concept; the SEG declares the
scheme in its Coding Scheme Identification Sequence), anatomic region the level's disc
(e.g. SCT 84020006 "L4/L5 disc"); shown in saturated magenta, apart from the disc hues,
the bone-coloured bodies and the cyan canal. Levels called none or bulge get no such
segment. PRELIMINARY AI output like the rest of the SEG: where the model puts the
herniated material, for a radiologist to check, not a diagnosis.

Segments on the slice shown: {", ".join(labels)}. Sagittal slices per segment:
{", ".join(f"{k} {v}" for k, v in counts.items())}.

![SEG overlay](img/seg_overlay.png)
"""
    (REPO / "docs" / "results.md").write_text(md)
    print("wrote docs/results.md, docs/img/key_image.png, docs/img/seg_overlay.png")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
