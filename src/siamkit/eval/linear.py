"""Linear probe on frozen features (the standard linear evaluation protocol).

Features are extracted once, without augmentation, and standardised with the training set's
per-feature mean and std (a BatchNorm without affine, which MoCo v3 and MAE also put before the
linear layer); a linear classifier is then trained with SGD and a cosine schedule.
"""

from __future__ import annotations

from dataclasses import dataclass

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
        weight_decay: L2 penalty.
        seed: Seed of the initialisation and the order.
    """
    g = torch.Generator().manual_seed(seed)
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    xtr, xte = (train_x - mean) / std, (test_x - mean) / std
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    layer = torch.nn.Linear(xtr.shape[1], num_classes)
    with torch.no_grad():
        layer.weight.normal_(0, 0.01, generator=g)
        layer.bias.zero_()
    steps_per_epoch = max(1, len(xtr) // batch_size)
    opt = torch.optim.SGD(layer.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch)
    for _ in range(epochs):
        order = torch.randperm(len(xtr), generator=g)
        for i in range(steps_per_epoch):
            idx = order[i * batch_size : (i + 1) * batch_size]
            loss = F.cross_entropy(layer(xtr[idx]), train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    with torch.no_grad():
        logits = layer(xte)
        k = min(5, num_classes)
        top5 = (logits.topk(k, dim=1).indices == test_y[:, None]).any(dim=1).float().mean()
        top1 = (logits.argmax(1) == test_y).float().mean()
        train_top1 = (layer(xtr).argmax(1) == train_y).float().mean()
    return LinearProbeResult(float(top1 * 100), float(top5 * 100), float(train_top1 * 100))
