"""Linear probe on frozen features (the standard linear evaluation protocol).

Features are extracted once (centre views, or random crop + flip views when asked) and
standardised with the training set's per-feature mean and std (a BatchNorm without affine, which
MoCo v3 and MAE also put before the linear layer). The classifier is then trained with SGD and a
cosine schedule (the usual protocol of SimSiam/MoCo), or as L2-regularised multinomial logistic
regression by full-batch L-BFGS (the protocol of CLIP, arXiv:2103.00020, Sec. 3.2, deterministic
and free of a learning rate).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F


@dataclass
class LinearProbeResult:
    """Accuracies (%) of a linear probe."""

    top1: float
    top5: float
    train_top1: float


def linear_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    epochs: int = 100,
    lr: float = 0.1,
    batch_size: int = 256,
    weight_decay: float = 0.0,
    seed: int = 0,
    optimizer: Literal["sgd", "lbfgs"] = "sgd",
) -> LinearProbeResult:
    """Train a linear classifier on ``(N, D)`` features and report test top-1/top-5.

    Args:
        train_x: ``(N, D)`` training features.
        train_y: ``(N,)`` labels.
        test_x: ``(M, D)`` test features.
        test_y: ``(M,)`` labels.
        epochs: Passes over the training features.
        lr: Peak SGD learning rate (momentum 0.9, cosine decay per step).
        batch_size: Features per step.
        weight_decay: L2 penalty (SGD's weight decay; L-BFGS adds ``weight_decay/2 ||W||^2``).
        seed: Seed of the initialisation and the order.
        optimizer: ``sgd`` (mini-batch, ``epochs`` passes) or ``lbfgs`` (full batch, at most
            ``epochs`` iterations; ``lr`` and ``batch_size`` are unused).
    """
    g = torch.Generator().manual_seed(seed)
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    xtr, xte = (train_x - mean) / std, (test_x - mean) / std
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    layer = torch.nn.Linear(xtr.shape[1], num_classes)
    with torch.no_grad():
        layer.weight.normal_(0, 0.01, generator=g)
        layer.bias.zero_()
    if optimizer == "lbfgs":
        _fit_lbfgs(layer, xtr, train_y, epochs, weight_decay)
    else:
        _fit_sgd(layer, xtr, train_y, epochs, lr, batch_size, weight_decay, g)
    with torch.no_grad():
        logits = layer(xte)
        k = min(5, num_classes)
        top5 = (logits.topk(k, dim=1).indices == test_y[:, None]).any(dim=1).float().mean()
        top1 = (logits.argmax(1) == test_y).float().mean()
        train_top1 = (layer(xtr).argmax(1) == train_y).float().mean()
    return LinearProbeResult(float(top1 * 100), float(top5 * 100), float(train_top1 * 100))


def _fit_sgd(
    layer: torch.nn.Linear,
    x: torch.Tensor,
    y: torch.Tensor,
    epochs: int,
    lr: float,
    batch_size: int,
    weight_decay: float,
    g: torch.Generator,
) -> None:
    """Mini-batch SGD (momentum 0.9) with a per-step cosine schedule."""
    steps_per_epoch = max(1, len(x) // batch_size)
    opt = torch.optim.SGD(layer.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g)
        for i in range(steps_per_epoch):
            idx = order[i * batch_size : (i + 1) * batch_size]
            loss = F.cross_entropy(layer(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()


def _fit_lbfgs(
    layer: torch.nn.Linear, x: torch.Tensor, y: torch.Tensor, iterations: int, weight_decay: float
) -> None:
    """Full-batch L-BFGS on the mean cross-entropy plus ``weight_decay / 2 ||W||^2``."""
    opt = torch.optim.LBFGS(
        layer.parameters(),
        lr=1.0,
        max_iter=iterations,
        history_size=20,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(layer(x), y) + 0.5 * weight_decay * layer.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
