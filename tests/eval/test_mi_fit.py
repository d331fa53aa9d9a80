"""Fitting MINE on samples: the estimate reaches a known MI and is read on held-out pairs."""

from __future__ import annotations

import math

import pytest
import torch

from siamkit.eval.mutual_information import (
    FitSettings,
    estimate_from_pairs,
    fit,
    one_hot,
    pair_sampler,
    standardise,
)


def correlated(n: int, rho: float, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, 2, generator=g)
    return x, rho * x + math.sqrt(1 - rho**2) * torch.randn(n, 2, generator=g)


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
    assert [s for s, _ in estimate.history] == list(range(50, 601, 50))
    assert estimate.value == max(v for _, v in estimate.history)


def test_independent_variables_give_about_zero(small_fit: FitSettings) -> None:
    g = torch.Generator().manual_seed(0)
    x, z = torch.randn(4000, 2, generator=g), torch.randn(4000, 2, generator=g)
    # Held out, a statistics network cannot find information that is not there.
    assert estimate_from_pairs(x, z, small_fit).value < 0.03


def test_memorised_pairs_are_not_reported_as_information(small_fit: FitSettings) -> None:
    """On 200 independent pairs the bound on the training pairs rises; the held-out one does not."""
    g = torch.Generator().manual_seed(0)
    x, z = torch.randn(200, 8, generator=g), torch.randn(200, 8, generator=g)
    settings = FitSettings(
        steps=800, batch_size=64, lr=1e-3, hidden_dim=128, depth=2, eval_every=100
    )
    on_train = fit(pair_sampler(x, z), (x, z), settings)
    held_out = estimate_from_pairs(x, z, settings)
    assert on_train.value > 1.0  # memorised: 1.56 nats of pairs that share nothing
    assert held_out.value < 0.15  # 0.10


def test_label_mi_is_bounded_by_the_label_entropy(small_fit: FitSettings) -> None:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (4000,), generator=g)
    h = one_hot(y) * 3 + 0.1 * torch.randn(4000, 4, generator=g)  # h determines y
    estimate = estimate_from_pairs(h, one_hot(y), small_fit).value
    assert estimate == pytest.approx(math.log(4), abs=0.1)  # I(h; y) = H(y) = log 4


def test_standardise_uses_the_training_statistics() -> None:
    train = torch.tensor([[0.0, 10.0], [2.0, 30.0]])
    a, b = standardise(train, torch.tensor([[1.0, 20.0]]))
    torch.testing.assert_close(a.mean(0), torch.zeros(2))
    torch.testing.assert_close(b, torch.zeros(1, 2))
