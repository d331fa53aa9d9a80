"""Each kind of claim check against known values: reproduced, not reproduced, not measured."""

from __future__ import annotations

import pytest

from siamkit.experiments.claims import evaluate
from siamkit.experiments.spec import Check

VALUES = {
    "a": {"knn": 60.0, "collapse": 0.9, "h": 50.0, "g": 40.0},
    "b": {"knn": 40.0, "collapse": 0.05, "h": 45.0, "g": 44.0},
    "c": {"knn": 59.0, "collapse": 0.8},
}


@pytest.mark.parametrize(
    ("check", "expected"),
    [
        (Check(kind="greater", cells=["a", "b"]), True),
        (Check(kind="greater", cells=["b", "a"]), False),
        (Check(kind="greater", cells=["a", "c"], margin=1.0), False),  # 60 > 59 + 1 fails
        (Check(kind="greater", cells=["a", "c"], margin=0.5), True),
        (Check(kind="order", cells=["a", "c", "b"]), True),
        (Check(kind="order", cells=["c", "a", "b"]), False),
        # gap a-b (20) above gap c-b (19)
        (Check(kind="difference", cells=["a", "b", "c", "b"]), True),
        (Check(kind="difference", cells=["c", "b", "a", "b"]), False),
        (Check(kind="above", cells=["a", "c"], margin=58.5), True),
        (Check(kind="above", cells=["a", "b"], margin=58.5), False),
        (Check(kind="below", cells=["b"], margin=40.5), True),
        (Check(kind="below", cells=["a", "b"], margin=40.5), False),
        (Check(kind="near_best", cells=["c", "a", "b"], margin=1.0), True),
        (Check(kind="near_best", cells=["c", "a", "b"], margin=0.5), False),
        (Check(kind="within", cells=["a", "c"], margin=1.0), True),
        (Check(kind="within", cells=["a", "b"], margin=1.0), False),
        (Check(kind="close", cells=["a", "c"], margin=1.0), True),
        (Check(kind="close", cells=["a", "b"], margin=1.0), False),
        (Check(kind="collapsed", cells=["b"]), True),
        (Check(kind="collapsed", cells=["a", "b"]), False),
        (Check(kind="healthy", cells=["a", "c"]), True),
        (Check(kind="healthy", cells=["b"]), False),
        # two measures of one cell: h above g(h)
        (Check(kind="greater", cells=["a", "a"], measures=["h", "g"]), True),
        (Check(kind="greater", cells=["b", "b"], measures=["h", "g"], margin=2.0), False),
    ],
)
def test_checks_decide_from_the_figures(check, expected):
    outcome = evaluate(check, VALUES, collapse="collapse")
    assert outcome.reproduced is expected
    assert outcome.detail  # the figures it compared


def test_matches_paper_reads_the_relative_error_against_the_paper_figure():
    paper = {"a": {"knn": 62.0}, "c": {"knn": 59.5}}
    ok = evaluate(Check(kind="matches_paper", cells=["a", "c"], margin=0.05), VALUES, paper)
    assert ok.reproduced is True and "3.2%" in ok.detail  # |60 - 62| / 62
    tight = evaluate(Check(kind="matches_paper", cells=["a", "c"], margin=0.03), VALUES, paper)
    assert tight.reproduced is False
    words = evaluate(Check(kind="matches_paper", cells=["a"]), VALUES, {"a": {}})
    assert words.reproduced is None


def test_a_figure_not_measured_leaves_the_claim_undecided():
    outcome = evaluate(Check(kind="greater", cells=["a", "d"]), VALUES)
    assert outcome.reproduced is None and "not measured" in outcome.detail
    nan = evaluate(Check(kind="greater", cells=["a", "e"]), {**VALUES, "e": {"knn": float("nan")}})
    assert nan.reproduced is None
