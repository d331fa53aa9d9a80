"""MINE's bounds: closed forms, the paper's corrected gradient, marginals without self-pairs."""

from __future__ import annotations

import math

import pytest
import torch

from siamkit.heads.statistics import StatisticsNetwork
from siamkit.losses.mi_bounds import (
    MutualInformation,
    cyclic_pairings,
    derangement,
    dv_bound,
    infonce_bound,
    mine_bound,
    mine_f_bound,
    update_log_moving_average,
)


def gaussian_pairs(n: int, rho: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, generator=g, dtype=torch.float64)
    return x, rho * x + math.sqrt(1 - rho**2) * torch.randn(n, 1, generator=g, dtype=torch.float64)


def log_density_ratio(x: torch.Tensor, z: torch.Tensor, rho: float) -> torch.Tensor:
    """``log p(x, z) / (p(x) p(z))`` of a standard bivariate normal with correlation ``rho``.

    Broadcasts: ``(N, 1)`` and ``(N, 1)`` for pairs, ``(B, 1)`` and ``(1, B)`` for all pairs.
    """
    q = (rho**2 * x**2 - 2 * rho * x * z + rho**2 * z**2) / (2 * (1 - rho**2))
    return -0.5 * math.log(1 - rho**2) - q


@pytest.mark.parametrize("n", [2, 3, 7, 64, 257])
def test_derangement_is_a_permutation_without_fixed_points(n: int) -> None:
    for seed in range(20):
        idx = derangement(n, torch.Generator().manual_seed(seed))
        assert sorted(idx.tolist()) == list(range(n))
        assert not bool((idx == torch.arange(n)).any())


def test_derangement_of_one_sample_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        derangement(1)


def test_bounds_known_values() -> None:
    t_joint = torch.tensor([1.0, 2.0, 3.0])
    # E_Q[e^T] = mean(1, 2, 3) = 2: DV = 2 - log 2.
    assert dv_bound(t_joint, torch.log(torch.tensor([1.0, 2.0, 3.0]))).item() == pytest.approx(
        2 - math.log(2)
    )
    # e^(T - 1) = 1 for T = 1: MINE-f = 2 - 1.
    assert mine_f_bound(t_joint, torch.ones(5)).item() == pytest.approx(1.0)
    # Scores c on the diagonal, 0 elsewhere: log B + c - log(e^c + B - 1).
    b, c = 8, 3.0
    assert infonce_bound(c * torch.eye(b)).item() == pytest.approx(
        math.log(b) + c - math.log(math.exp(c) + b - 1)
    )
    assert infonce_bound(torch.zeros(b, b)).item() == pytest.approx(0.0, abs=1e-6)


def test_the_optimal_critic_reaches_the_true_mi() -> None:
    """With T* = log dP/dQ the DV bound is tight, and so is MINE-f at T* + 1 (Sec. 3.1)."""
    rho = 0.8
    true_mi = -0.5 * math.log(1 - rho**2)  # 0.5108
    x, z = gaussian_pairs(400_000, rho)
    z_marginal = z[derangement(z.shape[0], torch.Generator().manual_seed(1))]
    t_joint, t_marginal = (
        log_density_ratio(x, z, rho)[:, 0],
        log_density_ratio(x, z_marginal, rho)[:, 0],
    )
    assert dv_bound(t_joint, t_marginal).item() == pytest.approx(true_mi, abs=0.01)
    assert mine_f_bound(t_joint + 1, t_marginal + 1).item() == pytest.approx(true_mi, abs=0.01)
    # A worse critic gives less: half the log-ratio.
    assert dv_bound(t_joint / 2, t_marginal / 2).item() < true_mi - 0.05


def test_infonce_is_capped_by_the_log_of_the_batch() -> None:
    batch = 64
    # rho = 0.3: MI = 0.047 << log 64, and InfoNCE with T* is close to it.
    x, z = gaussian_pairs(batch * 400, 0.3)
    scores = [
        log_density_ratio(xb, zb.T, 0.3)
        for xb, zb in zip(x.split(batch), z.split(batch), strict=True)
    ]
    low = torch.stack([infonce_bound(s) for s in scores]).mean().item()
    assert low == pytest.approx(-0.5 * math.log(1 - 0.3**2), abs=0.01)
    # rho = 0.9999 in 1-D: MI = 4.26 > log 16 = 2.77; even the optimal critic stays below log 16
    # (2.59 here), 1.7 nats short of the truth.
    x, z = gaussian_pairs(16 * 200, 0.9999)
    scores = [
        log_density_ratio(xb, zb.T, 0.9999) for xb, zb in zip(x.split(16), z.split(16), strict=True)
    ]
    high = torch.stack([infonce_bound(s) for s in scores]).mean().item()
    assert 2.4 < high <= math.log(16)
    assert high < -0.5 * math.log(1 - 0.9999**2) - 1.5


@pytest.mark.parametrize("scale", [0.1, 10.0, 1000.0])
def test_infonce_never_exceeds_log_b_whatever_the_critic(scale: float) -> None:
    """log B + mean_i log softmax_j T[i, j][i] <= log B, as log softmax <= 0: a property of the
    bound, not of the data (mine_gaussian's experiment once checked it as a claim)."""
    g = torch.Generator().manual_seed(0)
    for b in (2, 16, 64):
        scores = scale * torch.randn(b, b, generator=g)
        scores += scale * 5 * torch.eye(b)  # a critic that favours the joint pairs strongly
        assert infonce_bound(scores).item() <= math.log(b) + 1e-6


def test_corrected_gradient_is_the_papers_formula() -> None:
    """Algorithm 1: G = E_P[dT] - E_Q[e^T dT] / a, with a the moving average of E_Q[e^T]."""
    torch.manual_seed(0)
    w = torch.randn(4, dtype=torch.float64, requires_grad=True)
    feats_joint = torch.randn(32, 4, dtype=torch.float64)  # T(x, z) = w . phi(x, z)
    feats_marginal = torch.randn(32, 4, dtype=torch.float64)
    log_a = torch.tensor(0.7, dtype=torch.float64)
    value = mine_bound(feats_joint @ w, feats_marginal @ w, log_a)
    (grad,) = torch.autograd.grad(value, w)
    t_marginal = (feats_marginal @ w).detach()
    expected = feats_joint.mean(0) - (torch.exp(t_marginal)[:, None] * feats_marginal).mean(
        0
    ) / math.exp(0.7)
    torch.testing.assert_close(grad, expected)
    # Its value is the DV bound's.
    assert value.item() == pytest.approx(dv_bound(feats_joint @ w, feats_marginal @ w).item())
    # With a = the batch's own mean, the corrected gradient is the plain DV gradient.
    own = torch.logsumexp(t_marginal, 0) - math.log(32)
    (plain,) = torch.autograd.grad(dv_bound(feats_joint @ w, feats_marginal @ w), w)
    (same,) = torch.autograd.grad(mine_bound(feats_joint @ w, feats_marginal @ w, own), w)
    torch.testing.assert_close(same, plain)


def test_moving_average_in_log_space() -> None:
    t = torch.tensor([0.0, math.log(3.0)])  # mean e^T = 2
    first = update_log_moving_average(None, t, 0.1)
    assert first.exp().item() == pytest.approx(2.0)
    nxt = update_log_moving_average(first, torch.log(torch.tensor([4.0, 4.0])), 0.1)
    assert nxt.exp().item() == pytest.approx(0.9 * 2.0 + 0.1 * 4.0)
    huge = update_log_moving_average(torch.tensor(1000.0), torch.tensor([1000.0, 1000.0]), 0.5)
    assert huge.item() == pytest.approx(1000.0)  # e^1000 overflows float; its log does not


def test_the_moving_average_changes_the_gradient_not_the_value() -> None:
    torch.manual_seed(0)
    x, z = torch.randn(64, 3), torch.randn(64, 3)
    fresh = MutualInformation(StatisticsNetwork(3, 3, 16, 1), "mine", ema_rate=0.1)
    primed = MutualInformation(StatisticsNetwork(3, 3, 16, 1), "mine", ema_rate=0.1)
    primed.load_state_dict(fresh.state_dict())
    primed(3 * torch.randn(64, 3), torch.randn(64, 3))  # earlier batches move the average
    values, grads = [], []
    for module in (fresh, primed):
        module.zero_grad()
        value = module(x, z, torch.Generator().manual_seed(5))
        value.backward()
        values.append(value.item())
        grads.append(module.critic.x_in.weight.grad.clone())  # type: ignore[union-attr]
    assert values[0] == pytest.approx(values[1])
    assert not torch.allclose(grads[0], grads[1])
    # And the value is the plain DV bound of the same pairs.
    dv = MutualInformation(fresh.critic, "dv")
    assert dv(x, z, torch.Generator().manual_seed(5)).item() == pytest.approx(values[0])


def test_the_moving_average_is_state_and_eval_mode_leaves_it() -> None:
    mi = MutualInformation(StatisticsNetwork(2, 2, 8, 1), "mine")
    assert "log_average" in mi.state_dict()
    mi(torch.randn(16, 2), torch.randn(16, 2))
    after_train = mi.log_average.clone()
    mi.eval()
    mi(torch.randn(16, 2), torch.randn(16, 2))
    assert torch.equal(mi.log_average, after_train)


def test_pairwise_scores_match_pair_by_pair() -> None:
    torch.manual_seed(0)
    net = StatisticsNetwork(3, 5, 16, depth=2)
    x, z = torch.randn(6, 3), torch.randn(4, 5)
    scores = net.pairwise(x, z)  # (6, 4)
    for i in range(6):
        torch.testing.assert_close(scores[i], net(x[i].expand(4, 3), z))
    torch.testing.assert_close(net.pairwise(x[:4], z).diagonal(), net(x[:4], z))


class RecordingCritic(torch.nn.Module):
    """Scores 0 and remembers every pair it was shown."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        self.calls.append((x, z))
        return torch.zeros(x.shape[0])


@pytest.mark.parametrize("bound", ["mine", "dv", "mine_f"])
def test_marginal_samples_never_pair_an_element_with_itself(bound: str) -> None:
    critic = RecordingCritic()
    mi = MutualInformation(critic, bound)  # type: ignore[arg-type]
    ids = torch.arange(50.0)[:, None]  # x and z carry the element's index
    for _ in range(20):
        mi(ids, ids)
    joint, marginal = critic.calls[0::2], critic.calls[1::2]
    assert all(torch.equal(x, z) for x, z in joint)
    for x, z in marginal:
        assert sorted(z.squeeze(1).tolist()) == list(range(50))  # every z once
        assert not bool((x == z).any())  # never its own


def test_cyclic_pairings_give_each_element_different_partners_never_itself():
    idx = cyclic_pairings(9, 8, torch.Generator().manual_seed(0))  # every other element once
    assert idx.shape == (8, 9)
    for row in idx:
        assert sorted(row.tolist()) == list(range(9))
    for i in range(9):
        assert sorted(idx[:, i].tolist()) == [j for j in range(9) if j != i]
    with pytest.raises(ValueError, match="1 to 8 pairings"):
        cyclic_pairings(9, 9)
