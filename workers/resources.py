"""The worker's resources (database, spool access, loaded analyzers) held by its Celery app, typed, one set
per process, and the base class of the pipeline tasks that reads them: no module-level
state, nothing hung on the app with ``type: ignore``."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import Any

from celery import Celery, Task
from celery.signals import worker_process_init

from spinenode.core.db.session import Database
from spinenode.core.errors import ConfigError
from spinenode.core.settings import Settings
from workers.analysis import AnalyzerCache
from workers.spool import SpoolAccess


@dataclass
class WorkerContext:
    """What every task needs, built once per worker process."""

    settings: Settings
    db: Database
    spool: SpoolAccess
    hostname: str
    #: The analyzers this process loaded (the warm-up's, reused by every analyze task).
    analyzers: AnalyzerCache = field(default_factory=AnalyzerCache)


class WorkerApp(Celery):
    """The worker's Celery app, holding the process's resources as a typed attribute.

    The resources (database engine, spool access, analyzers) belong to one process: they are built on
    first use in the process that uses them, and built again in a prefork child
    (``worker_process_init``), which must not share its parent's database connections.
    """

    def __init__(self, settings: Settings, hostname: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.worker_name = hostname
        self._resources: WorkerContext | None = None
        self._resources_pid = 0

    @property
    def resources(self) -> WorkerContext:
        if self._resources is None or self._resources_pid != os.getpid():
            self.fill_resources()
        assert self._resources is not None
        return self._resources

    def fill_resources(self) -> None:
        db = Database(self.settings.database_url)
        spool = SpoolAccess(self.settings, db, socket.gethostname())
        self._resources = WorkerContext(self.settings, db, spool, self.worker_name)
        self._resources_pid = os.getpid()


class StageTask(Task):
    """Base of the pipeline tasks: the worker's resources, typed, from the task's app."""

    @property
    def resources(self) -> WorkerContext:
        app = self.app
        if not isinstance(app, WorkerApp):
            raise ConfigError("spinenode tasks run only in a spinenode worker app")
        return app.resources


@worker_process_init.connect
def _fill_in_child(**_: Any) -> None:
    """A prefork child builds its own resources (the parent's connections are not its own)."""
    from celery import current_app

    app = current_app._get_current_object()
    if isinstance(app, WorkerApp):
        app.fill_resources()
