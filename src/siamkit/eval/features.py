"""Frozen-feature extraction for evaluation."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from siamkit.config import AugmentConfig
from siamkit.data.augment import eval_views


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    images: torch.Tensor,
    augment: AugmentConfig,
    batch_size: int = 512,
    device: torch.device | str | None = None,
    bf16: bool = False,
    channels_last: bool = False,
) -> torch.Tensor:
    """Backbone features of uint8 images, centre-cropped and normalised, in eval mode.

    Args:
        backbone: An encoder (``forward_features``).
        images: ``(N, 3, H, W)`` uint8.
        augment: Gives the view size and normalisation.
        batch_size: Images per forward pass.
        device: Where to compute (default: the backbone's device).
        bf16: Run under bf16 autocast (features are returned as float32).
        channels_last: Feed the backbone channels-last tensors.

    Returns:
        ``(N, num_features)`` float32 on the CPU.
    """
    was_training = backbone.training
    backbone.eval()
    device = torch.device(device) if device else next(backbone.parameters()).device
    feats = []
    ctx = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with ctx:
        for chunk in images.split(batch_size):
            x = eval_views(chunk.to(device), augment)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            feats.append(backbone.forward_features(x).float().cpu())  # type: ignore[operator]
    backbone.train(was_training)
    return torch.cat(feats)
