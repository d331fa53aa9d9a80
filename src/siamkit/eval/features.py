"""Frozen-feature extraction for evaluation."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

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
    head: nn.Module | None = None,
    views: Callable[[torch.Tensor], torch.Tensor] | None = None,
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
        head: Applied to the backbone output, e.g. a method's projector for g(h) instead of h.
        views: Turns a uint8 chunk into normalised input; default the centre view
            (:func:`~siamkit.data.augment.eval_views`), e.g. a ``BatchViews`` for augmented
            features.

    Returns:
        ``(N, num_features)`` (or the head's width) float32 on the CPU.
    """
    modules = [backbone] if head is None else [backbone, head]
    was_training = [m.training for m in modules]
    for m in modules:
        m.eval()
    device = torch.device(device) if device else next(backbone.parameters()).device
    feats = []
    ctx = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with ctx:
        for chunk in images.split(batch_size):
            chunk = chunk.to(device)
            x = views(chunk) if views is not None else eval_views(chunk, augment)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            h = backbone.forward_features(x)  # type: ignore[operator]
            feats.append((h if head is None else head(h)).float().cpu())
    for m, mode in zip(modules, was_training, strict=True):
        m.train(mode)
    return torch.cat(feats)
