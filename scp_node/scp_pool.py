"""The DICOM receiver in several processes (``SCP_PROCESSES`` > 1).

One pynetdicom process meets the GIL near one core (docs/performance.md). Here the
node's process only listens and accepts; each accepted TCP connection is handed,
file descriptor and all (``SCM_RIGHTS`` over a Unix socket pair), to one of N
worker processes in turn. A worker runs the same AE and handlers as the
single-process receiver (:func:`scp_node.scp.scp_handlers`) with its own database
engine, spool and ingestor, so "persist, then acknowledge" holds unchanged; the
database copes with several writers (SQLite: WAL, busy timeout, BEGIN IMMEDIATE;
PostgreSQL: race-free upserts).

Handing connections out from one accepting process spreads associations evenly
(round robin); with ``SO_REUSEPORT`` the kernel put both of two associations on the
same worker in 4 of 6 runs (/work/shared/toolchain.md).

Lifetime: workers are spawned (not forked: the node has threads by then) and die
with the node. Each asks the kernel for SIGTERM when its parent dies
(``PR_SET_PDEATHSIG``, so a ``kill -9`` of the node leaves no worker listening)
and also exits when its end of the socket pair reports EOF. A worker that dies
is restarted by the accepting thread. On :meth:`ScpPool.shutdown` the node stops
accepting and closes the socket pairs; workers let established associations
finish (for up to :data:`DRAIN_SECONDS`), then exit. Nothing acknowledged can be
lost on any of these paths: a C-STORE is answered only after its file and row are
durable, and an interrupted write leaves only a temp file that start-up removes.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import selectors
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from pynetdicom.transport import ThreadedAssociationServer

from spinenode.core.errors import DicomNetworkError
from spinenode.core.settings import Settings

log = logging.getLogger(__name__)

#: ``make_server(settings, ingestor, counters or None, admission, server_class)``: a
#: pynetdicom server with the receiver's AE and handlers (``scp_node.scp.make_server``).
MakeServer = Callable[[Settings, Any, Any, Any, type], Any]

#: Seconds a stopping worker lets its established associations run before it exits.
DRAIN_SECONDS = 10.0
#: Seconds the node waits for a worker to exit before killing it.
STOP_SECONDS = DRAIN_SECONDS + 5.0
#: Seconds between checks of the stop flag and of dead workers in the accept loop.
_POLL_SECONDS = 0.2
#: Seconds between restarts of a worker that keeps dying.
RESTART_DELAY = 2.0
#: Seconds a worker may take to start (imports, database engine) before start() fails.
START_SECONDS = 120.0
#: What a worker sends on its socket pair once it can take associations.
READY = b"ready"
_ADDRESS_BYTES = 512


class _Worker:
    """One worker process and the node's end of its socket pair."""

    def __init__(self, index: int, process: Any, channel: socket.socket) -> None:
        self.index = index
        self.process = process
        self.channel = channel
        self.started = time.monotonic()


class ScpPool:
    """Accepts DICOM connections and hands them to ``processes`` worker processes."""

    def __init__(self, settings: Settings, processes: int, make_server: MakeServer, admission: Any = None,
                 counters: Any = None) -> None:
        if processes < 2:
            raise ValueError("ScpPool needs at least 2 processes")
        self.settings = settings
        #: Builds a worker's pynetdicom server (``scp_node.scp.make_server``): passed in,
        #: so this module does not import the receiver that imports it.
        self.make_server = make_server
        self.processes = processes
        self.admission = admission
        #: A SharedScpCounters (or None): what every worker stored, for /metrics.
        self.counters = counters
        self._ctx = multiprocessing.get_context("spawn")
        self._workers: list[_Worker] = []
        self._next = 0
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self.server_address: tuple[Any, ...] = (settings.dicom_host, settings.dicom_port)

    # --- start / stop -----------------------------------------------------------
    def start(self) -> ScpPool:
        """Spawn the workers, wait until they are ready, then listen and accept.

        Returns ``self``. The port opens only once every worker can take an
        association, so "the port accepts" means "the receiver is ready".

        Raises
        ------
        DicomNetworkError
            If a worker exits or stays silent for :data:`START_SECONDS` while starting.
        """
        self._workers = [self._spawn(i) for i in range(self.processes)]
        try:
            for worker in self._workers:
                self._wait_ready(worker)
        except DicomNetworkError:
            self._stop_workers(0.0)
            raise
        host, port = self.settings.dicom_host, self.settings.dicom_port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.create_server((host, port), family=family, backlog=128)
        self.server_address = self._listener.getsockname()
        self._thread = threading.Thread(target=self._accept_loop, name="scp-accept", daemon=True)
        self._thread.start()
        log.info("DICOM receiver %s listening on %s:%d, %d worker processes",
                 self.settings.ae_title, *self.server_address[:2], self.processes)
        return self

    def _spawn(self, index: int) -> _Worker:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        process = self._ctx.Process(
            target=worker_main,
            args=(self.settings, theirs, os.getpid(), self.make_server, self.admission, self.counters),
            name=f"scp-worker-{index}",
            daemon=True,
        )
        process.start()
        theirs.close()
        log.info("SCP worker %d started (pid %d)", index, process.pid)
        return _Worker(index, process, mine)

    def _wait_ready(self, worker: _Worker) -> None:
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if not worker.process.is_alive():
                raise DicomNetworkError(f"SCP worker {worker.index} exited during start-up "
                                        f"(status {worker.process.exitcode}); see its log lines")
            worker.channel.settimeout(_POLL_SECONDS)
            try:
                message = worker.channel.recv(16)
            except TimeoutError:
                continue
            finally:
                worker.channel.settimeout(None)
            if message == READY:
                return
        raise DicomNetworkError(f"SCP worker {worker.index} not ready after {START_SECONDS:.0f} s")

    def shutdown(self) -> None:
        """Stop accepting, let workers finish open associations, then stop them."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5 * _POLL_SECONDS + 1)
        if self._listener is not None:
            self._listener.close()
        self._stop_workers(STOP_SECONDS)
        log.info("DICOM receiver stopped")

    def _stop_workers(self, timeout: float) -> None:
        for worker in self._workers:
            worker.channel.close()  # EOF: the worker drains and exits
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                # SIGKILL: workers ignore SIGTERM while the node lives (see worker_main).
                log.warning("SCP worker %d did not stop in time; killing it", worker.index)
                worker.process.kill()
                worker.process.join()

    # --- accepting ---------------------------------------------------------------
    def _accept_loop(self) -> None:
        assert self._listener is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self._listener, selectors.EVENT_READ)
            while not self._stop.is_set():
                self._restart_dead_workers()
                if not sel.select(_POLL_SECONDS):
                    continue
                try:
                    conn, address = self._listener.accept()
                except OSError as exc:
                    if not self._stop.is_set():
                        log.error("accept failed: %s", exc.strerror)
                    continue
                with conn:
                    self._hand_over(conn, address)

    def _hand_over(self, conn: socket.socket, address: tuple[Any, ...]) -> None:
        """Pass ``conn`` to the next live worker (round robin); the node's copy is closed."""
        with contextlib.suppress(OSError):
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        payload = f"{address[0]}\n{address[1]}".encode()
        for _ in range(len(self._workers)):
            worker = self._workers[self._next % len(self._workers)]
            self._next += 1
            try:
                socket.send_fds(worker.channel, [payload], [conn.fileno()])
                return
            except OSError as exc:
                log.error("cannot hand a connection to SCP worker %d: %s",
                          worker.index, exc.strerror)
        log.error("no SCP worker could take the connection from %s; closed", address[0])

    def _restart_dead_workers(self) -> None:
        for i, worker in enumerate(self._workers):
            if worker.process.is_alive() or time.monotonic() - worker.started < RESTART_DELAY:
                continue
            log.error("SCP worker %d exited with %s; restarting",
                      worker.index, worker.process.exitcode)
            worker.channel.close()
            worker.process.join(0)
            self._workers[i] = self._spawn(worker.index)


# --- the worker process ------------------------------------------------------------


def _die_with_parent(parent_pid: int) -> None:
    """SIGTERM this process when the node dies (Linux); exit now if it already has."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:
        os._exit(0)


def worker_main(
    settings: Settings, channel: socket.socket, parent_pid: int, make_server: MakeServer, admission: Any,
    counters: Any = None,
) -> None:
    """Entry point of a worker: receive connections on ``channel`` until EOF."""
    _die_with_parent(parent_pid)

    def _on_sigterm(_signum: int, _frame: object) -> None:
        # From PR_SET_PDEATHSIG (the node is gone): exit at once. From a signal to the
        # whole process group (the supervisor shutting down): the node is exiting too and will close
        # our channel, so keep serving until then and drain open associations.
        if os.getppid() != parent_pid:
            os._exit(0)

    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # likewise for Ctrl-C on a terminal
    from spinenode.core.logs import configure_logging

    configure_logging(settings)
    from spinenode.core.db.session import Database
    from scp_node.ingest import GroupCommit, Ingestor
    from spinenode.core.storage import Spool

    db = Database(settings.database_url)
    ingestor = Ingestor(db, Spool(settings.data_dir), group_commit=GroupCommit.from_settings(settings))
    server = make_server(settings, ingestor, counters, admission, _HandedConnectionServer)
    server.server_close()  # the unbound TCP socket TCPServer made; never used
    channel.send(READY)
    log.debug("SCP worker ready (pid %d)", os.getpid())
    try:
        while True:
            try:
                payload, fds, _flags, _addr = socket.recv_fds(channel, _ADDRESS_BYTES, 1)
            except InterruptedError:
                continue
            if not payload and not fds:
                break  # the node closed its end, or died
            for extra in fds[1:]:
                os.close(extra)
            if not fds:
                continue
            host, _, port = payload.decode(errors="replace").partition("\n")
            conn = socket.socket(fileno=fds[0])
            server.process_request(conn, (host, int(port or 0)))
    finally:
        _drain(server)
        server.server_close()
        ingestor.close()
        db.dispose()
        logging.shutdown()
    # Threads of connections that never sent an A-ASSOCIATE-RQ (port probes) would
    # keep the process alive until pynetdicom's ACSE timeout: leave without them.
    # Everything acknowledged is already on disk and in the database.
    os._exit(0)


def _drain(server: Any) -> None:
    """Let established associations finish, for up to DRAIN_SECONDS."""
    deadline = time.monotonic() + DRAIN_SECONDS
    for assoc in list(server.active_associations):
        if assoc.is_established:
            assoc.join(max(0.0, deadline - time.monotonic()))
    unfinished = sum(1 for a in server.active_associations if a.is_established)
    if unfinished:
        log.warning("stopping with %d association(s) still open: unacknowledged instances "
                    "will be re-sent by their senders", unfinished)


class _HandedConnectionServer(ThreadedAssociationServer):
    """A pynetdicom server that never listens: its connections come from the node."""

    def server_bind(self) -> None:
        """Nothing to bind: the node's process owns the listening socket."""

    def server_activate(self) -> None:
        """Nothing to listen on."""

    def server_close(self) -> None:
        with contextlib.suppress(OSError):
            self.socket.close()
