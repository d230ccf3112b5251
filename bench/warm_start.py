"""Cold vs warm analysis: seconds per study for the first N studies a worker process sees,
with and without the start-up warm-up (``workers.warmup``).

Usage::

    python bench/warm_start.py --data DIR [--studies 5] [--device cpu]

``DIR`` is an RSNA-layout dataset (``spinenode phantom DIR --studies 5 ...``). Each
mode runs in a fresh Python process (``--mode cold|warm`` runs one inside): the warm
mode first calls ``warm_analyzer`` (timed apart), then both analyse the same studies in
order through ``workers.analysis.run_analysis``; the analyzer cache loads it on first use
as the analyze stage does. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _one_mode(data: Path, studies: int, device: str, warm: bool) -> dict[str, object]:
    from pydicom import dcmread

    from spinenode.core.settings import load_settings
    from workers.analysis import AnalyzerCache, run_analysis
    from workers.warmup import warm_analyzer

    settings = load_settings(data_dir=Path(os.environ.get("TMPDIR", "/tmp")) / "spinenode-bench-warm", device=device)
    warm_s = None
    analyzers = AnalyzerCache()
    if warm:
        t = time.perf_counter()
        warm_analyzer(settings, analyzers)
        warm_s = time.perf_counter() - t
    dirs = sorted(p for p in (data / "train_images").iterdir() if p.is_dir())[:studies]
    seconds: list[float] = []
    levels: list[int] = []
    for d in dirs:
        series = {}
        for s in sorted(p for p in d.iterdir() if p.is_dir()):
            files = sorted(s.glob("*.dcm"))
            head = dcmread(files[0], stop_before_pixels=True)
            series[str(head.SeriesInstanceUID)] = files
        uid = str(head.StudyInstanceUID)
        t = time.perf_counter()
        outcome = run_analysis(analyzers.get(settings), uid, series, "lumbar")
        seconds.append(time.perf_counter() - t)
        levels.append(len(getattr(getattr(outcome, "findings", None), "levels", ())))
    return {"warmup_s": warm_s, "seconds": seconds, "levels": levels}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--studies", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--mode", choices=("cold", "warm"))
    args = ap.parse_args(argv)
    if args.mode:
        print(json.dumps(_one_mode(args.data, args.studies, args.device, args.mode == "warm")))
        return 0
    rows = {}
    for mode in ("cold", "warm"):
        out = subprocess.run([sys.executable, __file__, "--data", str(args.data), "--studies", str(args.studies),
                              "--device", args.device, "--mode", mode], capture_output=True, text=True, check=True)
        rows[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    load = os.getloadavg()[0]
    print(f"analysis seconds per study, {args.device}, load {load:.1f}")
    print("| mode | warm-up s | " + " | ".join(f"study {i + 1}" for i in range(args.studies)) + " | first / last |")
    print("| --- | ---: | " + " | ".join("---:" for _ in range(args.studies)) + " | ---: |")
    for mode, r in rows.items():
        sec = r["seconds"]
        w = f"{r['warmup_s']:.1f}" if r["warmup_s"] is not None else "-"
        print(f"| {mode} | {w} | " + " | ".join(f"{s:.2f}" for s in sec) + f" | {sec[0] / sec[-1]:.1f}x |")
        print("|   levels graded | | " + " | ".join(str(n) for n in r["levels"]) + " | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
