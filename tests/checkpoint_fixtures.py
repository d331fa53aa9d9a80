"""Fixtures and helpers of the run-level tests (supervised, analysis, export).

Small digits splits, and pretraining checkpoints written without training.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from siamkit.checkpoints import CONFIG_KEY
from siamkit.data.datasets import Splits, load_digits
from siamkit.encoders import create_backbone
from siamkit.methods import create_method
from siamkit.recipes import load_config
from siamkit.strict import to_dict


@pytest.fixture(scope="module")
def splits() -> Splits:
    """Digits at 16 px, the first 600 training images (and all 360 test images)."""
    full = load_digits(16)
    return Splits(full.train.subset(torch.arange(600)), full.test)


def randomise_batch_norm(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial statistics and affine parameters, so eval mode and the
    buffers a file carries matter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))


def write_checkpoint(overrides: list[str], path: Path, seed: int = 0) -> Path:
    """A pretraining checkpoint in the training loop's format (run config + ``method.*``
    weights) of the default recipe with ``overrides``, written directly to keep tests fast."""
    cfg = load_config(overrides=overrides)
    torch.manual_seed(seed)
    method = create_method(create_backbone(cfg.backbone), cfg.method)
    randomise_batch_norm(method, seed)
    state = {f"method.{k}": v for k, v in method.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({CONFIG_KEY: to_dict(cfg), "state_dict": state, "epoch": 0}, path)
    return path
