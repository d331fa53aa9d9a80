"""SimCLR (arXiv:2002.05709) and SimCLRv2's head (arXiv:2006.10029): the loss against lightly's
NT-Xent on the same projections, head depth, the fine-tuning entry point, both views trained."""

from __future__ import annotations

import copy
from functools import partial

import pytest
import torch
from lightly.loss import NTXentLoss
from torch import nn

from siamkit.errors import ConfigError
from siamkit.methods import METHODS, SimCLR, SimCLRConfig
from tests.methods.conftest import BATCH, build, random_views

SMALL = {"proj_dim": 16, "proj_hidden_dim": 24}

_build = partial(build, SimCLR, SimCLRConfig, SMALL)


def test_registered_with_paper_defaults():
    assert METHODS["simclr"].config_class is SimCLRConfig
    cfg = SimCLRConfig()
    assert (cfg.proj_layers, cfg.proj_dim, cfg.temperature) == (2, 128, 0.1)


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_loss_and_every_gradient_match_lightly_on_the_same_projections(tau):
    method = _build(temperature=tau)
    ref = copy.deepcopy(method)
    views = random_views()
    loss = method.training_step(views)["loss"]
    z = [ref.projector(ref.backbone.forward_features(v)) for v in views]
    expected = NTXentLoss(temperature=tau, memory_bank_size=0)(z[0], z[1])
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    loss.backward()
    expected.backward()
    theirs = dict(ref.named_parameters())
    for name, p in method.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        torch.testing.assert_close(p.grad, theirs[name].grad, rtol=1e-4, atol=1e-5, msg=name)


def test_both_views_get_gradient_no_stop_gradient():
    method = _build()
    views = [v.requires_grad_() for v in random_views()]
    loss = method.training_step(views)["loss"]
    g1, g2 = torch.autograd.grad(loss, views)
    assert g1.abs().sum() > 0 and g2.abs().sum() > 0


def test_symmetric_in_the_views_and_embedding_is_detached_first_view():
    method = _build()
    v1, v2 = random_views()
    out = method.training_step([v1, v2])
    torch.testing.assert_close(out["loss"], method.training_step([v2, v1])["loss"])
    assert (
        out["embedding"].shape == (BATCH, SMALL["proj_dim"]) and not out["embedding"].requires_grad
    )
    method.eval()
    with torch.no_grad():
        emb = method.training_step([v1, v2])["embedding"]
        torch.testing.assert_close(emb, method.projector(method.backbone.forward_features(v1)))


@pytest.mark.parametrize("layers", [2, 3])
def test_head_depth_widths_and_bn(layers):
    method = _build(proj_layers=layers)
    linears = [m for m in method.projector if isinstance(m, nn.Linear)]
    assert len(linears) == layers
    assert linears[0].in_features == method.backbone.num_features
    assert all(m.out_features == SMALL["proj_hidden_dim"] for m in linears[:-1])
    assert linears[-1].out_features == SMALL["proj_dim"]
    assert sum(isinstance(m, nn.ReLU) for m in method.projector) == layers - 1
    assert sum(isinstance(m, nn.BatchNorm1d) for m in method.projector) == layers
    assert not isinstance(list(method.projector)[-1], nn.ReLU)  # no ReLU on z


def test_no_head_compares_h_itself_and_matches_lightly():
    # Fig. 8's "None": NT-Xent on the backbone features h, no projection at all.
    method = _build(proj_layers=0)
    assert isinstance(method.projector, nn.Identity)
    assert not list(method.projector.parameters())
    views = random_views()
    out = method.training_step(views)
    h = [method.backbone.forward_features(v) for v in views]
    torch.testing.assert_close(out["loss"], NTXentLoss(temperature=0.1)(h[0], h[1]))
    assert out["embedding"].shape == (BATCH, method.backbone.num_features)


def test_linear_head_is_one_fc_and_its_bn():
    # Fig. 8's "Linear": g(h) = W h (and BN, as every fc of the released head has).
    method = _build(proj_layers=1)
    layers = list(method.projector)
    assert [type(m) for m in layers] == [nn.Linear, nn.BatchNorm1d]
    assert (layers[0].in_features, layers[0].out_features) == (32, SMALL["proj_dim"])


def test_head_bn_off_gives_the_papers_plain_mlp():
    method = _build(head_bn=False)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in method.projector.modules())
    assert all(m.bias is not None for m in method.projector if isinstance(m, nn.Linear))


def test_head_is_not_part_of_the_exported_backbone():
    method = _build()
    backbone_ids = {id(p) for p in method.backbone.parameters()}
    assert backbone_ids.isdisjoint(id(p) for p in method.projector.parameters())


def test_head_first_layer_is_backbone_plus_first_fc_bn_relu_sharing_weights():
    method = _build(proj_layers=3)
    method.eval()
    net = method.head_first_layer()
    x = random_views()[0]
    layers = list(method.projector)
    with torch.no_grad():
        h = method.backbone.forward_features(x)
        expected = layers[2](layers[1](layers[0](h)))  # fc, BN, ReLU
        out = net(x)
    assert out.shape == (BATCH, SMALL["proj_hidden_dim"])
    torch.testing.assert_close(out, expected)
    assert net[0] is method.backbone and net[1] is layers[0]
    with pytest.raises(ValueError):
        _build(proj_layers=1).head_first_layer()


def test_config_rejects_impossible_values():
    with pytest.raises(ConfigError, match="temperature"):
        SimCLRConfig(temperature=0.0)
    with pytest.raises(ConfigError, match="proj_dim"):
        SimCLRConfig(proj_dim=0)
    with pytest.raises(ConfigError, match="proj_layers"):
        SimCLRConfig(proj_layers=-1)
