"""Pairs of known mutual information (MINE, arXiv:1801.04062, Sec. 4.1): the closed forms and the
samplers agree."""

from __future__ import annotations

import math

import pytest
import torch

from siamkit.eval.known_mi import (
    FUNCTIONS,
    HELD_OUT_PAIRS,
    TEST_SEED,
    estimates,
    gaussian_mi,
    gaussian_sampler,
    noisy_mi,
    noisy_sampler,
)
from siamkit.eval.mi_estimator import VALIDATION_SEED, FitSettings, fit


def test_gaussian_mi_closed_form():
    assert gaussian_mi(2, 0.0) == 0.0
    assert gaussian_mi(1, 0.5) == pytest.approx(-0.5 * math.log(0.75))
    assert gaussian_mi(20, -0.9) == gaussian_mi(20, 0.9) == pytest.approx(10 * math.log(1 / 0.19))


def test_gaussian_sampler_has_the_stated_correlation_per_coordinate_only():
    x, z = gaussian_sampler(3, -0.6)(200_000, torch.Generator().manual_seed(0))
    corr = torch.corrcoef(torch.cat([x, z], 1).T)
    torch.testing.assert_close(torch.diagonal(corr[:3, 3:]), torch.full((3,), -0.6), atol=6e-3,
                               rtol=0)  # fmt: skip
    off = corr[:3, 3:] - torch.diag(torch.diagonal(corr[:3, 3:]))
    assert off.abs().max() < 6e-3
    assert x.std().item() == pytest.approx(1.0, abs=5e-3) and z.std().item() == pytest.approx(
        1.0, abs=5e-3
    )


def test_noisy_mi_of_a_small_noise_approaches_the_uniform_entropy():
    # Y = X + sigma e with sigma << 1: h(Y) -> h(U(-1, 1)) = log 2.
    sigma = 0.01
    expected = math.log(2) - 0.5 * math.log(2 * math.pi * math.e * sigma**2)
    # The noise smooths the two edges of the uniform, which adds about sigma nats to h(Y).
    assert noisy_mi(FUNCTIONS["x"], sigma) == pytest.approx(expected, abs=sigma)


def test_noisy_mi_of_a_large_noise_is_the_gaussian_channel_limit():
    # Var(f(X)) / sigma^2 small: I -> 1/2 log(1 + Var(X) / sigma^2), Var(U(-1, 1)) = 1/3.
    sigma = 5.0
    expected = 0.5 * math.log(1 + (1 / 3) / sigma**2)
    assert noisy_mi(FUNCTIONS["x"], sigma) == pytest.approx(expected, rel=2e-2)


def test_noisy_sampler_draws_f_of_x_plus_noise():
    x, y = noisy_sampler(FUNCTIONS["x^3"], 0.0)(1000, torch.Generator().manual_seed(1))
    assert x.shape == y.shape == (1000, 1) and float(x.min()) >= -1 and float(x.max()) <= 1
    torch.testing.assert_close(y, x**3)


def test_estimates_report_the_test_pairs_at_the_step_chosen_on_their_own_validation_pairs(
    one_thread,
):
    """Each seed ``s`` chooses on its own draw (``VALIDATION_SEED + s``) and reads its own test
    draw (``TEST_SEED + s``), so the spread over seeds holds the test sample's error."""
    sampler = gaussian_sampler(2, 0.5)
    settings = FitSettings(steps=30, batch_size=64, lr=1e-3, hidden_dim=16, eval_every=10)
    got = estimates(sampler, settings, seeds=2)
    for seed, value in enumerate(got):
        test = sampler(HELD_OUT_PAIRS, torch.Generator().manual_seed(TEST_SEED + seed))
        validation = sampler(HELD_OUT_PAIRS, torch.Generator().manual_seed(VALIDATION_SEED + seed))
        estimate = fit(sampler, test, settings, seed=seed, validation=validation)
        best = max(estimate.history, key=lambda r: r.validation)
        assert value == estimate.value == best.test
