"""Where the receiver's CPU goes, per image: the node's receiver in this process, DCMTK sending.

Starts the same receiver as ``spinenode serve`` (``scp_node.scp.start_scp``, one process,
SQLite) in this process, sends the images of ``bench/ingest.py`` with DCMTK ``storescu``
over 1 and 4 associations, and prints CPU milliseconds per image

* per thread role (pynetdicom's DUL reader threads, the association threads that run the
  C-STORE handler, the group committer, the rest), sampled from ``/proc/self/task``;
* per handler step (header parse, spool placement with the file fsync, the group commit
  round or the per-instance directory fsync and index transaction), as CPU time of the
  thread that runs it.

Run from the repository root::

    .venv/bin/python bench/ingest_cpu.py --images 300 --group-commit true,false

Asserts nothing; all traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from ingest import DEFAULT_CACHE, bench_files, send
from peers import free_port

from scp_node import scp as scp_module
from scp_node.ingest import GroupCommit, Ingestor
from scp_node.scp import ScpCounters, start_scp
from spinenode.core.db.session import Database
from spinenode.core.settings import load_settings
from spinenode.core.storage import Spool

_TICK = os.sysconf("SC_CLK_TCK")


def _thread_cpu(native_id: int) -> float | None:
    try:
        stat = Path(f"/proc/self/task/{native_id}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _role(thread: threading.Thread) -> str:
    kind = type(thread).__name__
    if kind == "DULServiceProvider":
        return "DUL reader threads (PDU receive, reassembly, file writes)"
    if kind == "Association":
        return "association threads (DIMSE, C-STORE handler)"
    if thread.name == "group-commit":
        return "group committer (directory fsyncs, transaction)"
    return "other threads (accept loop, main, sampler)"


class Sampler(threading.Thread):
    """Keeps the latest CPU seconds of every live thread, by role (threads come and go)."""

    def __init__(self) -> None:
        super().__init__(daemon=True, name="cpu-sampler")
        self.last: dict[int, tuple[str, float]] = {}
        self.stop = threading.Event()

    def sample(self) -> None:
        for t in threading.enumerate():
            if t.native_id is None:
                continue
            cpu = _thread_cpu(t.native_id)
            if cpu is not None:
                self.last[t.native_id] = (_role(t), cpu)

    def run(self) -> None:
        while not self.stop.wait(0.02):
            self.sample()

    def by_role(self) -> dict[str, float]:
        out: dict[str, float] = collections.defaultdict(float)
        for role, cpu in self.last.values():
            out[role] += cpu
        return out


class Steps:
    """CPU seconds of the calling thread inside wrapped functions."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = collections.defaultdict(float)
        self.lock = threading.Lock()

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent = time.thread_time() - t0
                with self.lock:
                    self.cpu[name] += spent

        return timed


def run(files: list[Path], associations: int, group_commit: bool) -> tuple[dict[str, float], dict[str, float],
                                                                            float, float]:
    work = Path(tempfile.mkdtemp(prefix="spinenode-cpu-"))
    try:
        settings = load_settings(data_dir=work, dicom_host="127.0.0.1", dicom_port=free_port(),
                                 group_commit=group_commit, log_level="WARNING")
        db = Database(settings.database_url)
        db.migrate(work)
        spool = Spool(settings.data_dir)
        ingestor = Ingestor(db, spool, group_commit=GroupCommit.from_settings(settings))
        steps = Steps()
        original_parse = scp_module.parse_header_file
        scp_module.parse_header_file = steps.wrap("header parse", original_parse)  # type: ignore[assignment]
        spool.place = steps.wrap("file fsync + rename (Spool.place)", spool.place)  # type: ignore[method-assign]
        spool.adopt = steps.wrap("file fsync + rename + dir fsync (Spool.adopt)", spool.adopt)  # type: ignore[method-assign]
        ingestor.index = steps.wrap("index transaction, one per instance", ingestor.index)  # type: ignore[method-assign]
        spool.sync_dirs = steps.wrap("round: directory fsyncs", spool.sync_dirs)  # type: ignore[method-assign]
        ingestor._index_batch = steps.wrap("round: one transaction", ingestor._index_batch)  # type: ignore[method-assign]
        server = start_scp(settings, ingestor, ScpCounters())
        sampler = Sampler()
        sampler.sample()
        before = sampler.by_role()
        cpu0 = time.process_time()
        sampler.start()
        seconds = send(files, settings.dicom_port, settings.ae_title, associations)
        sampler.stop.set()
        sampler.join()
        sampler.sample()
        cpu = time.process_time() - cpu0
        roles = {k: v - before.get(k, 0.0) for k, v in sampler.by_role().items()}
        server.shutdown()
        ingestor.close()
        db.dispose()
        scp_module.parse_header_file = original_parse  # type: ignore[assignment]
        return roles, dict(steps.cpu), cpu, seconds
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--associations", default="1,4")
    parser.add_argument("--group-commit", default="true,false")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args(argv)
    files = bench_files(args.images, args.cache_dir)
    n = len(files)
    for gc in (v.strip() == "true" for v in args.group_commit.split(",")):
        for assoc in (int(a) for a in args.associations.split(",")):
            load = os.getloadavg()[0]
            roles, steps, cpu, seconds = run(files, assoc, gc)
            print(f"\ngroup commit {'on' if gc else 'off'}, {assoc} association(s), {n} images, "
                  f"{n / seconds:.0f} img/s, 1-min load {load:.1f}")
            print("| where | CPU ms/img |\n| --- | ---: |")
            for role, value in sorted(roles.items()):
                print(f"| {role} | {value / n * 1e3:.2f} |")
            for step, value in sorted(steps.items()):
                print(f"| step: {step} | {value / n * 1e3:.2f} |")
            print(f"| process total | {cpu / n * 1e3:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
