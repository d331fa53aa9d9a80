"""Representation metrics: RankMe, alignment, uniformity against independent references and
their invariants; h and g(h) metrics of a method on real images."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.spatial.distance import pdist

from siamkit.config import AugmentConfig, BackboneConfig
from siamkit.data.datasets import ImageSet, load_digits
from siamkit.encoders import create_backbone
from siamkit.errors import ConfigError, DataError
from siamkit.eval.features import extract_features
from siamkit.eval.metrics import alignment, output_std, rankme, uniformity
from siamkit.eval.representation import method_metrics, projection_features
from siamkit.methods import METHODS, create_method


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _unit_rows(z: np.ndarray) -> np.ndarray:
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def _with_spectrum(n: int, d: int, sigma: list[float], seed: int = 0) -> torch.Tensor:
    """An ``(n, d)`` float64 matrix whose nonzero singular values are exactly ``sigma``.

    ``U diag(sigma) V^T`` with ``U`` and ``V`` random orthonormal columns (QR of Gaussians), so
    the spectrum is chosen and everything else (the directions) is arbitrary.
    """
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(n, len(sigma), generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(d, len(sigma), generator=g, dtype=torch.float64))
    return u @ torch.diag(torch.tensor(sigma, dtype=torch.float64)) @ v.T


def _rankme_closed_form(p: list[float], eps: float = 1e-7) -> float:
    """``exp(-sum (p_k + eps) log(p_k + eps))`` of hand-normalised singular values ``p_k``."""
    return math.exp(-sum((x + eps) * math.log(x + eps) for x in p))


# ---------------------------------------------------------------------------------- RankMe
def test_rankme_matches_a_numpy_reference() -> None:
    z = _randn(50, 12) * torch.linspace(0.1, 3.0, 12)  # anisotropic: rank well below 12
    s = np.linalg.svd(z.numpy().astype(np.float64), compute_uv=False)
    p = s / np.abs(s).sum() + 1e-7
    expected = math.exp(-(p * np.log(p)).sum())
    assert rankme(z) == pytest.approx(expected, rel=1e-9)


def test_rankme_of_a_known_spectrum_is_its_closed_form() -> None:
    """RankMe [arXiv:2210.02885, Eq. 1] of matrices whose singular values are chosen.

    k equal singular values normalise to ``p = 1/k`` each: entropy ``log k``, RankMe exactly k
    (with the default ``eps``: ``(1/k + eps)^-(1 + k eps)``). Singular values 3 and 1 normalise to
    3/4 and 1/4: ``exp(-(3/4 log 3/4 + 1/4 log 1/4)) = 4 / 3^(3/4)``. Equal values do not tell
    sigma from sigma^2 (eigenvalues of the covariance), or l1 from l2 normalisation; the 3:1
    spectrum does (9:1 would give 1.38).
    """
    eps = 1e-7  # rankme's default
    for k, (n, d) in ((12, (50, 12)), (5, (5, 9))):
        z = _with_spectrum(n, d, [2.5] * k, seed=k)
        assert rankme(z, eps=0.0) == pytest.approx(k, rel=1e-12)
        assert rankme(z) == pytest.approx((1 / k + eps) ** -(1 + k * eps), rel=1e-12)
    two = _with_spectrum(40, 2, [3.0, 1.0])
    assert rankme(two, eps=0.0) == pytest.approx(4 / 3**0.75, rel=1e-12)  # 1.7548
    assert rankme(7.5 * two.float(), eps=0.0) == pytest.approx(4 / 3**0.75, rel=1e-6)
    # The same two directions in 16 dimensions: 14 zero singular values, each adding
    # eps log eps to the entropy (and nothing more: they are not counted as directions).
    wide = _with_spectrum(40, 16, [3.0, 1.0], seed=1)
    assert rankme(wide) == pytest.approx(_rankme_closed_form([0.75, 0.25] + [0.0] * 14), rel=1e-9)


def test_rankme_of_a_rank_k_matrix_is_at_most_k() -> None:
    for k in (1, 3, 7):
        z = _randn(200, k, seed=k) @ _randn(k, 32, seed=10 + k)  # (200, 32) of rank k
        r = rankme(z)
        assert r <= k + 1e-3, (k, r)
        assert r > 0.5 * k, (k, r)  # random directions are used roughly equally


def test_rankme_of_isotropic_gaussian_is_about_the_dimension() -> None:
    z = _randn(5000, 32)
    assert rankme(z) == pytest.approx(32, rel=0.02)
    # min(N, D) equally used directions give exactly min(N, D): 20 samples of 32-dim vectors
    # span 20 directions, so the (20, 32) and (32, 20) matrices have 20 singular values, not 32
    # (counting 12 zero ones would add 12 eps log eps to the entropy, a relative 2e-5).
    spread = _with_spectrum(20, 32, [1.0] * 20)
    assert rankme(spread) == pytest.approx(_rankme_closed_form([1 / 20] * 20), rel=1e-12)
    assert rankme(spread.T) == pytest.approx(_rankme_closed_form([1 / 20] * 20), rel=1e-12)


def test_rankme_is_scale_invariant_and_one_for_a_collapse_onto_a_line() -> None:
    z = _randn(100, 16)
    assert rankme(7.5 * z) == pytest.approx(rankme(z), rel=1e-6)
    line = _randn(100, 1) * _randn(1, 16, seed=1)  # (100, 16) on one line
    assert rankme(line) == pytest.approx(1.0, abs=1e-3)


# ------------------------------------------------------------------------------- alignment
@pytest.mark.parametrize("alpha", [2.0, 1.0])
def test_alignment_matches_a_hand_loop(alpha: float) -> None:
    a, b = _randn(30, 8).numpy(), _randn(30, 8, seed=1).numpy()
    an, bn = _unit_rows(a.astype(np.float64)), _unit_rows(b.astype(np.float64))
    expected = sum(np.linalg.norm(an[i] - bn[i]) ** alpha for i in range(30)) / 30
    assert alignment(torch.from_numpy(a), torch.from_numpy(b), alpha) == pytest.approx(expected)


def test_alignment_is_zero_for_identical_views_and_scale_invariant() -> None:
    z = _randn(40, 16)
    assert alignment(z, z.clone()) == pytest.approx(0.0, abs=1e-12)
    # Each row rescaled by its own positive factor: still the same direction, still aligned.
    assert alignment(z, z * (0.1 + torch.rand(40, 1))) == pytest.approx(0.0, abs=1e-12)
    noisy = z + 0.3 * _randn(40, 16, seed=2)
    assert alignment(z, noisy) > 0
    assert alignment(3 * z, 0.5 * noisy) == pytest.approx(alignment(z, noisy), rel=1e-6)
    assert alignment(noisy, z) == pytest.approx(alignment(z, noisy), rel=1e-12)  # symmetric
    # Antipodal pairs are at distance 2: the maximum, 2^alpha.
    assert alignment(z, -z, alpha=2) == pytest.approx(4.0)


# ------------------------------------------------------------------------------ uniformity
def test_uniformity_matches_scipy_and_a_hand_loop() -> None:
    z = _randn(60, 5) + 0.5  # not centred, so not trivially uniform
    zn = _unit_rows(z.numpy().astype(np.float64))
    expected = math.log(np.mean(np.exp(-2.0 * pdist(zn, "sqeuclidean"))))
    assert uniformity(z) == pytest.approx(expected, rel=1e-9)
    # Over ordered pairs i != j: the same mean.
    total, n = 0.0, 0
    for i in range(20):
        for j in range(20):
            if i != j:
                total += math.exp(-3.0 * float(np.sum((zn[i] - zn[j]) ** 2)))
                n += 1
    assert uniformity(z[:20], t=3.0) == pytest.approx(math.log(total / n), rel=1e-9)


def test_uniformity_of_collapsed_points_is_zero_and_spread_points_are_lower() -> None:
    assert uniformity(torch.ones(50, 8) * 3.0) == pytest.approx(0.0, abs=1e-12)
    spread = _randn(500, 8)
    clustered = torch.tensor([1.0] + [0.0] * 7) + 0.1 * _randn(500, 8, seed=1)
    assert uniformity(spread) < uniformity(clustered) < 0
    assert uniformity(10 * spread) == pytest.approx(uniformity(spread), rel=1e-6)
    # Two antipodal points: squared distance 4, so log exp(-4t) = -4t, the minimum.
    assert uniformity(torch.tensor([[1.0, 0.0], [-1.0, 0.0]])) == pytest.approx(-8.0)


def test_metric_input_errors() -> None:
    with pytest.raises(DataError, match="N >= 2"):
        uniformity(torch.ones(1, 4))
    with pytest.raises(DataError, match="two views of the same images"):
        alignment(torch.ones(3, 4), torch.ones(4, 4))
    with pytest.raises(DataError, match=r"\(N, D\)"):
        rankme(torch.ones(5))
    with pytest.raises(ConfigError, match="alpha must be positive"):
        alignment(torch.ones(3, 4), torch.ones(3, 4), alpha=0)
    with pytest.raises(ConfigError, match="t must be positive"):
        uniformity(torch.ones(3, 4), t=-1)


# ------------------------------------------------------- h and g(h) of a method on images
@pytest.fixture(scope="module")
def method() -> torch.nn.Module:
    torch.manual_seed(0)
    backbone = create_backbone(BackboneConfig(name="small_cnn", width=0.25))
    cfg = METHODS["simsiam"].config_class(proj_dim=32, proj_hidden_dim=32, proj_layers=2)
    m = create_method(backbone, cfg)
    m.train()
    with torch.no_grad():  # move BatchNorm's running statistics off their init values
        m.projector(m.backbone.forward_features(torch.randn(64, 3, 16, 16)))
    return m


@pytest.fixture(scope="module")
def images() -> ImageSet:
    return ImageSet(load_digits(32).test.images[:120])  # (120, 3, 32, 32) uint8


def test_projection_features_are_the_projector_of_backbone_features_in_eval_mode(
    method, images
) -> None:
    aug = AugmentConfig(size=16)
    method.train()
    g = projection_features(method, images, aug, batch_size=50)
    assert method.training  # restored
    assert g.shape == (120, 32)
    h = extract_features(method.backbone, images, aug)
    method.eval()
    with torch.no_grad():
        expected = method.projector(h)
    method.train()
    torch.testing.assert_close(g, expected, atol=1e-5, rtol=1e-5)


def test_method_metrics_of_h_and_g(method, images) -> None:
    aug = AugmentConfig(size=16)
    out = method_metrics(method, images, aug, seed=0, batch_size=50)
    assert out["num_images"] == 120
    assert out["h"]["dim"] == method.backbone.num_features and out["g"]["dim"] == 32
    # Each part's centre-view metrics are those of its own features: g(h) is the eval-mode
    # projector of h (so a mix-up of h and g, or g through a training-mode BatchNorm, fails).
    h = extract_features(method.backbone, images, aug)
    g = projection_features(method, images, aug, batch_size=50)
    for part, feats in (("h", h), ("g", g)):
        assert out[part]["collapse_std"] == pytest.approx(output_std(feats), rel=1e-5)
        assert out[part]["rankme"] == pytest.approx(rankme(feats), rel=1e-4)
        assert out[part]["uniformity"] == pytest.approx(uniformity(feats), rel=1e-4, abs=1e-6)
    for part in ("h", "g"):
        assert out[part]["alignment"] > 0  # two different random views
        assert out[part]["uniformity"] < 0
    assert method_metrics(method, images, aug, seed=0, batch_size=50) == out  # seeded


def test_alignment_is_zero_when_both_views_are_the_same_deterministic_crop(method, images):
    """With every random step off (whole-image crop, no flip/jitter/grayscale) the two views
    are equal, so alignment must be 0: the views really come from the augment config."""
    plain = AugmentConfig(
        size=16,
        crop_scale=(1.0, 1.0),
        crop_ratio=(1.0, 1.0),
        jitter_prob=0.0,
        grayscale_prob=0.0,
        flip_prob=0.0,
    )
    out = method_metrics(method, images, plain)
    assert out["h"]["alignment"] == pytest.approx(0.0, abs=1e-9)
    assert out["g"]["alignment"] == pytest.approx(0.0, abs=1e-9)


def test_output_std_reference_still_holds() -> None:
    """output_std is unchanged: about 1 for isotropic outputs, 0 for a collapse."""
    assert output_std(_randn(4000, 64)) == pytest.approx(1.0, abs=0.02)
    assert output_std(torch.ones(10, 64)) == pytest.approx(0.0, abs=1e-6)
    assert output_std(F.normalize(_randn(10, 8), dim=1)) > 0
