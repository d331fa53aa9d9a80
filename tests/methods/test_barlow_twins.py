"""Barlow Twins (arXiv:2103.03230): the method's loss against lightly's on the same model, its
projector, its views and its lack of any stop-gradient."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from lightly.loss import BarlowTwinsLoss
from torch import nn

from siamkit.config import AugmentConfig
from siamkit.errors import ConfigError
from siamkit.methods import METHODS, BarlowTwins, BarlowTwinsConfig
from tests.methods.conftest import BATCH, assert_every_grad_close, build, grads, random_views

SMALL = {"proj_dim": 24, "proj_hidden_dim": 32}

_build = partial(build, BarlowTwins, BarlowTwinsConfig, SMALL)


@pytest.mark.parametrize("lam", [5e-3, 0.1])
def test_loss_matches_lightly_on_the_same_model_in_value_and_all_gradients(lam):
    method, ref = _build(lambda_offdiag=lam), _build(lambda_offdiag=lam)
    views = random_views()
    loss = method.training_step(views)["loss"]
    z = [ref.projector(ref.backbone.forward_features(v)) for v in views]
    expected = BarlowTwinsLoss(lambda_param=lam)(z[0], z[1])  # Eq. 1, no stop-gradient
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)
    loss.backward()
    expected.backward()
    assert_every_grad_close(grads(method), grads(ref))


def test_both_branches_get_gradient_and_loss_is_symmetric():
    m = _build()
    views = random_views()
    zs = [m.encode(v).detach().requires_grad_() for v in views]
    it = iter(zs)
    m.encode = lambda x: next(it)  # type: ignore[method-assign]
    out = m.training_step(views)
    ga, gb = torch.autograd.grad(out["loss"], zs)
    assert ga.abs().sum() > 0 and gb.abs().sum() > 0  # no stop-gradient on either view
    fresh = _build()
    v1, v2 = views
    torch.testing.assert_close(
        fresh.training_step([v1, v2])["loss"], fresh.training_step([v2, v1])["loss"]
    )


def test_embedding_is_detached_z_of_first_view():
    m = _build()
    views = random_views()
    out = m.training_step(views)
    assert (
        out["embedding"].shape == (BATCH, SMALL["proj_dim"]) and not out["embedding"].requires_grad
    )
    torch.testing.assert_close(out["embedding"], m.encode(views[0]).detach())


def test_projector_is_three_linears_with_bn_relu_after_the_first_two():
    m = _build()
    layers = list(m.projector)
    linears = [x for x in layers if isinstance(x, nn.Linear)]
    assert [(x.in_features, x.out_features) for x in linears] == [
        (m.backbone.num_features, 32),
        (32, 32),
        (32, 24),
    ]
    assert sum(isinstance(x, nn.BatchNorm1d) for x in layers) == 2
    assert sum(isinstance(x, nn.ReLU) for x in layers) == 2
    # The output is a bare Linear: C standardises it, and a bias would get no gradient.
    assert layers[-1] is linears[-1] and linears[-1].bias is None


def test_defaults_are_the_paper_imagenet_recipe():
    cfg = BarlowTwinsConfig()
    assert (cfg.proj_hidden_dim, cfg.proj_dim, cfg.proj_layers) == (8192, 8192, 3)
    assert cfg.lambda_offdiag == 5e-3
    assert METHODS["barlow_twins"].config_class is BarlowTwinsConfig


def test_views_are_asymmetric_in_blur_and_solarisation():
    m = _build()
    big = m.view_recipes(AugmentConfig(size=224))
    assert [r.blur_prob for r in big] == [1.0, 0.1]
    assert [r.solarize_prob for r in big] == [0.0, 0.2]
    small = m.view_recipes(AugmentConfig(size=32))  # CIFAR-size views keep no blur
    assert [r.effective_blur_prob for r in small] == [0.0, 0.0]
    assert [r.solarize_prob for r in small] == [0.0, 0.2]


@pytest.mark.parametrize(
    "options", [{"proj_dim": 0}, {"lambda_offdiag": -1.0}, {"solarize_probs": (0.0, 1.5)}]
)
def test_config_rejects_impossible_values(options):
    with pytest.raises(ConfigError):
        BarlowTwinsConfig(**options)


def test_loss_scale_multiplies_loss_and_gradients():
    views = random_views()
    base, scaled = _build(), _build(loss_scale=0.1)
    loss, loss_scaled = base.training_step(views)["loss"], scaled.training_step(views)["loss"]
    torch.testing.assert_close(loss_scaled, 0.1 * loss)
    loss.backward()
    loss_scaled.backward()
    for (name, q), q_scaled in zip(base.named_parameters(), scaled.parameters(), strict=True):
        assert q.grad is not None and q_scaled.grad is not None
        atol = 1e-6 * float(q.grad.abs().max())
        torch.testing.assert_close(q_scaled.grad, 0.1 * q.grad, rtol=1e-4, atol=atol, msg=name)
    assert BarlowTwinsConfig().loss_scale == 1.0  # the paper's loss by default
    with pytest.raises(ConfigError):
        BarlowTwinsConfig(loss_scale=0.0)
