"""BYOL (arXiv:2006.07733): loss against a reference written from Eq. 2, the target network's
stop-gradient and EMA schedule (Sec. 3.1-3.2), the asymmetric views (Table 6) and the
normalisation options of "BYOL works even without batch statistics" (arXiv:2010.10241)."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from torch import nn

from siamkit.config import AugmentConfig
from siamkit.errors import ConfigError
from siamkit.methods import BYOL, METHODS, BYOLConfig, create_method
from siamkit.normalization import WSLinear
from siamkit.recipes import method_from_dict
from tests.methods.conftest import BATCH, build, random_views, small_backbone

SMALL = {"proj_hidden_dim": 48, "proj_dim": 16, "pred_hidden_dim": 40}

_build = partial(build, BYOL, BYOLConfig, SMALL)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / torch.sqrt((x * x).sum(dim=1, keepdim=True))


def _reference_loss(m: BYOL, views: list[torch.Tensor]) -> torch.Tensor:
    """Eq. 2 and its symmetrisation L + L~, written without the method's code or loss."""
    online = [m.projector(m.backbone(v)) for v in views]
    pred = [m.predictor(z) for z in online]
    with torch.no_grad():
        target = [m.target_projector(m.target_backbone(v)) for v in views]
    loss_12 = ((_unit(pred[0]) - _unit(target[1])) ** 2).sum(dim=1).mean()
    loss_21 = ((_unit(pred[1]) - _unit(target[0])) ** 2).sum(dim=1).mean()
    return loss_12 + loss_21


def _perturb(module: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for q in module.parameters():
            q.add_(0.1 * torch.randn(q.shape, generator=g))


def _target_pairs(m: BYOL) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name, target parameter, online parameter) for the backbone and the projector."""
    pairs = []
    for prefix, tgt, onl in (
        ("backbone", m.target_backbone, m.backbone),
        ("projector", m.target_projector, m.projector),
    ):
        for (name, t), (_, o) in zip(tgt.named_parameters(), onl.named_parameters(), strict=True):
            pairs.append((f"{prefix}.{name}", t, o))
    return pairs


# --------------------------------------------------------------------------------------------
# Loss and stop-gradient
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("norm", ["batch", "none", "group_ws"])
def test_loss_matches_eq2_reference_in_value_and_every_gradient(norm):
    method, ref = _build(0, norm=norm), _build(0, norm=norm)
    # Make the target differ from the online network, as after some training.
    _perturb(method.target_backbone, 1)
    _perturb(ref.target_backbone, 1)
    views = random_views()
    loss = method.training_step(views)["loss"]
    expected = _reference_loss(ref, views)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    loss.backward()
    expected.backward()
    n_nonzero = 0
    for (name, q), (_, r) in zip(method.named_parameters(), ref.named_parameters(), strict=True):
        if r.grad is None:
            assert q.grad is None, name
            continue
        # float32 rounding (amplified by weight standardisation) is ~1e-5 of the largest entry
        scale = float(r.grad.abs().max())
        torch.testing.assert_close(q.grad, r.grad, rtol=1e-4, atol=1e-4 * scale, msg=name)
        n_nonzero += int(r.grad.abs().sum() > 0)
    assert n_nonzero > 0


class _Scale(nn.Module):
    """A stand-in predictor q(z) = scale * z."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.scale * z


@pytest.mark.parametrize(("scale", "expected"), [(3.0, 0.0), (-0.5, 8.0)], ids=["along", "against"])
def test_loss_is_zero_along_and_eight_against_the_target(scale, expected):
    """Eq. 2 summed over both directions, in closed form.

    A fresh target equals the online network, so on two identical views the target projection
    of either view is the online projection z of the other. With q(z) = scale * z each term is
    ``||sign(scale) z/||z|| - z/||z|| ||^2``: 0 for ``scale > 0`` and 4 for ``scale < 0``, so the
    loss is 0 or 2 x 4 = 8. An average instead of the sum of the two terms, or a missing
    normalisation, would give other values.
    """
    m = _build()
    m.predictor = _Scale(scale)
    (v,) = random_views(1)
    loss = m.training_step([v, v])["loss"]
    torch.testing.assert_close(loss, torch.tensor(expected), rtol=0, atol=1e-5)


def test_target_network_gets_no_gradient_and_is_not_optimised():
    m = _build()
    target_ids = {
        id(q) for q in [*m.target_backbone.parameters(), *m.target_projector.parameters()]
    }
    assert target_ids and not any(
        q.requires_grad for q in [*m.target_backbone.parameters(), *m.target_projector.parameters()]
    )
    m.training_step(random_views())["loss"].backward()
    for name, q in m.named_parameters():
        if name.startswith("target_"):
            assert q.grad is None, name
    grouped = {id(q) for g in m.param_groups() for q in g["params"]}
    assert grouped.isdisjoint(target_ids)
    online = [*m.backbone.parameters(), *m.projector.parameters(), *m.predictor.parameters()]
    assert grouped == {id(q) for q in online}


def test_no_predictor_on_the_target_and_target_starts_as_a_copy():
    m = _build()
    assert not hasattr(m, "target_predictor")
    for name, t, o in _target_pairs(m):
        torch.testing.assert_close(t, o, msg=name)


def test_loss_is_symmetric_in_the_views_and_embedding_is_online_z1():
    m = _build()
    v1, v2 = random_views()
    m.eval()  # fixed BN statistics, so both calls see the same normalisation
    out = m.training_step([v1, v2])
    torch.testing.assert_close(out["loss"], m.training_step([v2, v1])["loss"])
    emb = out["embedding"]
    assert emb.shape == (BATCH, SMALL["proj_dim"]) and not emb.requires_grad
    torch.testing.assert_close(emb, m.projector(m.backbone(v1)).detach())


# --------------------------------------------------------------------------------------------
# EMA target and its schedule
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("progress", "tau"), [(0.0, 0.996), (0.5, 0.998), (1.0, 1.0)])
def test_ema_step_is_the_formula_with_the_cosine_scheduled_tau(progress, tau):
    # tau = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2 [Sec. 3.2]
    assert math.isclose(1 - (1 - 0.996) * (math.cos(math.pi * progress) + 1) / 2, tau)
    m = _build()
    _perturb(m.backbone, 2)
    _perturb(m.projector, 3)
    before = [(name, t.detach().clone(), o.detach().clone()) for name, t, o in _target_pairs(m)]
    m.on_step_end(progress)
    for (name, t_old, o), (_, t_new, _) in zip(before, _target_pairs(m), strict=True):
        torch.testing.assert_close(t_new, tau * t_old + (1 - tau) * o, msg=name)
        if progress == 1.0:
            torch.testing.assert_close(t_new, t_old, msg=name)  # tau = 1: target frozen
    # BN statistics are copied, as in the reference code
    online_buffers = dict(m.backbone.named_buffers())
    for name, buf in m.target_backbone.named_buffers():
        torch.testing.assert_close(buf, online_buffers[name])


def test_momentum_schedule_follows_the_config():
    m = _build(base_momentum=0.99, final_momentum=0.999)
    _perturb(m.projector, 4)
    t_old = m.target_projector[0].weight.detach().clone()
    online = m.projector[0].weight.detach().clone()
    m.on_step_end(0.0)
    torch.testing.assert_close(m.target_projector[0].weight, 0.99 * t_old + 0.01 * online)


# --------------------------------------------------------------------------------------------
# Asymmetric views [Table 6]
# --------------------------------------------------------------------------------------------
def test_view_recipes_are_asymmetric_for_imagenet_size_views():
    v1, v2 = _build().view_recipes(AugmentConfig(size=224, crop_scale=(0.08, 1.0)))
    assert (v1.effective_blur_prob, v2.effective_blur_prob) == (1.0, 0.1)
    assert (v1.solarize_prob, v2.solarize_prob) == (0.0, 0.2)
    assert v1.crop_scale == v2.crop_scale == (0.08, 1.0)  # the rest of the recipe is kept


def test_view_recipes_keep_no_blur_on_small_views_unless_asked():
    v1, v2 = _build().view_recipes(AugmentConfig(size=32))
    assert (v1.effective_blur_prob, v2.effective_blur_prob) == (0.0, 0.0)
    assert (v1.solarize_prob, v2.solarize_prob) == (0.0, 0.2)
    v1, v2 = _build().view_recipes(AugmentConfig(size=32, blur_prob=0.5))
    assert (v1.effective_blur_prob, v2.effective_blur_prob) == (1.0, 0.1)
    v1, v2 = _build().view_recipes(AugmentConfig(size=224, blur_prob=0.0))
    assert (v1.effective_blur_prob, v2.effective_blur_prob) == (0.0, 0.0)


# --------------------------------------------------------------------------------------------
# Normalisation: batch, none, group_ws
# --------------------------------------------------------------------------------------------
def _types(module: nn.Module) -> set[type]:
    return {type(x) for x in module.modules()}


def test_heads_follow_sec_3_3_with_batch_norm():
    m = _build(proj_hidden_dim=64, proj_dim=16, pred_hidden_dim=64)
    lin1, bn, _, lin2 = m.projector
    assert isinstance(bn, nn.BatchNorm1d) and lin1.out_features == 64 and lin2.out_features == 16
    assert lin1.bias is None  # BN's shift replaces it
    assert lin2.bias is None  # feeds the predictor's Linear -> BN, which removes any shift
    assert [type(x) for x in m.predictor] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert m.predictor[-1].bias is not None


def test_norm_none_has_no_normalisation_in_the_heads():
    m = _build(norm="none")
    for head in (m.projector, m.predictor):
        assert _types(head) == {nn.Sequential, nn.Linear, nn.ReLU}
        assert all(x.bias is not None for x in head if isinstance(x, nn.Linear))


def test_norm_group_ws_uses_group_norm_and_standardised_linears_in_the_heads():
    m = _build(norm="group_ws")
    for head in (m.projector, m.predictor):
        assert nn.BatchNorm1d not in _types(head)
        assert [type(x) for x in head] == [WSLinear, nn.GroupNorm, nn.ReLU, nn.Linear]
        assert head[0].out_features % head[1].num_groups == 0


def test_group_ws_everywhere_makes_every_output_independent_of_the_batch():
    """No batch statistics anywhere: an image's loss terms do not depend on the other images."""
    m = _build(norm="group_ws", backbone_norm="group_ws")
    assert not any(isinstance(x, nn.modules.batchnorm._BatchNorm) for x in m.modules())
    m.train()
    v1, v2 = random_views()
    full = m.projector(m.backbone(v1))
    half = m.projector(m.backbone(v1[:3]))
    torch.testing.assert_close(half, full[:3], rtol=1e-4, atol=1e-5)
    assert torch.isfinite(m.training_step([v1, v2])["loss"])


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------
def test_registered_with_paper_defaults():
    assert METHODS["byol"].config_class is BYOLConfig
    cfg = BYOLConfig()
    assert (cfg.proj_hidden_dim, cfg.proj_dim, cfg.pred_hidden_dim) == (4096, 256, 4096)
    assert (cfg.base_momentum, cfg.final_momentum) == (0.996, 1.0)
    assert (cfg.blur_probs, cfg.solarize_probs, cfg.norm) == ((1.0, 0.1), (0.0, 0.2), "batch")
    torch.manual_seed(0)
    m = create_method(small_backbone(), cfg)
    assert isinstance(m, BYOL) and m.num_views == 2


@pytest.mark.parametrize(
    "bad",
    [
        {"base_momentum": 1.01},
        {"base_momentum": 0.999, "final_momentum": 0.99},
        {"proj_dim": 0},
        {"solarize_probs": (0.0, 1.5)},
    ],
)
def test_impossible_values_raise_config_error(bad):
    with pytest.raises(ConfigError):
        BYOLConfig(**bad)


def test_config_loads_from_a_mapping_strictly():
    cfg = method_from_dict({"name": "byol", "norm": "group_ws", "blur_probs": [0.5, 0.5]})
    assert isinstance(cfg, BYOLConfig) and cfg.blur_probs == (0.5, 0.5)
    with pytest.raises(ConfigError, match="norm"):
        method_from_dict({"name": "byol", "norm": "layer"})
