"""The learning-rate schedule: linear warm-up, cosine decay, constant ``fixed_lr`` groups."""

from __future__ import annotations

import dataclasses
import itertools
import math

import pytest
import torch
from torch import nn

from siamkit.config import BackboneConfig, OptimConfig
from siamkit.encoders import create_backbone
from siamkit.methods import METHODS, create_method
from siamkit.train.schedules import LARS, StepSchedule, build_optimizer, cosine_with_warmup


def test_cosine_start_half_end():
    assert cosine_with_warmup(0, 100, 0) == pytest.approx(1.0)
    assert cosine_with_warmup(50, 100, 0) == pytest.approx(0.5)
    assert cosine_with_warmup(25, 100, 0) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert cosine_with_warmup(100, 100, 0) == pytest.approx(0.0, abs=1e-12)
    # past the end it stays at 0 instead of climbing back up the cosine
    assert cosine_with_warmup(150, 100, 0) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("step", [0, 7, 33, 61, 99])
def test_cosine_is_the_papers_formula(step):
    # lr x 0.5 (1 + cos(pi t / T)) [SimSiam, Sec. 4.1]
    assert cosine_with_warmup(step, 100, 0) == pytest.approx(
        0.5 * (1 + math.cos(math.pi * step / 100))
    )


def test_cosine_is_monotone_non_increasing():
    values = [cosine_with_warmup(s, 40, 0) for s in range(41)]
    assert all(a >= b for a, b in itertools.pairwise(values))


def test_warmup_is_linear_then_cosine():
    total, warmup = 100, 10
    ramp = [cosine_with_warmup(s, total, warmup) for s in range(warmup)]
    steps = [b - a for a, b in itertools.pairwise(ramp)]
    assert steps == pytest.approx([steps[0]] * len(steps))  # linear
    assert steps[0] == pytest.approx(1 / warmup)
    assert 0 < ramp[0] <= 1 / warmup
    assert ramp[-1] == pytest.approx(1.0)
    # continuous into the cosine, which then spans the remaining steps
    assert cosine_with_warmup(warmup, total, warmup) == pytest.approx(1.0)
    assert cosine_with_warmup(warmup + (total - warmup) // 2, total, warmup) == pytest.approx(0.5)
    assert cosine_with_warmup(total, total, warmup) == pytest.approx(0.0, abs=1e-12)


def _groups():
    torch.manual_seed(0)
    encoder, predictor = nn.Linear(4, 4), nn.Linear(4, 4)
    return [
        {"params": list(encoder.parameters()), "name": "encoder"},
        {"params": list(predictor.parameters()), "name": "predictor", "fixed_lr": True},
    ]


def test_build_optimizer_is_sgd_with_the_scaled_lr():
    cfg = OptimConfig(batch_size=128, base_lr=0.05, momentum=0.9, weight_decay=5e-4)
    optimizer, _ = build_optimizer(_groups(), cfg, StepSchedule(10, 0))
    assert isinstance(optimizer, torch.optim.SGD)
    for group in optimizer.param_groups:
        assert group["lr"] == pytest.approx(cfg.lr)
        assert group["momentum"] == 0.9
        assert group["weight_decay"] == 5e-4
    assert [g["name"] for g in optimizer.param_groups] == ["encoder", "predictor"]


@pytest.mark.parametrize("warmup", [0, 3])
def test_fixed_lr_group_stays_constant_while_others_follow_the_schedule(warmup):
    cfg = OptimConfig(batch_size=256, base_lr=0.1)
    total = 12
    optimizer, scheduler = build_optimizer(_groups(), cfg, StepSchedule(total, warmup))
    seen = []
    for step in range(total):
        encoder_lr, predictor_lr = (g["lr"] for g in optimizer.param_groups)
        expected = cfg.lr * cosine_with_warmup(step, total, warmup)
        assert encoder_lr == pytest.approx(expected), step
        assert predictor_lr == pytest.approx(cfg.lr), step
        seen.append(encoder_lr)
        optimizer.step()
        scheduler.step()
    assert max(seen) == pytest.approx(cfg.lr)
    assert seen[-1] < 0.05 * cfg.lr  # decayed almost to 0 by the last step
    assert optimizer.param_groups[1]["lr"] == pytest.approx(cfg.lr)


def test_fixed_lr_false_decays_too():
    groups = _groups()
    groups[1]["fixed_lr"] = False
    optimizer, scheduler = build_optimizer(groups, OptimConfig(), StepSchedule(4, 0))
    for _ in range(2):
        optimizer.step()
        scheduler.step()
    lrs = [g["lr"] for g in optimizer.param_groups]
    assert lrs[0] == pytest.approx(lrs[1])
    assert lrs[1] == pytest.approx(OptimConfig().lr * 0.5)


def _one_lars_step(w0, g, lr, wd, eta, momentum, adapt=True):
    """LARS written from You et al. (arXiv:1708.03888, Alg. 1) for one tensor and two steps."""
    w, v = w0.clone(), torch.zeros_like(w0)
    for _ in range(2):
        u = g + wd * w if adapt else g
        trust = eta * w.norm() / u.norm() if adapt else 1.0
        v = momentum * v + lr * trust * u
        w = w - v
    return w


def test_lars_matches_the_algorithm_and_skips_biases():
    torch.manual_seed(0)
    weight, bias = torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(4))
    w0, b0 = weight.detach().clone(), bias.detach().clone()
    gw, gb = torch.randn(4, 3), torch.randn(4)
    cfg = OptimConfig(batch_size=256, base_lr=0.5, weight_decay=0.1, optimizer="lars")
    opt, _ = build_optimizer([{"params": [weight, bias]}], cfg, StepSchedule(10, 0))
    assert isinstance(opt, LARS)
    for _ in range(2):
        weight.grad, bias.grad = gw.clone(), gb.clone()
        opt.step()
    torch.testing.assert_close(weight.detach(), _one_lars_step(w0, gw, 0.5, 0.1, 0.001, 0.9))
    # the bias: plain momentum SGD, no weight decay, no trust ratio
    torch.testing.assert_close(
        bias.detach(), _one_lars_step(b0, gb, 0.5, 0.1, 0.001, 0.9, adapt=False)
    )


def test_adamw_and_sgd_are_selectable():
    p = torch.nn.Parameter(torch.randn(3))
    for name, cls in (("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD)):
        opt, _ = build_optimizer([{"params": [p]}], OptimConfig(optimizer=name), StepSchedule(5, 0))
        assert isinstance(opt, cls)


def test_every_group_is_named_for_the_logs_and_lars_halves_keep_the_name():
    """``lr/<name>`` in the logs: the method's names, ``all`` for a lone group, ``group<i>``
    otherwise; LARS's weight and bias halves of a group share its name and its rate."""
    encoder, predictor = nn.Linear(4, 4), nn.Linear(4, 2)
    groups = [
        {"params": list(encoder.parameters()), "name": "encoder"},
        {"params": list(predictor.parameters()), "name": "predictor", "fixed_lr": True},
    ]
    opt, sched = build_optimizer(groups, OptimConfig(optimizer="lars"), StepSchedule(10, 0))
    named = [(g["name"], g["adapt"], len(g["params"])) for g in opt.param_groups]
    assert named == [
        ("encoder", True, 1),
        ("encoder", False, 1),
        ("predictor", True, 1),
        ("predictor", False, 1),
    ]
    opt.step()
    sched.step()
    lrs = [g["lr"] for g in opt.param_groups]
    assert lrs[0] == lrs[1] < lrs[2] == lrs[3] == OptimConfig().lr  # one rate per named group
    p, q = torch.nn.Parameter(torch.randn(3)), torch.nn.Parameter(torch.randn(3))
    opt, _ = build_optimizer([{"params": [p]}], OptimConfig(), StepSchedule(5, 0))
    assert [g["name"] for g in opt.param_groups] == ["all"]
    opt, _ = build_optimizer([{"params": [p]}, {"params": [q]}], OptimConfig(), StepSchedule(5, 0))
    assert [g["name"] for g in opt.param_groups] == ["group0", "group1"]


@pytest.mark.parametrize("name", sorted(METHODS))
def test_a_frozen_patch_projection_is_left_out_of_every_methods_optimiser(name):
    """MoCo v3's random patch projection: no optimiser group (so no decay) holds it."""
    pytest.importorskip("timm")
    cfg = BackboneConfig(
        name="timm/vit_tiny_patch16_224",
        timm_kwargs={"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2},
        freeze_patch_embed=True,
    )
    cls = METHODS[name].config_class
    narrow = {f.name: 32 for f in dataclasses.fields(cls) if f.name.endswith("_dim")}
    method = create_method(create_backbone(cfg), cls(name=name, **narrow))
    frozen = {id(p) for p in method.backbone.model.patch_embed.proj.parameters()}
    assert len(frozen) == 2
    for optimizer in ("sgd", "lars", "adamw"):
        opt, _ = build_optimizer(
            method.param_groups(), OptimConfig(optimizer=optimizer), StepSchedule(5, 0)
        )
        held = {id(p) for g in opt.param_groups for p in g["params"]}
        assert not frozen & held, optimizer
        assert held == {id(p) for p in method.parameters() if p.requires_grad}
