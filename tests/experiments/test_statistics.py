"""The noise rule against scipy's own tests: Welch's t, the paired t, the noise floor."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from siamkit.experiments.statistics import (
    MIN_FLOOR_SEEDS,
    NoiseFloor,
    contrast,
    floor_of,
    t_quantile,
)

A = [61.2, 60.1, 62.5]
B = [58.0, 59.4, 57.1, 58.8]


def test_a_difference_of_two_cells_is_welchs_test():
    c = contrast([A, B], [1, -1])
    assert c is not None and c.how == "welch"
    reference = stats.ttest_ind(A, B, equal_var=False, alternative="greater")
    assert c.p_above(0.0) == pytest.approx(reference.pvalue, rel=1e-9)
    less = stats.ttest_ind(A, B, equal_var=False, alternative="less")
    assert c.p_below(0.0) == pytest.approx(less.pvalue, rel=1e-9)
    # The threshold is where the one-sided p crosses the level.
    shifted = contrast([[x - c.estimate + c.threshold() for x in A], B], [1, -1])
    assert shifted is not None and shifted.p_above(0.0) == pytest.approx(0.05, rel=1e-6)


def test_a_bound_shifts_the_test():
    c = contrast([A, B], [1, -1])
    assert c is not None
    moved = stats.ttest_ind([a - 1.5 for a in A], B, equal_var=False, alternative="greater")
    assert c.p_above(1.5) == pytest.approx(moved.pvalue, rel=1e-9)


def test_one_cell_against_a_constant_is_the_one_sample_test():
    c = contrast([A], [1])
    assert c is not None
    reference = stats.ttest_1samp(A, 60.0, alternative="greater")
    assert c.p_above(60.0) == pytest.approx(reference.pvalue, rel=1e-9)


def test_measures_of_the_same_runs_are_paired():
    h, g = [50.0, 52.0, 51.0], [48.5, 51.2, 49.0]
    c = contrast([h, g], [1, -1], paired=True)
    assert c is not None and c.how == "paired" and c.df == 2
    reference = stats.ttest_rel(h, g, alternative="greater")
    assert c.p_above(0.0) == pytest.approx(reference.pvalue, rel=1e-9)


def test_single_seed_cells_take_the_noise_floor():
    floor = NoiseFloor(std=0.8, seeds=5, cell="ref")
    c = contrast([[61.0], [59.0]], [1, -1], floor)
    assert c is not None and c.how == "floor"
    # Two single-seed cells: SE = sigma sqrt(2), with the floor's seeds less one as df.
    assert c.se == pytest.approx(0.8 * math.sqrt(2))
    assert c.df == pytest.approx(4.0)
    assert c.threshold() == pytest.approx(stats.t.ppf(0.95, 4) * 0.8 * math.sqrt(2))
    # Without a floor a single seed has no variance: nothing can be decided.
    assert contrast([[61.0], [59.0]], [1, -1]) is None


def test_a_contrast_of_four_cells_adds_their_variances():
    c = contrast([A, B, A, B], [1, -1, -1, 1])
    assert c is not None and c.estimate == pytest.approx(0.0)
    var = stats.tvar(A) / 3 + stats.tvar(B) / 4
    assert c.se == pytest.approx(math.sqrt(2 * var))


def test_identical_seeds_give_no_measure_of_noise():
    """Two seeds of a kNN on 359 images can tie: zero spread is not certainty."""
    c = contrast([[70.28, 70.28], [70.0, 70.0]], [1, -1])
    assert c is not None and c.se == 0
    assert c.p_above(0.0) == 1.0 and c.p_below(0.0) == 1.0 and c.threshold() == math.inf


def test_the_floors_own_cell_shares_the_floors_degrees_of_freedom():
    floor = NoiseFloor(std=0.8, seeds=5, cell="ref")
    ref = [60.0, 61.0, 59.5, 60.7, 60.1]
    c = contrast([ref, [58.0]], [1, -1], floor, floor_member=[True, False])
    assert c is not None and c.df == pytest.approx(4.0)
    assert c.se == pytest.approx(0.8 * math.sqrt(1 / 5 + 1))


def test_one_cell_is_labelled_one_sample():
    c = contrast([A], [1])
    assert c is not None and c.how == "one-sample"


def test_a_floor_needs_enough_seeds():
    assert floor_of([1.0] * (MIN_FLOOR_SEEDS - 1), "ref") is None
    floor = floor_of([1.0, 2.0, 3.0, 4.0, 5.0], "ref")
    assert floor is not None and floor.std == pytest.approx(stats.tstd([1, 2, 3, 4, 5]))


def test_t_quantile_is_students():
    assert t_quantile(0.95, 3) == pytest.approx(stats.t.ppf(0.95, 3))
    assert t_quantile(0.95, math.inf) == pytest.approx(stats.norm.ppf(0.95))
