"""The SEG loaded by the viewer's own code: @cornerstonejs/adapters 5.6.8
``createFromDICOMSegBuffer`` (what OHIF 3.13.2's SEG extension calls) in Node.js
(tests/viewer/seg_in_viewer.mjs): every segment hydrates, with its display colour, on
every sagittal slice it lies on, the herniated material (issue 19) included: its own
label and magenta, over the disc it came from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom import dcmread

import dicomgen
from models.types import ModelId, SeriesMasks
from peers import dciodvfy
from viewer_node import seg_in_viewer
from workers.results.identity import ResultIdentity, ResultKind, inputs_digest
from workers.results.seg import HERNIATION_COLOUR, build_seg, display_rgb

MODEL = ModelId("spinenode-test-model", "0.0.1")


def test_seg_hydrates_in_3d_with_colours(tmp_path: Path) -> None:
    st = dicomgen.write_study(tmp_path / "src", seed=91, rows=96, cols=96,
                              series=(dicomgen.SeriesSpec("SAG T2", "sagittal", 9, "T2"),))
    headers = [dcmread(p, stop_before_pixels=True) for p in st.paths]
    headers.sort(key=lambda d: int(d.InstanceNumber))
    labels = np.zeros((len(headers), 96, 96), dtype=np.uint8)
    for j in range(2, 7):
        labels[j, 20:26, 30:60] = 1
    for j in range(3, 6):
        labels[j, 10:80, 62:70] = 2
        labels[j, 21:25, 55:64] = 3  # herniated material: over the back of the disc, beyond it, into the canal
    masks = SeriesMasks(str(headers[0].SeriesInstanceUID), tuple(str(d.SOPInstanceUID) for d in headers), labels,
                        {1: "disc L4-L5", 2: "spinal canal", 3: "herniated material L4-L5"}, MODEL)
    identity = ResultIdentity(str(headers[0].StudyInstanceUID), ResultKind.SEG, MODEL.name, MODEL.version,
                              inputs_digest(str(d.SOPInstanceUID) for d in headers))
    path = tmp_path / "seg.dcm"
    build_seg(masks, headers, identity, MODEL).save_as(path)
    assert dciodvfy(path).errors == []

    out = seg_in_viewer(path, headers, tmp_path)
    assert out["warnings"] == []
    segs = {s["label"]: s for s in out["segments"]}
    assert sorted(segs) == ["disc L4-L5", "herniated material L4-L5", "spinal canal"]
    uid = [str(d.SOPInstanceUID) for d in headers]
    hern = segs["herniated material L4-L5"]
    assert hern["slices"] == sorted(uid[3:6]) and hern["pixels"] == 3 * 4 * 9
    assert segs["disc L4-L5"]["slices"] == sorted(uid[2:7])
    assert segs["disc L4-L5"]["pixels"] == 5 * 6 * 30 - 3 * 4 * 5  # less the herniated material painted over it
    assert segs["spinal canal"]["slices"] == sorted(uid[3:6]) and segs["spinal canal"]["pixels"] == 3 * 70 * 8 - 3 * 4 * 2
    assert display_rgb("herniated material L4-L5") == HERNIATION_COLOUR
    for label, s in segs.items():  # the colour the viewer shows is the one the node chose
        assert s["rgb"] is not None
        assert max(abs(a - b) for a, b in zip(s["rgb"], display_rgb(label))) <= 1, (label, s["rgb"])
