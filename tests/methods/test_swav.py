"""SwAV (arXiv:2006.09882): multi-crop views, prototypes, frozen first epoch, codes without
gradient, the queue, and the loss against a reference built on lightly's ``SwaVLoss``."""

from __future__ import annotations

import dataclasses
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from lightly.loss import SwaVLoss
from torch import nn

from siamkit.config import AugmentConfig
from siamkit.errors import ConfigError
from siamkit.losses import sinkhorn, swapped_prediction
from siamkit.methods import METHODS, SwAV, SwAVConfig, create_method
from tests.methods.conftest import (
    BATCH,
    assert_same_grads,
    augmented_views,
    build,
    grads,
    small_backbone,
)

SMALL = {"proj_hidden_dim": 48, "proj_dim": 16, "num_prototypes": 10, "num_small_crops": 2}

_build = partial(build, SwAV, SwAVConfig, SMALL)
_views = augmented_views


def _reference_embeddings(m: SwAV, views: list[torch.Tensor]) -> list[torch.Tensor]:
    """Unit embeddings [Sec. 3.1]; the 2 global crops through the backbone together, then the
    small ones, and every crop through the projector together, as the authors' code does."""
    backbone = m.backbone
    h = torch.cat(
        [
            backbone.forward_features(torch.cat(views[:2])),
            backbone.forward_features(torch.cat(views[2:])),
        ]
    )
    return list(F.normalize(m.projector(h), dim=1).split(BATCH))


def _reference_scores(
    m: SwAV, views: list[torch.Tensor], frozen: bool = False
) -> list[torch.Tensor]:
    """Scores z_v^T C with unit prototypes; ``frozen`` cuts the prototypes' gradient.

    The prototypes are projected onto the sphere in place before the forward (the authors'
    code), so their gradient is that of the linear layer, without the normalisation's Jacobian.
    """
    with torch.no_grad():
        m.prototypes.weight.div_(m.prototypes.weight.norm(dim=1, keepdim=True))
    c = m.prototypes.weight.detach() if frozen else m.prototypes.weight
    return [zi @ c.t() for zi in _reference_embeddings(m, views)]


# --------------------------------------------------------------------------------------------
# Multi-crop views [Sec. 3.2]
# --------------------------------------------------------------------------------------------
def test_view_recipes_imagenet_2x224_plus_6x96():
    m = _build(num_small_crops=6)
    base = AugmentConfig(size=224, blur_prob=0.5)
    recipes = m.view_recipes(base)
    assert m.num_views == len(recipes) == 8
    assert [r.size for r in recipes] == [224, 224] + [96] * 6  # paper's ratio by default
    assert [r.crop_scale for r in recipes] == [(0.14, 1.0)] * 2 + [(0.05, 0.14)] * 6
    # Everything else is the run's recipe: the same batched augmentation for every crop.
    for r in recipes:
        assert dataclasses.replace(r, size=224, crop_scale=base.crop_scale) == base


def test_view_recipes_cifar_small_crop_size():
    m = _build(num_small_crops=4, small_crop_size=16)
    recipes = m.view_recipes(AugmentConfig(size=32))
    assert [r.size for r in recipes] == [32, 32, 16, 16, 16, 16]
    views = _views(m)
    assert [tuple(v.shape) for v in views] == [(BATCH, 3, 32, 32)] * 2 + [(BATCH, 3, 16, 16)] * 4


def test_no_small_crops_gives_two_views():
    m = _build(num_small_crops=0)
    assert m.num_views == 2 and len(m.view_recipes(AugmentConfig(size=32))) == 2
    out = m.training_step(_views(m))
    assert torch.isfinite(out["loss"])


def test_backbone_runs_once_per_resolution(monkeypatch):
    m = _build()
    calls: list[tuple[int, ...]] = []
    forward = m.backbone.forward_features

    def counted(x: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(x.shape))
        return forward(x)

    monkeypatch.setattr(m.backbone, "forward_features", counted)
    m.training_step(_views(m))
    assert calls == [(2 * BATCH, 3, 32, 32), (2 * BATCH, 3, 14, 14)]  # 32 * 96/224 = 13.7


# --------------------------------------------------------------------------------------------
# Heads and the loss
# --------------------------------------------------------------------------------------------
def test_projection_head_is_2_layer_mlp_with_bn_in_hidden_layer():
    m = _build()
    linears = [x for x in m.projector.modules() if isinstance(x, nn.Linear)]
    assert [(x.in_features, x.out_features) for x in linears] == [
        (m.backbone.num_features, 48),
        (48, 16),
    ]
    assert sum(isinstance(x, nn.BatchNorm1d) for x in m.projector.modules()) == 1
    assert not isinstance(list(m.projector)[-1], (nn.BatchNorm1d, nn.ReLU))
    assert tuple(m.prototypes.weight.shape) == (10, 16)
    assert not any("bias" in n for n, _ in m.prototypes.named_parameters())


def test_paper_defaults():
    cfg = SwAVConfig()
    assert (cfg.proj_hidden_dim, cfg.proj_dim, cfg.num_prototypes) == (2048, 128, 3000)
    assert (cfg.temperature, cfg.sinkhorn_epsilon, cfg.sinkhorn_iterations) == (0.1, 0.05, 3)
    assert cfg.freeze_prototypes_epochs == 1 and cfg.num_small_crops == 6
    assert METHODS["swav"].config_class is SwAVConfig


@pytest.mark.parametrize("epoch", [0, 1])
def test_loss_and_all_gradients_match_reference_on_lightly(epoch):
    method, ref = _build(0), _build(0)
    views = _views(method)
    method.on_epoch_start(epoch)
    loss = method.training_step(views)["loss"]
    scores = _reference_scores(ref, views, frozen=epoch == 0)
    expected = SwaVLoss(temperature=0.1)(scores[:2], scores[2:]).squeeze()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    loss.backward()
    expected.backward()
    assert_same_grads(grads(method), grads(ref))


def test_output_loss_finite_and_embedding_detached_unit():
    m = _build()
    out = m.training_step(_views(m))
    assert out["loss"].shape == () and torch.isfinite(out["loss"])
    emb = out["embedding"]
    assert emb.shape == (BATCH, 16) and not emb.requires_grad
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(BATCH))


# --------------------------------------------------------------------------------------------
# Prototypes: normalised each step, frozen in the first epoch [Appendix A.1]
# --------------------------------------------------------------------------------------------
def test_prototypes_are_normalised_at_every_step_before_the_forward():
    m = _build()
    views = _views(m)
    for step in range(3):
        with torch.no_grad():  # e.g. an optimiser step moved them off the sphere
            m.prototypes.weight.mul_(torch.rand(10, 1) * 3 + 0.1).add_(0.1 * step)
        before = F.normalize(m.prototypes.weight.detach(), dim=1)
        m.on_epoch_start(1)
        loss = m.training_step(views)["loss"]
        torch.testing.assert_close(m.prototypes.weight.norm(dim=1), torch.ones(10))
        torch.testing.assert_close(m.prototypes.weight.detach(), before)
        # The loss used the normalised prototypes.
        scores = [zi @ before.t() for zi in _reference_embeddings(m, views)]
        torch.testing.assert_close(loss, SwaVLoss()(scores[:2], scores[2:]).squeeze())


def test_prototypes_get_no_gradient_in_epoch_0_and_do_in_epoch_1():
    m = _build()
    views = _views(m)
    m.on_epoch_start(0)
    assert m.prototypes_frozen
    m.training_step(views)["loss"].backward()
    assert m.prototypes.weight.grad is None
    assert any(q.grad is not None and q.grad.abs().sum() > 0 for q in m.backbone.parameters())
    m.on_epoch_start(1)
    assert not m.prototypes_frozen
    m.training_step(views)["loss"].backward()
    assert m.prototypes.weight.grad is not None and m.prototypes.weight.grad.abs().sum() > 0


def test_freeze_prototypes_epochs_is_configurable():
    m = _build(freeze_prototypes_epochs=2)
    m.on_epoch_start(1)
    assert m.prototypes_frozen
    m.on_epoch_start(2)
    assert not m.prototypes_frozen
    assert not _build(freeze_prototypes_epochs=0).prototypes_frozen


# --------------------------------------------------------------------------------------------
# Codes: global crops only, no gradient [Sec. 3.2]
# --------------------------------------------------------------------------------------------
def test_codes_carry_no_gradient(monkeypatch):
    """The gradient through the code crops' scores is only their prediction term: equal to a
    loss whose codes are constants computed beforehand."""
    m = _build()
    m.on_epoch_start(1)
    views = _views(m)
    z = [zi.detach().requires_grad_() for zi in _reference_embeddings(m, views)]
    monkeypatch.setattr(m, "embed", lambda _views: z)
    loss = m.training_step(views)["loss"]
    got = torch.autograd.grad(loss, z)
    c = m.prototypes.weight.detach()
    codes = [sinkhorn(zi.detach() @ c.t()) for zi in z[:2]]  # constants
    expected = torch.autograd.grad(swapped_prediction([zi @ c.t() for zi in z], codes), z)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b)


# --------------------------------------------------------------------------------------------
# Queue [Sec. 3.1, small batches]
# --------------------------------------------------------------------------------------------
def test_queue_is_off_by_default_and_a_buffer_when_on():
    assert _build().queue is None
    m = _build(queue_length=16, queue_start_epoch=1)
    assert m.queue is not None
    assert {"queue.keys", "queue.filled"} <= set(m.state_dict())
    assert tuple(m.queue.keys.shape) == (2, 16, 16)


def test_queue_push_and_use():
    m = _build(queue_length=16, queue_start_epoch=1)
    ref = _build(queue_length=16, queue_start_epoch=1)
    assert m.queue is not None
    views = [_views(m, seed) for seed in range(4)]

    m.on_epoch_start(0)  # before queue_start_epoch: neither filled nor used
    m.training_step(views[0])
    assert int(m.queue.filled) == 0 and not m.queue.keys.any()

    m.on_epoch_start(1)
    m.eval()  # BN on running statistics so that the reference sees the same embeddings
    ref.load_state_dict(m.state_dict())
    ref.eval()
    for step in (1, 2):  # filled, not yet used (it is used once full)
        out = m.training_step(views[step])
        z = _reference_embeddings(ref, views[step])
        assert int(m.queue.filled) == 8 * step
        # push(): the batch's global embeddings, newest first.
        torch.testing.assert_close(m.queue.keys[:, :BATCH], torch.stack(z[:2]))
        scores = _reference_scores(ref, views[step])
        torch.testing.assert_close(out["loss"], SwaVLoss()(scores[:2], scores[2:]).squeeze())

    keys_before = m.queue.keys.clone()
    out = m.training_step(views[3])  # full: the queue's scores join Sinkhorn's batch
    scores = _reference_scores(ref, views[3])
    c = F.normalize(ref.prototypes.weight, dim=1)
    queue_scores = [keys_before[i] @ c.t() for i in range(2)]
    with_queue = SwaVLoss()(scores[:2], scores[2:], queue_outputs=queue_scores).squeeze()
    torch.testing.assert_close(out["loss"], with_queue)
    assert not torch.allclose(out["loss"], SwaVLoss()(scores[:2], scores[2:]).squeeze())
    # The oldest batch left, the newest came in.
    torch.testing.assert_close(m.queue.keys[:, BATCH:], keys_before[:, :BATCH])


# --------------------------------------------------------------------------------------------
# Config and registry
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "options",
    [
        {"num_prototypes": 0},
        {"temperature": 0.0},
        {"sinkhorn_epsilon": -1.0},
        {"sinkhorn_iterations": 0},
        {"num_small_crops": -1},
        {"queue_length": -1},
        {"small_crop_size": 2},
        {"small_crop_scale": (0.2, 0.1)},
        {"global_crop_scale": (0.0, 1.0)},
    ],
)
def test_config_rejects_impossible_values(options):
    with pytest.raises(ConfigError):
        SwAVConfig(**options)


def test_default_config_runs_on_small_cnn():
    torch.manual_seed(0)
    cfg = SwAVConfig(num_prototypes=16, proj_hidden_dim=32, proj_dim=32)
    m = create_method(small_backbone(), cfg)
    m.on_epoch_start(0)
    out = m.training_step(_views(m))
    assert len(_views(m)) == 8
    assert torch.isfinite(out["loss"])
