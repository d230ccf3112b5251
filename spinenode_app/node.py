"""``spinenode serve``: the DICOM receiver, the scheduler, the admin HTTP API and,
with the embedded broker, a supervised worker child process."""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import subprocess
import sys
import threading
import time

from sqlalchemy import select

from spinenode.core.broker import TaskSender, make_celery, queue_depths
from spinenode.core.db.models import Instance
from spinenode_app.data_dir import prepare_data_dir
from spinenode.core.db.session import Database
from scp_node.dicomio import parse_header
from scp_node.disk import DiskGuard
from spinenode.core.errors import ConfigError, SpinenodeError
from scp_node.ingest import GroupCommit, Ingestor
from scp_node.routing import load_rules
from scp_node.scheduler import Scheduler
from scp_node.scp import ScpCounters, start_scp
from spinenode.core.settings import Settings
from spinenode.core.storage import Spool

log = logging.getLogger(__name__)

#: Seconds between restarts of a crashed embedded worker.
WORKER_RESTART_DELAY = 2.0


def check_http_bind(settings: Settings) -> None:
    """Refuse a non-loopback admin bind without ADMIN_TOKEN."""
    host = settings.http_host
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not settings.admin_token:
        raise ConfigError(
            f"invalid setting SPINENODE_HTTP_HOST: binding the admin API to {host} needs SPINENODE_ADMIN_TOKEN"
        )
    if not loopback and not settings.viewer_token:
        log.warning("the admin API listens on %s without SPINENODE_VIEWER_TOKEN: anyone who reaches it can "
                    "read study lists, patient IDs and findings", host)


def reconcile_spool(db: Database, spool: Spool, ingestor: Ingestor) -> int:
    """Index spool files that have no row (a crash between rename and commit)."""
    with db.session() as s:
        known = set(s.scalars(select(Instance.sop_instance_uid)).all())
    added = 0
    for path in spool.iter_instances():
        if path.stem in known:
            continue
        try:
            meta = parse_header(path.read_bytes())
        except (SpinenodeError, OSError) as exc:
            log.error("spool file %s cannot be indexed: %s", path.name, exc)
            continue
        ingestor.index(meta, path.relative_to(spool.data_dir), path.stat().st_size, None)
        added += 1
    if added:
        log.warning("indexed %d spool files that had no database row", added)
    return added


class EmbeddedWorker:
    """A ``spinenode worker`` child for every queue, restarted if it dies."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.proc: subprocess.Popen[bytes] | None = None
        self._last_start = 0.0

    def start(self) -> None:
        env = {**os.environ, **self.settings.to_env()}
        cmd = [sys.executable, "-m", "spinenode_app.cli", "worker", "--queues", "gpu,cpu,export"]
        self.proc = subprocess.Popen(cmd, env=env, preexec_fn=_die_with_parent)
        self._last_start = time.monotonic()
        log.info("embedded worker started (pid %d)", self.proc.pid)

    def supervise(self) -> None:
        if self.proc is None or self.proc.poll() is None:
            return
        if time.monotonic() - self._last_start < WORKER_RESTART_DELAY:
            return
        log.error("embedded worker exited with %s; restarting", self.proc.returncode)
        self.start()

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _die_with_parent() -> None:
    """Linux: the child gets SIGTERM when serve dies, even by SIGKILL."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _start_http(settings: Settings, app: object) -> tuple[object, threading.Thread]:
    import uvicorn

    tls: dict[str, str] = {}
    if settings.http_tls:  # HTTPS for the admin API and the workers' /dicom-web
        tls = {"ssl_certfile": str(settings.tls_cert), "ssl_keyfile": str(settings.tls_key)}
    config = uvicorn.Config(
        app, host=settings.http_host, port=settings.http_port, log_level="warning", access_log=False,  # type: ignore[arg-type]
        **tls,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="admin-http", daemon=True)
    thread.start()
    return server, thread


def run_node(settings: Settings, stop: threading.Event | None = None) -> None:
    check_http_bind(settings)
    stop = stop or threading.Event()
    prepare_data_dir(settings)
    db = Database(settings.database_url)
    db.migrate(settings.data_dir)
    spool = Spool(settings.data_dir)
    spool.remove_partials()
    ingestor = Ingestor(db, spool, group_commit=GroupCommit.from_settings(settings))
    reconcile_spool(db, spool, ingestor)
    rules = load_rules(settings.eligibility_rules)

    celery = make_celery(settings)
    sender = TaskSender(celery)
    scheduler = Scheduler(settings, db, sender, rules)
    scheduler.recover_on_start()

    worker = EmbeddedWorker(settings) if settings.embedded_broker else None
    if worker:
        worker.start()

    from scp_node.admin.app import AdminContext, create_app

    if settings.scp_processes > 1:
        from scp_node.counters import SharedScpCounters

        counters: ScpCounters | SharedScpCounters = SharedScpCounters()
    else:
        counters = ScpCounters()
    admin = create_app(AdminContext(settings, db, sender, lambda: queue_depths(celery), counters))
    http, http_thread = _start_http(settings, admin)

    guard = DiskGuard(settings.data_dir, int(settings.disk_min_free_mb * 2**20))
    scp = start_scp(settings, ingestor, counters, guard)
    tls_scp = None
    if settings.dicom_tls_port:
        from scp_node.scp import start_tls_scp

        tls_scp = start_tls_scp(settings, ingestor, counters, guard)
    sched_thread = threading.Thread(target=scheduler.run, args=(stop,), name="scheduler", daemon=True)
    sched_thread.start()

    def _signal(signum: int, _frame: object) -> None:
        log.info("signal %d: shutting down", signum)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _signal)
        signal.signal(signal.SIGINT, _signal)
    log.info("spinenode serving: DICOM %s:%d, HTTP %s:%d, data %s", settings.dicom_host,
             settings.dicom_port, settings.http_host, settings.http_port, settings.data_dir)
    try:
        while not stop.wait(1.0):
            if worker:
                worker.supervise()
    finally:
        scp.shutdown()
        if tls_scp is not None:
            tls_scp.shutdown()
        ingestor.close()
        http.should_exit = True  # type: ignore[attr-defined]
        http_thread.join(10)
        sched_thread.join(10)
        if worker:
            worker.stop()
        db.dispose()
        log.info("spinenode stopped")


