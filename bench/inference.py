"""Inference speed of the SpineAnalyzer: seconds per study on CPU and GPU.

Usage::

    python bench/inference.py --data DIR [--weights DIR] [--device cpu|cuda|auto]
                              [--studies N] [--batch-studies B] [--threads T]
                              [--recess-views V] [--json OUT]

``DIR`` is an RSNA-layout dataset (``spinenode phantom`` writes one). DICOM
files are read into memory first; the timed part is the analyzer (series
selection, volume assembly, detection, level naming, crops, grading), which is
what a GPU worker does per study. Reading the files is timed separately.
``--recess-views 1`` grades each subarticular recess from its learned point only
(the shipped analyzer averages five views). Prints a table; ``--json`` also
writes the numbers to a file.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--weights", type=Path, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--studies", type=int, default=10)
    ap.add_argument("--batch-studies", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--recess-views", type=int, default=None,
                    help="views per subarticular recess (default: the analyzer's own, RECESS_SHIFTS_MM)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from models import rsna
    from models.analyzer import RECESS_SHIFTS_MM, SpineAnalyzer, read_study_dir

    if args.recess_views is not None and not 1 <= args.recess_views <= len(RECESS_SHIFTS_MM):
        ap.error(f"--recess-views must be 1 to {len(RECESS_SHIFTS_MM)}")

    ds = rsna.read_dataset(args.data)
    ids = list(ds.study_ids)[: args.studies]
    t0 = time.perf_counter()
    studies = [(str(s), read_study_dir(ds.root / f"{ds.split}_images" / str(s)), ds.region) for s in ids]
    read_s = (time.perf_counter() - t0) / len(studies)
    t0 = time.perf_counter()
    analyzer = SpineAnalyzer.from_registry(args.weights, device=args.device)
    load_s = time.perf_counter() - t0
    if args.recess_views is not None:
        analyzer.recess_shifts_mm = RECESS_SHIFTS_MM[: args.recess_views]
    analyzer.analyze_many(studies[:1])  # warm-up (lazy init, CUDA kernels)
    per_study: list[float] = []
    for _ in range(args.repeats):
        for start in range(0, len(studies), args.batch_studies):
            chunk = studies[start:start + args.batch_studies]
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            t = time.perf_counter()
            analyzer.analyze_many(chunk)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            per_study.append((time.perf_counter() - t) / len(chunk))
    n_series = statistics.mean(len(s[1]) for s in studies)
    report = {
        "device": str(analyzer.grader.device),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() and args.device != "cpu" else None,
        "cpu": platform.processor() or platform.machine(),
        "threads": args.threads, "studies": len(studies), "series_per_study": n_series,
        "batch_studies": args.batch_studies, "region": ds.region,
        "recess_views": len(analyzer.recess_shifts_mm),
        "seconds_per_study_mean": statistics.mean(per_study),
        "seconds_per_study_median": statistics.median(per_study),
        "read_seconds_per_study": read_s, "model_load_seconds": load_s,
        "model": analyzer.model_id.to_json(),
    }
    print(_table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def _table(r: dict[str, Any]) -> str:
    head = (f"spinenode analyzer {r['model']['version']}: {r['studies']} {r['region']} studies, "
            f"{r['series_per_study']:.1f} "
            f"series each, device {r['device']}{' (' + str(r['gpu']) + ')' if r['gpu'] else ''}, "
            f"{r['threads']} threads, batch {r['batch_studies']}, {r['recess_views']} views per recess")
    rows = [("analyzer, s per study (mean)", r["seconds_per_study_mean"]),
            ("analyzer, s per study (median)", r["seconds_per_study_median"]),
            ("reading the files, s per study", r["read_seconds_per_study"]),
            ("loading the models, s (once per process)", r["model_load_seconds"])]
    width = max(len(k) for k, _ in rows)
    lines = [head, "", f"| {'measure'.ljust(width)} | seconds |", f"| {'-' * width} | ------: |"]
    lines += [f"| {k.ljust(width)} | {float(v):7.3f} |" for k, v in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
