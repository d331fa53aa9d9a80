"""Tests for the kNN monitor, the linear probe and the collapse metric."""

from __future__ import annotations

import math

import pytest
import torch

from siamkit.eval.knn import knn_accuracy, knn_predict
from siamkit.eval.linear import LinearProbeResult, linear_probe
from siamkit.eval.metrics import output_std


def _reference_knn(
    bank: torch.Tensor,
    labels: torch.Tensor,
    queries: torch.Tensor,
    num_classes: int,
    k: int,
    temperature: float,
) -> torch.Tensor:
    """InstDisc's weighted vote, one query at a time, in float64."""
    bank = bank.double() / bank.double().norm(dim=1, keepdim=True)
    out = torch.zeros(len(queries), num_classes, dtype=torch.float64)
    for i, q in enumerate(queries.double()):
        sims = bank @ (q / q.norm())
        top = sims.argsort(descending=True)[: min(k, len(bank))]
        for j in top.tolist():
            out[i, labels[j]] += math.exp(sims[j].item() / temperature)
    return out


@pytest.mark.parametrize(("k", "temperature", "chunk"), [(1, 0.1, 1024), (5, 0.1, 3), (7, 0.5, 4)])
def test_knn_predict_matches_a_brute_force_reference(
    k: int, temperature: float, chunk: int
) -> None:
    """Cosine similarity, top-k, exp(sim / T) weights summed per class; chunking changes nothing."""
    g = torch.Generator().manual_seed(k)
    bank = torch.randn(40, 8, generator=g) * (1 + torch.rand(40, 1, generator=g))  # not unit
    labels = torch.randint(0, 4, (40,), generator=g)
    queries = torch.randn(11, 8, generator=g) * 3
    scores = knn_predict(bank, labels, queries, 4, k=k, temperature=temperature, chunk=chunk)
    assert scores.shape == (11, 4)
    expected = _reference_knn(bank, labels, queries, 4, k, temperature)
    torch.testing.assert_close(scores.double(), expected, rtol=1e-4, atol=1e-6)


def test_knn_predict_is_invariant_to_feature_scale() -> None:
    """Features are l2-normalised: scaling bank or queries does not change the scores."""
    g = torch.Generator().manual_seed(0)
    bank, queries = torch.randn(30, 6, generator=g), torch.randn(5, 6, generator=g)
    labels = torch.randint(0, 3, (30,), generator=g)
    scores = knn_predict(bank, labels, queries, 3, k=5)
    torch.testing.assert_close(knn_predict(7 * bank, labels, 0.1 * queries, 3, k=5), scores)


def _clusters(
    centres: torch.Tensor, per_class: int, noise: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` points around each of ``centres`` (``(C, D)``); returns points and labels."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(len(centres)).repeat_interleave(per_class)
    x = centres[labels] + noise * torch.randn(len(labels), centres.shape[1], generator=g)
    return x, labels


def _centres(num_classes: int, dim: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(seed))


def test_knn_accuracy_is_perfect_on_separated_clusters() -> None:
    """Tight clusters around distinct directions: 100 % top-1 (returned in percent)."""
    centres = _centres(5, 16)
    bank, bank_labels = _clusters(centres, 20, noise=0.05, seed=1)
    queries, query_labels = _clusters(centres, 10, noise=0.05, seed=2)
    assert knn_accuracy(bank, bank_labels, queries, query_labels, k=10) == 100.0
    wrong = (query_labels + 1) % 5
    assert knn_accuracy(bank, bank_labels, queries, wrong, k=10) == 0.0


def test_knn_k_larger_than_the_bank_is_capped() -> None:
    """k = 1000 over 12 bank entries votes with all 12, as k = 12 does."""
    g = torch.Generator().manual_seed(0)
    bank, queries = torch.randn(12, 4, generator=g), torch.randn(3, 4, generator=g)
    labels = torch.randint(0, 3, (12,), generator=g)
    capped = knn_predict(bank, labels, queries, 3, k=1000)
    torch.testing.assert_close(capped, knn_predict(bank, labels, queries, 3, k=12))
    expected = _reference_knn(bank, labels, queries, 3, 12, 0.1)
    torch.testing.assert_close(capped.double(), expected, rtol=1e-4, atol=1e-6)


def test_linear_probe_separates_linearly_separable_data() -> None:
    """Gaussian blobs in 20 dimensions: near-perfect test accuracy."""
    centres = _centres(4, 20)
    train_x, train_y = _clusters(centres, 100, noise=0.3, seed=1)
    test_x, test_y = _clusters(centres, 50, noise=0.3, seed=2)
    result = linear_probe(train_x, train_y, test_x, test_y, epochs=20, batch_size=64)
    assert isinstance(result, LinearProbeResult)
    assert result.top1 >= 98.0
    assert result.train_top1 >= 98.0
    assert result.top5 == 100.0  # 4 classes: top-5 covers them all


def test_linear_probe_is_at_chance_on_random_labels() -> None:
    """Labels independent of the features: test top-1 about 1/10, top-5 about 1/2."""
    g = torch.Generator().manual_seed(0)
    train_x, test_x = torch.randn(500, 16, generator=g), torch.randn(500, 16, generator=g)
    train_y = torch.randint(0, 10, (500,), generator=g)
    test_y = torch.randint(0, 10, (500,), generator=g)
    result = linear_probe(train_x, train_y, test_x, test_y, epochs=20, batch_size=100)
    assert 3.0 < result.top1 < 18.0
    assert 40.0 < result.top5 < 60.0


def test_linear_probe_is_reproducible_for_a_seed() -> None:
    """The same seed gives the same result."""
    x, y = _clusters(_centres(3, 8), 30, noise=1.0, seed=1)
    a = linear_probe(x, y, x, y, epochs=3, batch_size=16, seed=3)
    b = linear_probe(x, y, x, y, epochs=3, batch_size=16, seed=3)
    assert a == b


def test_output_std_is_about_one_for_isotropic_gaussian_output() -> None:
    """std of l2-normalised N(0, I) outputs is 1/sqrt(d); the metric scales it to ~1."""
    z = torch.randn(512, 128, generator=torch.Generator().manual_seed(0))
    value = output_std(z)
    assert abs(value - 1.0) < 0.05
    assert output_std(5.0 * z) == pytest.approx(value, rel=1e-5)  # scale-free


def test_output_std_is_about_zero_for_collapsed_output() -> None:
    """One output vector for every input (plus tiny noise, or any positive scale): ~0."""
    g = torch.Generator().manual_seed(0)
    v = torch.randn(128, generator=g)
    assert output_std(v.expand(512, -1) + 1e-4 * torch.randn(512, 128, generator=g)) < 0.01
    scales = 0.5 + torch.rand(512, 1, generator=g)
    assert output_std(scales * v) < 1e-4
    # Half the outputs on one vector, half on another: clearly between the two.
    w = torch.randn(128, generator=g)
    assert 0.3 < output_std(torch.cat([v.expand(256, -1), w.expand(256, -1)])) < 1.0


def test_lbfgs_probe_matches_sklearns_logistic_regression() -> None:
    """L-BFGS minimises mean CE + wd/2 ||W||^2 = sklearn's objective with C = 1 / (wd N), on the
    same standardised features: the two classifiers agree on (nearly) every test point."""
    from sklearn.linear_model import LogisticRegression

    g = torch.Generator().manual_seed(3)
    centres = torch.randn(4, 6, generator=g) * 1.5
    ytr, yte = torch.arange(4).repeat(50), torch.arange(4).repeat(25)
    xtr = centres[ytr] + torch.randn(200, 6, generator=g) * 2
    xte = centres[yte] + torch.randn(100, 6, generator=g) * 2
    wd = 0.01
    ours = linear_probe(xtr, ytr, xte, yte, epochs=500, weight_decay=wd, optimizer="lbfgs")
    mean, std = xtr.mean(0), xtr.std(0)
    ref = LogisticRegression(C=1 / (wd * len(xtr)), max_iter=5000, tol=1e-10)
    ref.fit(((xtr - mean) / std).numpy(), ytr.numpy())
    ref_top1 = float((ref.predict(((xte - mean) / std).numpy()) == yte.numpy()).mean() * 100)
    assert abs(ours.top1 - ref_top1) <= 1.0
    assert ours.top1 > 40  # well above chance (25%) on overlapping clusters
