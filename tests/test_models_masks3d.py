"""spread_labels: structures found on the middle slice followed slice by slice outwards,
with a scripted detector (a pure function here; the real detector runs in the e2e test)."""

from __future__ import annotations

import numpy as np

from models.detector import SPINAL_CANAL, SegDetection
from models.masks3d import spread_labels
from models.types import Box


def _det(cls: str, box: Box, shape: tuple[int, int], conf: float = 0.9) -> SegDetection:
    mask = np.zeros(shape, dtype=bool)
    mask[int(box.y0):int(box.y1), int(box.x0):int(box.x1)] = True
    return SegDetection(cls, conf, box, mask)


def test_levels_follow_overlapping_detections_and_stop_at_a_gap() -> None:
    n, shape, k = 9, (64, 64), 4
    l45, l5s1 = Box(10, 10, 40, 16), Box(10, 30, 40, 36)
    boxes = {"L4-L5": l45, "L5-S1": l5s1}
    labels = np.zeros((n, *shape), dtype=np.uint8)
    labels[k, 10:16, 10:40] = 1
    labels[k, 30:36, 10:40] = 2
    labels[k, 5:60, 45:50] = 3
    segments = {1: "disc L4-L5", 2: "disc L5-S1", 3: "spinal canal"}
    per_slice: dict[int, list[SegDetection]] = {
        3: [_det("L4-L5", Box(12, 10, 38, 16), shape), _det("L5-S1", Box(12, 30, 38, 36), shape),
            _det(SPINAL_CANAL, Box(45, 5, 50, 60), shape)],
        2: [_det("L4-L5", Box(14, 11, 36, 15), shape), _det("L5-S1", Box(14, 31, 36, 35), shape)],
        1: [_det("L4-L5", Box(14, 11, 36, 15), shape)],
        0: [_det("L4-L5", Box(14, 11, 36, 15), shape), _det("L5-S1", Box(14, 31, 36, 35), shape)],
        5: [_det("L3-L4", Box(12, 11, 38, 15), shape),  # named differently, same place: still L4-L5
            _det("L5-S1", Box(50, 50, 60, 60), shape)],  # far from L5-S1's box: not it
        6: [_det("L4-L5", Box(14, 11, 36, 15), shape, conf=0.1)],  # below the mask confidence
        7: [_det("L4-L5", Box(14, 11, 36, 15), shape)],
    }
    calls: list[int] = []

    def detect(images: list[np.ndarray]) -> list[list[SegDetection]]:
        calls.append(len(images))
        order = [3, 2, 1, 0, 5, 6, 7, 8]
        return [per_slice.get(j, []) for j in order[: len(images)]]

    pixels = np.zeros((n, *shape), dtype=np.float32)
    out = spread_labels(labels, segments, boxes, pixels, k, 3.5, detect)
    assert calls == [8]  # one batch
    on = {v: sorted(j for j in range(n) if (out[j] == v).any()) for v in (1, 2, 3)}
    assert on[1] == [0, 1, 2, 3, 4, 5]  # stops at slice 6 (low confidence), never reaches 7
    assert on[2] == [2, 3, 4]  # missing on slice 1: slice 0 is not reached; slice 5's box is elsewhere
    assert on[3] == [3, 4]
    assert np.array_equal(out[k], labels[k]) and out is not labels
