"""redis-server as a peer (the Celery broker)."""

from __future__ import annotations

import socket
from typing import Self

from peers._base import (
    LOOPBACK,
    PathLike,
    _Peer,
    _Process,
    _require_binary,
    _start_with_retries,
    free_port,
    listens_on,
)


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer(_Peer):
    """redis-server on a free loopback port, no persistence; restartable on the same port."""

    name = "redis"

    def __init__(self, workdir: PathLike | None = None, port: int | None = None) -> None:
        super().__init__(workdir)
        self.port = port or 0
        self._fixed_port = port is not None
        self._binary = _require_binary("/usr/bin/redis-server", "redis-server")

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://{LOOPBACK}:{self.port}/0"

    def start(self) -> Self:
        """Start; on a restart (port already chosen) the same port is reused."""
        fixed = self._fixed_port or bool(self.port)
        _start_with_retries(self._start_once, fixed)
        return self

    def _start_once(self, fresh_port: bool) -> None:
        if fresh_port or not self.port:
            self.port = free_port()
        argv = [
            self._binary, "--port", str(self.port), "--bind", LOOPBACK,
            "--save", "", "--appendonly", "no", "--dir", str(self.workdir),
            "--daemonize", "no", "--logfile", "",
        ]
        proc = _Process("redis-server", argv, self.log_path, cwd=self.workdir)
        self._proc = proc

        def ready() -> bool:
            proc.check_alive()
            return listens_on(proc.pid, self.port) and _redis_ping(self.port)

        self._wait_ready(proc, ready, f"redis-server PONG on port {self.port}")

    def restart(self) -> Self:
        """Graceful stop, then start on the same port."""
        self.stop()
        return self.start()
