"""End-to-end and worker-throughput benchmark with Orthanc as the PACS.

1. **Latency**: for each of ``--studies`` phantom lumbar MR studies, Orthanc sends the
   study to the node (REST ``/modalities/SPINENODE/store``, which returns when the last
   instance is stored); the clock runs from then until Orthanc holds the SR, SEG and key
   image of that study. ``STABLE_SECONDS=2``; one embedded worker child.
2. **Throughput**: ``--burst`` studies sent back to back, clock from the first send to
   the last study DONE: studies per minute of one worker, and the peak RSS (VmHWM) of
   the node and the worker.

Prints a table (``--json`` for JSON); asserts nothing. Run from the repository root::

    .venv/bin/python bench/e2e.py --studies 5 --burst 10

All traffic goes to 127.0.0.1; every process started here is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from nodeproc import Node  # noqa: E402
from peers import OrthancServer, free_port, wait_until  # noqa: E402
from pydicom import dcmread  # noqa: E402


def _phantoms(out: Path, n: int, seed: int) -> list[tuple[str, list[Path]]]:
    subprocess.run([sys.executable, "-m", "spinenode_app.cli", "phantom", str(out), "--studies", str(n), "--seed",
                    str(seed), "--no-masks"], check=True, capture_output=True)
    studies = []
    for d in sorted(p for p in (out / "train_images").iterdir() if p.is_dir()):
        files = sorted(d.rglob("*.dcm"))
        studies.append((str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID), files))
    return studies


def _peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(n_latency: int, n_burst: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="spinenode-bench-e2e-"))
    node_port = free_port()
    with OrthancServer(work / "orthanc", modalities={"SPINENODE": ("SPINENODE", "127.0.0.1", node_port)}) as pacs:
        node = Node(work / "node", dicom_port=node_port, destinations=pacs.destination, stable_seconds=2,
                    sweep_interval=0.2)
        node.start()
        try:
            latency: list[float] = []
            for uid, files in _phantoms(work / "lat", n_latency, 4001):
                ids = [pacs.upload(p) for p in files]
                pacs.store_to_modality("SPINENODE", ids)
                t0 = time.monotonic()
                wait_until(lambda uid=uid, n=len(files): len(pacs.study_instances(uid)) >= n + 3, 300,
                           interval=0.1, what="results in Orthanc")
                latency.append(time.monotonic() - t0)
            burst = _phantoms(work / "burst", n_burst, 4002)
            ids_per_study = [[pacs.upload(p) for p in files] for _, files in burst]
            t0 = time.monotonic()
            for ids in ids_per_study:
                pacs.store_to_modality("SPINENODE", ids)
            wait_until(lambda: all((node.study(u) or {}).get("state") == "DONE" for u, _ in burst), 1800,
                       interval=0.5, what="the burst to finish")
            burst_s = time.monotonic() - t0
            worker_pid = int(node.api("/api/queue")["workers"][0]["pid"])
            assert node.proc is not None
            return {
                "machine": f"{platform.node()} {os.cpu_count()} CPU",
                "load_avg": os.getloadavg()[0],
                "latency_s": latency,
                "latency_median_s": statistics.median(latency),
                "first_study_s": latency[0],
                "burst_studies": n_burst,
                "burst_s": burst_s,
                "studies_per_min": 60.0 * n_burst / burst_s,
                "node_peak_mb": _peak_mb(node.proc.pid),
                "worker_peak_mb": _peak_mb(worker_pid),
            }
        finally:
            node.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=5, help="studies for the latency series")
    ap.add_argument("--burst", type=int, default=10, help="studies for the throughput burst")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    r = run(args.studies, args.burst)
    if args.json:
        print(json.dumps(r, indent=2))
        return
    print(f"spinenode end to end with Orthanc ({r['machine']}, load {r['load_avg']:.1f}), STABLE_SECONDS=2")
    print(f"{'measure':<52}{'value':>10}")
    print(f"{'last instance stored -> SR+SEG+key image in Orthanc, median s':<52}{r['latency_median_s']:>10.1f}")
    print(f"{'  first study (includes the worker loading the models) s':<52}{r['first_study_s']:>10.1f}")
    print(f"{'  every run s':<40}{' '.join(f'{x:.1f}' for x in r['latency_s']):>22}")
    print(f"{'worker throughput, studies per minute (one CPU worker)':<52}{r['studies_per_min']:>10.1f}")
    print(f"{'peak RSS node MB':<52}{r['node_peak_mb']:>10.0f}")
    print(f"{'peak RSS worker MB':<52}{r['worker_peak_mb']:>10.0f}")


if __name__ == "__main__":
    main()
