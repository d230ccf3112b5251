"""The ``spinenode`` command.

Each command builds the settings once, configures logging, and calls into the
package; imports of heavy modules happen inside the commands so that
``spinenode --help`` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

import models.cli as models_cli
import models.phantom.cli as phantom_cli
from spinenode_app import cli_workers
from spinenode_app.cli_options import ConfigOpt, config_exit, settings_or_exit
from spinenode.core.errors import ConfigError, SpinenodeError
from spinenode.core.logs import configure_logging
from spinenode.core.settings import Settings

app = typer.Typer(
    name="spinenode",
    help="DICOM-native PACS integration node for spine AI.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

def _existing_node(settings: Settings) -> None:
    from spinenode_app.data_dir import existing_node

    try:
        existing_node(settings)
    except ConfigError as exc:
        config_exit(exc)


@app.command()
def serve(config: ConfigOpt = None) -> None:
    """Run the DICOM receiver, the scheduler and the admin HTTP API (and, with the
    embedded broker, a worker for every queue as a child process)."""
    settings = settings_or_exit(config)
    configure_logging(settings)
    from spinenode_app.node import run_node

    try:
        run_node(settings)
    except ConfigError as exc:
        config_exit(exc)
    except SpinenodeError as exc:
        typer.echo(f"spinenode: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command()
def status(
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Summary of studies per state and the queues."""
    settings = settings_or_exit(config)
    _existing_node(settings)
    from scp_node.queue_status import queue_summary, render_summary

    summary = queue_summary(settings)
    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=str))
    else:
        render_summary(summary)


@app.command()
def retry(
    study_uid: Annotated[Optional[str], typer.Argument(help="Study Instance UID")] = None,
    failed: Annotated[bool, typer.Option("--failed", help="requeue every FAILED study")] = False,
    config: ConfigOpt = None,
) -> None:
    """Requeue a study (or every failed one) from the stage that failed (export, encode or analysis)."""
    settings = settings_or_exit(config)
    configure_logging(settings)
    if not study_uid and not failed:
        typer.echo("spinenode: give a STUDY_UID or --failed", err=True)
        raise typer.Exit(2)
    _existing_node(settings)
    from scp_node.scheduler import requeue

    try:
        uids = requeue(settings, study_uid=study_uid, all_failed=failed)
    except SpinenodeError as exc:
        typer.echo(f"spinenode: {exc}", err=True)
        raise typer.Exit(1) from None
    for uid in uids:
        typer.echo(f"requeued {uid}")
    if not uids:
        typer.echo("nothing to requeue")


@app.command()
def echo(
    peer: Annotated[str, typer.Argument(help="AE@HOST:PORT")],
    calling_ae: Annotated[str, typer.Option(help="our AE title")] = "SPINENODE",
    timeout: Annotated[float, typer.Option(help="seconds")] = 10.0,
) -> None:
    """C-ECHO a DICOM peer."""
    from scp_node.scu import echo as do_echo
    from spinenode.core.settings import Destination

    try:
        dest = Destination.parse(peer)
        status_code = do_echo(dest, calling_ae=calling_ae, timeout=timeout)
    except (ValueError, SpinenodeError) as exc:
        typer.echo(f"spinenode: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"C-ECHO {dest}: status 0x{status_code:04X}")
    raise typer.Exit(0 if status_code == 0 else 1)


@app.command()
def send(
    path: Annotated[Path, typer.Argument(help="a DICOM file or a directory of them")],
    to: Annotated[str, typer.Option("--to", help="AE@HOST:PORT")],
    calling_ae: Annotated[str, typer.Option(help="our AE title")] = "SPINENODE",
    timeout: Annotated[float, typer.Option(help="seconds")] = 30.0,
) -> None:
    """C-STORE files to a DICOM peer."""
    from scp_node.scu import send_files
    from spinenode.core.settings import Destination

    try:
        dest = Destination.parse(to)
        report = send_files(dest, path, calling_ae=calling_ae, timeout=timeout)
    except (ValueError, SpinenodeError) as exc:
        typer.echo(f"spinenode: {exc}", err=True)
        raise typer.Exit(1) from None
    skipped = f", skipped {len(report.skipped)} files that are not DICOM" if report.skipped else ""
    typer.echo(f"sent {report.sent}, failed {report.failed} to {dest}{skipped}")
    raise typer.Exit(0 if report.failed == 0 else 1)


# Commands defined beside their code: phantom, train, evaluate, reports (``models``); worker and
# demo (this package). The application is the floor that may import every other one.
phantom_cli.register(app)
models_cli.register(app)
cli_workers.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
