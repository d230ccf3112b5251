"""``spinenode phantom``: synthetic spine studies with ground truth (registered by spinenode_app.cli)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def phantom(
    out: Annotated[Path, typer.Argument(help="output directory (RSNA 2024 layout)")],
    studies: Annotated[int, typer.Option("--studies", "-n", min=0, help="number of studies")] = 1,
    region: Annotated[str, typer.Option(help="lumbar or cervical")] = "lumbar",
    modality: Annotated[str, typer.Option(help="MR or CT")] = "MR",
    seed: Annotated[int, typer.Option(help="random seed (same seed, same studies)")] = 0,
    start: Annotated[int, typer.Option(min=0, help="index of the first study")] = 0,
    matrix: Annotated[Optional[int], typer.Option(
        help="in-plane matrix of every series (default: clinical sizes drawn per study)")] = None,
    noise: Annotated[float, typer.Option(
        min=0.0, help="noise scale (1 = clinical, 0 = none)")] = 1.0,
    grade_config: Annotated[Optional[Path], typer.Option(
        "--grade-config", help="TOML overriding grade frequencies, see docs/phantom.md")] = None,
    herniation: Annotated[str, typer.Option(
        help="disc herniation and HIZ: none (default, what the shipped models were trained "
             "on) or realistic; [herniation] in --grade-config overrides rows")] = "none",
    transitional: Annotated[str, typer.Option(
        help="transitional lumbosacral segment in every study (lumbar): none (default), "
             "lumbarised_s1 (six lumbar-type vertebrae) or sacralised_l5; ground truth in "
             "phantom_transitional.csv")] = "none",
    no_masks: Annotated[bool, typer.Option("--no-masks", help="skip the mask side files")] = False,
    no_thickness_blur: Annotated[bool, typer.Option(
        "--no-thickness-blur", help="skip the slice-thickness blur (about 20 % faster)")] = False,
    preview: Annotated[Optional[Path], typer.Option(
        "--preview", help="also write a PNG montage of the first study")] = None,
) -> None:
    """Write synthetic spine studies (DICOM) and their ground truth (RSNA 2024 layout)."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    from models.phantom.config import PhantomConfig
    from models.phantom.generate import StudyResult, generate_dataset

    try:
        config = PhantomConfig.for_region(region.lower(), modality.upper(), matrix=matrix,
                                          noise=noise, grade_config=grade_config,
                                          thickness_blur=not no_thickness_blur,
                                          herniation=herniation.lower(),
                                          transitional=transitional.lower())
    except (ValueError, OSError) as exc:
        typer.echo(f"spinenode phantom: {exc}", err=True)
        raise typer.Exit(2) from None
    with Progress(TextColumn("[bold]phantom[/] {task.description}"), BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn()) as bar:
        task = bar.add_task(f"{config.region} {config.modality}", total=studies)

        def tick(r: StudyResult) -> None:
            bar.update(task, advance=1, description=f"{config.region} {config.modality} "
                       f"study {r.study_id} ({r.n_images} images, {r.seconds:.2f} s)")

        results = generate_dataset(out, studies, config, seed, start=start,
                                   write_masks=not no_masks, progress=tick)
    n_img = sum(r.n_images for r in results)
    secs = sum(r.seconds for r in results)
    typer.echo(f"wrote {len(results)} studies, {n_img} images to {out} "
               f"({secs / max(len(results), 1):.2f} s per study)")
    if preview is not None and results:
        from models.phantom.preview import render_preview

        typer.echo(f"preview: {render_preview(out, preview, results[0].study_id)}")


def register(app: typer.Typer) -> None:
    """Add the ``phantom`` command to the ``spinenode`` app."""
    app.command("phantom")(phantom)
