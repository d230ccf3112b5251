"""The one condition table (models/conditions.py) and the places that read it."""

from __future__ import annotations

import ast
from pathlib import Path

from models import conditions
from models.conditions import CONDITIONS, GRADES, Condition, Laterality
from models.types import Box, Grade, Level, LevelFindings
from scp_node.admin.dashboard_format import findings_grid, grade_class
from workers.results import codes
from workers.results.keyimages import _label
from workers.results.sr import level_lines

ROOT = Path(__file__).resolve().parents[1]


def test_every_condition_has_one_row_and_codes_tell_them_apart() -> None:
    assert list(CONDITIONS) == list(Condition)
    assert all(spec.condition is c for c, spec in CONDITIONS.items())
    coded = {(s.evaluation, s.site, s.laterality) for s in CONDITIONS.values()}
    assert len(coded) == len(CONDITIONS)  # the SR's post-coordination names each condition once
    assert len({s.short for s in CONDITIONS.values()}) == len(CONDITIONS)
    assert len({s.long for s in CONDITIONS.values()}) == len(CONDITIONS)
    for c, spec in CONDITIONS.items():
        assert set(spec.grades) <= set(GRADES), c
        assert c.grades == spec.grades and c.rsna_group == spec.rsna_group
        assert codes.CONDITION_CODES[c].name.value == spec.evaluation.value


def test_pairs_share_group_site_and_scale() -> None:
    pairs = conditions.pairs()
    assert [(left.condition, right.condition) for left, right in pairs] == [
        (Condition.LEFT_NEURAL_FORAMINAL_NARROWING, Condition.RIGHT_NEURAL_FORAMINAL_NARROWING),
        (Condition.LEFT_SUBARTICULAR_STENOSIS, Condition.RIGHT_SUBARTICULAR_STENOSIS)]
    for left, right in pairs:
        assert (left.laterality, right.laterality) == (Laterality.LEFT, Laterality.RIGHT)
        assert (left.group, left.site, left.grades) == (right.group, right.site, right.grades)


def _lf(**grades: int) -> LevelFindings:
    level = Level("L4-L5", "1.2", "1.2.3", 5, Box(1, 2, 3, 4), 0.9, (0.0, 0.0, 0.0))
    out = []
    for name, k in grades.items():
        c = Condition(name)
        p = [0.0] * len(c.grades)
        p[k] = 1.0
        out.append(Grade(c, tuple(p)))
    return LevelFindings(level, tuple(out))


def test_sr_key_image_and_dashboard_read_the_table(monkeypatch: object) -> None:
    lf = _lf(spinal_canal_stenosis=1, left_neural_foraminal_narrowing=2, right_neural_foraminal_narrowing=2,
             left_subarticular_stenosis=0, right_subarticular_stenosis=1, pfirrmann=3)
    assert level_lines(lf)[1:] == ["canal MODERATE, Pfirrmann 4", "foramina SEVERE; subart. L normal/mild R MODERATE"]
    assert _label(lf) == "L4-L5: canal moderate, Pfirrmann 4, foramina L+R severe, R subart. moderate"
    grid = findings_grid({"model": {"name": "m", "version": "1"}, "levels": [
        {"level": "L4-L5", "findings": {str(g.condition): g.to_json() for g in lf.grades}}]})
    assert grid is not None
    assert grid.columns == [(s.short, s.long) for c, s in CONDITIONS.items() if lf.grade_of(c) is not None]
    assert grade_class("pfirrmann", "4") == "g-bad" and grade_class("pfirrmann", "severe") == "g-none"
    assert grade_class("spinal_canal_stenosis", "moderate") == "g-mid"


def test_herniation_is_one_phrase_on_the_graded_line() -> None:
    """Issue 19: type, position and HIZ said together, on the line OHIF draws second (it
    draws five at most), on the key image only from a protrusion up, in the dashboard as
    three columns with their colours."""
    lf = _lf(spinal_canal_stenosis=1, pfirrmann=3, left_neural_foraminal_narrowing=0,
             right_neural_foraminal_narrowing=0, disc_herniation=2, herniation_position=1, high_intensity_zone=1)
    assert level_lines(lf)[1:] == ["canal MODERATE, Pfirrmann 4, PROTRUSION paracentral L, HIZ",
                                   "foramina normal/mild"]
    assert _label(lf) == "L4-L5: canal moderate, Pfirrmann 4, protrusion left paracentral, HIZ"
    bulge = _lf(disc_herniation=1, high_intensity_zone=0)
    assert level_lines(bulge)[1:] == ["bulge"] and _label(bulge) == "L4-L5: no moderate/severe finding"
    none = _lf(spinal_canal_stenosis=0, disc_herniation=0, high_intensity_zone=0)
    assert level_lines(none)[1:] == ["canal normal/mild"]
    grid = findings_grid({"model": {"name": "m", "version": "1"}, "levels": [
        {"level": "L4-L5", "findings": {str(g.condition): g.to_json() for g in lf.grades}}]})
    assert grid is not None and ("herniation", "disc herniation") in grid.columns
    assert grade_class("disc_herniation", "extrusion") == "g-bad" and grade_class("high_intensity_zone", "present") == "g-mid"


def test_no_other_module_spells_the_conditions_out() -> None:
    """The table is the only place with a condition's words: no other module of the node
    holds three or more condition keys in one literal (the copies issue 13 removed each
    held all six; what a series role serves, models/series.py, names two)."""
    keys = {str(c) for c in Condition}
    offenders = []
    for pkg in ("scp_node", "workers", "models"):
        for path in (ROOT / pkg).rglob("*.py"):
            if path.name == "conditions.py":
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, (ast.List, ast.Tuple, ast.Set, ast.Dict)):
                    elts = node.keys if isinstance(node, ast.Dict) else node.elts
                    named = {e.value for e in elts if isinstance(e, ast.Constant) and e.value in keys}
                    if len(named) >= 3:
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []
