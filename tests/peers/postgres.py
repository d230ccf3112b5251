"""A throwaway PostgreSQL cluster as a peer."""

from __future__ import annotations

import functools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Self

from peers._base import (
    _LIVE,
    LOOPBACK,
    PeerError,
    _Peer,
    _Process,
    _start_with_retries,
    _tail,
    free_port,
    listens_on,
)


@functools.cache
def postgres_bindir() -> Path:
    """``/usr/lib/postgresql/<newest major>/bin``."""
    candidates = sorted(
        (p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "postgres").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not candidates:
        raise PeerError("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: "
                        "install the Debian package 'postgresql' "
                        "(bash scripts/install-test-deps.sh)")
    return candidates[-1]


class PostgresServer(_Peer):
    """A throw-away PostgreSQL cluster on a free loopback port (trust auth, fsync off).

    PostgreSQL refuses to run as root: when the tests run as root (CI), ``initdb`` and
    ``postgres`` run as the ``postgres`` system user, in a 0700 temp dir under /tmp that
    this user owns.  The cluster's superuser is ``user``; a database ``database`` is
    created on first start.  ``stop``/``kill``/``start``/``restart`` keep data and port.
    """

    name = "postgres"

    def __init__(self, user: str = "spinenode", database: str = "spinenode",
                 port: int | None = None) -> None:
        self.run_as = "postgres" if os.geteuid() == 0 else None
        super().__init__(self._make_base_dir(self.run_as))
        self._own_workdir = True
        self.user = user
        self.database = database
        self.port = port or 0
        self._fixed_port = port is not None
        self.data_dir = self.workdir / "data"
        self.bindir = postgres_bindir()
        self._initialised = False

    @staticmethod
    def _make_base_dir(run_as: str | None) -> Path:
        base = Path(tempfile.mkdtemp(prefix="spinenode-pg-", dir="/tmp"))
        base.chmod(0o700)
        if run_as is not None:
            try:
                account = pwd.getpwnam(run_as)
            except KeyError as exc:
                shutil.rmtree(base, ignore_errors=True)
                raise PeerError(f"running as root but there is no {run_as!r} user "
                                "(install the Debian package 'postgresql')") from exc
            os.chown(base, account.pw_uid, account.pw_gid)
        return base

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the default database."""
        return self.url_for(self.database)

    def url_for(self, database: str) -> str:
        """SQLAlchemy URL ``postgresql+psycopg://USER@127.0.0.1:PORT/DATABASE``."""
        return f"postgresql+psycopg://{self.user}@{LOOPBACK}:{self.port}/{database}"

    def dsn_for(self, database: str | None = None) -> str:
        """libpq connection string, for psycopg directly."""
        db = database or self.database
        return f"host={LOOPBACK} port={self.port} user={self.user} dbname={db}"

    @property
    def dsn(self) -> str:
        return self.dsn_for()

    def _initdb(self) -> None:
        argv = [
            str(self.bindir / "initdb"), "-D", str(self.data_dir), "-U", self.user,
            "--auth=trust", "--no-sync", "--encoding=UTF8", "--locale=C", "--no-instructions",
        ]
        log = self.workdir / "initdb.log"
        proc = _Process("initdb", argv, log, cwd=self.workdir, user=self.run_as)
        code = proc.popen.wait(timeout=120)
        _LIVE.discard(proc)
        if code != 0:
            raise PeerError(f"initdb exited with status {code}; log {log}:\n{_tail(log)}")

    def start(self) -> Self:
        """Start (initdb and create the database the first time)."""
        if not self._initialised:
            self._initdb()
        fixed = self._fixed_port or bool(self.port)
        _start_with_retries(self._start_once, fixed)
        if not self._initialised:
            self.create_database(self.database)
            self._initialised = True
        return self

    def _start_once(self, fresh_port: bool) -> None:
        if fresh_port or not self.port:
            self.port = free_port()
        argv = [
            str(self.bindir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
            "-c", f"listen_addresses={LOOPBACK}",
            "-c", f"unix_socket_directories={self.workdir}",
            "-c", "fsync=off", "-c", "full_page_writes=off",
            "-c", "shared_buffers=32MB", "-c", "max_connections=200",
        ]
        proc = _Process("postgres", argv, self.log_path, cwd=self.workdir, user=self.run_as)
        self._proc = proc

        def ready() -> bool:
            proc.check_alive()
            return listens_on(proc.pid, self.port) and self._accepting()

        self._wait_ready(proc, ready, f"postgres accepting on port {self.port}")

    def _accepting(self) -> bool:
        argv = [str(self.bindir / "pg_isready"), "-q", "-h", LOOPBACK, "-p", str(self.port),
                "-U", self.user, "-d", "postgres"]
        return subprocess.run(argv, stdin=subprocess.DEVNULL, timeout=10).returncode == 0

    def stop(self) -> None:
        """Fast shutdown (SIGINT: disconnects clients), SIGKILL after a timeout."""
        if self._proc is not None:
            self._proc.stop(signal.SIGINT)
            self._proc = None

    def restart(self) -> Self:
        """Fast shutdown, then start again on the same port with the same data."""
        self.stop()
        return self.start()

    def _client(self, tool: str, *args: str) -> None:
        argv = [str(self.bindir / tool), "-h", LOOPBACK, "-p", str(self.port), "-U", self.user,
                *args]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                                stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise PeerError(f"{tool} {' '.join(args)} failed: {result.stderr.strip()}")

    def create_database(self, name: str) -> str:
        """Create database ``name`` and return its SQLAlchemy URL."""
        self._client("createdb", name)
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name``, disconnecting any remaining sessions."""
        self._client("dropdb", "--if-exists", "--force", name)

    def unique_database(self) -> str:
        """Create a database with a fresh unique name; return the name."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        self.create_database(name)
        return name
