"""Run a ``spinenode`` models command (train, evaluate, ...) in-process through typer's CliRunner."""

from __future__ import annotations

import logging

from click.testing import Result
from typer.testing import CliRunner


def invoke_models_cli(args: list[str]) -> Result:
    """``models.cli``'s commands with ``args``; the progress log handler the command adds (it
    writes to CliRunner's stderr, closed afterwards) is removed again."""
    import typer

    from models.cli import register

    app = typer.Typer()
    register(app)
    lg = logging.getLogger("models")
    handlers = list(lg.handlers)
    try:
        return CliRunner().invoke(app, args)
    finally:
        for h in lg.handlers[:]:
            if h not in handlers:
                lg.removeHandler(h)
