"""Run ``spinenode serve`` / ``spinenode worker`` as real processes for tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from peers import free_port, listens_on, wait_until
from spinenode.core.db.session import Database

REPO = Path(__file__).resolve().parents[1]


class SpinenodeProcess:
    """One ``spinenode`` command in its own process with ``SPINENODE_*`` settings."""

    def __init__(self, workdir: Path, command: list[str], env: dict[str, str], name: str) -> None:
        self.workdir = workdir
        self.command = command
        self.env = env
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "spinenode_app.cli", *self.command],
            cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 30.0) -> None:
        if not self.alive():
            return
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def kill9(self) -> None:
        """SIGKILL the main process only (children follow via PDEATHSIG)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


class Node(SpinenodeProcess):
    """``spinenode serve`` on free loopback ports with its own DATA_DIR."""

    def __init__(self, workdir: Path, **settings: Any) -> None:
        self.dicom_port = int(settings.pop("dicom_port", 0) or free_port())
        self.http_port = int(settings.pop("http_port", 0) or free_port())
        self.data_dir = workdir / "data"
        self.ae_title = str(settings.get("ae_title", "SPINENODE"))
        env = {
            "SPINENODE_DATA_DIR": str(self.data_dir),
            "SPINENODE_DICOM_HOST": "127.0.0.1",
            "SPINENODE_DICOM_PORT": str(self.dicom_port),
            "SPINENODE_HTTP_HOST": "127.0.0.1",
            "SPINENODE_HTTP_PORT": str(self.http_port),
            "SPINENODE_STABLE_SECONDS": "1",
            "SPINENODE_SWEEP_INTERVAL": "0.2",
            "SPINENODE_LOG_LEVEL": "INFO",
            # CI machines have been seen with little free disk; the watermark test sets its own
            "SPINENODE_DISK_MIN_FREE_MB": "16",
            # The warm-up (a phantom analysed when the worker starts) costs 5 to 15 s of CPU per
            # node start on a loaded 2-core machine, and most tests never analyse a study. The
            # tests about the first study turn it back on (test_e2e_findings); the default is on.
            "SPINENODE_WORKER_WARMUP": "false",
        }
        env.update({f"SPINENODE_{k.upper()}": str(v) for k, v in settings.items()})
        workdir.mkdir(parents=True, exist_ok=True)
        super().__init__(workdir, ["serve"], env, "serve")
        self.database_url = env.get("SPINENODE_DATABASE_URL") or f"sqlite:///{self.data_dir / 'spinenode.db'}"
        self._db: Database | None = None
        self._http: httpx.Client | None = None

    @property
    def http(self) -> httpx.Client:
        """One HTTP client for every poll: a new client per call builds a new SSL context,
        which costs most of a core's worth of time per poll on a loaded machine."""
        if self._http is None:
            self._http = httpx.Client(timeout=30, trust_env=False)
        return self._http

    def start(self, timeout: float = 60.0) -> None:
        super().start()
        deadline = time.monotonic() + timeout

        def ready() -> bool:
            if not self.alive():
                raise RuntimeError(f"spinenode serve exited:\n{self.log()[-4000:]}")
            try:
                return self.http.get(self.url("/api/health"), timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout, interval=0.1, what="spinenode serve health")
        # Not a TCP connect: a probe that never sends A-ASSOCIATE-RQ would hold an
        # association slot until the ACSE timeout.
        assert self.proc is not None
        pid = self.proc.pid
        wait_until(lambda: listens_on(pid, self.dicom_port), max(1.0, deadline - time.monotonic()),
                   what="the DICOM port to listen")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http_port}{path}"

    def api(self, path: str) -> Any:
        r = self.http.get(self.url(path))
        r.raise_for_status()
        return r.json()

    def study(self, uid: str) -> dict[str, Any] | None:
        r = self.http.get(self.url(f"/api/studies/{uid}"))
        return None if r.status_code == 404 else r.json()

    def wait_state(self, uid: str, states: set[str], timeout: float = 60.0) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            if not self.alive():
                raise RuntimeError(f"spinenode serve exited:\n{self.log()[-4000:]}")
            st = self.study(uid)
            return st if st and st["state"] in states else None

        try:
            return wait_until(check, timeout, interval=0.2, what=f"study in {sorted(states)}")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; now {self.study(uid)}\n{self.log()[-3000:]}") from None

    @property
    def db(self) -> Database:
        if self._db is None:
            self._db = Database(self.database_url)
        return self._db

    def close(self) -> None:
        self.stop()
        if self._http is not None:
            self._http.close()
            self._http = None
        if self._db is not None:
            self._db.dispose()


def worker_process(workdir: Path, node: Node, queues: str = "gpu,cpu,export") -> SpinenodeProcess:
    """A separate ``spinenode worker`` with the node's settings (Redis broker setups)."""
    return SpinenodeProcess(workdir, ["worker", "--queues", queues], dict(node.env), "worker")


def dataset_bytes(path: Path) -> bytes:
    """The bytes of a Part 10 file after its file meta group (what travels over C-STORE)."""
    raw = path.read_bytes()
    assert raw[128:132] == b"DICM", f"{path} has no DICM prefix"
    # (0002,0000) UL group length, explicit VR little endian: tag 4, VR 2, len 2, value 4
    group_len = int.from_bytes(raw[140:144], "little")
    return raw[144 + group_len:]
