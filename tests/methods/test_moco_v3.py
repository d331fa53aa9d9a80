"""MoCo v3 (arXiv:2104.02057): the symmetric loss against a reference written from the paper,
the momentum encoder's stop-gradient, the momentum schedule and its EMA update, heads."""

from __future__ import annotations

import copy
import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from siamkit.errors import ConfigError
from siamkit.methods import METHODS, MoCoV3, MoCoV3Config
from tests.methods.conftest import build, param_pairs, random_views

SMALL = {"proj_dim": 16, "proj_hidden_dim": 24, "pred_hidden_dim": 12}

_v3 = partial(build, MoCoV3, MoCoV3Config, SMALL)


def test_registered_with_paper_defaults():
    assert METHODS["moco_v3"].config_class is MoCoV3Config
    v3 = MoCoV3Config()
    assert (v3.momentum, v3.proj_hidden_dim, v3.proj_dim, v3.proj_layers) == (0.99, 4096, 256, 3)


def _ctr_reference(q, k, tau):
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1).detach()
    logits = q @ k.t() / tau
    return 2 * tau * F.cross_entropy(logits, torch.arange(q.shape[0]))


@pytest.mark.parametrize("tau", [0.2, 1.0])
def test_v3_symmetric_loss_and_gradients_match_reference(tau):
    method = _v3(temperature=tau)
    ref = copy.deepcopy(method)
    views = random_views()
    loss = method.training_step(views)["loss"]
    q = [ref.predictor(ref.projector(ref.backbone.forward_features(v))) for v in views]
    with torch.no_grad():
        k = [ref.key_projector(ref.key_backbone.forward_features(v)) for v in views]
    expected = _ctr_reference(q[0], k[1], tau) + _ctr_reference(q[1], k[0], tau)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    loss.backward()
    expected.backward()
    theirs = dict(ref.named_parameters())
    for name, p in method.named_parameters():
        if name.startswith("key_"):
            assert p.grad is None, name  # the momentum encoder gets no gradient
            continue
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, theirs[name].grad, rtol=1e-4, atol=1e-5, msg=name)


def test_v3_momentum_encoder_has_no_predictor_and_loss_is_symmetric():
    method = _v3()
    assert not any("predictor" in n for n, _ in method.named_parameters() if n.startswith("key_"))
    method.eval()
    v1, v2 = random_views()
    with torch.no_grad():
        torch.testing.assert_close(
            method.training_step([v1, v2])["loss"], method.training_step([v2, v1])["loss"]
        )


def test_v3_momentum_schedule_values():
    method = _v3()
    assert method.momentum_at(0.0) == pytest.approx(0.99)
    assert method.momentum_at(0.5) == pytest.approx(0.995)
    assert method.momentum_at(1.0) == pytest.approx(1.0)
    p = 0.25
    assert method.momentum_at(p) == pytest.approx(1 - 0.01 * (math.cos(math.pi * p) + 1) / 2)


@pytest.mark.parametrize("progress", [0.0, 0.4, 1.0])
def test_v3_on_step_end_applies_the_scheduled_ema(progress):
    method = _v3()
    with torch.no_grad():
        for p in [*method.backbone.parameters(), *method.projector.parameters()]:
            p.add_(torch.randn_like(p))
    online = [method.backbone, method.projector]
    target = [method.key_backbone, method.key_projector]
    before = [(o.clone(), t.clone()) for o, t in param_pairs(online, target)]
    method.on_step_end(progress)
    m = 1 - 0.01 * (math.cos(math.pi * progress) + 1) / 2
    for (o, t), (_, t_new) in zip(before, param_pairs(online, target), strict=True):
        torch.testing.assert_close(t_new, m * t + (1 - m) * o, rtol=1e-6, atol=1e-7)


def test_v3_heads_have_bn_on_every_layer():
    method = _v3()
    proj = [m for m in method.projector if isinstance(m, nn.Linear)]
    pred = [m for m in method.predictor if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in proj] == [
        (method.backbone.num_features, 24),
        (24, 24),
        (24, 16),
    ]
    assert [(m.in_features, m.out_features) for m in pred] == [(16, 12), (12, 16)]
    for head, n in ((method.projector, 3), (method.predictor, 2)):
        bns = [m for m in head if isinstance(m, nn.BatchNorm1d)]
        assert len(bns) == n and not bns[-1].affine
        assert isinstance(list(head)[-1], nn.BatchNorm1d)
    assert not hasattr(method, "queue")
    with pytest.raises(ConfigError):
        MoCoV3Config(proj_layers=1)
