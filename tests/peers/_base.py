"""What every peer shares: ports, waiting, child processes, the peer life cycle."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar


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

    def _wait_ready(self, proc: _Process, ready: Callable[[], bool], what: str) -> None:
        """Wait for ``ready``; when it times out or the process dies, stop the peer and
        raise :class:`PeerError` with the tail of its log."""
        try:
            wait_until(ready, START_TIMEOUT, what=what)
        except TimeoutError as exc:
            self.stop()
            raise proc.failure(str(exc)) from exc
        except PeerError:
            self.stop()
            raise

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
