"""``spinenode labels-from-reports`` and ``spinenode phantom-reports`` (registered by
models.cli)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer


def labels_from_reports(
    reports: Annotated[
        Path,
        typer.Argument(
            help="CSV: one report per study (see docs/reports.md)", exists=True, dir_okay=False
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="output directory (train.csv + side files)")],
    region: Annotated[str, typer.Option(help="lumbar or cervical")] = "lumbar",
    truth: Annotated[
        Optional[Path],
        typer.Option(
            "--truth",
            help="a dataset root with the true train.csv: print per-field precision/recall",
            exists=True,
            file_okay=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the scores as JSON")] = False,
    show_misses: Annotated[
        int, typer.Option(min=0, help="with --truth: print up to N mismatches")
    ] = 0,
) -> None:
    """Read free-text radiology reports into level-by-level labels (RSNA 2024 layout)."""
    from models.reports.labels import (
        ReportsFileError,
        extract,
        read_reports,
        read_truth,
        write_outputs,
    )

    if region not in ("lumbar", "cervical"):
        typer.echo(
            f"spinenode labels-from-reports: region must be lumbar or cervical, not {region!r}",
            err=True,
        )
        raise typer.Exit(2)
    try:
        items = read_reports(reports)
    except (ReportsFileError, OSError, UnicodeDecodeError) as exc:
        typer.echo(f"spinenode labels-from-reports: {exc}", err=True)
        raise typer.Exit(2) from None
    results = extract(items, region)
    write_outputs(out, results, region)
    n_labels = sum(len(r.labels) for r in results)
    if truth is None:
        typer.echo(f"read {len(results)} reports, {n_labels} labels written to {out}")
        return
    from models.reports.labels import grades_of
    from models.reports.score import score

    fields, misses = score(
        {r.report.study_id: grades_of(r.labels) for r in results}, read_truth(truth), region
    )
    from models import rsna
    from models.reports.score import score_discs

    disc_truth = rsna.read_herniation(truth)
    if disc_truth:  # phantom truth: also the herniation fields
        known = {r.report.study_id for r in results}
        fields += score_discs(
            {
                (r.report.study_id, d.level): (d.herniation, d.position, d.hiz)
                for r in results
                for d in r.discs
            },
            {k: v for k, v in disc_truth.items() if k[0] in known},
        )
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "reports": len(results),
                    "labels": n_labels,
                    "fields": [f.as_dict() for f in fields],
                    "mismatches": len(misses),
                },
                indent=2,
            )
        )
        return
    typer.echo(f"read {len(results)} reports, {n_labels} labels written to {out}")
    typer.echo(
        f"{'field':36} {'truth':>6} {'found':>6} {'right':>6} {'precision':>9} {'recall':>7}"
    )
    for f in fields:
        typer.echo(
            f"{f.field:36} {f.truth:6d} {f.extracted:6d} {f.correct:6d} "
            f"{f.precision:9.4f} {f.recall:7.4f}"
        )
    for m in misses[:show_misses]:
        typer.echo(f"  study {m.study_id} {m.column}: truth {m.truth}, read {m.extracted}")


def phantom_reports(
    out: Annotated[Path, typer.Argument(help="output directory (reports.csv + true train.csv)")],
    studies: Annotated[int, typer.Option("--studies", "-n", min=1, help="number of studies")] = 200,
    seed: Annotated[int, typer.Option(help="phantom seed (same truth as spinenode phantom)")] = 0,
    start: Annotated[int, typer.Option(min=0, help="index of the first study")] = 0,
    phrasings: Annotated[str, typer.Option(help="dev or heldout templates")] = "dev",
    herniation: Annotated[
        str, typer.Option(help="phantom herniation/HIZ preset of the truth: realistic or none")
    ] = "realistic",
) -> None:
    """Write radiology reports from lumbar phantom ground truth (to measure the report reader)."""
    from models.reports.phantom import write_phantom_reports

    try:
        path = write_phantom_reports(out, studies, seed, phrasings, start, herniation)
    except ValueError as exc:
        typer.echo(f"spinenode phantom-reports: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(
        f"wrote {studies} reports ({phrasings} phrasings) to {path}, truth in {out / 'train.csv'}"
    )


def register(app: typer.Typer) -> None:
    app.command(name="labels-from-reports")(labels_from_reports)
    app.command(name="phantom-reports")(phantom_reports)
