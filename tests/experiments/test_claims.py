"""Each kind of claim check on seeds' figures: reproduced, contradicted, inconclusive."""

from __future__ import annotations

import pytest

from siamkit.errors import ConfigError
from siamkit.experiments.claims import evaluate
from siamkit.experiments.spec import Check
from siamkit.experiments.statistics import NoiseFloor


def seeds(centre: float, spread: float = 0.3) -> list[float]:
    """Three seeds around ``centre`` (sample std = ``spread``)."""
    return [centre - spread, centre, centre + spread]


VALUES = {
    "a": {
        "knn": seeds(60.0),
        "collapse": [0.9, 0.85, 0.95],
        "h": seeds(50.0),
        "g": seeds(40.0, 0.5),
    },
    "b": {
        "knn": seeds(40.0),
        "collapse": [0.05, 0.02, 0.1],
        "h": seeds(45.0),
        "g": seeds(44.0, 0.5),
    },
    "c": {"knn": seeds(59.0), "collapse": [0.8, 0.7, 0.9]},
    "noisy": {"knn": [50.0, 62.0, 68.0], "collapse": [0.05, 0.6, 0.9]},
    "same": {"knn": seeds(60.0)},
}


@pytest.mark.parametrize(
    ("check", "expected"),
    [
        (Check(kind="greater", cells=["a", "b"]), "reproduced"),
        (Check(kind="greater", cells=["b", "a"]), "contradicted"),
        (Check(kind="greater", cells=["a", "noisy"]), "inconclusive"),  # within noise
        (Check(kind="greater", cells=["a", "c"], margin=5.0, margin_source="p"), "contradicted"),
        (Check(kind="order", cells=["a", "c", "b"]), "reproduced"),
        (Check(kind="order", cells=["c", "a", "b"]), "contradicted"),
        (Check(kind="order", cells=["a", "noisy", "b"]), "inconclusive"),
        (Check(kind="above", cells=["a", "c"], margin=58.0, margin_source="p"), "reproduced"),
        (Check(kind="above", cells=["a", "b"], margin=58.0, margin_source="p"), "contradicted"),
        (Check(kind="below", cells=["b"], margin=41.0, margin_source="p"), "reproduced"),
        (Check(kind="near_best", cells=["a", "c", "b"]), "reproduced"),
        (Check(kind="near_best", cells=["c", "a", "b"]), "contradicted"),
        (
            Check(kind="near_best", cells=["c", "a", "b"], margin=2.0, margin_source="p"),
            "reproduced",
        ),
        # An equivalence is shown, not assumed from the absence of a difference.
        (Check(kind="within", cells=["a", "same"], margin=1.0, margin_source="p"), "reproduced"),
        (Check(kind="within", cells=["a", "noisy"], margin=1.0, margin_source="p"), "inconclusive"),
        (Check(kind="within", cells=["a", "b"], margin=1.0, margin_source="p"), "contradicted"),
        (Check(kind="collapsed", cells=["b"]), "reproduced"),
        (Check(kind="collapsed", cells=["a"]), "contradicted"),
        (Check(kind="collapsed", cells=["noisy"]), "inconclusive"),  # the seeds disagree
        (Check(kind="collapsed", cells=["b"], reference="a"), "reproduced"),
        (Check(kind="collapsed", cells=["b"], reference="noisy"), "inconclusive"),
        (Check(kind="healthy", cells=["a", "c"]), "reproduced"),
        (Check(kind="healthy", cells=["b"]), "contradicted"),
        # Two measures of the same runs, paired seed by seed: h above g(h).
        (Check(kind="greater", cells=["a", "a"], measures=["h", "g"]), "reproduced"),
        (Check(kind="greater", cells=["b", "b"], measures=["g", "h"]), "contradicted"),
    ],
)
def test_checks_decide_from_the_seeds(check, expected):
    outcome = evaluate(check, VALUES, collapse="collapse")
    assert outcome.verdict == expected, outcome.detail
    assert "(3)" in outcome.detail  # every figure with its number of seeds


def test_a_shrinking_gap_needs_the_advantage_to_exist():
    """simclr_batch_size's figures at one seed: the larger batch behind at both lengths.

    The old check read 'gap -1.91 above -2.77' as a shrinking advantage; there is none.
    """
    big_short, small_short = seeds(50.0), seeds(51.91)
    big_long, small_long = seeds(52.0), seeds(54.77)
    values = {"1024s": {"knn": big_short}, "256s": {"knn": small_short},
              "1024l": {"knn": big_long}, "256l": {"knn": small_long}}  # fmt: skip
    check = Check(kind="difference", cells=["1024s", "256s", "1024l", "256l"])
    outcome = evaluate(check, values)
    assert outcome.verdict == "contradicted" and "the advantage" in outcome.detail
    # With the advantage there and shrinking, the claim holds.
    values["1024s"]["knn"] = seeds(56.0)
    values["1024l"]["knn"] = seeds(55.5)
    assert evaluate(check, values).verdict == "reproduced"
    # An advantage that grows instead contradicts it.
    values["1024l"]["knn"] = seeds(62.0)
    assert evaluate(check, values).verdict == "contradicted"


def test_byols_batchnorm_claim_needs_batchnorm_to_lose_from_the_smaller_batch():
    """byol_normalization's figures: BN gained from 256 to 64, so it is not BN that lost."""
    values = {"BN256": {"knn": seeds(84.0)}, "BN64": {"knn": seeds(86.0)},
              "GN256": {"knn": seeds(60.0)}, "GN64": {"knn": seeds(65.0)}}  # fmt: skip
    check = Check(kind="difference", cells=["BN256", "BN64", "GN256", "GN64"])
    assert evaluate(check, values).verdict == "contradicted"


def test_single_seed_cells_use_the_noise_floor():
    values = {"a": {"knn": [60.0]}, "b": {"knn": [57.0]}}
    check = Check(kind="greater", cells=["a", "b"])
    assert evaluate(check, values).verdict == "inconclusive"  # one seed and no floor
    assert "one seed and no noise floor" in evaluate(check, values).detail
    quiet = {"knn": NoiseFloor(std=0.5, seeds=5, cell="a")}
    outcome = evaluate(check, values, floors=quiet)
    assert outcome.verdict == "reproduced" and outcome.threshold is not None
    assert outcome.threshold == pytest.approx(2.132 * 0.5 * 2**0.5, rel=1e-3)  # t(0.95, 4)
    loud = {"knn": NoiseFloor(std=3.0, seeds=5, cell="a")}
    assert evaluate(check, values, floors=loud).verdict == "inconclusive"


def test_the_papers_difference_stands_beside_the_threshold():
    paper = {"a": {"knn": 67.7}, "b": {"knn": 0.1}}
    outcome = evaluate(Check(kind="greater", cells=["a", "b"]), VALUES, paper)
    assert outcome.paper_difference == pytest.approx(67.6)
    assert "the paper's difference +67.60" in outcome.detail


def test_matches_paper_is_an_equivalence_with_a_relative_tolerance():
    paper = {"a": {"knn": 61.0}, "c": {"knn": 59.5}}
    check = Check(kind="matches_paper", cells=["a", "c"], margin=0.05, margin_source="p")
    assert evaluate(check, VALUES, paper).verdict == "reproduced"
    far = {"a": {"knn": 70.0}, "c": {"knn": 59.5}}
    assert evaluate(check, VALUES, far).verdict == "contradicted"
    words = evaluate(Check(kind="matches_paper", cells=["a"]), VALUES, {"a": {}})
    assert words.verdict == "not measured"


def test_a_figure_not_measured_leaves_the_claim_undecided():
    outcome = evaluate(Check(kind="greater", cells=["a", "d"]), VALUES)
    assert outcome.verdict == "not measured" and "not measured" in outcome.detail
    nan = {**VALUES, "e": {"knn": [1.0, float("nan")]}}
    assert evaluate(Check(kind="greater", cells=["a", "e"]), nan).verdict == "not measured"


def test_collapse_is_judged_cell_by_cell():
    """One cell collapsed on every seed, the other healthy on every seed: 'healthy' of both is
    contradicted (pooled, the seeds would only disagree)."""
    values = {"x": {"collapse": [0.9, 0.8, 0.95]}, "y": {"collapse": [0.01, 0.02, 0.01]}}
    outcome = evaluate(Check(kind="healthy", cells=["x", "y"]), values, collapse="collapse")
    assert outcome.verdict == "contradicted" and "['y']" in outcome.detail


def test_seeds_that_agree_exactly_decide_nothing():
    values = {"x": {"knn": [70.28, 70.28]}, "y": {"knn": [70.0, 70.0]}}
    outcome = evaluate(Check(kind="greater", cells=["x", "y"]), values)
    assert outcome.verdict == "inconclusive" and "agree exactly" in outcome.detail


def test_an_absolute_tolerance_for_a_paper_figure_of_zero():
    check = Check(kind="matches_paper", cells=["z"], measure="mi", margin=0.02,
                  margin_source="p", relative=False)  # fmt: skip
    paper = {"z": {"mi": 0.0}}
    near = {"z": {"mi": [0.001, -0.002, 0.0]}}
    assert evaluate(check, near, paper).verdict == "reproduced"
    # A broken estimator that reads -1 nats where there is nothing is not "no information".
    broken = {"z": {"mi": [-1.2, -0.9, -1.0]}}
    assert evaluate(check, broken, paper).verdict == "contradicted"


def test_a_check_reads_each_figure_once():
    with pytest.raises(ConfigError, match="reads one figure twice"):
        Check(kind="difference", cells=["a", "b", "a", "c"])
