"""SimSiam's moving-average variant (arXiv:2011.10566, Sec. 5): the per-image table follows
eta_x <- m * eta_x + (1 - m) * F(T'(x)) for the batch's images only, the targets are constants,
and without the average the method is SimSiam without predictor (the collapsing Table 1a)."""

from __future__ import annotations

import pytest
import torch

from siamkit import distributed
from siamkit.errors import ConfigError
from siamkit.losses import negative_cosine
from siamkit.methods import METHODS, SimSiam, SimSiamConfig, SimSiamEMA, SimSiamEMAConfig
from tests.ddp import run_ddp
from tests.methods.conftest import (
    BATCH,
    assert_same_grads,
    build,
    grads,
    random_views,
    small_backbone,
)

NUM_IMAGES = 20
SMALL = {"proj_dim": 16, "proj_hidden_dim": 24, "proj_layers": 2}


def _build(seed: int = 0, num_images: int = NUM_IMAGES, **options) -> SimSiamEMA:
    m = build(SimSiamEMA, SimSiamEMAConfig, SMALL, seed, **options)
    m.setup(num_images)  # the per-image table
    return m


def _z(m: SimSiamEMA, views: list[torch.Tensor]) -> list[torch.Tensor]:
    return [m.projector(m.backbone(v)) for v in views]


def test_setup_allocates_an_empty_table_in_the_state_dict():
    m = _build()
    assert m.targets.shape == (NUM_IMAGES, SMALL["proj_dim"]) and not m.targets.any()
    assert m.seen.shape == (NUM_IMAGES,) and not m.seen.any()
    assert {"targets", "seen"} <= set(m.state_dict())
    assert not hasattr(m, "predictor")


def test_table_follows_the_moving_average_for_the_batch_indices_only():
    m, mom = _build(momentum=0.8, initial_targets="first_visit"), 0.8
    m.eval()  # fixed BN statistics, so the reference forward below gives the same z
    views = random_views()
    first = torch.tensor([0, 2, 4, 6, 8, 10, 12, 14])
    m.training_step(views, first)
    with torch.no_grad():
        z1, z2 = _z(m, views)
    # First visit: eta_x starts at the step's mean output (m = 0 for empty rows).
    torch.testing.assert_close(m.targets[first], (z1 + z2) / 2)
    rest = torch.tensor([i for i in range(NUM_IMAGES) if i not in first.tolist()])
    assert not m.targets[rest].any() and not m.seen[rest].any() and m.seen[first].all()

    # Second step: half the images seen before, half new.
    second = torch.tensor([0, 2, 4, 6, 1, 3, 5, 7])
    old = m.targets.clone()
    views2 = random_views(seed=200)
    with torch.no_grad():
        y1, y2 = _z(m, views2)
    m.training_step(views2, second)
    expected = old.clone()
    seen_before = torch.tensor([True] * 4 + [False] * 4)
    mom_rows = torch.where(seen_before, mom, 0.0)[:, None]
    expected[second] = mom_rows * old[second] + (1 - mom_rows) * (y1 + y2) / 2
    torch.testing.assert_close(m.targets, expected)
    untouched = torch.tensor([i for i in range(NUM_IMAGES) if i not in [*first, *second]])
    torch.testing.assert_close(m.targets[untouched], old[untouched])  # other rows kept


def test_loss_uses_blended_targets_as_constants_in_value_and_gradient():
    """D(z1, m eta + (1-m) z2') + D(z2, m eta + (1-m) z1'), the targets detached [Sec. 5]."""
    mom = 0.8
    method, ref = _build(momentum=mom), _build(momentum=mom)
    method.eval()
    ref.eval()
    idx = torch.arange(BATCH) + 3
    eta = torch.randn(BATCH, SMALL["proj_dim"], generator=torch.Generator().manual_seed(1))
    for m in (method, ref):  # a table with history
        m.targets[idx] = eta
        m.seen[idx] = True
    views = random_views()
    loss = method.training_step(views, idx)["loss"]
    z1, z2 = _z(ref, views)
    t1 = (mom * eta + (1 - mom) * z2).detach()
    t2 = (mom * eta + (1 - mom) * z1).detach()
    expected = 0.5 * negative_cosine(z1, t1) + 0.5 * negative_cosine(z2, t2)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    expected.backward()
    assert_same_grads(grads(method), grads(ref))
    assert not method.targets.requires_grad


def test_targets_are_detached_the_gradient_differs_from_an_undetached_target():
    """Sanity check of the test above: letting the gradient into the target changes it."""
    m = _build()
    m.eval()
    views = random_views()
    z1, z2 = _z(m, views)
    detached = 0.5 * negative_cosine(z1, z2.detach()) + 0.5 * negative_cosine(z2, z1.detach())
    attached = 0.5 * negative_cosine(z1, z2) + 0.5 * negative_cosine(z2, z1)
    g_det = torch.autograd.grad(detached, m.projector[0].weight, retain_graph=True)[0]
    g_att = torch.autograd.grad(attached, m.projector[0].weight)[0]
    assert not torch.allclose(g_det, g_att)


def _simsiam_without_predictor(ema: SimSiamEMA) -> SimSiam:
    sim = build(SimSiam, SimSiamConfig, SMALL, seed=123, predictor="none")
    sim.backbone.load_state_dict(ema.backbone.state_dict())
    sim.projector.load_state_dict(ema.projector.state_dict())
    return sim


@pytest.mark.parametrize("moving_average", [False, True])
def test_without_average_or_on_a_first_visit_it_is_simsiam_without_predictor(moving_average):
    """``moving_average: false`` is Table 1a's collapsing baseline; with the average and
    ``initial_targets: first_visit``, a first visit (empty rows) gives the same step."""
    m = _build(moving_average=moving_average, initial_targets="first_visit")
    sim = _simsiam_without_predictor(m)
    views = random_views()
    loss = m.training_step(views, torch.arange(BATCH))["loss"]
    expected = sim.training_step(views)["loss"]
    torch.testing.assert_close(loss, expected)
    loss.backward()
    expected.backward()
    assert_same_grads(grads(m), grads(sim))
    if moving_average:
        assert m.seen[:BATCH].all() and not m.seen[BATCH:].any()
    else:
        assert not m.targets.any() and not m.seen.any()  # the table is not used


def test_first_visits_start_from_the_initial_network_then_blend_in_value_and_gradient():
    """``initial_targets: initial_network``: eta^0 = mean over views of F_theta_0, written on
    the first visit, then blended like any row: D(z1, m eta^0 + (1-m) z2') + ... [Eq. 7-8]."""
    mom = 0.8
    m = _build(momentum=mom)
    m.eval()  # fixed BN statistics: the reference forwards below give the same outputs
    initial = _build(momentum=mom)  # the same seed: theta_0
    initial.eval()
    # Train a step on other images first, so that theta != theta_0.
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    m.training_step(random_views(seed=7), torch.arange(BATCH))["loss"].backward()
    opt.step()
    opt.zero_grad()
    assert not torch.allclose(m.projector[0].weight, initial.projector[0].weight)

    idx = torch.arange(BATCH) + BATCH // 2  # rows 4..11: 4-7 seen, 8-11 new
    seen_before = m.seen[idx].clone()
    assert seen_before.any() and not seen_before.all()
    old = m.targets[idx].clone()
    views = random_views()
    loss = m.training_step(views, idx)["loss"]
    with torch.no_grad():
        eta0 = sum(_z(initial, views)) / 2
    eta = torch.where(seen_before[:, None], old, eta0)
    z1, z2 = _z(m, views)
    t1 = (mom * eta + (1 - mom) * z2).detach()
    t2 = (mom * eta + (1 - mom) * z1).detach()
    expected = 0.5 * negative_cosine(z1, t1) + 0.5 * negative_cosine(z2, t2)
    torch.testing.assert_close(loss, expected)
    (g_mine,) = torch.autograd.grad(loss, m.projector[0].weight, retain_graph=True)
    (g_ref,) = torch.autograd.grad(expected, m.projector[0].weight)
    torch.testing.assert_close(g_mine, g_ref)
    torch.testing.assert_close(m.targets[idx], mom * eta + (1 - mom) * ((z1 + z2) / 2).detach())
    assert m.seen[idx].all()


def test_the_initial_network_is_frozen_outside_the_state_dict_and_dropped_after_epoch_one():
    m = _build()
    n_params = sum(q.numel() for q in m.parameters())
    assert m._initial is not None
    assert all(not q.requires_grad for part in m._initial for q in part.parameters())
    assert not any(k.startswith("_initial") for k in m.state_dict())
    assert n_params == sum(q.numel() for q in _build(initial_targets="first_visit").parameters())
    m.on_epoch_start(0)
    assert m._initial is not None
    m.on_epoch_start(1)
    assert m._initial is None
    # Rows left unwritten by then (drop_last) start at their first visit.
    m.eval()
    views = random_views()
    m.training_step(views, torch.arange(BATCH))
    with torch.no_grad():
        z1, z2 = _z(m, views)
    torch.testing.assert_close(m.targets[:BATCH], (z1 + z2) / 2)
    assert _build(moving_average=False)._initial is None


def test_moving_average_needs_setup_and_indices():
    m = SimSiamEMA(small_backbone(), SimSiamEMAConfig())
    with pytest.raises(ValueError, match="setup"):
        m.training_step(random_views(), torch.arange(BATCH))
    m = _build()
    with pytest.raises(ValueError, match="indices"):
        m.training_step(random_views())


def test_registered_with_paper_defaults_and_rejects_impossible_momentum():
    assert METHODS["simsiam_ema"].config_class is SimSiamEMAConfig
    cfg = SimSiamEMAConfig()
    assert (cfg.momentum, cfg.moving_average, cfg.proj_dim, cfg.proj_layers) == (0.8, True, 2048, 3)
    for bad in (-0.1, 1.0):
        with pytest.raises(ConfigError, match="momentum"):
            SimSiamEMAConfig(momentum=bad)
    assert cfg.initial_targets == "initial_network"
    with pytest.raises(ConfigError, match="initial_targets"):
        SimSiamEMAConfig(initial_targets="zeros")


def _update_shard(full_indices: torch.Tensor, full_z: torch.Tensor) -> torch.Tensor:
    m = _build(num_images=NUM_IMAGES)
    m.targets[:] = 1.0
    m.seen[:5] = True
    rows = distributed.local_rows(len(full_indices) // distributed.world_size())
    m.update_targets(full_indices[rows], full_z[rows])
    return m.targets


def test_update_under_ddp_gives_every_process_the_whole_batch_update():
    g = torch.Generator().manual_seed(0)
    indices = torch.randperm(NUM_IMAGES, generator=g)[:BATCH]
    z = torch.randn(BATCH, SMALL["proj_dim"], generator=g)
    one = _update_shard(indices, z)
    for table in run_ddp(_update_shard, 2, indices, z):
        torch.testing.assert_close(table, one)
