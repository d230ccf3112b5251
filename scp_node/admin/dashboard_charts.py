"""Geometry of the two small inline SVG charts on the overview (no JS library).

Python computes coordinates; the template draws them, so every label is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from scp_node.admin.dashboard_queries import HourBin

WIDTH = 560
HEIGHT = 190
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 14, 30


@dataclass(frozen=True, slots=True)
class Rect:
    x: float
    y: float
    w: float
    h: float
    cls: str
    title: str


@dataclass(frozen=True, slots=True)
class Dot:
    x: float
    y: float
    title: str


@dataclass(frozen=True, slots=True)
class Tick:
    pos: float
    label: str


@dataclass
class Chart:
    title: str
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right: int = WIDTH - RIGHT
    top: int = TOP
    bottom: int = HEIGHT - BOTTOM
    y_ticks: list[Tick] = field(default_factory=list)
    x_ticks: list[Tick] = field(default_factory=list)
    bars: list[Rect] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    dots: list[Dot] = field(default_factory=list)
    legend: list[tuple[str, str]] = field(default_factory=list)
    empty: bool = True


def nice_step(raw: float) -> float:
    """The smallest 1, 2, 2.5 or 5 × 10^k not below ``raw``."""
    if raw <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if m * exp >= raw - 1e-12:
            return float(m * exp)
    return float(10 * exp)


def axis(max_value: float, *, integer: bool, target_ticks: int = 4) -> tuple[float, float]:
    """(top, step) of a y axis from 0 that holds ``max_value`` with about ``target_ticks`` steps."""
    step = nice_step(max(max_value, 1e-9) / target_ticks)
    if integer:
        step = max(1.0, math.ceil(step))
    top = step * max(1, math.ceil(max_value / step - 1e-9))
    return top, step


def _frame(chart: Chart, hours: list[HourBin], top: float, step: float, label: Callable[[float], str]) -> None:
    plot_h = chart.bottom - chart.top
    n = int(round(top / step))
    for i in range(n + 1):
        chart.y_ticks.append(Tick(round(chart.bottom - plot_h * i / n, 1), label(step * i)))
    width = (chart.right - chart.left) / max(1, len(hours))
    for i, h in enumerate(hours):
        if i % 3 == 0:
            chart.x_ticks.append(Tick(round(chart.left + width * (i + 0.5), 1), h.start.strftime("%H:%M")))


def time_unit(max_seconds: float) -> tuple[float, str]:
    """Seconds per axis unit and its name, so that axis labels stay short."""
    if max_seconds <= 120:
        return 1.0, "s"
    if max_seconds <= 2 * 3600:
        return 60.0, "min"
    return 3600.0, "h"


def throughput_chart(hours: list[HourBin]) -> Chart:
    """Stacked bars: studies DONE and FAILED per hour."""
    chart = Chart("Throughput: studies finished per hour",
                  legend=[("bar-done", "done"), ("bar-failed", "failed")])
    top_value, step = axis(max((h.done + h.failed for h in hours), default=0), integer=True)
    _frame(chart, hours, top_value, step, lambda v: f"{v:g}")
    plot_h = chart.bottom - chart.top
    step = (chart.right - chart.left) / max(1, len(hours))
    width = max(2.0, step * 0.7)
    for i, h in enumerate(hours):
        x = chart.left + step * i + (step - width) / 2
        base = float(chart.bottom)
        label = h.start.strftime("%H:%M")
        for n, cls, what in ((h.done, "bar-done", "done"), (h.failed, "bar-failed", "failed")):
            if n:
                bh = plot_h * n / top_value
                base -= bh
                chart.bars.append(Rect(round(x, 1), round(base, 1), round(width, 1), round(bh, 1), cls,
                                       f"{label} UTC: {n} {what}"))
                chart.empty = False
    return chart


def latency_chart(hours: list[HourBin], fmt: Callable[[float], str]) -> Chart:
    """A line of the median total time (first instance → DONE) of the studies done each hour."""
    chart = Chart("Latency: median time first instance → done",
                  legend=[("line-latency", "median total time")])
    values = [h.median_total_s for h in hours if h.median_total_s is not None]
    unit, name = time_unit(max(values, default=0.0))
    top_units, step = axis(max(values, default=0.0) / unit or 1.0, integer=False)
    top_value = top_units * unit
    _frame(chart, hours, top_units, step, lambda v: f"{v:g} {name}" if v else "0")
    plot_h = chart.bottom - chart.top
    step = (chart.right - chart.left) / max(1, len(hours))
    segment: list[str] = []
    for i, h in enumerate(hours):
        if h.median_total_s is None:
            if len(segment) > 1:
                chart.lines.append(" ".join(segment))
            segment = []
            continue
        x = round(chart.left + step * (i + 0.5), 1)
        y = round(chart.bottom - plot_h * h.median_total_s / top_value, 1)
        segment.append(f"{x},{y}")
        chart.dots.append(Dot(x, y, f"{h.start.strftime('%H:%M')} UTC: median {fmt(h.median_total_s)} "
                                    f"over {h.done} stud{'y' if h.done == 1 else 'ies'}"))
        chart.empty = False
    if len(segment) > 1:
        chart.lines.append(" ".join(segment))
    return chart
