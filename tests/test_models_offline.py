"""No network access while importing, building and running ultralytics through models.offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import json, socket, sys
    attempts = []

    def _refuse(*args, **kwargs):
        attempts.append(repr(args[:2])[:80])
        raise OSError("network access attempted during an offline run")

    socket.socket.connect = _refuse
    socket.socket.connect_ex = _refuse
    socket.create_connection = _refuse
    socket.getaddrinfo = _refuse

    import numpy as np
    from pathlib import Path
    from models.offline import load_ultralytics
    cfg = Path(sys.argv[1])
    ul = load_ultralytics(cfg)
    model = ul.YOLO("yolov8n-seg.yaml")
    img = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    res = model.predict(img, imgsz=64, conf=0.01, device="cpu", verbose=False)
    from models.analyzer import SpineAnalyzer
    from models.registry import PACKAGE_WEIGHTS_DIR, Registry
    if {e.kind for e in Registry(PACKAGE_WEIGHTS_DIR).entries()} >= {"detector", "grader"}:
        an = SpineAnalyzer.from_registry(device="cpu")  # the shipped weights, sha256-checked
        an.detector.detect([img])
    print(json.dumps({"attempts": attempts, "n_results": len(res),
                      "font": (cfg / "Ultralytics" / "Arial.ttf").is_file()}))
    """
)


def test_no_network_during_import_build_predict(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for k in ("YOLO_OFFLINE", "YOLO_AUTOINSTALL", "YOLO_CONFIG_DIR", "SPINENODE_YOLO_DIR"):
        env.pop(k, None)
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "yolo")],
        capture_output=True, text=True, timeout=240, env=env,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["attempts"] == [], out
    assert out["n_results"] == 1
    assert out["font"] is True


def test_guard_catches_a_connection(tmp_path: Path) -> None:
    """The guard itself works: an unconfigured ultralytics import probes the network."""
    script = SCRIPT.split("import numpy as np")[0] + textwrap.dedent(
        """
        import os
        os.environ.pop("YOLO_OFFLINE", None)
        import ultralytics.utils
        print(json.dumps({"attempts": attempts}))
        """
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "YOLO_CONFIG_DIR": str(tmp_path)}
    env.pop("YOLO_OFFLINE", None)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["attempts"], "guard saw nothing"
