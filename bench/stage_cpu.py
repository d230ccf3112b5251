"""CPU seconds per study of the work outside inference, part by part, in one process.

Usage::

    python bench/stage_cpu.py [--data DIR] [--repeat 3] [--profile OUT.prof]

``DIR`` is one phantom lumbar MR study (``spinenode phantom DIR --studies 1 --seed 5001
--no-masks``, as bench/throughput.py makes them; made in a temp dir when not given). The
analyzer runs once (its pass is shown, not counted); then, ``--repeat`` times, the parts
the stages do around it run in-process, on the same calls the stages make:

- **node**: the study's header-only files (every instance cut before its pixel data,
  ``scp_node.admin.dicomweb``), as a remote worker asks for them;
- **analysis worker**: the headers a remote worker reads from them (``workers.spool``), reading the study once and classifying it (``workers.series``),
  the selected series' pixels, saving the masks and the analysis record's JSON;
- **cpu worker**: the record read back, the masks checked and loaded, the headers read
  (``workers.encode``), each builder of ``workers.results.builders`` and the Part 10
  encoding of its object.

These parts leave out network transfers, the database and the broker. The
``remote ...`` rows run the whole analyze and encode stages (``workers.analyze``,
``workers.encode``; no export) as workers with their own DATA_DIR that reach the node
only by WADO-RS/STOW-RS, the node's HTTP app under uvicorn in a thread of this process
(see :class:`RemoteStages`): the worker rows are the stage thread's CPU less the
analyzer's pass, the node rows the rest of the process's CPU meanwhile. bench/throughput.py
measures whole processes under Celery. CPU is ``time.process_time`` / ``time.thread_time``;
the table gives the median of the repeats (a first remote run, paying a fresh process's
lazy set-ups, is not counted). Asserts nothing.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


class Clock:
    """CPU seconds per part, summed over the repeats' runs."""

    def __init__(self) -> None:
        self.runs: list[dict[str, float]] = []

    def new_run(self) -> None:
        self.runs.append({})

    @contextmanager
    def part(self, name: str) -> Iterator[None]:
        t = time.process_time()
        try:
            yield
        finally:
            run = self.runs[-1]
            run[name] = run.get(name, 0.0) + time.process_time() - t


def _study(data: Path) -> tuple[str, dict[str, list[Path]]]:
    from pydicom import dcmread

    d = next(p for p in sorted((data / "train_images").iterdir()) if p.is_dir())
    series: dict[str, list[Path]] = {}
    study_uid = ""
    for s in sorted(p for p in d.iterdir() if p.is_dir()):
        files = sorted(s.glob("*.dcm"))
        head = dcmread(files[0], stop_before_pixels=True)
        series[str(head.SeriesInstanceUID)] = files
        study_uid = str(head.StudyInstanceUID)
    return study_uid, series


def _node_headers(paths: list[Path]) -> list[bytes]:
    """What ``GET /worker/studies/{uid}/headers`` sends (scp_node.admin.dicomweb): each
    file cut before its pixel data."""
    from scp_node.dicomio import header_only

    return [header_only(p) for p in paths]


def _headers_from_parts(parts: list[bytes]) -> list[Any]:
    """What a worker without the study's files makes of them (``SpoolAccess.headers``: the
    datasets, in memory)."""
    from pydicom import dcmread

    return [dcmread(BytesIO(data)) for data in parts]


def _one_run(clock: Clock, study_uid: str, series: dict[str, list[Path]], outcome: Any, work: Path) -> None:
    from pydicom import dcmread

    from models.series import ROLE_CONDITIONS
    from workers.record import AnalysisRecord, MaskSet, MasksRef, SeriesUse
    from workers.results.builder import EncodeInputs
    from workers.results.builders import BUILDERS
    from workers.results.identity import inputs_digest
    from workers.results.seg import load_masks, save_masks
    from workers.series import classify, for_analysis, read_study

    clock.new_run()
    paths = [p for files in series.values() for p in files]
    with clock.part("node: header-only files (/worker/.../headers)"):
        parts = _node_headers(paths)
    with clock.part("analysis: headers from those files (in memory)"):
        _headers_from_parts(parts)
    with clock.part("analysis: read study + classify"):
        read = read_study(series)
        _, selection = classify(read)
    with clock.part("analysis: selected series' pixels"):
        got, unreadable = for_analysis(read, selection, series)
        for uid in selection.series_uids():
            for ds in got.get(uid, ()):
                ds.PixelData  # noqa: B018 - the analyzer loads them: the file read is ours
    with clock.part("analysis: masks file + record JSON"):
        used = tuple(SeriesUse(role, uid, len(got.get(uid, ())), unreadable.get(uid, 0))
                     for role in ROLE_CONDITIONS if (uid := getattr(selection, role)))
        masks_file = work / "masks.npz"
        sha = save_masks(outcome.masks, masks_file)
        ref = MasksRef("results/masks.npz", sha, tuple(MaskSet.of(m) for m in outcome.masks))
        stored = json.dumps(AnalysisRecord.of(outcome.findings, used, ref, outcome.seconds).to_json())
    with clock.part("encode: record, masks, headers"):
        record = AnalysisRecord.from_json(json.loads(stored))
        if hashlib.sha256(masks_file.read_bytes()).hexdigest() != sha:
            raise SystemExit("masks changed")
        masks = load_masks(masks_file)
        evidence = [dcmread(p, stop_before_pixels=True) for p in paths]
        digest = inputs_digest(str(ds.SOPInstanceUID) for ds in evidence)
    images: dict[tuple[str, str], Any] = {}
    by_sop = {p.stem: p for p in paths}
    for p in paths:
        by_sop.setdefault(str(dcmread(p, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).SOPInstanceUID), p)

    def source_image(series_uid: str, sop: str) -> Any:
        if (series_uid, sop) not in images:
            images[series_uid, sop] = dcmread(by_sop[sop])
        return images[series_uid, sop]

    inputs = EncodeInputs(record, evidence, masks, digest, source_image=source_image, predecessor=lambda _: None)
    for builder in BUILDERS:
        identity = inputs.identity(builder.kind)
        with clock.part(f"encode: build {builder.kind.value}"):
            ds = builder.build(inputs, identity)
        if ds is None:
            continue
        with clock.part("encode: write Part 10 bytes"):
            buf = BytesIO()
            ds.save_as(buf, enforce_file_format=True)
            (work / f"{builder.kind.value}.dcm").write_bytes(buf.getvalue())


class _TimedAnalyzer:
    """The analyzer, with the CPU seconds of its passes (this thread) counted apart."""

    def __init__(self, analyzer: Any) -> None:
        self.analyzer = analyzer
        self.cpu = 0.0

    def analyze_batch(self, studies: Any, selections: Any = None) -> Any:
        t = time.thread_time()
        try:
            return self.analyzer.analyze_batch(studies, selections)
        finally:
            self.cpu += time.thread_time() - t


def _sent(*_: Any, **__: Any) -> None:
    return None


class RemoteStages:
    """The analyze and encode stages of workers that reach the node only by DICOMweb:
    the node (``scp_node.admin``) under uvicorn in a thread of this process, and a worker
    DATA_DIR per stage. The node, its database and the workers' database handles live
    across runs, as in long-running processes; each run puts the study back to QUEUED and
    empties the workers' caches, so every run fetches what a new study needs. Worker CPU
    is this thread's; the node's is the rest of the process's (its HTTP thread and pool)."""

    def __init__(self, data_paths: list[Path], analyzer: Any, work: Path) -> None:
        import socket
        import threading

        import uvicorn

        from scp_node.admin.app import create_app
        from scp_node.admin.context import AdminContext
        from scp_node.dicomio import parse_header
        from scp_node.ingest import Ingestor
        from spinenode.core.db.session import Database
        from spinenode.core.settings import load_settings
        from spinenode.core.storage import Spool
        from workers.analysis import AnalyzerCache
        from workers.spool import SpoolAccess
        from workers.stage import StageContext

        token = "bench-stage-cpu"
        self.work = work
        self.node_settings = load_settings(data_dir=work / "node", worker_token=token)
        self.db = Database(self.node_settings.database_url)
        self.db.migrate(self.node_settings.data_dir)
        ingestor = Ingestor(self.db, Spool(self.node_settings.data_dir))
        for path in data_paths:
            raw = path.read_bytes()
            ingestor.store(parse_header(raw), raw, "BENCH")
        self.study_uid = parse_header(data_paths[0].read_bytes()).study_uid
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        app = create_app(AdminContext(self.node_settings, self.db, lambda *a: None, dict))
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.05)
        self.analyzer = _TimedAnalyzer(analyzer)
        self.contexts: dict[str, Any] = {}
        for name in ("analysis", "cpu"):
            settings = load_settings(data_dir=work / name, database_url=self.node_settings.database_url,
                                     node_url=f"http://127.0.0.1:{port}", worker_token=token)
            wdb = Database(settings.database_url)
            self.contexts[name] = StageContext(settings, wdb, SpoolAccess(settings, wdb, host=name), _sent,
                                               AnalyzerCache(lambda *_: self.analyzer))

    def run(self, clock: Clock, profiles: dict[str, cProfile.Profile] | None = None) -> None:
        import shutil

        from sqlalchemy import delete, select

        from spinenode.core.db.models import Result, Study, StudyState
        from spinenode.core.states import transition
        from workers.analyze import analyze_study
        from workers.encode import encode_study

        with self.db.session() as s:
            st = s.execute(select(Study).where(Study.study_uid == self.study_uid)).scalar_one()
            # a new study: none of the previous run's results (the node's WADO-RS lists them)
            s.execute(delete(Result).where(Result.study_id == st.id))
            shutil.rmtree(self.node_settings.data_dir / "results" / self.study_uid, ignore_errors=True)
            if st.state == StudyState.RECEIVING:
                transition(s, st, StudyState.COMPLETE, detail="bench")
            transition(s, st, StudyState.QUEUED, detail="bench")
            generation = st.generation
        for name, stage in (("analysis", analyze_study), ("cpu", encode_study)):
            ctx = self.contexts[name]
            shutil.rmtree(ctx.settings.data_dir / "cache", ignore_errors=True)
            before = self.analyzer.cpu
            p0, t0 = time.process_time(), time.thread_time()
            profiler = (profiles or {}).get(name)
            if profiler is not None:
                profiler.runcall(stage, ctx, self.study_uid, generation)
            else:
                stage(ctx, self.study_uid, generation)
            p1, t1 = time.process_time(), time.thread_time()
            clock.runs[-1][f"remote {name} worker: stage outside inference"] = (t1 - t0) - (self.analyzer.cpu - before)
            clock.runs[-1][f"remote {name} stage: node serving it"] = (p1 - p0) - (t1 - t0)
        with self.db.session() as s:
            state = s.execute(select(Study.state).where(Study.study_uid == self.study_uid)).scalar_one()
        if state != StudyState.DONE:
            raise SystemExit(f"the study ended {state}, not DONE")

    def results(self) -> list[Path]:
        return sorted((self.node_settings.data_dir / "results").glob("*/*.dcm"))

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        for ctx in self.contexts.values():
            ctx.db.dispose()
        self.db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="a phantom dataset (one lumbar MR study); made when absent")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", type=Path, help="write a cProfile of one more run here")
    parser.add_argument("--no-remote", action="store_true", help="leave out the stages through the node's DICOMweb")
    parser.add_argument("--keep", type=Path, help="copy the result objects of the last run here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="spinenode-stage-cpu-") as tmp:
        data = args.data or Path(tmp) / "phantom"
        if args.data is None:
            subprocess.run([sys.executable, "-m", "spinenode_app.cli", "phantom", str(data), "--studies", "1",
                            "--seed", "5001", "--no-masks"], check=True, capture_output=True)
        study_uid, series = _study(data)

        from pydicom import dcmread

        from spinenode.core.settings import load_settings
        from workers.analysis import AnalyzerCache, analyse
        from workers.series import classify, for_analysis, read_study

        settings = load_settings(data_dir=Path(tmp) / "data", device="cpu")
        analyzer = AnalyzerCache().get(settings)
        import torch

        torch.set_num_threads(1)  # the analyzer in this thread only: the rest of the process is the node's
        if os.environ.get("BENCH_GC_FREEZE"):
            import gc

            gc.collect()
            gc.freeze()
        read = read_study(series)
        _, selection = classify(read)
        got, _ = for_analysis(read, selection, series)
        t = time.process_time()
        outcome = analyse(analyzer, study_uid, got, "lumbar", selection)
        analyzer_cpu = time.process_time() - t
        if not getattr(outcome, "findings", None) or not outcome.masks:
            raise SystemExit(f"the analyzer gave nothing to encode: {outcome}")

        clock = Clock()
        paths = [p for files in series.values() for p in files]
        remote = None if args.no_remote else RemoteStages(paths, analyzer, Path(tmp) / "remote")
        try:
            if remote is not None:
                clock.new_run()
                remote.run(clock)  # first run: lazy imports and set-ups of a fresh process, not counted
                clock.runs.clear()
            for i in range(args.repeat):
                work = Path(tmp) / f"run{i}"
                (work / "headers").mkdir(parents=True)
                _one_run(clock, study_uid, series, outcome, work)
                if remote is not None:
                    remote.run(clock)
            if args.keep:
                args.keep.mkdir(parents=True, exist_ok=True)
                for f in (Path(tmp) / f"run{args.repeat - 1}").glob("*.dcm"):
                    (args.keep / f.name).write_bytes(f.read_bytes())
                for f in remote.results() if remote is not None else ():
                    ds = dcmread(f, stop_before_pixels=True, specific_tags=["Modality"])
                    (args.keep / f"remote-{ds.Modality}.dcm").write_bytes(f.read_bytes())
            if args.profile:
                work = Path(tmp) / "profiled"
                (work / "headers").mkdir(parents=True)
                profiler = cProfile.Profile()
                profiler.runcall(_one_run, Clock(), study_uid, series, outcome, work)
                profiler.dump_stats(args.profile)
                if remote is not None:  # the workers' threads of the stages through the node
                    profiles = {"analysis": cProfile.Profile(), "cpu": cProfile.Profile()}
                    throwaway = Clock()
                    throwaway.new_run()
                    remote.run(throwaway, profiles)
                    for name, prof in profiles.items():
                        prof.dump_stats(args.profile.with_name(f"{args.profile.stem}-remote-{name}{args.profile.suffix}"))
        finally:
            if remote is not None:
                remote.close()

    n = sum(len(v) for v in series.values())
    print(f"one phantom lumbar MR study, {n} instances in {len(series)} series; "
          f"analyzer pass (not counted) {analyzer_cpu:.2f} CPU s; median of {args.repeat} runs")
    names = list(clock.runs[0])
    width = max(len(x) for x in names) + 2
    print(f"| {'part':<{width}} | CPU s | runs |")
    print(f"| {'-' * width} | ---: | --- |")
    totals: dict[str, float] = {}
    for name in names:
        values = [r.get(name, 0.0) for r in clock.runs]
        med = statistics.median(values)
        if not name.startswith("remote"):
            totals[name.split(":")[0]] = totals.get(name.split(":")[0], 0.0) + med
        print(f"| {name:<{width}} | {med:.3f} | {', '.join(f'{v:.3f}' for v in values)} |")
    for who, total in totals.items():
        print(f"| **{who} total** | {total:.3f} | |")
    print(f"| **workers total (analysis + encode)** | {totals.get('analysis', 0) + totals.get('encode', 0):.3f} | |")
    remote = [v for k, v in clock.runs[0].items() if k.startswith("remote") and "worker" in k]
    if remote:
        both = [sum(v for k, v in r.items() if k.startswith("remote") and "worker" in k) for r in clock.runs]
        print(f"| **remote workers total (both stages)** | {statistics.median(both):.3f} | "
              f"{', '.join(f'{v:.3f}' for v in both)} |")


if __name__ == "__main__":
    main()
