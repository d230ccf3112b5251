"""Run the viewer's own DICOM code (Node.js, tests/viewer/) on result objects.

The npm packages are the versions OHIF 3.13.2 ships (tests/viewer/package.json, with
its package-lock.json), installed by ``scripts/install-test-deps.sh`` into
tests/viewer/node_modules; nothing is downloaded at test time. A missing ``node`` or
a missing install is an error, never a skip.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

VIEWER_DIR = Path(__file__).resolve().parent / "viewer"


class ViewerToolsMissing(RuntimeError):
    pass


def node_binary() -> str:
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        raise ViewerToolsMissing("node is not installed: run scripts/install-test-deps.sh (Debian nodejs)")
    if not (VIEWER_DIR / "node_modules" / "@cornerstonejs" / "adapters").is_dir():
        raise ViewerToolsMissing("tests/viewer/node_modules is missing: run scripts/install-test-deps.sh (npm ci)")
    return node


def image_headers_json(headers: Iterable[Dataset], path: Path) -> Path:
    """The referenced images' geometry, as the viewer's metadata provider serves it."""
    out: dict[str, dict[str, Any]] = {}
    for ds in headers:
        iop = [float(v) for v in ds.ImageOrientationPatient]
        out[str(ds.SOPInstanceUID)] = {
            "frameOfReferenceUID": str(ds.FrameOfReferenceUID),
            "imagePositionPatient": [float(v) for v in ds.ImagePositionPatient],
            "rowCosines": iop[:3], "columnCosines": iop[3:],
            "rowPixelSpacing": float(ds.PixelSpacing[0]), "columnPixelSpacing": float(ds.PixelSpacing[1]),
            "rows": int(ds.Rows), "columns": int(ds.Columns),
            "sopClassUID": str(ds.SOPClassUID), "seriesInstanceUID": str(ds.SeriesInstanceUID),
            "studyInstanceUID": str(ds.StudyInstanceUID),
        }
    path.write_text(json.dumps(out))
    return path


def run_script(script: str, *args: Path | str, timeout: float = 120.0) -> dict[str, Any]:
    """Run ``tests/viewer/<script>`` with node and return its JSON output."""
    proc = subprocess.run([node_binary(), str(VIEWER_DIR / script), *map(str, args)], cwd=VIEWER_DIR,
                          capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"{script} failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def sr_in_viewer(sr_path: Path, headers: Iterable[Dataset], workdir: Path) -> dict[str, Any]:
    """``{"toolState", "display", "warnings"}`` of sr_in_viewer.mjs for one SR file."""
    images = image_headers_json(headers, workdir / f"{sr_path.stem}-images.json")
    return run_script("sr_in_viewer.mjs", sr_path, images)


def seg_in_viewer(seg_path: Path, headers: Iterable[Dataset], workdir: Path) -> dict[str, Any]:
    """``{"segments": [{label, rgb, slices, pixels}], "warnings"}`` of seg_in_viewer.mjs."""
    images = image_headers_json(headers, workdir / f"{seg_path.stem}-images.json")
    return run_script("seg_in_viewer.mjs", seg_path, images)
