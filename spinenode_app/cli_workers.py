"""The ``worker`` and ``demo`` commands (registered by :mod:`spinenode_app.cli`): a Celery worker
of the stages, and the whole path on one machine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from spinenode_app.cli_options import ConfigOpt, config_exit, settings_or_exit
from spinenode.core.errors import ConfigError, SpinenodeError
from spinenode.core.logs import configure_logging


def worker(
    config: ConfigOpt = None,
    queues: Annotated[str, typer.Option(help="comma-separated: gpu,cpu,export")] = "gpu,cpu,export",
    concurrency: Annotated[int, typer.Option(min=1, help="worker threads (GPU hosts: 1)")] = 1,
    hostname: Annotated[Optional[str], typer.Option(help="Celery node name")] = None,
) -> None:
    """Run a Celery worker for the given queues."""
    settings = settings_or_exit(config)
    configure_logging(settings)
    from spinenode_app.data_dir import prepare_data_dir
    from workers.celery_app import run_worker

    wanted = [q.strip() for q in queues.split(",") if q.strip()]
    try:
        prepare_data_dir(settings)
        run_worker(settings, wanted, concurrency=concurrency, hostname=hostname)
    except ConfigError as exc:
        config_exit(exc)
    except SpinenodeError as exc:
        typer.echo(f"spinenode: {exc}", err=True)
        raise typer.Exit(1) from None


def demo(
    keep: Annotated[Optional[Path], typer.Option(help="work in this directory and keep it")] = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the results")] = 300.0,
) -> None:
    """The whole path on this machine: node, a built-in PACS, a phantom lumbar MR study; prints
    the findings per level and where the SR, SEG and key images landed."""
    from spinenode_app.demo import run_demo

    raise typer.Exit(run_demo(keep, timeout))


def register(app: typer.Typer) -> None:
    app.command("worker")(worker)
    app.command("demo")(demo)
