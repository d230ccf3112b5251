"""Flower (Celery's monitor) as a peer: what an IT admin runs beside the workers."""

from __future__ import annotations

import os
import sys
from typing import Self

import httpx

from peers._base import (
    LOOPBACK,
    PathLike,
    _Peer,
    _Process,
    _start_with_retries,
    free_port,
    listens_on,
)


class FlowerServer(_Peer):
    """``celery --broker=URL flower`` on a free loopback port with HTTP basic auth.

    Started as docker/compose.yaml starts it (the ``celery`` entry point of the
    environment the tests run in; Flower is a test dependency, pinned like the
    CPU image's). ``user``/``password`` protect the UI and the API alike.
    """

    name = "flower"

    def __init__(self, broker_url: str, workdir: PathLike | None = None,
                 user: str = "admin", password: str = "flower-test-secret") -> None:
        super().__init__(workdir)
        self.broker_url = broker_url
        self.user, self.password = user, password
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def get(self, path: str, auth: bool = True) -> httpx.Response:
        return httpx.get(self.url + path, auth=(self.user, self.password) if auth else None, timeout=10.0)

    def start(self) -> Self:
        _start_with_retries(self._start_once, False)
        return self

    def _start_once(self, fresh_port: bool) -> None:
        self.port = free_port()
        argv = [sys.executable, "-m", "celery", f"--broker={self.broker_url}", "flower",
                f"--port={self.port}", f"--address={LOOPBACK}",
                f"--basic-auth={self.user}:{self.password}"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWER_")}
        proc = _Process("flower", argv, self.log_path, env=env, cwd=self.workdir)
        self._proc = proc

        def ready() -> bool:
            proc.check_alive()
            if not listens_on(proc.pid, self.port):
                return False
            try:
                return self.get("/healthcheck", auth=False).status_code == 200
            except httpx.HTTPError:
                return False

        self._wait_ready(proc, ready, f"Flower on port {self.port}")
