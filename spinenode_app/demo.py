"""``spinenode demo``: the whole path on one machine, in a temporary directory.

A built-in receiving PACS (a small pynetdicom storage SCP), the node
(``spinenode serve`` with the embedded defaults and the PACS as its destination),
a phantom lumbar MR study sent by C-STORE, then the findings per level beside the
phantom's ground truth, and where the SR, SEG and key images landed.
"""

from __future__ import annotations

import json
import os
import socket
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification

from models.conditions import CONDITIONS, GRADES
from spinenode.core.settings import Destination

PACS_AE = "DEMOPACS"
TERMINAL = ("DONE", "FAILED", "SKIPPED")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DemoPacs:
    """A storage SCP that writes what it receives under ``folder`` (Part 10 files)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.received: list[Path] = []
        self._lock = threading.Lock()
        ae = AE(ae_title=PACS_AE)
        ae.add_supported_context(Verification)
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax)
        self._ae = ae
        self._server: Any = None

    def _store(self, event: Any) -> int:
        sop = str(event.request.AffectedSOPInstanceUID)
        path = self.folder / f"{sop}.dcm"
        path.write_bytes(event.encoded_dataset())
        with self._lock:
            self.received.append(path)
        return 0x0000

    def start(self) -> None:
        self._server = self._ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._store)]
        )

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()

    @property
    def destination(self) -> str:
        return f"{PACS_AE}@127.0.0.1:{self.port}"


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)


@contextmanager
def _node(work: Path, dicom_port: int, http_port: int, destination: str) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "SPINENODE_DATA_DIR": str(work / "node"),
        "SPINENODE_DICOM_HOST": "127.0.0.1",
        "SPINENODE_DICOM_PORT": str(dicom_port),
        "SPINENODE_HTTP_HOST": "127.0.0.1",
        "SPINENODE_HTTP_PORT": str(http_port),
        "SPINENODE_STABLE_SECONDS": "2",
        "SPINENODE_SWEEP_INTERVAL": "0.5",
        "SPINENODE_DESTINATIONS": destination,
        "SPINENODE_EXPORT_RETRY_BASE": "2",
    }
    env.pop("SPINENODE_BROKER_URL", None)
    env.pop("SPINENODE_DATABASE_URL", None)
    log = (work / "serve.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "spinenode_app.cli", "serve"], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def _truth(phantom: Path) -> dict[tuple[str, str], str]:
    """(condition key, level) -> ground-truth grade of the single phantom study."""
    from models import rsna

    data = rsna.read_dataset(phantom)
    (labels,) = data.labels.values()
    out: dict[tuple[str, str], str] = {}
    for condition in rsna.conditions_of(data.region):
        for level in rsna.levels_of(data.region):
            grade = labels.grade(condition, level)
            if grade:
                key = condition.lower().replace(" ", "_")
                out[(key, level.replace("/", "-"))] = grade.lower().replace("/", "_")
    for (study_id, level), grade in data.pfirrmann.items():
        out[("pfirrmann", level.replace("/", "-"))] = str(grade)
    return out


def _print_findings(findings: dict[str, Any], truth: dict[tuple[str, str], str]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    def abbr(grade: str) -> str:
        spec = GRADES.get(grade)
        return spec.abbr if spec is not None else grade

    # the caveat on a line of its own: a longer model version must not wrap it apart
    table = Table(title=f"PRELIMINARY, NOT A DIAGNOSIS\n{findings['model']['name']} {findings['model']['version']}"
                        "\n(grade and probability; \\[truth] where the phantom's answer differs)")
    table.add_column("level")
    for spec in CONDITIONS.values():
        table.add_column(spec.short)
    for lv in findings["levels"]:
        cells = []
        for c in CONDITIONS:
            f = lv["findings"].get(c)
            if not f:
                cells.append("-")
                continue
            cell = f"{abbr(f['grade'])} {max(f['p'].values()):.2f}"
            want = truth.get((c, lv["level"]))
            if want and want != f["grade"]:
                cell += f" [{abbr(want)}]"
            cells.append(cell)
        table.add_row(lv["level"], *(escape(c) for c in cells))
    Console().print(table)
    for m in findings.get("missing", []):
        print(f"not assessed: {m}")


def run_demo(keep: Path | None = None, timeout: float = 300.0) -> int:
    """The demo in ``keep``, or in a temporary directory removed at the end when it succeeds
    (kept after a failure, for its logs)."""
    work = keep or Path(tempfile.mkdtemp(prefix="spinenode-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"demo directory: {work}")
    code = 1
    try:
        code = _run_demo(work, timeout)
        return code
    finally:
        if keep is None and code == 0:
            shutil.rmtree(work, ignore_errors=True)
            print(f"removed {work} (pass --keep DIR to keep the data, logs and results)")
        elif keep is None:
            print(f"kept {work} for its logs (serve.log)", file=sys.stderr)


def _run_demo(work: Path, timeout: float) -> int:
    pacs = DemoPacs(work / "pacs")
    pacs.start()
    dicom_port, http_port = free_port(), free_port()
    api = f"http://127.0.0.1:{http_port}"
    try:
        with _node(work, dicom_port, http_port, pacs.destination) as proc:
            phantom = work / "phantom"
            print("writing a phantom lumbar MR study (sagittal T1, sagittal T2, axial T2) ...")
            subprocess.run([sys.executable, "-m", "spinenode_app.cli", "phantom", str(phantom), "--studies", "1",
                            "--region", "lumbar", "--modality", "MR", "--seed", "2026"],
                           check=True, stdout=subprocess.DEVNULL)

            def up() -> bool:
                if proc.poll() is not None:
                    raise RuntimeError(f"spinenode serve exited; see {work / 'serve.log'}")
                try:
                    return bool(_get(api + "/api/health"))
                except (urllib.error.URLError, OSError):
                    return False

            _wait(up, 90, "spinenode serve")
            files = sorted((phantom / "train_images").rglob("*.dcm"))
            study_uid = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
            from scp_node.scu import send_files

            report = send_files(Destination("SPINENODE", "127.0.0.1", dicom_port), files, calling_ae=PACS_AE)
            print(f"sent {report.sent} images by C-STORE to SPINENODE@127.0.0.1:{dicom_port}")
            t_sent = time.monotonic()
            study = _wait(lambda: (s := _get(f"{api}/api/studies/{study_uid}")) and s["state"] in TERMINAL and s,
                          timeout, "the study to finish")
            print(f"study {study_uid}: {study['state']} {time.monotonic() - t_sent:.1f} s after the last image")
            for e in study["events"]:
                print(f"  {e['at'][11:23]}  {e['state']:<10} {e['detail'] or ''}")
            if study["state"] != "DONE":
                print(f"FAILED at {study['failed_stage']}: {study['reason']}", file=sys.stderr)
                return 1
            try:
                _print_findings(_get(f"{api}/api/studies/{study_uid}/findings"), _truth(phantom))
            except urllib.error.HTTPError:
                print(f"not analysed: {study.get('not_analysed_reason')}")
            print(f"results received by the demo PACS ({pacs.destination}) in {pacs.folder}:")
            for path in sorted(pacs.received):
                ds = dcmread(path, stop_before_pixels=True)
                print(f"  {ds.Modality:<4} series {ds.SeriesNumber} {ds.SeriesDescription}: {path.name}")
            return 0
    finally:
        pacs.stop()
