"""The contract of every registered method, generated over the METHODS registry.

Adding a method to ``siamkit.methods.METHODS`` covers it here: it builds from its config's defaults
(widths shrunk for speed), takes one real optimiser step on views made by the batched augmentation
from its own view recipes, produces a finite loss and a detached embedding, updates its state
(EMA targets, queues, moving averages, BN statistics) and survives a state-dict round trip.

Every method runs on three backbones: the small CNN, a timm ResNet-18 and a timm ViT, both shrunk
to the cheapest sizes that keep their structure (a narrow ResNet-18; a 2-block ViT of width 32 on
8-px patches, with timm's dynamic image size for SwAV's small crops).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import io

import pytest
import torch
from torch import nn

from siamkit.config import AugmentConfig, BackboneConfig, OptimConfig
from siamkit.encoders import create_backbone
from siamkit.methods import METHODS, Method, create_method
from siamkit.train.schedules import StepSchedule, build_optimizer
from tests.methods.conftest import augmented_views

BATCH, NUM_IMAGES = 8, 32

#: The backbones every method is checked on (the timm ones only where timm is installed).
BACKBONES = {
    "small_cnn": BackboneConfig(name="small_cnn", width=0.25),
    "timm_resnet18": BackboneConfig(
        name="timm/resnet18",
        timm_kwargs={
            "channels": [16, 32, 64, 128],
            "stem_width": 16,
            # timm zero-inits each block's last BN scale, so one step gives its first BN no
            # gradient and an EMA copy of it no change; the check here is about the step
            "zero_init_last": False,
        },
    ),
    "timm_vit": BackboneConfig(
        name="timm/vit_tiny_patch16_224",
        timm_kwargs={
            "img_size": 32,
            "patch_size": 8,
            "embed_dim": 32,
            "depth": 2,
            "num_heads": 2,
            "dynamic_img_size": True,  # SwAV's 14-px small crops: interpolated positions
            "dynamic_img_pad": True,
        },
    ),
}
_TIMM = pytest.mark.skipif(
    importlib.util.find_spec("timm") is None, reason='needs pip install "siamkit[timm]"'
)
ALL = [
    pytest.param(m, b, id=f"{m}-{b}", marks=[_TIMM] if b.startswith("timm") else [])
    for b in BACKBONES
    for m in sorted(METHODS)
]


def _small_config(name: str):
    """The method's default config with its widths (``*_dim``) and state sizes shrunk."""
    cls = METHODS[name].config_class
    small = {}
    for f in dataclasses.fields(cls):
        default = getattr(cls(), f.name)
        if not isinstance(default, int) or isinstance(default, bool):
            continue
        if f.name.endswith("_dim"):
            small[f.name] = 32
        elif "queue" in f.name and default > 0:
            small[f.name] = 2 * BATCH
        elif "prototypes" in f.name:
            small[f.name] = 16
    return cls(**small)


def _build(name: str, seed: int, backbone: str) -> Method:
    torch.manual_seed(seed)
    method = create_method(create_backbone(BACKBONES[backbone]), _small_config(name))
    method.setup(NUM_IMAGES)
    return method


def _views(method: Method, seed: int = 0) -> list[torch.Tensor]:
    return augmented_views(method, seed)


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize(("name", "backbone"), ALL)
def test_method_builds_steps_and_updates_its_state(name, backbone):
    method = _build(name, seed=0, backbone=backbone)
    views = _views(method)
    assert len(views) == len(method.view_recipes(AugmentConfig(size=32))) >= 2
    indices = torch.arange(BATCH)

    trainable = {k for k, q in method.named_parameters() if q.requires_grad}
    groups = method.param_groups()
    grouped = [id(q) for g in groups for q in g["params"]]
    assert sorted(grouped) == sorted(id(q) for q in method.parameters() if q.requires_grad)
    # lr 1: one step must move the EMA targets (m = 0.999) by more than float32's resolution
    optimizer, _ = build_optimizer(
        groups, OptimConfig(batch_size=256, base_lr=1.0), StepSchedule(10)
    )

    before = _state(method)
    method.train()
    method.on_epoch_start(0)
    out = method.training_step(views, indices)
    loss, emb = out["loss"], out["embedding"]
    assert loss.shape == () and torch.isfinite(loss), loss
    assert emb.ndim == 2 and emb.shape[0] == BATCH and not emb.requires_grad
    assert torch.isfinite(emb).all()
    optimizer.zero_grad()
    loss.backward()
    assert any(q.grad is not None and q.grad.abs().sum() > 0 for q in method.backbone.parameters())
    optimizer.step()
    method.on_step_end(0.1)
    after = _state(method)

    # The backbone learned, and every piece of state that is not a trainable parameter (EMA
    # targets, queues and their pointers, per-image averages, BN statistics) was updated.
    assert any(not torch.equal(before[k], after[k]) for k in after if k.startswith("backbone."))
    unchanged = [k for k in after if k not in trainable and torch.equal(before[k], after[k])]
    assert not unchanged, f"state not updated by a training step: {unchanged}"


@pytest.mark.parametrize(("name", "backbone"), ALL)
def test_state_dict_round_trip_gives_identical_outputs(name, backbone):
    method = _build(name, seed=0, backbone=backbone)
    views = _views(method)
    method.train()
    method.on_epoch_start(0)
    method.training_step(views, torch.arange(BATCH))["loss"].backward()
    method.on_step_end(0.1)

    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    fresh = _build(name, seed=1, backbone=backbone)  # differently initialised
    x = views[0]
    method.eval()
    fresh.eval()
    with torch.no_grad():
        assert not torch.allclose(
            method.backbone.forward_features(x), fresh.backbone.forward_features(x)
        )
        buffer.seek(0)
        fresh.load_state_dict(torch.load(buffer))
        torch.testing.assert_close(
            fresh.backbone.forward_features(x), method.backbone.forward_features(x)
        )
        outs = []
        for m in (method, fresh):
            torch.manual_seed(7)  # methods may draw random numbers in their step (W-MSE)
            outs.append(m.training_step(views, torch.arange(BATCH)))
        torch.testing.assert_close(outs[1]["loss"], outs[0]["loss"])
        torch.testing.assert_close(outs[1]["embedding"], outs[0]["embedding"])


@pytest.mark.parametrize(("name", "backbone"), ALL)
def test_method_exposes_backbone_and_projector_for_evaluation(name, backbone):
    """Evaluation reads h = backbone.forward_features(x) and g(h) = projector(h) of any method."""
    method = _build(name, seed=0, backbone=backbone).eval()
    x = _views(method)[0]
    h = method.backbone.forward_features(x)
    assert h.shape == (BATCH, method.backbone.num_features)
    z = method.projector(h)
    assert z.ndim == 2 and z.shape[0] == BATCH and torch.isfinite(z).all()
    torch.testing.assert_close(method.encode(x), z)  # encode(x) = g(f(x)), the base's default
