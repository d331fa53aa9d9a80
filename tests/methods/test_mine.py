"""MINE as a pretraining objective: the loss is minus the bound of the two views' projections."""

from __future__ import annotations

import copy
from functools import partial

import pytest
import torch

from siamkit.errors import ConfigError
from siamkit.losses.mi_bounds import derangement, dv_bound
from siamkit.methods import METHODS, MINE, MINEConfig
from tests.methods.conftest import BATCH, build, random_views

SMALL = {"proj_dim": 16, "proj_hidden_dim": 24, "critic_hidden_dim": 32}

_build = partial(build, MINE, MINEConfig, SMALL)


def test_registered_with_the_papers_bound():
    assert METHODS["mine"].config_class is MINEConfig
    assert MINEConfig().bound == "mine"


@pytest.mark.parametrize(
    ("options", "fragment"),
    [({"bound": "nce"}, "method.bound"), ({"ema_rate": 0.0}, "method.ema_rate"),
     ({"critic_depth": 0}, "method.critic_depth")],
)  # fmt: skip
def test_bad_settings_are_config_errors(options, fragment):
    with pytest.raises(ConfigError, match=fragment):
        MINEConfig(**options)


@pytest.mark.parametrize("normalize", [True, False])
def test_loss_is_minus_the_dv_bound_of_the_projections(normalize):
    method = _build(bound="dv", normalize=normalize)
    ref = copy.deepcopy(method)
    views = random_views()
    torch.manual_seed(3)
    out = method.training_step(views)
    z_a, z_b = (ref.encode(v) for v in views)
    if normalize:  # T reads sqrt(D) z / ||z||, written out here
        z_a, z_b = (z / z.norm(dim=1, keepdim=True) * z.shape[1] ** 0.5 for z in (z_a, z_b))
    torch.manual_seed(3)  # the same marginal pairing
    idx = derangement(BATCH)
    expected = dv_bound(ref.mi.critic(z_a, z_b), ref.mi.critic(z_a, z_b[idx]))
    torch.testing.assert_close(out["loss"], -expected)
    torch.testing.assert_close(out["mi"], expected.detach())


def test_normalised_critic_input_ignores_the_scale_of_the_projections():
    method = _build()
    z = torch.randn(BATCH, SMALL["proj_dim"])
    x = method.critic_input(z)
    # Every row on the sphere of radius sqrt(D): unit scale a coordinate, whatever z's norm.
    torch.testing.assert_close(x.norm(dim=1), torch.full((BATCH,), SMALL["proj_dim"] ** 0.5))
    torch.testing.assert_close(method.critic_input(25.0 * z), x)


def test_encoder_head_and_statistics_network_all_learn_and_the_average_is_saved():
    method = _build()
    assert not torch.isfinite(method.mi.log_average)
    method.training_step(random_views())["loss"].backward()
    for name, p in method.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert torch.isfinite(method.mi.log_average)
    assert "mi.log_average" in method.state_dict()


@pytest.mark.parametrize(("bound", "has_bias"), [("mine", False), ("dv", False),
                                                 ("infonce", False), ("mine_f", True)])  # fmt: skip
def test_the_score_has_a_bias_only_where_the_bound_depends_on_a_shift(bound, has_bias):
    method = _build(bound=bound)
    last = method.mi.critic.rest[-1]
    assert (last.bias is not None) is has_bias
    # The DV bound of a shifted critic is the same: what the bias would carry is nothing.
    views = random_views()
    z_a, z_b = (method.encode(v).detach() for v in views)
    t_joint, t_marginal = method.mi.critic(z_a, z_b), method.mi.critic(z_a, z_b.flip(0))
    torch.testing.assert_close(
        dv_bound(t_joint + 3.0, t_marginal + 3.0), dv_bound(t_joint, t_marginal)
    )
