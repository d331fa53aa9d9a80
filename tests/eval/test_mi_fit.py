"""Fitting MINE on samples: the estimate reaches a known MI, its step is chosen on validation pairs
and its bound is read on test pairs that no choice saw."""

from __future__ import annotations

import math

import pytest
import torch

from siamkit.eval.mi_estimator import (
    VALIDATION_SEED,
    Estimate,
    FitSettings,
    Reading,
    choose,
    estimate_from_pairs,
    fit,
    one_hot,
    pair_sampler,
    standardise,
)


def correlated(n: int, rho: float, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, 2, generator=g)
    return x, rho * x + math.sqrt(1 - rho**2) * torch.randn(n, 2, generator=g)


def independent(n: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g), torch.randn(n, dim, generator=g)


#: These small networks gain nothing from a second thread, and spin on a busy CPU.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def small_fit() -> FitSettings:
    return FitSettings(steps=600, batch_size=128, hidden_dim=128, depth=2, eval_every=50)


@pytest.mark.parametrize("bound", ["mine", "mine_f"])
def test_fit_reaches_the_mi_of_correlated_gaussians(bound: str, small_fit: FitSettings) -> None:
    rho = 0.8
    true_mi = -2 / 2 * math.log(1 - rho**2)  # d = 2: 1.022 nats
    test = correlated(5000, rho, torch.Generator().manual_seed(99))
    estimate = fit(
        lambda n, g: correlated(n, rho, g),
        test,
        FitSettings(**{**small_fit.__dict__, "bound": bound}),
    )
    assert estimate.value == pytest.approx(true_mi, rel=0.1)
    assert [r.step for r in estimate.history] == list(range(50, 601, 50))


def test_the_step_is_chosen_on_validation_and_the_test_reading_reported(
    small_fit: FitSettings,
) -> None:
    """The reported value is the test reading at the best validation step, not the best test one."""
    rho = 0.5  # d = 2: 0.288 nats
    test = correlated(500, rho, torch.Generator().manual_seed(99))
    settings = FitSettings(**{**small_fit.__dict__, "eval_every": 10})
    estimate = fit(lambda n, g: correlated(n, rho, g), test, settings)
    best = max(estimate.history, key=lambda r: r.validation)
    assert estimate.step == best.step
    assert estimate.value == best.test
    assert [r.step for r in estimate.history] == list(range(10, 601, 10))
    # On the plateau the readings wander: here the best test reading (0.2650 at step 580) is not
    # at the chosen step (0.2625 at step 510), and the maximum of the test readings is not reported.
    assert estimate.value < max(r.test for r in estimate.history)
    # The validation pairs are a draw of their own, not the test pairs: the readings differ.
    assert all(r.validation != r.test for r in estimate.history)
    # They are N draws from the sampler with the seed VALIDATION_SEED + seed; passing the same
    # pairs explicitly gives the same fit.
    validation = correlated(500, rho, torch.Generator().manual_seed(VALIDATION_SEED))
    again = fit(lambda n, g: correlated(n, rho, g), test, settings, validation=validation)
    assert again.history == estimate.history


def test_choose_takes_the_test_reading_at_the_best_validation_reading() -> None:
    history = [
        Reading(25, 0.10, 0.30),  # the best test reading: a max over test would report 0.30
        Reading(50, 0.20, 0.12),  # the best validation reading
        Reading(75, float("nan"), 0.50),  # a non-finite validation reading is never chosen
        Reading(100, 0.20, 0.05),  # a tie goes to the earlier step
    ]
    assert choose(history) == Estimate(0.12, 50, history)
    nothing = choose([Reading(25, float("nan"), 0.3)])
    assert math.isnan(nothing.value) and nothing.step is None


def test_independent_variables_give_about_zero() -> None:
    """500 independent 8-d pairs (100 to validate, 100 to test), the default settings.

    The maximum over the test readings (the old estimate) gave +0.0217 nats here; over data seeds
    0-5 it gave +0.002 to +0.022 (mean +0.005), the test reading at the validation-chosen step
    -0.010 to +0.010 (mean -0.002).
    """
    x, z = independent(500, 8, seed=1)
    estimate = estimate_from_pairs(x, z)
    assert abs(estimate.value) <= 0.02  # -0.007


def test_independent_variables_of_many_pairs_give_about_zero(small_fit: FitSettings) -> None:
    x, z = independent(4000, 2, seed=0)
    # The maximum over the test readings gave +0.0008 nats here.
    assert abs(estimate_from_pairs(x, z, small_fit).value) <= 0.02  # -0.0002


def test_memorised_pairs_are_not_reported_as_information() -> None:
    """On 200 independent pairs the bound on the training pairs rises; the held-out one does not."""
    x, z = independent(200, 8, seed=0)
    settings = FitSettings(
        steps=800, batch_size=64, lr=1e-3, hidden_dim=128, depth=2, eval_every=100
    )
    # Trained, chosen and read on the same pairs (the validation pairs drawn from them too).
    on_train = fit(pair_sampler(x, z), (x, z), settings)
    held_out = estimate_from_pairs(x, z, settings)  # 120 to fit, 40 to validate, 40 to test
    assert on_train.value > 1.0  # memorised: 1.49 nats of pairs that share nothing
    assert held_out.value < 0.02  # -0.147: the overfitted network scores test pairs at random


def test_label_mi_is_bounded_by_the_label_entropy(small_fit: FitSettings) -> None:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (4000,), generator=g)
    h = one_hot(y) * 3 + 0.1 * torch.randn(4000, 4, generator=g)  # h determines y
    estimate = estimate_from_pairs(h, one_hot(y), small_fit).value
    assert estimate == pytest.approx(math.log(4), abs=0.1)  # I(h; y) = H(y) = log 4


def test_estimate_from_pairs_needs_pairs_for_each_part() -> None:
    x, z = independent(5, 2, seed=0)
    with pytest.raises(ValueError, match="at least 6 pairs"):
        estimate_from_pairs(x, z)


def test_standardise_uses_the_fitting_statistics() -> None:
    fitting = torch.tensor([[0.0, 10.0], [2.0, 30.0]])
    a, b, c = standardise(fitting, torch.tensor([[1.0, 20.0]]), torch.tensor([[3.0, 40.0]]))
    torch.testing.assert_close(a.mean(0), torch.zeros(2))
    torch.testing.assert_close(b, torch.zeros(1, 2))
    std = math.sqrt(2.0), math.sqrt(200.0)
    torch.testing.assert_close(c, torch.tensor([[2.0 / std[0], 20.0 / std[1]]]))
