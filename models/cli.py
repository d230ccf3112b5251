"""``spinenode train detector|grader|herniation``, ``spinenode evaluate`` and the report commands
(``models.reports.cli``), registered by spinenode_app.cli.

Heavy imports (torch, ultralytics) happen inside the commands.
"""

from __future__ import annotations

import json
import logging
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Optional

import typer


def _progress_log() -> None:
    """INFO lines of ``models.*`` (one per grader epoch) on stderr: rich's progress bars draw
    nothing until the end when the output goes to a file, as in a training job's log."""
    lg = logging.getLogger("models")
    if not lg.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)


class Target(StrEnum):
    DETECTOR = "detector"
    GRADER = "grader"
    HERNIATION = "herniation"
    HERNIATED_MATERIAL = "herniated-material"


def train(
    target: Annotated[Target, typer.Argument(help="what to train: detector, grader, herniation or "
                                                           "herniated-material")],
    data: Annotated[list[Path], typer.Option("--data", help="RSNA-layout dataset root (repeat for several)",
                                             exists=True, file_okay=False)],
    out: Annotated[Path, typer.Option("--out", help="run directory (weights, metrics, plots)")],
    epochs: Annotated[int, typer.Option(min=1, help="training epochs")] = 30,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto")] = "auto",
    seed: Annotated[int, typer.Option(help="random seed (split, init, augmentation)")] = 0,
    workers: Annotated[int, typer.Option(min=1, help="processes for data preparation")] = 1,
    batch: Annotated[int, typer.Option(min=0, help="batch size (0: trainer default)")] = 0,
    imgsz: Annotated[int, typer.Option(min=64, help="detector image size")] = 384,
    version: Annotated[str, typer.Option(help="version written to the weights manifest")] = "0.1.0",
    max_studies: Annotated[Optional[int], typer.Option(help="use at most N studies")] = None,
    max_hours: Annotated[Optional[float], typer.Option(help="detector: stop after this many hours")] = None,
    copies: Annotated[int, typer.Option(min=1, help="grader, herniation: crops per level and series (the first "
                                                  "unjittered, the rest jittered by up to 2.5 mm)")] = 3,
    enriched: Annotated[Optional[list[Path]], typer.Option(
        "--enriched", exists=True, file_okay=False,
        help="herniation: a dataset made with enriched frequencies (--grade-config); trained on, but the "
             "calibration follows the label frequencies of the --data sets (repeat for several)")] = None,
) -> None:
    """Train the detector (YOLO-seg), the grader (2.5D residual CNN) from RSNA-layout data, or, from
    phantoms made with ``--herniation realistic``, the herniation model (type, position, HIZ) or
    the herniated-material segmenter (the SEG's herniated-material segments)."""
    from models.analyzer import resolve_device
    from models.train import TrainConfig, train_detector, train_grader

    _progress_log()
    cfg = TrainConfig(data=tuple(data) + tuple(enriched or ()), enriched=tuple(enriched or ()), out=out,
                      epochs=epochs, device=resolve_device(device), seed=seed, workers=workers, batch=batch,
                      imgsz=imgsz, version=version, max_studies=max_studies, max_hours=max_hours, copies=copies)
    if target is Target.HERNIATION:
        from models.train_herniation import train_herniation

        report = train_herniation(cfg)
    elif target is Target.HERNIATED_MATERIAL:
        from models.train_herniated_material import train_herniated_material

        report = train_herniated_material(cfg)
    else:
        report = train_detector(cfg) if target is Target.DETECTOR else train_grader(cfg)
    summary = {k: v for k, v in report.items() if k not in ("history", "val_uncalibrated")}
    typer.echo(json.dumps(summary, indent=2, default=str))


def evaluate(
    data: Annotated[Path, typer.Option("--data", help="RSNA-layout dataset root", exists=True, file_okay=False)],
    weights: Annotated[Optional[Path], typer.Option("--weights", help="weights directory (manifest.json)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the metrics as JSON")] = False,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto")] = "auto",
    batch_studies: Annotated[int, typer.Option(min=1, help="studies per analyzer batch")] = 1,
    max_studies: Annotated[Optional[int], typer.Option(help="evaluate at most N studies")] = None,
    variant: Annotated[Optional[str], typer.Option(
        help="re-encode every study first, as a hospital could send it (models/phantom/variants.py): "
             "an in-plane orientation such as flip_rows or transpose+flip_cols, reversed_slices, "
             "legacy_enhanced, with_localizer, with_repeat, without_descriptions, partial_coverage")] = None,
) -> None:
    """Run the analyzer on RSNA-layout data and report the RSNA 2024 score and friends."""
    from models.evaluate import evaluate as run_evaluation
    from models.phantom.variants import variant_names

    if variant is not None and variant not in variant_names():
        typer.echo(f"spinenode evaluate: unknown variant {variant!r} (one of {', '.join(variant_names())})", err=True)
        raise typer.Exit(2)
    report = run_evaluation(data, weights, device, batch_studies, max_studies, progress=not as_json,
                            variant=variant)
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=str))
        return
    _render(report)


def _render(report: dict) -> None:  # type: ignore[type-arg]
    from rich.console import Console
    from rich.table import Table

    con = Console()
    head = Table(title=f"spinenode evaluate: {report['studies']} {report['region']} studies, {report.get('model')}")
    head.add_column("metric")
    head.add_column("value", justify="right")
    rs = report.get("rsna_score") or {}
    for k in ("score", "spinal", "foraminal", "subarticular", "any_severe_spinal"):
        if rs.get(k) is not None:
            ci = _interval(rs.get("score_ci95")) if k == "score" else ""
            head.add_row(f"RSNA 2024 {k}", f"{rs[k]:.4f}{ci}")
    for k in ("level_detection_recall", "level_naming_accuracy", "seconds_per_study",
              "seconds_per_study_with_io", "missing_predictions"):
        v = report.get(k)
        if v is not None:
            head.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    if "pfirrmann" in report:
        pf = report["pfirrmann"]
        head.add_row("pfirrmann accuracy / kappa",
                     f"{pf['accuracy']:.3f} / {pf['kappa_linear']:.3f}{_interval(pf.get('kappa_linear_ci95'))}")
    con.print(head)
    tab = Table(title="per condition")
    for c in ("condition", "n", "accuracy", "macro-F1", "kappa (linear)", "ECE", "severe: predicted / observed"):
        tab.add_column(c)
    for name, m in report.get("conditions", {}).items():
        tab.add_row(name, str(m["n"]), f"{m['accuracy']:.3f}", f"{m['macro_f1']:.3f}",
                    f"{m['kappa_linear']:.3f}{_interval(m.get('kappa_linear_ci95'))}", f"{m['ece']:.3f}",
                    f"{m['mean_probability'][2]:.3f} / {m['observed_frequency'][2]:.3f}")
    con.print(tab)
    if report.get("measurements_mm"):
        mt = Table(title="measurements (mm) against the phantom's label masks")
        for c in ("measurement", "n", "median |error|", "mean |error|", "90th pct |error|", "bias"):
            mt.add_column(c)
        for name, m in report["measurements_mm"].items():
            if m.get("n"):
                mt.add_row(name, str(m["n"]), f"{m['median_abs_error']:.2f}", f"{m['mean_abs_error']:.2f}",
                           f"{m['p90_abs_error']:.2f}", f"{m['bias']:+.2f}")
        con.print(mt)
    for kind, t in (report.get("transitional_flags") or {}).items():
        con.print(f"transitional segment flagged: {t['flagged']} of {t['studies']} studies whose truth is {kind}")
    if report.get("herniation"):
        hm = report["herniation"]
        ht = Table(title="disc herniation and HIZ (herniation model)")
        for c in ("finding", "n", "accuracy", "kappa (linear)", "F1"):
            ht.add_column(c)
        ty, po, hz = hm["type"], hm["position"], hm["hiz"]
        f1s = ", ".join(f"{k} {v:.2f}" for k, v in ty["f1"].items() if v is not None)
        ht.add_row("type", str(ty["n"]), f"{ty['accuracy']:.3f}",
                   f"{ty['kappa_linear']:.3f}{_interval(ty.get('kappa_linear_ci95'))}", f1s)
        if po["n"]:
            ht.add_row("position (of focal herniations called focal)", str(po["n"]),
                       f"{po['accuracy']:.3f}{_interval(po.get('accuracy_ci95'))}", "",
                       ", ".join(f"{k} {v:.2f}" for k, v in po["f1"].items() if v is not None))
        ht.add_row("HIZ present", f"{hz['n']} ({hz['positives']} true)", "", "",
                   f"{hz['f1']:.3f}{_interval(hz.get('f1_ci95'))}")
        con.print(ht)
    if report.get("herniated_material"):
        hs = report["herniated_material"]
        prec = f"{hs['precision']:.3f}" if hs.get("precision") is not None else "-"
        rec = f"{hs['recall']:.3f}" if hs.get("recall") is not None else "-"
        con.print(f"herniated material (SEG segments against the phantom's mask, sagittal pixels pooled over "
                  f"{hs['studies']} studies, {hs['studies_with_truth']} with herniated material): Dice "
                  f"{hs['dice']:.3f}{_interval(hs.get('dice_ci95'))}, precision {prec}, recall {rec}")
    for name, m in report.get("measurements_mm2", {}).items():
        con.print(f"{name} (mm², axial slice through the disc, against the phantom's canal label): n {m['n']}, "
                  f"median |error| {m['median_abs_error']:.1f} ({m['median_abs_error_percent']:.1f} %), "
                  f"90th pct {m['p90_abs_error']:.1f}, bias {m['bias']:+.1f} ({m['bias_percent']:+.1f} %)")
    if report.get("bootstrap"):
        con.print(f"95 % intervals: {report['bootstrap']['resamples']} resamples of the studies (seed "
                  f"{report['bootstrap']['seed']})")


def _interval(ci: list[float] | None) -> str:
    return f" ({ci[0]:.3f} to {ci[1]:.3f})" if ci else ""


def register(app: typer.Typer) -> None:
    """Add ``train``, ``evaluate``, ``labels-from-reports`` and ``phantom-reports`` to the
    ``spinenode`` command."""
    from models.reports.cli import register as register_reports

    app.command(name="train")(train)
    app.command(name="evaluate")(evaluate)
    register_reports(app)
