"""The worker's Celery app: the node's configuration plus the registered tasks."""

from __future__ import annotations

import logging
import os
import socket
import threading

from spinenode.core.broker import QUEUES, celery_config
from spinenode.core.errors import ConfigError
from spinenode.core.settings import Settings
from workers.resources import WorkerApp

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 5.0


def create_app(settings: Settings, hostname: str | None = None) -> WorkerApp:
    from workers.tasks import register_tasks

    app = WorkerApp(settings, hostname or default_hostname(), main="spinenode-worker",
                    task_cls="workers.resources:StageTask")
    app.conf.update(celery_config(settings))
    register_tasks(app)
    return app


def default_hostname() -> str:
    return f"spinenode@{socket.gethostname()}-{os.getpid()}"


def run_worker(settings: Settings, queues: list[str], *, concurrency: int = 1, hostname: str | None = None) -> None:
    """Run a worker in this process until it is stopped (SIGTERM: warm shutdown)."""
    unknown = [q for q in queues if q not in QUEUES]
    if unknown or not queues:
        raise ConfigError(f"unknown queue(s) {','.join(unknown) or '(none)'}; use {','.join(QUEUES)}")
    name = hostname or default_hostname()
    app = create_app(settings, name)
    ctx = app.resources
    ctx.db.migrate(settings.data_dir)
    if "gpu" in queues and settings.worker_warmup:
        # Tasks run in this process (solo or threads pool): warm the models before the
        # first message is taken, not inside the first study's task.
        from workers.warmup import warm_analyzer

        warm_analyzer(settings, ctx.analyzers)
    from workers.heartbeat import Heartbeat

    beat = Heartbeat(ctx.db, name, queues, device=settings.device)
    stop = threading.Event()
    thread = threading.Thread(target=beat.run, args=(stop, HEARTBEAT_SECONDS), name="heartbeat", daemon=True)
    thread.start()
    argv = [
        "worker",
        f"--queues={','.join(queues)}",
        f"--hostname={name}",
        f"--loglevel={settings.log_level}",
        "--without-gossip",
        "--without-mingle",
    ]
    # GPU work: one process, no fork after CUDA init (toolchain.md).
    argv += ["--pool=solo"] if concurrency == 1 else ["--pool=threads", f"--concurrency={concurrency}"]
    log.info("worker %s consuming %s", name, ",".join(queues))
    try:
        app.worker_main(argv=argv)
    finally:
        stop.set()
        beat.remove()
