"""Commands that live with the workers (registered by scp_node.cli): ``demo``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def demo(
    keep: Annotated[Optional[Path], typer.Option(help="work in this directory and keep it")] = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the results")] = 300.0,
) -> None:
    """The whole path on this machine: node, a built-in PACS, a phantom lumbar MR study; prints
    the findings per level and where the SR, SEG and key images landed."""
    from workers.demo import run_demo

    raise typer.Exit(run_demo(keep, timeout))


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
