"""W-MSE (arXiv:2007.06346): the method's loss against lightly's ``WMSELoss`` on the same model,
the number of positives, the whitening sizes and the gradient through the whitening."""

from __future__ import annotations

import pytest
import torch
from lightly.loss import WMSELoss
from torch import nn

from siamkit.config import AugmentConfig, BackboneConfig
from siamkit.encoders import create_backbone
from siamkit.errors import ConfigError
from siamkit.methods import METHODS, WMSE, WMSEConfig

BATCH, SIZE = 8, 16
# w_size = batch: one sub-batch of 8 images in 4 dimensions (lightly needs w_size >= 2 * dim)
SMALL = {"proj_dim": 4, "proj_hidden_dim": 32, "w_size": 8, "w_eps": 0.0}


def _build(seed: int = 0, **options) -> WMSE:
    torch.manual_seed(seed)
    backbone = create_backbone(BackboneConfig(name="small_cnn", width=0.25))
    return WMSE(backbone, WMSEConfig(**{**SMALL, **options}))


def _views(n: int, seed: int = 100) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(BATCH, 3, SIZE, SIZE, generator=g) for _ in range(n)]


def _grads(module: nn.Module) -> dict[str, torch.Tensor | None]:
    return {n: None if q.grad is None else q.grad.clone() for n, q in module.named_parameters()}


@pytest.mark.parametrize(("num_positives", "w_iter"), [(2, 1), (4, 2)])
def test_loss_matches_lightly_on_the_same_model_in_value_and_all_gradients(num_positives, w_iter):
    opts = {"num_positives": num_positives, "w_iter": w_iter}
    method, ref = _build(**opts), _build(**opts)
    views = _views(num_positives)
    torch.manual_seed(1)  # both draw the sub-batch permutations from the global RNG
    loss = method.training_step(views)["loss"]
    z = [ref.projector(ref.backbone.forward_features(v)) for v in views]  # type: ignore[operator]
    oracle = WMSELoss(
        embedding_dim=4, eps=0.0, track_running_stats=False, w_iter=w_iter, w_size=8,
        num_samples=num_positives,
    )  # fmt: skip
    torch.manual_seed(1)
    expected = oracle(torch.cat(z))
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-5)
    loss.backward()
    expected.backward()
    mine, theirs = _grads(method), _grads(ref)
    assert mine.keys() == theirs.keys()
    for name, g in theirs.items():
        assert g is not None and mine[name] is not None, f"{name} got no gradient"
        # float32 noise on entries near 0: tolerance relative to the largest entry
        atol = 1e-5 * float(g.abs().max())
        torch.testing.assert_close(mine[name], g, rtol=1e-3, atol=atol, msg=name)


@pytest.mark.parametrize("num_positives", [2, 4])
def test_num_positives_sets_views_and_every_view_gets_gradient(num_positives):
    m = _build(num_positives=num_positives)
    assert m.num_views == num_positives
    recipes = m.view_recipes(AugmentConfig(size=32))
    assert len(recipes) == num_positives and all(r == AugmentConfig(size=32) for r in recipes)
    views = _views(num_positives)
    zs = [m.encode(v).detach().requires_grad_() for v in views]
    it = iter(zs)
    m.encode = lambda x: next(it)  # type: ignore[method-assign]
    out = m.training_step(views)
    assert 0.0 <= out["loss"].item() <= 4.0
    grads = torch.autograd.grad(out["loss"], zs)
    assert all(g.abs().sum() > 0 for g in grads)  # no stop-gradient; through the whitening


def test_embedding_is_detached_projection_of_first_view_before_whitening():
    m = _build()
    views = _views(2)
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
