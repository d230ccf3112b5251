"""What the ``spinenode`` commands that load settings share (``spinenode_app.cli`` and
``spinenode_app.cli_workers``): the ``--config`` option, loading the settings once, and how a
bad setting ends a command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn, Optional

import typer

from spinenode.core.errors import ConfigError
from spinenode.core.settings import Settings, load_settings

ConfigOpt = Annotated[
    Optional[Path], typer.Option("--config", "-c", help="TOML settings file", exists=False)
]


def config_exit(exc: ConfigError) -> NoReturn:
    """Every bad setting ends a command the same way: one line, exit code 2."""
    typer.echo(f"spinenode: {exc}", err=True)
    raise typer.Exit(2) from None


def settings_or_exit(config: Path | None) -> Settings:
    """The settings, or one clear line on stderr and exit status 2."""
    try:
        return load_settings(config)
    except ConfigError as exc:
        config_exit(exc)
