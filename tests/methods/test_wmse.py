"""W-MSE (arXiv:2007.06346): the method's loss against lightly's ``WMSELoss`` on the same model,
the number of positives, the whitening sizes and the gradient through the whitening."""

from __future__ import annotations

import itertools
from functools import partial

import pytest
import torch
from lightly.loss import WMSELoss
from torch import nn

from siamkit.config import AugmentConfig
from siamkit.errors import ConfigError
from siamkit.methods import METHODS, WMSE, WMSEConfig
from tests.methods.conftest import BATCH, assert_every_grad_close, build, grads, random_views

# w_size = batch: one sub-batch of 8 images in 4 dimensions (lightly needs w_size >= 2 * dim)
SMALL = {"proj_dim": 4, "proj_hidden_dim": 32, "w_size": 8, "w_eps": 0.0}

_build = partial(build, WMSE, WMSEConfig, SMALL)


def _whitened_unit(z: torch.Tensor) -> torch.Tensor:
    """zhat of Eq. 4-5 by hand, in float64: ``W (z - mu)`` with ``W = L^{-1}``, ``L L^T =
    Sigma`` (unbiased covariance, no ridge), then l2-normalised per row."""
    z = z.double()
    centred = z - z.mean(dim=0)
    sigma = centred.T @ centred / (z.shape[0] - 1)
    white = centred @ torch.linalg.inv(torch.linalg.cholesky(sigma)).T
    return white / white.norm(dim=1, keepdim=True)


@pytest.mark.parametrize(("num_positives", "w_iter"), [(2, 1), (4, 2)])
def test_loss_matches_lightly_on_the_same_model_in_value_and_all_gradients(num_positives, w_iter):
    opts = {"num_positives": num_positives, "w_iter": w_iter}
    method, ref = _build(**opts), _build(**opts)
    views = random_views(num_positives)
    torch.manual_seed(1)  # both draw the sub-batch permutations from the global RNG
    loss = method.training_step(views)["loss"]
    z = [ref.projector(ref.backbone.forward_features(v)) for v in views]
    oracle = WMSELoss(
        embedding_dim=4, eps=0.0, track_running_stats=False, w_iter=w_iter, w_size=8,
        num_samples=num_positives,
    )  # fmt: skip
    torch.manual_seed(1)
    expected = oracle(torch.cat(z))
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-5)
    loss.backward()
    expected.backward()
    assert_every_grad_close(grads(method), grads(ref), rtol=1e-3)


@pytest.mark.parametrize("num_positives", [2, 4])
def test_num_positives_sets_views_and_every_view_gets_gradient(num_positives):
    m = _build(num_positives=num_positives)
    assert m.num_views == num_positives
    recipes = m.view_recipes(AugmentConfig(size=32))
    assert len(recipes) == num_positives and all(r == AugmentConfig(size=32) for r in recipes)
    views = random_views(num_positives)
    zs = [m.encode(v).detach().requires_grad_() for v in views]
    it = iter(zs)
    m.encode = lambda x: next(it)  # type: ignore[method-assign]
    out = m.training_step(views)
    # One sub-batch (w_size = batch), so the loss is Eq. 6 over the whole batch: the mean over
    # images and over the d(d-1)/2 pairs of ||zhat_j - zhat_k||^2.
    units = [_whitened_unit(z) for z in zs]
    pairs = list(itertools.combinations(units, 2))
    assert len(pairs) == num_positives * (num_positives - 1) // 2
    expected = sum(((a - b) ** 2).sum(dim=1).mean() for a, b in pairs) / len(pairs)
    torch.testing.assert_close(out["loss"].double(), expected.detach(), rtol=1e-4, atol=1e-6)
    view_grads = torch.autograd.grad(out["loss"], zs)
    assert all(g.abs().sum() > 0 for g in view_grads)  # no stop-gradient; through the whitening


def test_embedding_is_detached_projection_of_first_view_before_whitening():
    m = _build()
    views = random_views(2)
    out = m.training_step(views)
    assert out["embedding"].shape == (BATCH, 4) and not out["embedding"].requires_grad
    torch.testing.assert_close(out["embedding"], m.encode(views[0]).detach())


def test_projector_and_defaults_follow_the_paper_cifar_recipe():
    cfg = WMSEConfig()
    assert (cfg.proj_hidden_dim, cfg.proj_dim, cfg.proj_layers) == (1024, 64, 2)
    assert (cfg.num_positives, cfg.w_size, cfg.w_iter) == (2, 128, 1)
    assert METHODS["wmse"].config_class is WMSEConfig
    layers = list(_build().projector)
    assert [type(x) for x in layers] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert layers[-1].bias is None  # the whitening centres: a bias would get no gradient


@pytest.mark.parametrize(
    "options",
    [{"num_positives": 1}, {"w_size": 64}, {"w_size": 32, "proj_dim": 64}, {"w_iter": 0}],
)
def test_config_rejects_impossible_values(options):
    with pytest.raises(ConfigError):
        WMSEConfig(**options)
