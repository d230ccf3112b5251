"""Formatting for the dashboard templates (Jinja filters and the findings grid)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from pydicom.uid import UID

from models.conditions import CONDITIONS, GRADES, grade_label, spec_of
from spinenode.core.status import NAMES as STATUS_NAMES

#: One line per state, shown as a tooltip and in the legend.
STATE_HELP: dict[str, str] = {
    "RECEIVING": "instances arriving; waits for the quiet period",
    "COMPLETE": "quiet period over; routing decides eligibility",
    "QUEUED": "waiting for a GPU worker",
    "ANALYZING": "AI analysis running",
    "ENCODING": "writing SR, SEG and key images",
    "EXPORTING": "sending results to the destinations",
    "DONE": "results stored at every destination",
    "SKIPPED": "not a spine study the node analyses",
    "FAILED": "a stage failed; see the reason, then retry",
}

ROLE_LABELS: dict[str, str] = {
    "sagittal_t2": "sagittal T2/STIR",
    "sagittal_t1": "sagittal T1",
    "axial_t2": "axial T2",
    "ct_sagittal": "CT sagittal",
}


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 0:
        return "−" + fmt_duration(-seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        m, s = divmod(int(round(seconds)), 60)
        return f"{m} min {s:02d} s"
    h, rest = divmod(int(round(seconds)), 3600)
    return f"{h} h {rest // 60:02d} min"


def fmt_time(value: dt.datetime | None) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S") if value is not None else "–"


def fmt_age(value: dt.datetime | None, now: dt.datetime) -> str:
    if value is None:
        return "–"
    s = (now - value).total_seconds()
    if s < 0:
        return "in " + fmt_age(now, value).removesuffix(" ago")
    if s < 60:
        return f"{s:.0f} s ago"
    if s < 3600:
        return f"{s // 60:.0f} min ago"
    if s < 86400:
        return f"{s // 3600:.0f} h ago"
    return f"{s // 86400:.0f} d ago"


def short_uid(uid: str | None, head: int = 12, tail: int = 14) -> str:
    if not uid:
        return "–"
    return uid if len(uid) <= head + tail + 1 else f"{uid[:head]}…{uid[-tail:]}"


#: C-STORE statuses an export may record besides the node's own (PS3.4 Annex B, PS3.7 Annex C).
EXPORT_STATUS_NAMES: dict[int, str] = {
    **STATUS_NAMES,
    0x0122: "Refused: SOP Class Not Supported",
    0x0124: "Refused: Not Authorized",
    0x0210: "Refused: Duplicate Invocation",
    0xB000: "Warning: Coercion of Data Elements",
    0xB006: "Warning: Elements Discarded",
    0xB007: "Warning: Data Set Does Not Match SOP Class",
}


def status_text(code: int | None) -> str:
    if code is None:
        return "–"
    name = EXPORT_STATUS_NAMES.get(code)
    if name is None and 0xA700 <= code <= 0xA7FF:
        name = "Refused: Out of Resources"
    elif name is None and 0xC000 <= code <= 0xCFFF:
        name = "Error: Cannot Understand"
    return f"0x{code:04X}" + (f" {name}" if name else "")


def sop_class_name(uid: str) -> str:
    name = UID(uid).name
    return name.removesuffix(" Storage") if name and name != uid else uid


def grade_class(condition: str, grade: Any) -> str:
    """The cell's colour class by the grade's concern (the condition table's grades)."""
    spec = GRADES.get(str(grade))
    try:
        scale = spec_of(condition).grades
    except ValueError:  # a condition this node does not know: judged by the grade alone
        scale = tuple(GRADES)
    if spec is None or str(grade) not in scale:
        return "g-none"
    return ("g-ok", "g-mid", "g-bad")[spec.concern]


def column(key: str) -> tuple[str, str]:
    """(heading, full name) of a condition's column; an unknown key in its own words."""
    try:
        spec = spec_of(key)
    except ValueError:
        return key.replace("_", " "), key
    return spec.short, spec.long


@dataclass(frozen=True, slots=True)
class FindingCell:
    grade: str
    p: float | None
    cls: str
    title: str


@dataclass(frozen=True, slots=True)
class FindingsGrid:
    model: str
    #: (heading, full name) per condition column.
    columns: list[tuple[str, str]]
    rows: list[tuple[str, list[FindingCell | None]]]


def findings_grid(findings: dict[str, Any] | None) -> FindingsGrid | None:
    """Level × condition cells (grade and its probability) from the Findings JSON."""
    if not findings or not findings.get("levels"):
        return None
    seen: list[str] = []
    for level in findings["levels"]:
        for key in level.get("findings") or {}:
            if key not in seen:
                seen.append(key)
    order = [str(c) for c in CONDITIONS]
    keys = sorted(seen, key=lambda k: (order.index(k) if k in order else len(order), k))
    rows: list[tuple[str, list[FindingCell | None]]] = []
    for level in findings["levels"]:
        cells: list[FindingCell | None] = []
        for key in keys:
            f = (level.get("findings") or {}).get(key)
            if not isinstance(f, dict):
                cells.append(None)
                continue
            probs = f.get("p") or {}
            p = probs.get(f.get("grade"))
            title = ", ".join(f"{grade_label(g)} {float(v):.2f}" for g, v in probs.items())
            cells.append(FindingCell(grade_label(f.get("grade")), float(p) if p is not None else None,
                                     grade_class(key, f.get("grade")), title))
        rows.append((str(level.get("level", "?")), cells))
    model = findings.get("model") or {}
    return FindingsGrid(f"{model.get('name', '?')} {model.get('version', '')}".strip(),
                        [column(k) for k in keys], rows)
