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


def main(demo: Path) -> None:
    pacs = _by_series(demo / "pacs")
    img_dir = REPO / "docs" / "img"
    ki = dcmread(pacs[9903])
    Image.fromarray(ki.pixel_array).save(img_dir / "key_image.png")
    labels, counts = seg_overlay(pacs[9902], demo / "phantom" / "train_images", img_dir / "seg_overlay.png")
    dump = subprocess.run(["/usr/bin/dsrdump", "+Pl", str(pacs[9901])], capture_output=True, text=True).stdout
    lines = dump.splitlines()
    # the header, the first measurement group, and the plain-text summary at the end
    head = lines[: next(i for i, line in enumerate(lines) if "Measurement Group" in line)]
    first = next(i for i, line in enumerate(lines) if "Measurement Group" in line)
    second = next(i for i, line in enumerate(lines) if "Measurement Group" in line and i > first)
    summary = lines[next(i for i, line in enumerate(lines) if "Qualitative Evaluations" in line) - 1:]
    text = "\n".join(head + lines[first:second] + ["      ... (one group per level) ..."] + summary)
    md = f"""# What a radiologist sees

Produced by `spinenode demo --keep DIR` (a phantom lumbar MR study, the shipped
phantom-trained weights) and `python scripts/results_gallery.py DIR`. Synthetic
data: the findings say nothing about a real patient, and every object says it is
PRELIMINARY, UNVERIFIED AI output and not a diagnosis.

Three new series arrive in the study: 9901 the SR, 9902 the SEG, 9903 the key image.

## SR (TID 1500), as `dsrdump +Pl` prints it

The header, the measurement group of the first level, then the plain-text summary per
level. A group is built for OHIF 3.13 (checked with its own dcmjs/adapters code in
tests/test_viewer_sr.py): its Tracking Identifier names the cornerstone tool its first
measurement imports as (`Cornerstone3DTools@^0.1.0:Length:disc L4-L5`; OHIF offers
"Track measurements" only for identifiers it knows); the Comment items are the lines
OHIF draws first (the level with "AI, PRELIMINARY, not a diagnosis", then the grades,
moderate and severe in capitals); the NUMs are the measurements: the canal AP diameter
and the disc height (mm) with their 2-point lines on the sagittal image, then the dural
sac area (mm2) with a reference to the axial T2 slice it was measured on (no outline:
OHIF would draw it on the sagittal image; OHIF does not list it) (a level without a
measurement: the detection certainty in % over its box); then Finding = Stenosis and one evaluation per condition, post-coordinated
with Finding Site and Laterality, with the probability of every grade in % below it.
OHIF draws at most five lines per group and no CODE items, so the probabilities stay
out of its way.

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
diameter and the disc height; the dashed lines are the measurements. OHIF asks
whether to track:

![OHIF: SR](img/ohif_sr.jpg)

"Yes": one Length per level (the canal AP diameter at the disc), labelled with its
level in the measurement panel:

![OHIF: tracked](img/ohif_sr_tracked.jpg)

The SEG opened over the sagittal T2 (middle slice), in the node's colours:

![OHIF: SEG](img/ohif_seg.jpg)

The key image: OHIF's cine control covers the top centre of a secondary capture and
its overlays the corners, so the caveat is burned in below the image, centred:

![OHIF: key image](img/ohif_key_image.jpg)

## Key image (secondary capture, for viewers without SR/SEG support)

![key image](img/key_image.png)

## SEG (one segment per structure, on every sagittal slice it lies on)

Segments on the slice shown: {", ".join(labels)}. Sagittal slices per segment:
{", ".join(f"{k} {v}" for k, v in counts.items())}.

![SEG overlay](img/seg_overlay.png)
"""
    (REPO / "docs" / "results.md").write_text(md)
    print("wrote docs/results.md, docs/img/key_image.png, docs/img/seg_overlay.png")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
