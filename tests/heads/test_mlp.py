"""MLP heads: ``mlp``'s layer rules, ``projection_mlp`` (every method's projector, SimSiam
arXiv:2011.10566 Sec. 4.1 by default) and ``prediction_mlp`` (SimSiam's bottleneck h)."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from siamkit.heads import mlp, prediction_mlp, projection_mlp
from siamkit.normalization import WSLinear


def _types(head: nn.Sequential) -> list[type]:
    return [type(m) for m in head]


def _state(head: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in head.state_dict().items()}


# --------------------------------------------------------------------------------------------
# mlp
# --------------------------------------------------------------------------------------------
def test_mlp_hidden_layers_are_linear_bn_relu_and_the_output_has_no_relu():
    head = mlp([6, 5, 4, 3])
    assert _types(head) == [
        nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear,
    ]  # fmt: skip
    linears = [m for m in head if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(6, 5), (5, 4), (4, 3)]
    # A Linear followed by BN has no bias (BN's shift replaces it); the bare output has one.
    assert [m.bias is None for m in linears] == [True, True, False]


def test_mlp_output_bn_and_its_affine():
    head = mlp([6, 5, 3], output_bn=True, output_bn_affine=False)
    assert _types(head) == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear, nn.BatchNorm1d]
    assert head[1].affine and not head[4].affine  # only the output BN loses its affine
    assert head[3].bias is None


def test_mlp_without_bn_has_biases_everywhere():
    head = mlp([6, 5, 3], hidden_bn=False)
    assert _types(head) == [nn.Linear, nn.ReLU, nn.Linear]
    assert all(m.bias is not None for m in head if isinstance(m, nn.Linear))


def test_mlp_output_bias_off_only_drops_the_bias_of_a_bare_output():
    head = mlp([6, 5, 3], output_bias=False)
    assert head[0].bias is None and head[-1].bias is None
    assert mlp([6, 5, 3], hidden_bn=False, output_bias=False)[0].bias is not None  # hidden kept


def test_mlp_group_ws_replaces_every_bn_by_ws_linear_and_group_norm():
    head = mlp([8, 16, 4], output_bn=True, norm="group_ws")
    assert _types(head) == [WSLinear, nn.GroupNorm, nn.ReLU, WSLinear, nn.GroupNorm]
    assert not any(isinstance(m, nn.BatchNorm1d) for m in head)
    # A Linear without a norm after it stays a plain Linear.
    assert _types(mlp([8, 16, 4], norm="group_ws")) == [WSLinear, nn.GroupNorm, nn.ReLU, nn.Linear]


def test_mlp_needs_an_input_and_an_output_width():
    with pytest.raises(ValueError):
        mlp([4])


# --------------------------------------------------------------------------------------------
# projection_mlp
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_projection_mlp_widths_and_depth(num_layers):
    head = projection_mlp(10, 7, 5, num_layers, hidden_bn=True, output_bn=True)
    linears = [m for m in head if isinstance(m, nn.Linear)]
    expected = [10] + [7] * (num_layers - 1) + [5]
    assert [(m.in_features, m.out_features) for m in linears] == list(itertools.pairwise(expected))
    assert sum(isinstance(m, nn.ReLU) for m in head) == num_layers - 1
    assert sum(isinstance(m, nn.BatchNorm1d) for m in head) == num_layers
    assert isinstance(head[-1], nn.BatchNorm1d) and head[-1].affine  # SimSiam: affine output BN


# One projector per method, as each method builds it: the options it passes, and the flags
# (hidden_bn, output_bn, output_bn_affine, norm, output_bias) of mlp that must result.
PROJECTORS = {
    "simsiam": (3, {"hidden_bn": True, "output_bn": True}),
    "simsiam_released_code": (3, {"hidden_bn": True, "output_bn": True, "output_bn_affine": False}),
    "barlow_twins_vicreg_wmse": (3, {"hidden_bn": True, "output_bn": False, "output_bias": False}),
    "moco_v2": (2, {"hidden_bn": False, "output_bn": False}),
    "moco_v3": (3, {"hidden_bn": True, "output_bn": True, "output_bn_affine": False}),
    "byol_batch": (2, {"hidden_bn": True, "output_bn": False, "output_bias": False}),
    "byol_group_ws": (2, {"hidden_bn": True, "output_bn": False, "norm": "group_ws"}),
    "swav": (2, {"hidden_bn": True, "output_bn": False}),
}


@pytest.mark.parametrize("name", sorted(PROJECTORS))
def test_projection_mlp_is_mlp_on_the_same_widths_with_the_same_init(name):
    """Module types, parameter names and (seeded) initial values equal ``mlp``'s."""
    num_layers, options = PROJECTORS[name]
    torch.manual_seed(0)
    head = projection_mlp(12, 16, 8, num_layers, **options)
    torch.manual_seed(0)
    reference = mlp([12] + [16] * (num_layers - 1) + [8], **options)
    assert _types(head) == _types(reference)
    mine, theirs = _state(head), _state(reference)
    assert list(mine) == list(theirs)
    for key, value in theirs.items():
        torch.testing.assert_close(mine[key], value, rtol=0, atol=0, msg=key)


def test_projection_mlp_options_reach_the_output_layer():
    no_bias = projection_mlp(12, 16, 8, 3, hidden_bn=True, output_bn=False, output_bias=False)
    assert isinstance(no_bias[-1], nn.Linear) and no_bias[-1].bias is None
    plain = projection_mlp(12, 16, 8, 3, hidden_bn=True, output_bn=False)
    assert plain[-1].bias is not None
    affine_free = projection_mlp(12, 16, 8, 2, True, True, output_bn_affine=False)
    assert isinstance(affine_free[-1], nn.BatchNorm1d) and not affine_free[-1].affine
    ws = projection_mlp(12, 16, 8, 2, hidden_bn=True, output_bn=True, norm="group_ws")
    assert _types(ws) == [WSLinear, nn.GroupNorm, nn.ReLU, WSLinear, nn.GroupNorm]


def test_projection_mlp_needs_a_layer():
    with pytest.raises(ValueError, match="num_layers"):
        projection_mlp(12, 16, 8, 0, hidden_bn=True, output_bn=True)


# --------------------------------------------------------------------------------------------
# prediction_mlp
# --------------------------------------------------------------------------------------------
def test_prediction_mlp_is_a_two_layer_bottleneck_without_output_bn():
    head = prediction_mlp(32, 8, hidden_bn=True, output_bn=False)
    assert _types(head) == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert [(m.in_features, m.out_features) for m in head if isinstance(m, nn.Linear)] == [
        (32, 8),
        (8, 32),
    ]
    assert head[-1].bias is not None
    out = head(torch.randn(4, 32))
    assert out.shape == (4, 32)
    with_out_bn = prediction_mlp(32, 8, hidden_bn=True, output_bn=True)
    assert isinstance(with_out_bn[-1], nn.BatchNorm1d)
