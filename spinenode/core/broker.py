"""The task contract: the Celery configuration, queues, task names, sending.

The receiver only *sends* tasks by name; ``workers.celery_app`` builds on the same
configuration and registers the task functions. Both import this module; neither
imports the other.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery

from spinenode.core.settings import Settings

log = logging.getLogger(__name__)

QUEUES = ("gpu", "cpu", "export")
TASK_ANALYZE = "spinenode.analyze"
TASK_ENCODE = "spinenode.encode"
TASK_EXPORT = "spinenode.export"
#: Pipeline stage -> (task name, queue).
STAGES: dict[str, tuple[str, str]] = {
    "analyze": (TASK_ANALYZE, "gpu"),
    "encode": (TASK_ENCODE, "cpu"),
    "export": (TASK_EXPORT, "export"),
}
TASK_ROUTES = {task: {"queue": queue} for task, queue in STAGES.values()}
#: Longer than the longest task: a task still running after this is redelivered by Redis.
VISIBILITY_TIMEOUT_S = 3600


def celery_config(settings: Settings) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_ignore_result": True,
        "task_routes": TASK_ROUTES,
        "task_default_queue": "cpu",
        "task_serializer": "json",
        "accept_content": ["json"],
        "worker_hijack_root_logger": False,
        "broker_connection_retry_on_startup": True,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "enable_utc": True,
    }
    if settings.embedded_broker:
        folder = settings.broker_dir / "queue"
        processed = settings.broker_dir / "processed"
        control = settings.broker_dir / "control"
        for d in (folder, processed, control):
            d.mkdir(parents=True, exist_ok=True)
        # a host name, although the file transport ignores it: kombu warns without one
        conf["broker_url"] = "filesystem://localhost/"
        conf["broker_transport_options"] = {
            "data_folder_in": str(folder),
            "data_folder_out": str(folder),
            "processed_folder": str(processed),
            # kombu keeps exchange bindings here; its default is ./control in the CWD
            "control_folder": str(control),
            "store_processed": False,
            "polling_interval": 0.2,
        }
        # The filesystem transport has no fanout: no remote control, workers report
        # their heartbeats to the database instead.
        conf["worker_enable_remote_control"] = False
    else:
        conf["broker_url"] = settings.broker_url
        # Task events from the first task on: Flower's remote "enable events" reaches a busy
        # worker late, and the tasks it ran before that never show (seen on a loaded machine).
        conf["worker_send_task_events"] = True
        conf["broker_transport_options"] = {
            "visibility_timeout": VISIBILITY_TIMEOUT_S,
            "unacked_restore_interval": 2,
            "unacked_restore_throttle": 1,
        }
    return conf


def make_celery(settings: Settings, name: str = "spinenode") -> Celery:
    app = Celery(name)
    app.conf.update(celery_config(settings))
    return app


class TaskSender:
    """Sends pipeline tasks by name (after the caller's DB commit)."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def __call__(self, stage: str, study_uid: str, generation: int, countdown: float = 0.0) -> None:
        task, queue = STAGES[stage]
        self.app.send_task(task, args=[study_uid, generation], queue=queue, countdown=countdown or None)
        log.info("study %s (generation %d) enqueued to %s for %s", study_uid, generation, queue, stage)


def queue_depths(app: Celery) -> dict[str, int | None]:
    """Messages waiting in each queue (None when the broker cannot be asked)."""
    depths: dict[str, int | None] = {}
    try:
        with app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1)
            channel = conn.default_channel
            for q in QUEUES:
                try:
                    depths[q] = int(channel.queue_declare(queue=q, passive=True).message_count)
                except Exception:  # queue not declared yet
                    depths[q] = 0
    except Exception as exc:
        log.warning("cannot read queue depths from the broker: %s", type(exc).__name__)
        return {q: None for q in QUEUES}
    return depths
