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


def seg_overlay(seg_path: Path, images: Path, out: Path) -> list[str]:
    seg = hd.seg.segread(seg_path)
    src_uid = str(seg.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0]
                  .SourceImageSequence[0].ReferencedSOPInstanceUID)
    src = next(p for p in images.rglob("*.dcm") if str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) == src_uid)
    base = np.stack([_window(dcmread(src).pixel_array.astype(np.float32))] * 3, -1).astype(np.float32)
    labels = []
    for i, desc in enumerate(seg.SegmentSequence):
        mask = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=[src_uid], segment_numbers=[desc.SegmentNumber], ignore_spatial_locations=True,
        )[0, ..., 0].astype(bool)
        colour = np.array(COLOURS[i % len(COLOURS)], dtype=np.float32)
        base[mask] = 0.55 * base[mask] + 0.45 * colour
        labels.append(str(desc.SegmentLabel))
    Image.fromarray(base.astype(np.uint8)).resize((base.shape[1] * 2, base.shape[0] * 2)).save(out)
    return labels


def main(demo: Path) -> None:
    pacs = _by_series(demo / "pacs")
    img_dir = REPO / "docs" / "img"
    ki = dcmread(pacs[9903])
    Image.fromarray(ki.pixel_array).save(img_dir / "key_image.png")
    labels = seg_overlay(pacs[9902], demo / "phantom" / "train_images", img_dir / "seg_overlay.png")
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
moderate and severe in capitals); the NUMs are the measurements in mm with their
2-point lines on the sagittal image (a level without one: the detection certainty in %
over its box); then Finding = Stenosis and one evaluation per condition, post-coordinated
with Finding Site and Laterality, with the probability of every grade in % below it.
OHIF draws at most five lines per group and no CODE items, so the probabilities stay
out of its way.

```
{text}
```

## Key image (secondary capture, for viewers without SR/SEG support)

![key image](img/key_image.png)

## SEG (one segment per structure) over the source sagittal slice

Segments: {", ".join(labels)}.

![SEG overlay](img/seg_overlay.png)
"""
    (REPO / "docs" / "results.md").write_text(md)
    print("wrote docs/results.md, docs/img/key_image.png, docs/img/seg_overlay.png")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
