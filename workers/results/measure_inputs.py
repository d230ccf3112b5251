"""What the SR's measurements need from the source images, read through the encode
stage's ``EncodeInputs.source_image`` (so a worker on another host fetches them too):
the pixels of the slices the levels were found on (the canal's ends are found on the
image, models/measure.py), and the axial T2 series the analysis used (the dural sac
area, models/sac_area.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from pydicom.dataset import Dataset

from models.measure import CANAL_AP_DIAMETER, LinearMeasurement
from models.sac_area import AreaMeasurement, sac_areas
from workers.results.builder import EncodeInputs

#: The analysis record's role of the series the dural sac area is measured on.
AXIAL_ROLE = "axial_t2"


def level_images(inputs: EncodeInputs) -> dict[tuple[str, int | None], np.ndarray]:
    """The pixels of the levels' slices (usually one image) by (SOP Instance UID, frame)."""
    out: dict[tuple[str, int | None], np.ndarray] = {}
    for lf in inputs.record.findings.levels:
        lv = lf.level
        key = (lv.sop_instance_uid, lv.frame_number)
        if key in out:
            continue
        ds = inputs.source_image(lv.series_uid, lv.sop_instance_uid)
        pixels = ds.pixel_array
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            pixels = pixels[(lv.frame_number or 1) - 1]
        out[key] = pixels
    return out


def dural_sac_areas(inputs: EncodeInputs, measurements: Mapping[str, Sequence[LinearMeasurement]]
                    ) -> dict[str, AreaMeasurement]:
    """Dural sac area per level on the axial T2 series the analysis used, seeded by the
    levels' canal lines; none without that series or without canal lines."""
    lines = {lv: m for lv, ms in measurements.items() for m in ms if m.kind == CANAL_AP_DIAMETER}
    axial_uid = next((u.series_uid for u in inputs.record.series if u.role == AXIAL_ROLE), None)
    if not lines or axial_uid is None:
        return {}
    headers: list[Dataset] = [ds for ds in inputs.evidence if str(ds.SeriesInstanceUID) == axial_uid]
    axial = [inputs.source_image(axial_uid, str(ds.SOPInstanceUID)) for ds in headers]
    return sac_areas(lines, {str(ds.SOPInstanceUID): ds for ds in inputs.evidence}, axial)
