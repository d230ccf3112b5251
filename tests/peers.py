"""Real peers for tests: DCMTK, Orthanc, redis-server, PostgreSQL and dciodvfy.

Every peer runs as a child process on a free port bound to (or addressed on) loopback,
with its own temporary working directory and log file.  Processes are stopped by PID:
a graceful signal first, SIGKILL to the process group after a timeout.  A crashed test
run cannot leave orphans behind either: children started from the main thread get
``PR_SET_PDEATHSIG`` and anything still running at interpreter exit is killed.

Nothing here imports pytest; ``peer_fixtures.py`` wraps these classes as fixtures.
Binaries come from Debian packages (``scripts/install-test-deps.sh``); a missing one
raises :class:`PeerError` naming the package, it never skips.

storescp and Orthanc listen on all interfaces (neither can bind to one address in the
packaged versions): send traffic to ``127.0.0.1`` only.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

__all__ = [
    "LOOPBACK",
    "DciodvfyResult",
    "OrthancServer",
    "PeerError",
    "PostgresServer",
    "RedisServer",
    "StorescpServer",
    "dciodvfy",
    "dcmtk_env",
    "dcmtk_tool",
    "echoscu",
    "free_port",
    "listens_on",
    "storescu",
    "wait_for_port",
    "wait_until",
]

LOOPBACK = "127.0.0.1"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
_START_ATTEMPTS = 3  # a fresh free port per attempt: another process may grab ours

T = TypeVar("T")
PathLike = str | os.PathLike[str]


class PeerError(RuntimeError):
    """A peer binary is missing, failed to start, or misbehaved."""


# --------------------------------------------------------------------------- polling


def free_port() -> int:
    """Return a TCP port that is free on all interfaces right now.

    Bound on all interfaces because storescp and Orthanc listen on all of them.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Poll ``predicate`` until it returns a truthy value and return that value.

    Raises
    ------
    TimeoutError
        When the deadline passes; the message names ``what``.
    Exception
        Whatever ``predicate`` raises is propagated at once (use it to abort early,
        e.g. when the process being waited for has died).
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(interval)


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _listening_inodes(port: int) -> set[int]:
    """Socket inodes listening on TCP ``port`` (any address), from /proc/net/tcp{,6}."""
    inodes: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(int(inode))
    return inodes


def listens_on(pid: int, port: int) -> bool:
    """True if process ``pid`` itself holds a socket listening on TCP ``port``.

    Stronger than a successful connect, which another process on the port would fake.
    """
    wanted = _listening_inodes(port)
    if not wanted:
        return False
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:[") and int(link[8:-1]) in wanted:
            return True
    return False


def wait_for_port(host: str, port: int, timeout: float) -> None:
    """Wait until a TCP connection to ``host:port`` succeeds."""
    wait_until(lambda: _port_open(host, port), timeout, what=f"TCP port {host}:{port} to accept")


# --------------------------------------------------------------------------- processes


def _tail(path: Path, lines: int = 40) -> str:
    """Last ``lines`` lines of a log file, for exception messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def _die_with_parent() -> None:
    """preexec_fn: SIGKILL this child when the thread that started it dies."""
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def _require_binary(path: str, package: str) -> str:
    if not os.access(path, os.X_OK):
        raise PeerError(
            f"{path} not found: install the Debian package {package!r} "
            "(bash scripts/install-test-deps.sh)"
        )
    return path


class _Process:
    """One child process with its log file, stoppable by PID even after a failed test."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        user: str | None = None,
    ) -> None:
        self.name = name
        self.log_path = log_path
        in_main_thread = threading.current_thread() is threading.main_thread()
        with open(log_path, "ab") as log:
            self.popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
                user=user,
                group=pwd.getpwnam(user).pw_gid if user else None,
                extra_groups=[] if user else None,
                # PDEATHSIG follows the starting *thread*: only safe from the main thread.
                preexec_fn=_die_with_parent if in_main_thread else None,
            )
        _LIVE.add(self)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return not self._exited_unreaped()

    def check_alive(self) -> None:
        """Raise :class:`PeerError` with the log tail if the process has exited.

        The rest of its process group is killed first (e.g. orphaned backends).
        """
        if self._exited_unreaped():
            self._kill_group_and_reap()
            raise PeerError(
                f"{self.name} (pid {self.pid}) exited with status {self.popen.returncode}; "
                f"log {self.log_path}:\n{_tail(self.log_path)}"
            )

    def failure(self, message: str) -> PeerError:
        return PeerError(f"{self.name} (pid {self.pid}): {message}; log {self.log_path}:\n"
                         f"{_tail(self.log_path)}")

    def _exited_unreaped(self) -> bool:
        """True once the child has exited; leaves it a zombie so its PGID stays reserved."""
        if self.popen.returncode is not None:
            return True
        try:
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        return info is not None

    def _wait_exit(self, timeout: float) -> bool:
        try:
            wait_until(self._exited_unreaped, timeout, interval=0.02, what=f"{self.name} to exit")
            return True
        except TimeoutError:
            return False

    def _kill_group_and_reap(self) -> None:
        """SIGKILL the whole process group (its id is our PID), then reap the leader.

        The leader is reaped last, so the group id cannot have been reused.
        """
        if self.popen.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
            self.popen.wait()
        _LIVE.discard(self)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> None:
        """Send ``sig`` to the PID, wait up to ``timeout``, then SIGKILL the group."""
        if self.popen.returncode is None and not self._exited_unreaped():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)
            self._wait_exit(timeout)
        self._kill_group_and_reap()

    def kill(self) -> None:
        """SIGKILL the process group at once (a crash, for restart tests)."""
        self._kill_group_and_reap()


_LIVE: set[_Process] = set()


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_LIVE):
        proc.kill()


class _Peer:
    """Base for peers: a working directory (own temp dir unless given) and one process."""

    name = "peer"

    def __init__(self, workdir: PathLike | None) -> None:
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else Path(
            tempfile.mkdtemp(prefix=f"spinenode-{self.name}-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._proc: _Process | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def running(self) -> bool:
        return self._proc is not None and self._proc.alive()

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        """Stop gracefully (SIGTERM, then SIGKILL after a timeout)."""
        if self._proc is not None:
            self._proc.stop()
            self._proc = None

    def kill(self) -> None:
        """SIGKILL the peer, simulating a crash."""
        if self._proc is not None:
            self._proc.kill()
            self._proc = None

    def close(self) -> None:
        """Stop and remove the working directory if this object created it."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        if not self.running():
            try:
                self.start()
            except BaseException:
                self.close()
                raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _start_with_retries(start_once: Callable[[bool], None], fixed_port: bool) -> None:
    """Call ``start_once(fresh_port)``; retry on a new port if another process took ours."""
    attempts = 1 if fixed_port else _START_ATTEMPTS
    for attempt in range(attempts):
        try:
            start_once(not fixed_port)
            return
        except PeerError:
            if attempt == attempts - 1:
                raise


# --------------------------------------------------------------------------- DCMTK


@functools.cache
def dcmtk_tool(name: str) -> str:
    """Absolute path of a DCMTK tool, checked to be DCMTK.

    pynetdicom installs console scripts with the same names (storescu, storescp,
    echoscu...) into the venv; never rely on PATH for these.
    """
    path = _require_binary(f"/usr/bin/{name}", "dcmtk")
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
    if "dcmtk" not in (out.stdout + out.stderr).lower():
        raise PeerError(f"{path} --version does not mention DCMTK: {out.stdout[:200]!r}")
    return path


def dcmtk_env() -> dict[str, str]:
    """Environment for DCMTK processes: Nagle off (``TCP_NODELAY=1``)."""
    return {**os.environ, "TCP_NODELAY": "1"}


def _as_paths(files_or_dir: PathLike | Iterable[PathLike]) -> list[Path]:
    if isinstance(files_or_dir, (str, os.PathLike)):
        return [Path(files_or_dir)]
    return [Path(p) for p in files_or_dir]


def storescu(
    files_or_dir: PathLike | Iterable[PathLike],
    host: str,
    port: int,
    called_ae: str,
    calling_ae: str = "STORESCU",
    extra_args: Sequence[str] = (),
    timeout: float = 120,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Send files (or directories, scanned recursively) with DCMTK storescu.

    ``extra_args`` pass through, e.g. ``("-xs",)`` to propose JPEG lossless SV1 or
    ``("-xt",)`` for JPEG-LS; by default storescu proposes uncompressed syntaxes only.
    With ``check=True`` a non-zero exit raises :class:`PeerError` with the output.
    """
    paths = _as_paths(files_or_dir)
    scan = ["+sd", "+r"] if any(p.is_dir() for p in paths) else []
    argv = [
        dcmtk_tool("storescu"), "-aet", calling_ae, "-aec", called_ae, *scan, *extra_args,
        host, str(port), *map(str, paths),
    ]
    return _run_dcmtk(argv, timeout, check)


def echoscu(
    host: str,
    port: int,
    called_ae: str,
    calling_ae: str = "ECHOSCU",
    timeout: float = 30,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """C-ECHO with DCMTK echoscu."""
    argv = [dcmtk_tool("echoscu"), "-aet", calling_ae, "-aec", called_ae, host, str(port)]
    return _run_dcmtk(argv, timeout, check)


def _run_dcmtk(argv: list[str], timeout: float, check: bool) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, env=dcmtk_env(),
        stdin=subprocess.DEVNULL,
    )
    if check and result.returncode != 0:
        raise PeerError(
            f"{Path(argv[0]).name} exited with status {result.returncode}:\n"
            f"{result.stdout[-4000:]}{result.stderr[-4000:]}"
        )
    return result


class StorescpServer(_Peer):
    """DCMTK storescp: a C-STORE SCP writing every received file into ``output_dir``.

    Accepts all storage SOP classes and all supported transfer syntaxes (``+xa``),
    writes received data bit-preserving (``+B``).  Listens on all interfaces.
    """

    name = "storescp"

    def __init__(
        self,
        workdir: PathLike | None = None,
        ae_title: str = "STORESCP",
        port: int | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        super().__init__(workdir)
        self.ae_title = ae_title
        self.port = port or 0
        self._fixed_port = port is not None
        self.extra_args = tuple(extra_args)
        self.output_dir = self.workdir / "received"
        self.output_dir.mkdir(exist_ok=True)

    def start(self) -> Self:
        _start_with_retries(self._start_once, self._fixed_port)
        return self

    def _start_once(self, fresh_port: bool) -> None:
        if fresh_port or not self.port:
            self.port = free_port()
        argv = [
            dcmtk_tool("storescp"), "-aet", self.ae_title, "-od", str(self.output_dir),
            # an association profile (-xf FILE PROFILE) replaces "accept all"
            *([] if "-xf" in self.extra_args else ["+xa"]), "+B", "-dhl", *self.extra_args, str(self.port),
        ]
        proc = _Process("storescp", argv, self.log_path, env=dcmtk_env(), cwd=self.workdir)
        self._proc = proc

        def ready() -> bool:
            proc.check_alive()
            return listens_on(proc.pid, self.port)

        try:
            wait_until(ready, START_TIMEOUT, what=f"storescp on port {self.port}")
        except TimeoutError as exc:
            self.stop()
            raise proc.failure(str(exc)) from exc
        except PeerError:
            self.stop()
            raise

    @property
    def destination(self) -> str:
        """``AE@127.0.0.1:PORT``, the form of the node's ``DESTINATIONS`` setting."""
        return f"{self.ae_title}@{LOOPBACK}:{self.port}"

    def files(self) -> list[Path]:
        """Received files, sorted by name (storescp names them ``MR.<SOP UID>`` etc.)."""
        return sorted(p for p in self.output_dir.rglob("*") if p.is_file())

    def wait_for_files(self, count: int, timeout: float = 30) -> list[Path]:
        """Wait until at least ``count`` files have arrived and return them."""
        wait_until(lambda: len(self.files()) >= count, timeout,
                   what=f"{count} files in storescp output")
        return self.files()


# --------------------------------------------------------------------------- redis


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

        try:
            wait_until(ready, START_TIMEOUT, what=f"redis-server PONG on port {self.port}")
        except TimeoutError as exc:
            self.stop()
            raise proc.failure(str(exc)) from exc
        except PeerError:
            self.stop()
            raise

    def restart(self) -> Self:
        """Graceful stop, then start on the same port."""
        self.stop()
        return self.start()


# --------------------------------------------------------------------------- PostgreSQL


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

        try:
            wait_until(ready, START_TIMEOUT, what=f"postgres accepting on port {self.port}")
        except TimeoutError as exc:
            self.stop()
            raise proc.failure(str(exc)) from exc
        except PeerError:
            self.stop()
            raise

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


# --------------------------------------------------------------------------- Orthanc


class OrthancServer(_Peer):
    """Orthanc 1.10 as the PACS, with its own JSON config, ports and storage.

    ``modalities`` maps a name to ``(ae_title, host, port)`` for ``DicomModalities``.
    No plugins are loaded (the Debian config folder is not read), HTTP is loopback-only
    without authentication, every calling AE may store, the called AE is not checked.
    ``OverwriteInstances`` is on, so a re-sent SOP instance replaces the stored one.
    ``extra_config`` entries override the generated config.
    """

    name = "orthanc"

    def __init__(
        self,
        workdir: PathLike | None = None,
        ae_title: str = "ORTHANC",
        modalities: Mapping[str, tuple[str, str, int]] | None = None,
        extra_config: Mapping[str, Any] | None = None,
        dicom_port: int | None = None,
    ) -> None:
        super().__init__(workdir)
        self.ae_title = ae_title
        self.modalities = dict(modalities or {})
        self.extra_config = dict(extra_config or {})
        #: A fixed DICOM port (a destination that comes up late); None: a free one.
        self.fixed_dicom_port = dicom_port
        self.dicom_port = 0
        self.http_port = 0
        self._binary = _require_binary("/usr/sbin/Orthanc", "orthanc")
        self._client: httpx.Client | None = None

    @property
    def port(self) -> int:
        """The DICOM port (alias of ``dicom_port``)."""
        return self.dicom_port

    @property
    def destination(self) -> str:
        """``AE@127.0.0.1:DICOM_PORT``, the form of the node's ``DESTINATIONS`` setting."""
        return f"{self.ae_title}@{LOOPBACK}:{self.dicom_port}"

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}"

    @property
    def config_path(self) -> Path:
        return self.workdir / "orthanc.json"

    def config(self) -> dict[str, Any]:
        """The JSON configuration this instance runs with."""
        storage = str(self.workdir / "storage")
        config: dict[str, Any] = {
            "Name": self.ae_title,
            "StorageDirectory": storage,
            "IndexDirectory": storage,
            "Plugins": [],
            "LuaScripts": [],
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "HttpDescribeErrors": True,
            "OrthancExplorerEnabled": False,
            "WebDavEnabled": False,
            "DicomServerEnabled": True,
            "DicomAet": self.ae_title,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": False,
            "DicomCheckModalityHost": False,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowEcho": True,
            "DicomAssociationCloseDelay": 0,
            "DicomModalities": {
                name: [ae, host, port] for name, (ae, host, port) in self.modalities.items()
            },
            "OverwriteInstances": True,
            "SaveJobs": False,
            "DeidentifyLogs": True,
            "StorageCompression": False,
        }
        config.update(self.extra_config)
        return config

    def start(self) -> Self:
        _start_with_retries(self._start_once, fixed_port=self.fixed_dicom_port is not None)
        return self

    def _start_once(self, fresh_port: bool) -> None:
        self.dicom_port, self.http_port = self.fixed_dicom_port or free_port(), free_port()
        while self.http_port == self.dicom_port:
            self.http_port = free_port()
        self.config_path.write_text(json.dumps(self.config(), indent=2))
        orthanc_log = self.workdir / "orthanc-verbose.log"
        argv = [self._binary, "--verbose", f"--logfile={orthanc_log}", "--no-jobs",
                str(self.config_path)]
        # Orthanc's DICOM stack is DCMTK: without TCP_NODELAY every C-STORE it sends
        # waits ~40 ms for a delayed ACK.
        proc = _Process("Orthanc", argv, self.log_path, env=dcmtk_env(), cwd=self.workdir)
        self._proc = proc

        def ready() -> bool:
            proc.check_alive()
            return (listens_on(proc.pid, self.http_port) and listens_on(proc.pid, self.dicom_port)
                    and self._system_ok())

        try:
            wait_until(ready, START_TIMEOUT, interval=0.1,
                       what=f"Orthanc /system on port {self.http_port}")
        except (TimeoutError, PeerError) as exc:
            self.stop()
            raise PeerError(f"Orthanc failed to start: {exc}\nverbose log {orthanc_log}:\n"
                            f"{_tail(orthanc_log)}") from exc

    def _system_ok(self) -> bool:
        try:
            return self.client.get("/system", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def _close_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def stop(self) -> None:
        """Graceful stop (SIGTERM; Orthanc 1.10 takes about 2 s to stop its HTTP server)."""
        self._close_client()
        super().stop()

    def kill(self) -> None:
        self._close_client()
        super().kill()

    def close(self) -> None:
        """SIGKILL (the instance is thrown away, a graceful stop only costs time)."""
        self.kill()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def client(self) -> httpx.Client:
        """An httpx client on the REST API (proxy environment ignored)."""
        if self._client is None:
            self._client = httpx.Client(base_url=self.base_url, timeout=60, trust_env=False)
        return self._client

    # -- REST helpers ----------------------------------------------------------------

    def _checked(self, response: httpx.Response) -> Any:
        if response.is_error:
            raise PeerError(f"Orthanc {response.request.method} {response.request.url.path} "
                            f"-> {response.status_code}: {response.text[:2000]}")
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.content

    def rest_get(self, path: str) -> Any:
        """GET; parsed JSON, or bytes for other content types."""
        return self._checked(self.client.get(path))

    def rest_post(self, path: str, json: Any = None, content: bytes | None = None) -> Any:
        """POST a JSON body or raw bytes; parsed JSON, or bytes for other content types."""
        if content is not None:
            return self._checked(self.client.post(path, content=content))
        return self._checked(self.client.post(path, json=json))

    def rest_delete(self, path: str) -> Any:
        return self._checked(self.client.delete(path))

    def upload(self, path_or_bytes: PathLike | bytes) -> str:
        """Store one DICOM file (POST /instances); return the Orthanc instance ID."""
        data = (path_or_bytes if isinstance(path_or_bytes, bytes)
                else Path(path_or_bytes).read_bytes())
        answer = self.rest_post("/instances", content=data)
        return str(answer["ID"])

    def instances(self) -> list[str]:
        """Orthanc IDs of all stored instances."""
        return list(self.rest_get("/instances"))

    def studies(self) -> list[str]:
        """Orthanc IDs of all stored studies."""
        return list(self.rest_get("/studies"))

    def series(self) -> list[str]:
        """Orthanc IDs of all stored series."""
        return list(self.rest_get("/series"))

    def download(self, instance_id: str) -> bytes:
        """The stored DICOM file of an instance."""
        response = self.client.get(f"/instances/{instance_id}/file")
        self._checked(response)
        return response.content

    def instance_tags(self, instance_id: str) -> dict[str, Any]:
        """``/instances/{id}/simplified-tags`` (keyword -> value)."""
        return dict(self.rest_get(f"/instances/{instance_id}/simplified-tags"))

    def find_by_study_uid(self, study_uid: str) -> list[str]:
        """Orthanc study IDs whose StudyInstanceUID is ``study_uid`` (0 or 1 of them)."""
        query = {"Level": "Study", "Query": {"StudyInstanceUID": study_uid}}
        return list(self.rest_post("/tools/find", json=query))

    def study_instances(self, study_uid: str) -> list[str]:
        """Orthanc instance IDs of the study with this StudyInstanceUID."""
        ids: list[str] = []
        for study_id in self.find_by_study_uid(study_uid):
            ids.extend(item["ID"] for item in self.rest_get(f"/studies/{study_id}/instances"))
        return ids

    def wait_for_instances(self, count: int, timeout: float = 30) -> list[str]:
        """Wait until Orthanc holds at least ``count`` instances; return their IDs."""
        if count <= 0:
            return self.instances()

        def enough() -> list[str]:
            ids = self.instances()
            return ids if len(ids) >= count else []

        return wait_until(enough, timeout, interval=0.1, what=f"{count} instances in Orthanc")

    def echo_modality(self, modality_name: str) -> None:
        """C-ECHO from Orthanc to a configured modality; raises on failure."""
        self.rest_post(f"/modalities/{modality_name}/echo", json={})

    def store_to_modality(self, modality_name: str, resource_ids: Sequence[str]) -> Any:
        """C-STORE resources (any level) to a configured modality, synchronously."""
        body = {"Resources": list(resource_ids), "Synchronous": True}
        return self.rest_post(f"/modalities/{modality_name}/store", json=body)


# --------------------------------------------------------------------------- dciodvfy


@dataclass(frozen=True)
class DciodvfyResult:
    """dciodvfy's verdict on one file."""

    output: str
    returncode: int
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def dciodvfy(path: PathLike) -> DciodvfyResult:
    """Validate a DICOM file with dicom3tools ``dciodvfy`` (it reports on stderr)."""
    binary = _require_binary("/usr/bin/dciodvfy", "dicom3tools")
    result = subprocess.run([binary, str(path)], capture_output=True, text=True, timeout=120,
                            stdin=subprocess.DEVNULL)
    output = result.stderr + result.stdout
    lines = [line.strip() for line in output.splitlines()]
    return DciodvfyResult(
        output=output,
        returncode=result.returncode,
        errors=[line for line in lines if line.startswith("Error")],
        warnings=[line for line in lines if line.startswith("Warning")],
    )
