"""Studies per minute with workers on "other hosts": one analysis (gpu-queue) worker and
1 or 2 cpu/export workers, each with its own DATA_DIR, reaching the node only through
Redis, PostgreSQL and NODE_URL (WADO-RS / STOW-RS), Orthanc as the PACS.

1. **Latency**: workers started, then ``--studies`` phantom lumbar MR studies sent one
   after another with DCMTK storescu; the clock runs from storescu's return (last
   instance stored) until Orthanc holds the SR, SEG and key image. The first study is
   the cold one (the analysis worker warms its models at start, before it takes work).
2. **Throughput**: ``--burst`` studies sent back to back, with 1 and then 2 cpu/export
   workers beside the one analysis worker: studies per minute from the first send to
   the last study DONE.

Prints a table (``--json`` for JSON); asserts nothing. From the repository root::

    .venv/bin/python bench/throughput.py --studies 4 --burst 6

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

from nodeproc import Node, SpinenodeProcess  # noqa: E402
from peers import OrthancServer, PostgresServer, RedisServer, storescu, wait_until  # noqa: E402
from pydicom import dcmread  # noqa: E402

TOKEN = "bench-worker-token"


def _phantoms(out: Path, n: int, seed: int) -> list[tuple[str, list[Path]]]:
    subprocess.run([sys.executable, "-m", "spinenode.app.cli", "phantom", str(out), "--studies", str(n), "--seed",
                    str(seed), "--no-masks"], check=True, capture_output=True)
    studies = []
    for d in sorted(p for p in (out / "train_images").iterdir() if p.is_dir()):
        files = sorted(d.rglob("*.dcm"))
        studies.append((str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID), files))
    return studies


def _worker(work: Path, node: Node, queues: str, name: str) -> SpinenodeProcess:
    env = {k: v for k, v in node.env.items() if k in (
        "SPINENODE_BROKER_URL", "SPINENODE_DATABASE_URL", "SPINENODE_DESTINATIONS", "SPINENODE_WORKER_TOKEN")}
    env.update({"SPINENODE_DATA_DIR": str(work / name / "data"), "SPINENODE_NODE_URL": node.url(""),
                "SPINENODE_DEVICE": "cpu", "SPINENODE_LOG_LEVEL": "WARNING"})
    (work / name).mkdir(parents=True, exist_ok=True)
    proc = SpinenodeProcess(work / name, ["worker", "--queues", queues], env, name)
    proc.start()
    return proc


def _wait_workers(node: Node, n: int) -> None:
    wait_until(lambda: len(node.api("/api/queue")["workers"]) >= n, 300, interval=0.5, what=f"{n} workers")


def _results_in(pacs: OrthancServer, uid: str) -> bool:
    return len(pacs.study_instances(uid)) >= 3


def run(n_latency: int, n_burst: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="spinenode-bench-throughput-"))
    out: dict[str, Any] = {"machine": f"{platform.node()} {os.cpu_count()} CPU", "load_avg_start": os.getloadavg()[0]}
    with RedisServer(work / "redis") as redis, PostgresServer() as pg, OrthancServer(work / "orthanc") as pacs:
        node = Node(work / "node", broker_url=redis.url, database_url=pg.url_for(pg.unique_database()),
                    destinations=pacs.destination, stable_seconds=2, sweep_interval=0.2, worker_token=TOKEN)
        node.start()
        workers: list[SpinenodeProcess] = []
        try:
            workers.append(_worker(work, node, "gpu", "analysis"))
            workers.append(_worker(work, node, "cpu,export", "cpu-1"))
            _wait_workers(node, 2)
            latency: list[float] = []
            for uid, files in _phantoms(work / "lat", n_latency, 5001):
                storescu(files, "127.0.0.1", node.dicom_port, "SPINENODE", check=True)
                t0 = time.monotonic()
                wait_until(lambda uid=uid: _results_in(pacs, uid), 600, interval=0.1, what="results in Orthanc")
                latency.append(time.monotonic() - t0)
            out["latency_s"] = latency
            out["first_study_s"] = latency[0]
            out["warm_median_s"] = statistics.median(latency[1:]) if len(latency) > 1 else float("nan")
            for n_cpu, seed in ((1, 5002), (2, 5003)):
                if n_cpu == 2:
                    workers.append(_worker(work, node, "cpu,export", "cpu-2"))
                    _wait_workers(node, 3)
                burst = _phantoms(work / f"burst-{n_cpu}", n_burst, seed)
                t0 = time.monotonic()
                for _, files in burst:
                    storescu(files, "127.0.0.1", node.dicom_port, "SPINENODE", check=True)
                wait_until(lambda burst=burst: all((node.study(u) or {}).get("state") in ("DONE", "FAILED")
                                                   for u, _ in burst), 1800, interval=0.5, what="the burst")
                seconds = time.monotonic() - t0
                done = sum((node.study(u) or {}).get("state") == "DONE" for u, _ in burst)
                out[f"studies_per_min_{n_cpu}cpu"] = 60.0 * done / seconds
                out[f"burst_done_{n_cpu}cpu"] = f"{done}/{len(burst)}"
            out["load_avg_end"] = os.getloadavg()[0]
            return out
        finally:
            for w in workers:
                w.stop()
            node.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=4, help="studies for the latency series")
    ap.add_argument("--burst", type=int, default=6, help="studies per throughput burst")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    r = run(args.studies, args.burst)
    if args.json:
        print(json.dumps(r, indent=2))
        return
    print(f"spinenode, workers without shared storage ({r['machine']}, load {r['load_avg_start']:.1f}"
          f" -> {r['load_avg_end']:.1f}), STABLE_SECONDS=2, Redis + PostgreSQL, Orthanc")
    print(f"{'measure':<62}{'value':>10}")
    print(f"{'last instance stored -> results in Orthanc, first study s':<62}{r['first_study_s']:>10.1f}")
    print(f"{'  the same, later studies (median) s':<62}{r['warm_median_s']:>10.1f}")
    print(f"{'  every run s':<40}{' '.join(f'{x:.1f}' for x in r['latency_s']):>32}")
    for n in (1, 2):
        label = f"studies/min, 1 analysis + {n} cpu/export worker(s) ({r[f'burst_done_{n}cpu']} DONE)"
        print(f"{label:<62}{r[f'studies_per_min_{n}cpu']:>10.1f}")


if __name__ == "__main__":
    main()
