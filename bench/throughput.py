"""Studies per minute and CPU per study with workers on "other hosts": one analysis
(gpu-queue) worker and 1 or 2 cpu/export workers, each with its own DATA_DIR, reaching the
node only through Redis, PostgreSQL and NODE_URL (WADO-RS / STOW-RS), Orthanc as the PACS.

1. **Latency**: workers started, then ``--studies`` phantom lumbar MR studies sent one
   after another with DCMTK storescu; the clock runs from storescu's return (last
   instance stored) until Orthanc holds the SR, SEG and key image. The first study is
   the cold one (the analysis worker warms its models at start, before it takes work).
2. **Throughput and CPU**: for each ``--analyze-batch`` value (the analysis worker's
   ANALYZE_BATCH, worker restarted), ``--burst`` studies sent back to back with 1 and
   then 2 cpu/export workers: studies per minute from the first send to the last study
   DONE, and the CPU time (user + system, from /proc) each process tree used during the
   burst, per study. The analyzer's own CPU comes from the analyze events
   ("... s CPU; batch of N"); "outside inference" is the workers' CPU less that: series
   classification, fetching, reading, masks, encoding, export, broker and database
   hand-offs. The node's CPU (receiving the C-STOREs, serving WADO-RS, taking STOW-RS,
   scheduling) is shown apart.

Every figure is printed with the 1-minute load average at its start and end: on a shared
machine, compare CPU columns rather than seconds. Prints tables (``--json`` for JSON);
asserts nothing. From the repository root::

    .venv/bin/python bench/throughput.py --studies 4 --burst 6 --analyze-batch 1,4

All traffic goes to 127.0.0.1; every process started here is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
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
#: Seconds of no work over which the idle CPU of each process is measured.
IDLE_SECONDS = 15.0
_TICK = os.sysconf("SC_CLK_TCK")
_ANALYZER_CPU = re.compile(r"graded in [0-9.]+ s \(([0-9.]+) s CPU; batch of (\d+)\)")


def _phantoms(out: Path, n: int, seed: int) -> list[tuple[str, list[Path]]]:
    subprocess.run([sys.executable, "-m", "spinenode_app.cli", "phantom", str(out), "--studies", str(n), "--seed",
                    str(seed), "--no-masks"], check=True, capture_output=True)
    studies = []
    for d in sorted(p for p in (out / "train_images").iterdir() if p.is_dir()):
        files = sorted(d.rglob("*.dcm"))
        studies.append((str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID), files))
    return studies


def _worker(work: Path, node: Node, queues: str, name: str, **extra: str) -> SpinenodeProcess:
    env = {k: v for k, v in node.env.items() if k in (
        "SPINENODE_BROKER_URL", "SPINENODE_DATABASE_URL", "SPINENODE_DESTINATIONS", "SPINENODE_WORKER_TOKEN")}
    env.update({"SPINENODE_DATA_DIR": str(work / name / "data"), "SPINENODE_NODE_URL": node.url(""),
                "SPINENODE_DEVICE": "cpu", "SPINENODE_LOG_LEVEL": "WARNING"})
    env.update({f"SPINENODE_{k.upper()}": v for k, v in extra.items()})
    (work / name).mkdir(parents=True, exist_ok=True)
    proc = SpinenodeProcess(work / name, ["worker", "--queues", queues], env, name)
    proc.start()
    return proc


def _wait_workers(node: Node, n: int) -> None:
    wait_until(lambda: len(node.api("/api/queue")["workers"]) >= n, 300, interval=0.5, what=f"{n} workers")


def _results_in(pacs: OrthancServer, uid: str) -> bool:
    return len(pacs.study_instances(uid)) >= 3


def _tree_cpu(pid: int) -> float:
    """User + system CPU seconds of a process and its live descendants (and their reaped children)."""
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(entry.name)] = fields
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        f = stats.get(p)
        if f is None:
            continue
        total += sum(int(x) for x in f[11:15]) / _TICK  # utime stime cutime cstime
        todo += children.get(p, [])
    return total


def _stage_times(study: dict[str, Any], stored: float, seen: float) -> dict[str, float]:
    """Where a study's latency went, from its events (UTC timestamps; same host clock):
    quiet period and sweep until QUEUED, then each stage until the next state (hand-offs
    included), and export until Orthanc was seen to hold the results (polled every 0.1 s)."""
    import datetime as dt

    first: dict[str, float] = {}
    for e in study.get("events", []):
        if e.get("state") and e["state"] not in first:
            first[e["state"]] = dt.datetime.fromisoformat(e["at"]).timestamp()
    marks = [("quiet period + sweep", stored, first.get("QUEUED")),
             ("analyze (hand-off, headers, pixels, analyzer, masks)", first.get("QUEUED"), first.get("ENCODING")),
             ("encode (hand-off, headers, SR/SEG/key image, STOW-RS)", first.get("ENCODING"), first.get("EXPORTING")),
             ("export (hand-off, C-STORE) + seen in Orthanc", first.get("EXPORTING"), seen)]
    return {name: b - a for name, a, b in marks if a is not None and b is not None}


def _load() -> float:
    return os.getloadavg()[0]


def _burst(node: Node, pacs: OrthancServer, procs: dict[str, list[SpinenodeProcess]], studies: list[Any]
           ) -> dict[str, Any]:
    """Send the studies back to back; rate, and CPU per study of each process group."""
    def cpu() -> dict[str, float]:
        out = {"node": _tree_cpu(node.proc.pid)}  # type: ignore[union-attr]
        for group, ps in procs.items():
            out[group] = sum(_tree_cpu(p.proc.pid) for p in ps if p.proc is not None)  # type: ignore[union-attr]
        return out

    load0, before, t0 = _load(), cpu(), time.monotonic()
    for _, files in studies:
        storescu(files, "127.0.0.1", node.dicom_port, "SPINENODE", check=True)
    wait_until(lambda: all((node.study(u) or {}).get("state") in ("DONE", "FAILED") for u, _ in studies),
               1800, interval=0.5, what="the burst")
    seconds = time.monotonic() - t0
    after, load1 = cpu(), _load()
    rows = [node.study(u) or {} for u, _ in studies]
    done = sum(r.get("state") == "DONE" for r in rows)
    analyzer_cpu, batches = 0.0, []
    for r in rows:
        for e in r.get("events", []):
            m = _ANALYZER_CPU.search(e.get("detail") or "")
            if m:
                analyzer_cpu += float(m.group(1))
                batches.append(int(m.group(2)))
    n = max(1, len(studies))
    per = {k: (after[k] - before[k]) / n for k in after}
    workers = sum(v for k, v in per.items() if k != "node")
    return {
        "studies": len(studies), "done": done, "seconds": seconds, "studies_per_min": 60.0 * done / seconds,
        "load": [load0, load1], "cpu_per_study_s": per, "analyzer_cpu_per_study_s": analyzer_cpu / n,
        "workers_cpu_outside_inference_per_study_s": workers - analyzer_cpu / n,
        "mean_batch": statistics.mean(batches) if batches else float("nan"),
    }


def run(n_latency: int, n_burst: int, batch_sizes: list[int]) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="spinenode-bench-throughput-"))
    out: dict[str, Any] = {"machine": f"{platform.node()} {os.cpu_count()} CPU", "bursts": []}
    with RedisServer(work / "redis") as redis, PostgresServer() as pg, OrthancServer(work / "orthanc") as pacs:
        node = Node(work / "node", broker_url=redis.url, database_url=pg.url_for(pg.unique_database()),
                    destinations=pacs.destination, stable_seconds=2, sweep_interval=0.2, worker_token=TOKEN)
        node.start()
        analysis: SpinenodeProcess | None = None
        cpus: list[SpinenodeProcess] = []
        try:
            analysis = _worker(work, node, "gpu", "analysis-b1", analyze_batch=str(batch_sizes[0]))
            cpus.append(_worker(work, node, "cpu,export", "cpu-1"))
            _wait_workers(node, 2)
            latency: list[float] = []
            parts: list[dict[str, float]] = []
            load0 = _load()
            for uid, files in _phantoms(work / "lat", n_latency, 5001):
                storescu(files, "127.0.0.1", node.dicom_port, "SPINENODE", check=True)
                t0, wall0 = time.monotonic(), time.time()
                wait_until(lambda uid=uid: _results_in(pacs, uid), 600, interval=0.1, what="results in Orthanc")
                latency.append(time.monotonic() - t0)
                parts.append(_stage_times(node.study(uid) or {}, wall0, wall0 + latency[-1]))
            out["latency"] = {"seconds": latency, "first_s": latency[0], "load": [load0, _load()], "parts": parts,
                              "warm_median_s": statistics.median(latency[1:]) if len(latency) > 1 else float("nan")}
            # idle CPU of each process tree (sweeps, heartbeats, broker polling), to read the bursts against
            trees = {"node": [node.proc.pid], "analysis": [analysis.proc.pid],  # type: ignore[union-attr]
                     "cpu/export": [w.proc.pid for w in cpus]}  # type: ignore[union-attr]
            before, t_idle = {k: sum(map(_tree_cpu, v)) for k, v in trees.items()}, time.monotonic()
            time.sleep(IDLE_SECONDS)
            span = time.monotonic() - t_idle
            out["idle_cpu_per_s"] = {k: (sum(map(_tree_cpu, v)) - before[k]) / span for k, v in trees.items()}
            seed, current = 5100, batch_sizes[0]
            for b in batch_sizes if n_burst > 0 else []:  # --burst 0: the latency series only
                if b != current:
                    analysis.stop()
                    _wait_queue_workers(node, "gpu", 0)
                    analysis, current = _worker(work, node, "gpu", f"analysis-b{b}", analyze_batch=str(b)), b
                    _wait_queue_workers(node, "gpu", 1)  # its heartbeat row appears once it is warm
                for n_cpu in (1, 2):
                    while len(cpus) < n_cpu:
                        cpus.append(_worker(work, node, "cpu,export", f"cpu-{len(cpus) + 1}"))
                    while len(cpus) > n_cpu:
                        cpus.pop().stop()
                    _wait_queue_workers(node, "cpu", n_cpu)
                    seed += 1
                    burst = _phantoms(work / f"burst-{seed}", n_burst, seed)
                    r = _burst(node, pacs, {"analysis": [analysis], "cpu/export": cpus[:n_cpu]}, burst)
                    r.update({"analyze_batch": b, "cpu_workers": n_cpu})
                    out["bursts"].append(r)
            return out
        finally:
            if analysis is not None:
                analysis.stop()
            for w in cpus:
                w.stop()
            node.close()


def _wait_queue_workers(node: Node, queue: str, n: int) -> None:
    """Exactly ``n`` workers of ``queue`` in the node's list (a stopped one removes its row;
    a started one writes it when it is ready, an analysis worker once its models are warm)."""
    wait_until(lambda: sum(queue in w["queues"] for w in node.api("/api/queue")["workers"]) == n, 600,
               interval=0.5, what=f"{n} {queue} worker(s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=4, help="studies for the latency series")
    ap.add_argument("--burst", type=int, default=6, help="studies per throughput burst (0: latency only)")
    ap.add_argument("--analyze-batch", default="1,4", help="ANALYZE_BATCH values of the analysis worker")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    r = run(args.studies, args.burst, [int(x) for x in args.analyze_batch.split(",")])
    if args.json:
        print(json.dumps(r, indent=2))
        return
    lat = r["latency"]
    print(f"spinenode, workers without shared storage ({r['machine']}), STABLE_SECONDS=2, Redis + PostgreSQL, Orthanc")
    print(f"latency, last instance stored -> results in Orthanc (load {lat['load'][0]:.1f} -> {lat['load'][1]:.1f}): "
          f"first study {lat['first_s']:.1f} s, later median {lat['warm_median_s']:.1f} s "
          f"(every run: {' '.join(f'{x:.1f}' for x in lat['seconds'])})")
    names = list(dict.fromkeys(k for p in lat["parts"] for k in p))
    print("| study | " + " | ".join(names) + " | total |")
    print("| ---: |" + " ---: |" * (len(names) + 1))
    for i, (p, total) in enumerate(zip(lat["parts"], lat["seconds"])):
        print(f"| {i + 1}{' (first)' if i == 0 else ''} | " + " | ".join(f"{p.get(k, float('nan')):.2f}" for k in names)
              + f" | {total:.2f} |")
    idle = r["idle_cpu_per_s"]
    print("idle CPU, s per s (sweeps every 0.2 s, heartbeats, broker polling): "
          + ", ".join(f"{k} {v:.3f}" for k, v in idle.items()))
    print("| ANALYZE_BATCH | cpu/export workers | studies/min | DONE | mean batch | load | node CPU s/study "
          "| analysis worker CPU s/study | of which analyzer | cpu/export CPU s/study | workers' CPU outside inference s/study |")
    print("| ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for b in r["bursts"]:
        c = b["cpu_per_study_s"]
        print(f"| {b['analyze_batch']} | {b['cpu_workers']} | {b['studies_per_min']:.1f} | {b['done']}/{b['studies']} "
              f"| {b['mean_batch']:.1f} | {b['load'][0]:.1f} -> {b['load'][1]:.1f} | {c['node']:.2f} "
              f"| {c['analysis']:.2f} | {b['analyzer_cpu_per_study_s']:.2f} | {c['cpu/export']:.2f} "
              f"| {b['workers_cpu_outside_inference_per_study_s']:.2f} |")


if __name__ == "__main__":
    main()
