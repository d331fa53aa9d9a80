"""VICReg (arXiv:2105.04906): the method's loss against Eq. 1-6 built from lightly's terms on the
same model (its variance terms averaged, as the authors' code and the default, or summed, as Eq. 6
is printed), the term switches, the expander and the lack of any stop-gradient."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from lightly.loss import VICRegLoss
from lightly.loss.vicreg_loss import covariance_loss, invariance_loss, variance_loss
from torch import nn

from siamkit.config import AugmentConfig
from siamkit.errors import ConfigError
from siamkit.losses import vicreg_terms
from siamkit.methods import METHODS, VICReg, VICRegConfig
from tests.methods.conftest import assert_every_grad_close, build, grads, random_views

SMALL = {"proj_dim": 24, "proj_hidden_dim": 32}

_build = partial(build, VICReg, VICRegConfig, SMALL)


def _loss_from_lightly_terms(z_a, z_b, lam, mu, nu, variance_reduction):
    """Eq. 1-6 with lightly's per-branch terms; the two variance terms averaged (``"mean"``, the
    authors' main_vicreg.py, as lightly's own VICRegLoss) or summed (``"sum"``, Eq. 6)."""
    variance = variance_loss(z_a) + variance_loss(z_b)
    if variance_reduction == "mean":
        variance = variance / 2
    return (
        lam * invariance_loss(z_a, z_b)
        + mu * variance
        + nu * (covariance_loss(z_a) + covariance_loss(z_b))
    )


@pytest.mark.parametrize("variance_reduction", ["mean", "sum"])
@pytest.mark.parametrize("coeffs", [(25.0, 25.0, 1.0), (25.0, 0.0, 0.0), (0.0, 25.0, 1.0)])
def test_loss_matches_eq6_on_the_same_model_in_value_and_all_gradients(coeffs, variance_reduction):
    lam, mu, nu = coeffs
    opts = {"sim_coeff": lam, "std_coeff": mu, "cov_coeff": nu}
    opts["variance_reduction"] = variance_reduction
    method, ref = _build(**opts), _build(**opts)
    views = random_views()
    loss = method.training_step(views)["loss"]
    z = [ref.expander(ref.backbone.forward_features(v)) for v in views]
    expected = _loss_from_lightly_terms(z[0], z[1], lam, mu, nu, variance_reduction)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)
    loss.backward()
    expected.backward()
    assert_every_grad_close(grads(method), grads(ref))


def test_default_config_averages_the_variance_terms_as_the_authors_code():
    """The default is main_vicreg.py's ``std_loss = mean(relu(1 - std_x)) / 2 + ... / 2``, with
    which 25/25/1 were tuned: the default method's loss is lightly's VICRegLoss(25, 25, 1), which
    follows the authors' code there, in value and every gradient."""
    assert VICRegConfig().variance_reduction == "mean"
    method, ref = _build(), _build()
    views = random_views()
    out = method.training_step(views)
    z = [ref.expander(ref.backbone.forward_features(v)) for v in views]
    expected = VICRegLoss(lambda_param=25.0, mu_param=25.0, nu_param=1.0)(z[0], z[1])
    torch.testing.assert_close(out["loss"], expected, rtol=1e-5, atol=1e-5)
    out["loss"].backward()
    expected.backward()
    assert_every_grad_close(grads(method), grads(ref))
    # The logged variance term is the averaged one, the term the loss weights with mu.
    zd = [x.detach() for x in z]
    torch.testing.assert_close(
        out["variance"], (variance_loss(zd[0]) + variance_loss(zd[1])) / 2, rtol=1e-5, atol=1e-6
    )


def test_step_reports_the_three_unweighted_terms_detached():
    m = _build()
    views = random_views()
    out = m.training_step(views)
    terms = vicreg_terms(m.encode(views[0]), m.encode(views[1]))
    for key, value in zip(("invariance", "variance", "covariance"), terms, strict=True):
        assert not out[key].requires_grad
        torch.testing.assert_close(out[key], value.detach())
    torch.testing.assert_close(
        out["loss"].detach(), 25 * terms.invariance + 25 * terms.variance + terms.covariance
    )


def test_switching_a_term_off_removes_exactly_its_gradient():
    views = random_views()
    full, no_var = _build(), _build(std_coeff=0.0)
    zs = [full.encode(v).detach().requires_grad_() for v in views]
    t = vicreg_terms(zs[0], zs[1])
    g_full = torch.autograd.grad(25 * t.invariance + 25 * t.variance + t.covariance, zs)
    it = iter(zs)
    no_var.encode = lambda x: next(it)  # type: ignore[method-assign]
    g_no_var = torch.autograd.grad(no_var.training_step(views)["loss"], zs)
    t = vicreg_terms(zs[0], zs[1])
    g_expected = torch.autograd.grad(25 * t.invariance + t.covariance, zs)
    for a, b, c in zip(g_no_var, g_expected, g_full, strict=True):
        torch.testing.assert_close(a, b)
        assert not torch.allclose(a, c)  # the variance term did contribute when on
        assert a.abs().sum() > 0  # both branches get gradient: no stop-gradient


def test_expander_is_three_linears_with_bn_relu_after_the_first_two():
    m = _build()
    layers = list(m.expander)
    linears = [x for x in layers if isinstance(x, nn.Linear)]
    assert [x.out_features for x in linears] == [32, 32, 24]
    assert sum(isinstance(x, nn.BatchNorm1d) for x in layers) == 2
    assert sum(isinstance(x, nn.ReLU) for x in layers) == 2
    assert layers[-1] is linears[-1] and linears[-1].bias is None


def test_defaults_are_the_paper_imagenet_recipe():
    cfg = VICRegConfig()
    assert (cfg.proj_hidden_dim, cfg.proj_dim, cfg.proj_layers) == (8192, 8192, 3)
    assert (cfg.sim_coeff, cfg.std_coeff, cfg.cov_coeff, cfg.gamma, cfg.eps) == (
        25.0, 25.0, 1.0, 1.0, 1e-4,
    )  # fmt: skip
    assert cfg.variance_reduction == "mean"  # the authors' code, with which 25/25/1 were tuned
    assert METHODS["vicreg"].config_class is VICRegConfig
    views = _build().view_recipes(AugmentConfig(size=224))
    assert [r.blur_prob for r in views] == [1.0, 0.1]
    assert [r.solarize_prob for r in views] == [0.0, 0.2]


@pytest.mark.parametrize(
    "options",
    [
        {"sim_coeff": 0.0, "std_coeff": 0.0, "cov_coeff": 0.0},
        {"cov_coeff": -1.0},
        {"gamma": 0.0},
        {"proj_layers": 0},
        {"variance_reduction": "max"},
    ],
)
def test_config_rejects_impossible_values(options):
    with pytest.raises(ConfigError):
        VICRegConfig(**options)
