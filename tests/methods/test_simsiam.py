"""SimSiam (arXiv:2011.10566) against an independent reference, its ablations, and the method
contract for every registered method."""

from __future__ import annotations

import copy
from functools import partial

import pytest
import torch
from lightly.loss import NegativeCosineSimilarity
from torch import nn

from siamkit.errors import ConfigError
from siamkit.losses import cross_entropy
from siamkit.methods import SimSiam, SimSiamConfig
from tests.methods.conftest import BATCH, SIZE, assert_same_grads, build, grads, random_views

SMALL = {"proj_dim": 32, "proj_hidden_dim": 48, "pred_hidden_dim": 8, "proj_layers": 2}

D = NegativeCosineSimilarity()  # oracle for D(p, z) = -cos(p, z), Eq. 1

_build = partial(build, SimSiam, SimSiamConfig, SMALL)


def _reference_loss(m: SimSiam, views: list[torch.Tensor], symmetry: str, d=D) -> torch.Tensor:
    """The paper's loss written from Eq. 3-4 and Sec. 4.6, not from the method's code."""
    z = [m.projector(m.backbone.forward_features(v)) for v in views]
    p = [m.predictor(zi) for zi in z]
    if symmetry == "symmetric":
        return 0.5 * d(p[0], z[1].detach()) + 0.5 * d(p[1], z[0].detach())
    if symmetry == "asymmetric":
        return d(p[0], z[1].detach())
    assert symmetry == "asymmetric_2x"
    return 0.5 * d(p[0], z[1].detach()) + 0.5 * d(p[2], z[3].detach())


def _assert_same_loss_and_grads(options: dict, symmetry: str, n_views: int, d=D) -> None:
    method, ref = _build(0, **options), _build(0, **options)
    views = random_views(n_views)
    loss = method.training_step(views)["loss"]
    expected = _reference_loss(ref, views, symmetry, d)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    loss.backward()
    expected.backward()
    assert_same_grads(grads(method), grads(ref))


# --------------------------------------------------------------------------------------------
# The loss against the reference
# --------------------------------------------------------------------------------------------
def test_symmetric_loss_matches_reference_in_value_and_all_gradients():
    _assert_same_loss_and_grads({}, "symmetric", 2)


def test_asymmetric_loss_is_one_pair():
    _assert_same_loss_and_grads({"loss_symmetry": "asymmetric"}, "asymmetric", 2)


def test_asymmetric_2x_takes_four_views_and_two_pairs():
    m = _build(loss_symmetry="asymmetric_2x")
    assert m.num_views == 4
    _assert_same_loss_and_grads({"loss_symmetry": "asymmetric_2x"}, "asymmetric_2x", 4)


@pytest.mark.parametrize("symmetry", ["symmetric", "asymmetric"])
def test_two_view_methods_take_two_views(symmetry):
    assert _build(loss_symmetry=symmetry).num_views == 2


def test_cross_entropy_similarity_uses_the_cross_entropy_loss():
    opts = {"similarity": "cross_entropy"}
    assert _build(**opts).loss_fn is cross_entropy
    _assert_same_loss_and_grads(opts, "symmetric", 2, d=cross_entropy)
    # and it is a different loss from the cosine one on the same weights and views
    views = random_views()
    assert not torch.allclose(
        _build(**opts).training_step(views)["loss"], _build().training_step(views)["loss"]
    )


def test_loss_is_symmetric_in_the_two_views():
    m = _build()
    v1, v2 = random_views()
    torch.testing.assert_close(m.training_step([v1, v2])["loss"], m.training_step([v2, v1])["loss"])


@pytest.mark.parametrize(
    ("scale", "expected"),
    [(3.0, -1.0), (-2.0, 1.0), (0.0, 0.0)],
    ids=["parallel", "opposite", "orthogonal"],
)
def test_loss_takes_its_closed_form_value_without_predictor(scale, expected):
    """With h = identity, p_i = z_i and Eq. 4 is 1/2 (-cos(z1, z2)) + 1/2 (-cos(z2, z1)).

    z2 = scale * z1 gives -1 (parallel, scale > 0) or +1 (opposite); z2 orthogonal to z1 row by
    row gives 0. A missing 1/2, a sign error or an unnormalised D would change these values.
    """
    m = _build(predictor="none")
    z1 = _leaf_zs(1)[0].detach()
    if scale == 0.0:  # orthogonal rows: swap the two halves of each row and negate one half
        half = z1.shape[1] // 2
        z2 = torch.cat([-z1[:, half:], z1[:, :half]], dim=1)
        assert torch.allclose((z1 * z2).sum(dim=1), torch.zeros(BATCH), atol=1e-5)
    else:
        z2 = scale * z1
    m.encode = _LeafEncoder([z1, z2])  # type: ignore[method-assign]
    loss = m.training_step(random_views())["loss"]
    torch.testing.assert_close(loss, torch.tensor(expected), rtol=0, atol=1e-6)


def test_embedding_is_detached_z_of_first_view():
    m = _build()
    views = random_views()
    out = m.training_step(views)
    assert out["embedding"].shape == (BATCH, SMALL["proj_dim"])
    assert not out["embedding"].requires_grad
    torch.testing.assert_close(out["embedding"], m.encode(views[0]).detach())


# --------------------------------------------------------------------------------------------
# Stop-gradient [Sec. 4.1, Eq. 3]
# --------------------------------------------------------------------------------------------
class _LeafEncoder:
    """Replaces ``encode`` by fixed leaf tensors, so gradients w.r.t. z can be read."""

    def __init__(self, zs: list[torch.Tensor]) -> None:
        self.zs, self.i = zs, 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        z = self.zs[self.i]
        self.i += 1
        return z


def _leaf_zs(n: int = 2) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return [torch.randn(BATCH, SMALL["proj_dim"], generator=g).requires_grad_() for _ in range(n)]


def _z_grads_through_target_only(stop_gradient: bool) -> list[torch.Tensor | None]:
    """Gradient of the loss w.r.t. z when p does not depend on z: only the target path is left."""
    m = _build(stop_gradient=stop_gradient)
    zs = _leaf_zs()
    g = torch.Generator().manual_seed(8)
    ps = [torch.randn(BATCH, SMALL["proj_dim"], generator=g).requires_grad_() for _ in range(2)]
    calls = iter(ps)
    m.encode = _LeafEncoder(zs)  # type: ignore[method-assign]
    m.predictor = _ConstantPredictor(calls)
    loss = m.training_step(random_views())["loss"]
    grads = torch.autograd.grad(loss, [*zs, *ps], allow_unused=True)
    assert all(gp is not None and gp.abs().sum() > 0 for gp in grads[2:]), "p must get gradient"
    return list(grads[:2])


class _ConstantPredictor(nn.Module):
    """A predictor whose outputs are given leaves, independent of its input z."""

    def __init__(self, outputs) -> None:
        super().__init__()
        self.outputs = outputs

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return next(self.outputs)


def test_stop_gradient_target_branch_gets_no_gradient():
    for gz in _z_grads_through_target_only(stop_gradient=True):
        assert gz is None or not gz.any()


def test_without_stop_gradient_target_branch_gets_gradient():
    for gz in _z_grads_through_target_only(stop_gradient=False):
        assert gz is not None and gz.abs().sum() > 0


def test_stop_gradient_z_gradient_flows_only_through_predictor():
    # d loss / d z1 must equal the gradient of 1/2 D(h(z1), sg(z2)) alone, and likewise for z2.
    m = _build()
    zs = _leaf_zs()
    m.encode = _LeafEncoder(zs)  # type: ignore[method-assign]
    got = torch.autograd.grad(m.training_step(random_views())["loss"], zs)
    h = m.predictor
    expected = torch.autograd.grad(
        0.5 * D(h(zs[0]), zs[1].detach()) + 0.5 * D(h(zs[1]), zs[0].detach()), zs
    )
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b)
    # Without the stop-gradient the target path adds a term: the gradients differ.
    m_no_sg = _build(stop_gradient=False)
    m_no_sg.predictor.load_state_dict(m.predictor.state_dict())
    m_no_sg.encode = _LeafEncoder(zs)  # type: ignore[method-assign]
    got_no_sg = torch.autograd.grad(m_no_sg.training_step(random_views())["loss"], zs)
    for a, b in zip(got, got_no_sg, strict=True):
        assert not torch.allclose(a, b, atol=1e-6)


def test_stop_gradient_false_changes_parameter_gradients():
    views = random_views()
    grads = []
    for sg in (True, False):
        m = _build(0, stop_gradient=sg)
        m.training_step(views)["loss"].backward()
        grads.append(torch.cat([q.grad.flatten() for q in m.projector.parameters()]))
    assert not torch.allclose(grads[0], grads[1], atol=1e-7)


# --------------------------------------------------------------------------------------------
# Predictor ablations [Table 1]
# --------------------------------------------------------------------------------------------
def _ids(group: dict) -> set[int]:
    return {id(q) for q in group["params"]}


def test_learned_predictor_is_trained_in_its_own_group():
    m = _build()
    groups = m.param_groups()
    assert [g["name"] for g in groups] == ["encoder", "predictor"]
    assert _ids(groups[1]) == {id(q) for q in m.predictor.parameters()}
    assert _ids(groups[0]) == {id(q) for q in [*m.backbone.parameters(), *m.projector.parameters()]}


@pytest.mark.parametrize("fixed", [True, False])
def test_fixed_predictor_lr_sets_fixed_lr_on_the_predictor_group_only(fixed):
    groups = _build(fixed_predictor_lr=fixed).param_groups()
    by_name = {g["name"]: g for g in groups}
    assert by_name["predictor"]["fixed_lr"] is fixed
    assert not by_name["encoder"].get("fixed_lr", False)


def test_default_recipe_keeps_predictor_lr_fixed():
    # "the predictor's lr is not decayed" is the default recipe [Sec. 4.1, Table 1c]
    assert SimSiamConfig().fixed_predictor_lr is True


def test_predictor_none_is_identity():
    m = _build(predictor="none")
    assert isinstance(m.predictor, nn.Identity)
    assert [g["name"] for g in m.param_groups()] == ["encoder"]
    views = random_views()
    z = [m.encode(v) for v in views]
    expected = 0.5 * D(z[0], z[1].detach()) + 0.5 * D(z[1], z[0].detach())
    torch.testing.assert_close(m.training_step(views)["loss"], expected)


def test_fixed_random_predictor_has_no_trainable_parameters():
    m = _build(predictor="fixed_random")
    params = list(m.predictor.parameters())
    assert params, "fixed_random keeps a (frozen) MLP, not an identity"
    assert not any(q.requires_grad for q in params)
    grouped = {id(q) for g in m.param_groups() for q in g["params"]}
    assert grouped.isdisjoint({id(q) for q in params})
    assert [g["name"] for g in m.param_groups()] == ["encoder"]
    before = copy.deepcopy(m.predictor.state_dict())
    m.training_step(random_views())["loss"].backward()
    assert all(q.grad is None for q in params)
    for k, v in m.predictor.state_dict().items():
        if "running" not in k and "num_batches" not in k:
            torch.testing.assert_close(v, before[k])


# --------------------------------------------------------------------------------------------
# Architecture: MLP depth, widths, BN placement [Sec. 4.1, Table 3]
# --------------------------------------------------------------------------------------------
def _count(module: nn.Module, kind: type) -> int:
    return sum(isinstance(x, kind) for x in module.modules())


@pytest.mark.parametrize("layers", [2, 3])
def test_projection_depth(layers):
    m = _build(proj_layers=layers)
    linears = [x for x in m.projector.modules() if isinstance(x, nn.Linear)]
    assert len(linears) == layers
    assert linears[0].in_features == m.backbone.num_features
    assert all(x.out_features == SMALL["proj_hidden_dim"] for x in linears[:-1])
    assert linears[-1].out_features == SMALL["proj_dim"]
    # The output fc has no ReLU [Sec. 4.1]; every hidden one does.
    assert _count(m.projector, nn.ReLU) == layers - 1
    assert not isinstance(list(m.projector)[-1], nn.ReLU)


def test_predictor_is_a_bottleneck_of_pred_hidden_dim():
    m = _build()
    linears = [x for x in m.predictor.modules() if isinstance(x, nn.Linear)]
    assert [(x.in_features, x.out_features) for x in linears] == [
        (SMALL["proj_dim"], SMALL["pred_hidden_dim"]),
        (SMALL["pred_hidden_dim"], SMALL["proj_dim"]),
    ]
    assert not isinstance(list(m.predictor)[-1], (nn.ReLU, nn.BatchNorm1d))


# (projector BN count, projector ends in BN, predictor BN count, predictor ends in BN)
BN_TABLE_3 = {
    "none": (0, False, 0, False),
    "hidden": (SMALL["proj_layers"] - 1, False, 1, False),
    "hidden_proj_out": (SMALL["proj_layers"], True, 1, False),
    "hidden_proj_out_pred_out": (SMALL["proj_layers"], True, 2, True),
}


@pytest.mark.parametrize("placement", sorted(BN_TABLE_3))
def test_bn_placement_follows_table_3(placement):
    m = _build(bn_placement=placement)
    proj_bn, proj_out_bn, pred_bn, pred_out_bn = BN_TABLE_3[placement]
    assert _count(m.projector, nn.BatchNorm1d) == proj_bn
    assert _count(m.predictor, nn.BatchNorm1d) == pred_bn
    assert isinstance(list(m.projector)[-1], nn.BatchNorm1d) is proj_out_bn
    assert isinstance(list(m.predictor)[-1], nn.BatchNorm1d) is pred_out_bn
    # Each Linear has a bias exactly when no BN follows it (BN's shift makes it redundant).
    for mlp in (m.projector, m.predictor):
        layers = list(mlp)
        for i, layer in enumerate(layers):
            if isinstance(layer, nn.Linear):
                followed_by_bn = i + 1 < len(layers) and isinstance(layers[i + 1], nn.BatchNorm1d)
                assert (layer.bias is None) is followed_by_bn


def test_default_bn_placement_is_hidden_proj_out():
    assert SimSiamConfig().bn_placement == "hidden_proj_out"


def test_projection_output_bn_is_a_standard_affine_bn_as_in_the_paper():
    """The paper's text: BN on each fc incl. the output (Sec. 4.1), a standard (affine) BN.

    The authors' later code drops the affine; with it the output is standardised per channel
    and cannot become constant, so Fig. 2's collapse of std(z / ||z||) could not show.
    """
    m = _build()
    out_bn = list(m.projector)[-1]
    assert isinstance(out_bn, nn.BatchNorm1d)
    assert out_bn.affine is True


def test_projection_output_bn_without_affine_standardises_every_channel():
    """``proj_output_bn_affine=False``: the released code's head; z has unit batch variance."""
    m = _build(proj_output_bn_affine=False)
    out_bn = list(m.projector)[-1]
    assert isinstance(out_bn, nn.BatchNorm1d) and out_bn.affine is False
    z = m.encode(torch.randn(BATCH, 3, SIZE, SIZE))
    torch.testing.assert_close(z.mean(0), torch.zeros(z.shape[1]), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.var(0, unbiased=False), torch.ones(z.shape[1]), atol=1e-3, rtol=0)


def test_config_rejects_non_positive_widths():
    from siamkit.errors import ConfigError

    with pytest.raises(ConfigError, match="pred_hidden_dim"):
        SimSiamConfig(pred_hidden_dim=0)


# --------------------------------------------------------------------------------------------
# Multi-step alternation [Sec. 5.2]
# --------------------------------------------------------------------------------------------
def _online(grads_by_name: dict) -> dict:
    return {k: v for k, v in grads_by_name.items() if not k.startswith("target_")}


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_alternation_equals_simsiam_while_the_copy_is_the_online_network():
    # At the start of an alternation eta_x = F_theta_t(T'(x)): the loss and every gradient of
    # the online network are SimSiam's.
    method, ref = _build(0, alternation_steps=10), _build(0)
    views = random_views()
    loss = method.training_step(views)["loss"]
    expected = ref.training_step(views)["loss"]
    torch.testing.assert_close(loss, expected)
    loss.backward()
    expected.backward()
    assert_same_grads(_online(grads(method)), grads(ref))
    assert all(p.grad is None for p in method.target_backbone.parameters())
    assert all(p.grad is None for p in method.target_projector.parameters())


def test_alternation_keeps_targets_fixed_for_k_steps_then_takes_the_online_network():
    k = 3
    method = _build(0, alternation_steps=k)
    groups = method.param_groups()
    optimised = {id(p) for g in groups for p in g["params"]}
    assert optimised.isdisjoint(id(p) for p in method.target_backbone.parameters())
    optimiser = torch.optim.SGD([p for g in groups for p in g["params"]], lr=0.5)
    initial = _state(method.target_backbone)
    for step in range(1, k + 1):
        optimiser.zero_grad()
        method.training_step(random_views(seed=step))["loss"].backward()
        optimiser.step()
        if step < k:
            method.on_step_end(step / 10)
            for name, value in method.target_backbone.state_dict().items():
                if "running" not in name and "num_batches" not in name:  # BN buffers move
                    torch.testing.assert_close(value, initial[name], msg=name)
    online_now = _state(method.backbone)
    assert any(not torch.equal(online_now[n], initial[n]) for n in initial if "weight" in n)
    method.on_step_end(k / 10)  # the k-th step ends the alternation
    for name, value in method.target_backbone.state_dict().items():
        torch.testing.assert_close(value, online_now[name], msg=name)
    assert int(method.steps_since_refresh) == 0


def test_one_epoch_alternation_refreshes_at_epoch_starts_only():
    method = _build(0, alternation_steps=0)
    with torch.no_grad():
        next(method.backbone.parameters()).add_(1.0)
    before = _state(method.target_backbone)
    for _ in range(5):
        method.on_step_end(0.1)
    assert all(torch.equal(v, before[k]) for k, v in method.target_backbone.state_dict().items())
    method.on_epoch_start(1)
    online = method.backbone.state_dict()
    assert all(torch.equal(v, online[k]) for k, v in method.target_backbone.state_dict().items())


def test_alternation_settings_are_checked():
    assert SimSiamConfig().alternation_steps == 1
    assert not hasattr(_build(0), "target_backbone")  # SimSiam itself keeps no copy
    with pytest.raises(ConfigError, match="alternation_steps"):
        SimSiamConfig(alternation_steps=-1)
    with pytest.raises(ConfigError, match="stop_gradient"):
        SimSiamConfig(alternation_steps=10, stop_gradient=False)
