"""C-STORE ingest benchmark: spinenode against DCMTK storescp and Orthanc on the same files.

Sends the same MR images (512 x 512, 16-bit, Explicit VR Little Endian, about 0.5 MB
each) with DCMTK ``storescu`` (``TCP_NODELAY=1``) to

* ``spinenode serve`` as a process (embedded broker, SQLite, its own DATA_DIR,
  a long STABLE_SECONDS so that no analysis runs during the measurement),
  once per ``--node-processes`` value (SCP_PROCESSES);
* DCMTK ``storescp`` writing every file to disk (no fsync);
* Orthanc with its own config and SQLite index (fsyncs its storage by default);

each with one association and with 4 parallel associations (4 storescu processes,
a quarter of the files each). Every measurement starts a fresh receiver and checks
that it received every image. Prints medians over ``--repeat`` runs; asserts nothing.

Run from the repository root::

    .venv/bin/python bench/ingest.py --images 500 --repeat 3

All traffic goes to 127.0.0.1; every process started here is stopped at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import dicomgen
from nodeproc import Node
from peers import LOOPBACK, OrthancServer, StorescpServer, storescu, wait_until

from spinenode.core.db.models import Instance

CALLING_AE = "BENCHSCU"
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "spinenode-bench"


# --------------------------------------------------------------------------- input files


def bench_files(n: int, cache_dir: Path) -> list[Path]:
    """``n`` MR images of 512 x 512 (generated once per ``n``, then reused)."""
    out = cache_dir / f"mr512-{n}"
    marker = out / ".complete"
    if not marker.exists():
        shutil.rmtree(out, ignore_errors=True)
        print(f"generating {n} images in {out} ...", file=sys.stderr)
        dicomgen.write_files(n, out, rows=512, cols=512)
        marker.write_text("ok\n")
    files = sorted(out.glob("*.dcm"))
    if len(files) != n:
        raise SystemExit(f"{out} holds {len(files)} files, expected {n}: delete it and rerun")
    return files


def split(files: list[Path], parts: int) -> list[list[Path]]:
    """``parts`` contiguous chunks of nearly equal size."""
    size, extra = divmod(len(files), parts)
    chunks, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        chunks.append(files[start:end])
        start = end
    return [c for c in chunks if c]


# --------------------------------------------------------------------------- receivers

#: A started receiver: (DICOM port, called AE title, count of images received, PID).
Running = tuple[int, str, Callable[[], int], int]


@dataclass
class Receiver:
    """A fresh receiver: ``start`` yields (port, called AE, count-received function)."""

    name: str
    start: Callable[[Path], Any] = field(default=lambda _w: None)  # a context manager factory
    #: Group commit rounds of the last run: (instances, rounds), from the node's log.
    rounds: list[tuple[int, int]] = field(default_factory=list)


_ROUNDS_RE = re.compile(r"group commit: (\d+) instances in (\d+) rounds")


@contextmanager
def node_receiver(workdir: Path, processes: int, settings: dict[str, str] | None = None,
                  rounds: list[tuple[int, int]] | None = None) -> Iterator[Running]:
    node = Node(
        workdir,
        stable_seconds=3600,  # no study completes (and no analysis runs) while measuring
        sweep_interval=1.0,  # the default (tests/nodeproc.py sets 0.2 for quick tests)
        scp_processes=processes,
        **(settings or {}),
    )
    try:
        node.start()
        # The embedded worker is a child that imports Celery: let it finish starting
        # so its start-up CPU does not land in the measurement.
        wait_until(lambda: any(w.get("online") for w in node.api("/api/queue").get("workers", [])),
                   90, interval=0.2, what="the embedded worker")

        def count() -> int:
            from sqlalchemy import func, select

            with node.db.session() as s:
                return int(s.scalar(select(func.count()).select_from(Instance)) or 0)

        assert node.proc is not None
        yield node.dicom_port, node.ae_title, count, node.proc.pid
    finally:
        node.close()
        if rounds is not None:  # one line per receiver process at its stop
            found = [(int(a), int(b)) for a, b in _ROUNDS_RE.findall(node.log())]
            rounds[:] = [(sum(a for a, _ in found), sum(b for _, b in found))] if found else []


@contextmanager
def storescp_receiver(workdir: Path) -> Iterator[Running]:
    with StorescpServer(workdir, ae_title="STORESCP") as server:
        assert server.pid is not None
        yield server.port, server.ae_title, lambda: len(server.files()), server.pid


@contextmanager
def orthanc_receiver(workdir: Path) -> Iterator[Running]:
    with OrthancServer(workdir, ae_title="ORTHANC") as server:
        def count() -> int:
            return int(server.client.get("/statistics").json()["CountInstances"])

        assert server.pid is not None
        yield server.dicom_port, server.ae_title, count, server.pid


# --------------------------------------------------------------------------- one measurement


def send(files: list[Path], port: int, called_ae: str, associations: int) -> float:
    """Send ``files`` over ``associations`` parallel storescu processes; return seconds."""
    chunks = split(files, associations)

    def one(chunk: list[Path]) -> None:
        storescu(chunk, LOOPBACK, port, called_ae, calling_ae=CALLING_AE, timeout=1800, check=True)

    with ThreadPoolExecutor(len(chunks)) as pool:
        t0 = time.perf_counter()
        for future in [pool.submit(one, c) for c in chunks]:
            future.result()
        return time.perf_counter() - t0


@dataclass
class Result:
    receiver: str
    associations: int
    images: int
    bytes: int
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    complete: list[bool] = field(default_factory=list)
    #: 1-minute load average when each run started (the machine is shared).
    loads: list[float] = field(default_factory=list)
    #: (instances, rounds) of group commit per run, where the node logged them.
    rounds: list[tuple[int, int]] = field(default_factory=list)

    @property
    def per_round(self) -> float | None:
        items, rounds = sum(a for a, _ in self.rounds), sum(b for _, b in self.rounds)
        return items / rounds if rounds else None

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)

    @property
    def cpu_ms_per_image(self) -> float:
        return statistics.median(self.cpu_seconds) / self.images * 1e3

    @property
    def img_s(self) -> float:
        return self.images / self.median_s

    @property
    def mb_s(self) -> float:
        return self.bytes / self.median_s / 1e6

    def as_dict(self) -> dict[str, Any]:
        return {
            "receiver": self.receiver, "associations": self.associations, "images": self.images,
            "bytes": self.bytes, "seconds": [round(s, 4) for s in self.seconds],
            "median_s": round(self.median_s, 4), "images_per_s": round(self.img_s, 1),
            "mb_per_s": round(self.mb_s, 1),
            "receiver_cpu_ms_per_image": round(self.cpu_ms_per_image, 2),
            "all_received": all(self.complete),
            "load_average_1min_per_run": self.loads,
            "group_commit_instances_per_round": round(self.per_round, 2) if self.per_round else None,
        }


def _tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of ``root`` and its live descendants (from /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        parent[int(entry.name)] = int(fields[1])
        cpu[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        children = [p for p, pp in parent.items() if pp == pid and p not in tree]
        tree.update(children)
        frontier.extend(children)
    return sum(cpu.get(p, 0.0) for p in tree)


def measure(receiver: Receiver, files: list[Path], associations: int,
            scratch: Path) -> tuple[float, float, bool]:
    """One run on a fresh receiver: (wall seconds, receiver CPU seconds, all received)."""
    workdir = Path(tempfile.mkdtemp(prefix=f"{receiver.name.replace(' ', '')}-", dir=scratch))
    try:
        with receiver.start(workdir) as (port, called_ae, count, pid):
            cpu0 = _tree_cpu_seconds(pid)
            seconds = send(files, port, called_ae, associations)
            cpu = _tree_cpu_seconds(pid) - cpu0
            try:  # every image must be there (storescp may still be closing its last file)
                wait_until(lambda: count() >= len(files), 10, interval=0.1, what="all images")
                complete = count() == len(files)
            except TimeoutError:
                complete = False
        return seconds, cpu, complete
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# --------------------------------------------------------------------------- report


def table(results: list[Result], repeat: int, file_bytes: int, load: tuple[float, float]) -> str:
    title = (
        f"C-STORE ingest, {results[0].images} MR images 512x512 16-bit "
        f"({file_bytes / results[0].images / 1e3:.0f} kB each), DCMTK storescu TCP_NODELAY=1, "
        f"loopback, median of {repeat}, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, "
        f"{os.cpu_count()} CPUs, {platform.python_implementation()} {platform.python_version()}, "
        f"1-min load average {load[0]:.1f} at start, {load[1]:.1f} at end"
    )
    lines = [
        title,
        "",
        ("| receiver | assoc | img/s | MB/s | receiver CPU ms/img | median s | runs (s) | load per run "
         "| img/round | all rx |"),
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: | --- |",
    ]
    for r in results:
        runs = " ".join(f"{s:.2f}" for s in r.seconds)
        loads = " ".join(f"{x:.1f}" for x in r.loads)
        per_round = f"{r.per_round:.2f}" if r.per_round else "-"
        received = "yes" if all(r.complete) else "NO"
        lines.append(f"| {r.receiver} | {r.associations} | {r.img_s:.0f} | {r.mb_s:.0f} | "
                     f"{r.cpu_ms_per_image:.1f} | {r.median_s:.2f} | {runs} | {loads} | {per_round} | {received} |")
    by = {(r.receiver, r.associations): r for r in results}
    ratios = []
    for r in results:
        if not r.receiver.startswith("spinenode"):
            continue
        for peer in ("storescp", "orthanc"):
            other = by.get((peer, r.associations))
            if other:
                ratios.append(f"| {r.receiver} / {peer} | {r.associations} | "
                              f"{r.img_s / other.img_s:.2f} |")
    if ratios:
        lines += ["", "| ratio | assoc | x |", "| --- | ---: | ---: |", *ratios]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=500, help="images per run (default 500)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per cell; the median is shown")
    parser.add_argument("--associations", default="1,4",
                        help="comma-separated parallel association counts (default 1,4)")
    parser.add_argument("--node-processes", default="1,2",
                        help="SCP_PROCESSES values to run the node with (default 1,2)")
    parser.add_argument("--node-variant", action="append", default=[], metavar="LABEL:KEY=VALUE,...",
                        help="a node run with these settings (SPINENODE_KEY=VALUE), e.g. "
                             "'gc-off:group_commit=false'; repeatable; given, it replaces --node-processes "
                             "(set scp_processes in the variant)")
    parser.add_argument("--receivers", default="spinenode,storescp,orthanc",
                        help="subset of spinenode,storescp,orthanc")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE,
                        help=f"where the generated images are kept (default {DEFAULT_CACHE})")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)

    files = bench_files(args.images, args.cache_dir)
    file_bytes = sum(p.stat().st_size for p in files)
    wanted = {w.strip() for w in args.receivers.split(",") if w.strip()}
    receivers: list[Receiver] = []
    if "spinenode" in wanted and args.node_variant:
        for variant in args.node_variant:
            label, _, pairs = variant.partition(":")
            conf = dict(p.split("=", 1) for p in pairs.split(",") if "=" in p)
            n = int(conf.pop("scp_processes", "1"))
            receivers.append(rcv := Receiver(f"spinenode {label}"))
            rcv.start = lambda w, n=n, conf=conf, rcv=rcv: node_receiver(w, n, conf, rcv.rounds)
    elif "spinenode" in wanted:
        for n in (int(x) for x in args.node_processes.split(",") if x.strip()):
            name = "spinenode" if n == 1 else f"spinenode x{n} proc"
            receivers.append(rcv := Receiver(name))
            rcv.start = lambda w, n=n, rcv=rcv: node_receiver(w, n, None, rcv.rounds)
    if "storescp" in wanted:
        receivers.append(Receiver("storescp", storescp_receiver))
    if "orthanc" in wanted:
        receivers.append(Receiver("orthanc", orthanc_receiver))
    assoc_counts = [int(x) for x in args.associations.split(",") if x.strip()]

    results = {(r.name, a): Result(r.name, a, len(files), file_bytes)
               for r in receivers for a in assoc_counts}
    scratch = Path(tempfile.mkdtemp(prefix="spinenode-bench-"))
    load_start = os.getloadavg()[0]
    try:
        # Receivers are interleaved within each repeat so that load from other users of
        # the machine spreads over all of them rather than landing on one.
        for rep in range(args.repeat):
            for receiver in receivers:
                for assoc in assoc_counts:
                    load = os.getloadavg()[0]
                    seconds, cpu, complete = measure(receiver, files, assoc, scratch)
                    res = results[(receiver.name, assoc)]
                    res.seconds.append(seconds)
                    res.cpu_seconds.append(cpu)
                    res.complete.append(complete)
                    res.loads.append(round(load, 1))
                    res.rounds.extend(receiver.rounds)
                    receiver.rounds.clear()
                    print(f"run {rep + 1}/{args.repeat} {receiver.name:<18} assoc={assoc}: "
                          f"{len(files) / seconds:7.1f} img/s{'' if complete else '  INCOMPLETE'}",
                          file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    ordered = list(results.values())
    load = (load_start, os.getloadavg()[0])
    if args.json:
        print(json.dumps({
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "cpus": os.cpu_count(), "python": platform.python_version(),
            "load_average_1min": {"start": load[0], "end": load[1]},
            "images": len(files), "bytes": file_bytes, "repeat": args.repeat,
            "results": [r.as_dict() for r in ordered],
        }, indent=2))
    else:
        print(table(ordered, args.repeat, file_bytes, load))
    return 0


if __name__ == "__main__":
    sys.exit(main())
