"""Level naming: count from the sacrum / C2, checked against class votes."""

from __future__ import annotations

import pytest

from models.levels import DiscCandidate, name_levels, typical_spacing
from models.types import CERVICAL_LEVELS, LUMBAR_LEVELS


def _cands(zs: list[float], votes: list[dict[str, float]] | None = None) -> list[DiscCandidate]:
    votes = votes or [{} for _ in zs]
    return [DiscCandidate(i, z, 0.9, v) for i, (z, v) in enumerate(zip(zs, votes))]


def test_lumbar_counts_from_sacrum_without_votes() -> None:
    zs = [100.0, 70.0, 40.0, 10.0, -20.0]
    named = name_levels(_cands(zs), "lumbar")
    assert [n.name for n in named] == list(LUMBAR_LEVELS)


def test_extra_thoracic_disc_is_dropped() -> None:
    zs = [130.0, 100.0, 70.0, 40.0, 10.0, -20.0]  # T12-L1 on top
    named = name_levels(_cands(zs), "lumbar")
    assert [n.name for n in named] == list(LUMBAR_LEVELS)
    assert named[0].key == 1


def test_missed_disc_leaves_a_gap() -> None:
    zs = [100.0, 70.0, 10.0, -20.0]  # L3-L4 missed
    named = name_levels(_cands(zs), "lumbar")
    assert [n.name for n in named] == ["L1-L2", "L2-L3", "L4-L5", "L5-S1"]


def test_votes_override_anchor_when_sacrum_is_cut_off() -> None:
    # only L1-L2..L3-L4 visible; counting from the bottom alone would call them L3-L4..L5-S1
    zs = [100.0, 70.0, 40.0]
    votes = [{"L1-L2": 0.9}, {"L2-L3": 0.8}, {"L3-L4": 0.9}]
    named = name_levels(_cands(zs, votes), "lumbar")
    assert [n.name for n in named] == ["L1-L2", "L2-L3", "L3-L4"]


def test_one_wrong_vote_does_not_win() -> None:
    zs = [100.0, 70.0, 40.0, 10.0, -20.0]
    votes = [{n: 0.9} for n in LUMBAR_LEVELS]
    votes[4] = {"L3-L4": 0.9}  # a confused class on the lowest disc
    named = name_levels(_cands(zs, votes), "lumbar")
    assert [n.name for n in named] == list(LUMBAR_LEVELS)


def test_duplicates_merged() -> None:
    zs = [100.0, 99.0, 70.0, 40.0, 10.0, -20.0]
    c = _cands(zs)
    c[1] = DiscCandidate(1, 99.0, 0.5, {})
    named = name_levels(c, "lumbar")
    assert [n.key for n in named] == [0, 2, 3, 4, 5]


def test_cervical_counts_from_c2() -> None:
    zs = [60.0, 45.0, 30.0, 15.0, 0.0, -15.0, -30.0]  # C7-T1 then T1-T2 below
    named = name_levels(_cands(zs), "cervical")
    assert [n.name for n in named] == list(CERVICAL_LEVELS)
    assert named[-1].key == 5


def test_typical_spacing_robust_to_gap() -> None:
    assert typical_spacing([0, 30, 60, 120, 150]) == 30
    assert name_levels([], "lumbar") == []


def test_split_class_confidence_is_merged_into_one_disc() -> None:
    from models.detector import SegDetection, merge_discs
    from models.types import Box

    dets = [
        SegDetection("C3-C4", 0.08, Box(10, 50, 40, 60), None),
        SegDetection("C5-C6", 0.07, Box(11, 51, 40, 61), None),  # same disc, other class
        SegDetection("C4-C5", 0.06, Box(10, 54, 40, 64), None),  # shifted, centres within half a box
        SegDetection("C2-C3", 0.9, Box(10, 20, 40, 30), None),
        SegDetection("vertebral_body", 0.9, Box(10, 31, 40, 48), None),
        SegDetection("other_disc", 0.05, Box(10, 90, 40, 100), None),  # weak and alone: dropped
    ]
    clusters = merge_discs(dets, min_score=0.1)
    assert len(clusters) == 2
    low = max(clusters, key=lambda c: c.best.box.y0)
    assert low.best.class_name == "C3-C4"
    assert low.score == pytest.approx(0.21)
    assert low.votes == pytest.approx({"C3-C4": 0.08, "C5-C6": 0.07, "C4-C5": 0.06})


def test_other_disc_vote_moves_the_count() -> None:
    # C2-C3 missed at the top; T1-T2 seen below C7-T1 and called other_disc
    zs = [45.0, 30.0, 15.0, 0.0, -15.0, -30.0]
    votes: list[dict[str, float]] = [{}, {}, {}, {}, {}, {"other_disc": 0.9}]
    assert name_levels(_cands(zs), "cervical")[0].name == "C2-C3"  # anchor alone: wrong
    named = name_levels(_cands(zs, votes), "cervical")
    assert [n.name for n in named] == ["C3-C4", "C4-C5", "C5-C6", "C6-C7", "C7-T1"]


def test_transitional_signs() -> None:
    """A rudimentary lowest disc or a disc below L5-S1 gives the caveat with its reason;
    a normal or a collapsed-but-not-rudimentary L5-S1 and cervical studies do not."""
    from models.levels import TRANSITIONAL_FLAG, transitional_signs

    normal = {"L1-L2": 8.0, "L2-L3": 9.0, "L3-L4": 10.0, "L4-L5": 10.5, "L5-S1": 9.5}
    assert transitional_signs(normal, 0, "lumbar") is None
    assert transitional_signs({**normal, "L5-S1": 6.2}, 0, "lumbar") is None  # 0.65: a Pfirrmann 5 L5-S1 on phantoms
    flag = transitional_signs({**normal, "L5-S1": 3.0}, 0, "lumbar")
    assert flag is not None and flag.startswith(TRANSITIONAL_FLAG) and "rudimentary (3.0 mm, 0.32" in flag
    flag = transitional_signs(normal, 1, "lumbar")
    assert flag is not None and "1 more disc found below the one counted as L5-S1" in flag
    assert transitional_signs({"L4-L5": 10.0, "L5-S1": 2.0}, 0, "lumbar") is None  # one disc above: no reference
    assert transitional_signs({"C6-C7": 5.0, "C7-T1": 1.0}, 2, "cervical") is None
