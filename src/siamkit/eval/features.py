"""Frozen-feature extraction for evaluation, batch by batch from any storage."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, NamedTuple, TypedDict

import torch
from torch import nn

from siamkit.config import AugmentConfig
from siamkit.data.device_decode import to_device
from siamkit.data.loader import ImageData, make_loader
from siamkit.data.views import Views
from siamkit.encoders import Encoder
from siamkit.errors import DataError

if TYPE_CHECKING:  # Unpack is in typing from Python 3.11 on
    from typing_extensions import Unpack


class FeatureBatch(NamedTuple):
    """Features of one batch.

    Attributes:
        values: ``(B, D)`` float32 on the CPU.
        labels: ``(B,)`` labels (-1 where unknown).
        indices: ``(B,)`` positions in the data.
        unreadable: ``(B,)`` bool, images that could not be read (another image of the batch
            stood in for each).
    """

    values: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    unreadable: torch.Tensor


class FeatureOptions(TypedDict, total=False):
    """The keyword options of :func:`iter_features`, for functions that pass them on."""

    batch_size: int | None
    device: torch.device | str | None
    bf16: bool
    channels_last: bool
    head: nn.Module | None
    views: Views | None
    seed: int
    generator: torch.Generator | None
    strict: bool


def eval_batch_size(side: int) -> int:
    """Images per evaluation forward pass for views of ``side`` pixels.

    512 up to 64 px, 128 above (a batch of 512 ImageNet-size views holds several GB of activations
    on a CPU).
    """
    return 512 if side <= 64 else 128


def _modules_eval(modules: list[nn.Module]) -> list[bool]:
    was_training = [m.training for m in modules]
    for m in modules:
        m.eval()
    return was_training


@torch.no_grad()
def iter_features(
    backbone: Encoder,
    data: ImageData,
    augment: AugmentConfig,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
    bf16: bool = False,
    channels_last: bool = False,
    head: nn.Module | None = None,
    views: Views | None = None,
    seed: int = 0,
    generator: torch.Generator | None = None,
    strict: bool = False,
) -> Iterator[FeatureBatch]:
    """Backbone features of ``data``, one batch at a time, in eval mode.

    Args:
        backbone: An encoder (``forward_features``).
        data: Any storage (memory, stream, shards); read in order.
        augment: Gives the evaluation size and normalisation of the default centre view.
        batch_size: Images per forward pass (default :func:`eval_batch_size`).
        device: Where to compute (default: the backbone's device).
        bf16: Run under bf16 autocast (features are returned as float32).
        channels_last: Feed the backbone channels-last tensors.
        head: Applied to the backbone output, e.g. a method's projector for g(h) instead of h.
        views: The view of each image (default the centre view); a recipe's random views give
            augmented features (the first view is used).
        seed: Seed of random crops cut by workers (streamed data).
        generator: RNG of the device-side augmentation (random views only).
        strict: Stop at an unreadable image instead of counting it.

    Yields:
        One :class:`FeatureBatch` per batch, in the data's order.

    Raises:
        DataError: An unreadable image under ``strict``.
    """
    modules: list[nn.Module] = [backbone] if head is None else [backbone, head]
    was_training = _modules_eval(modules)
    device = torch.device(device) if device else next(backbone.parameters()).device
    views = views or Views.centre(augment)
    batch_size = batch_size or eval_batch_size(max(s.size for s in views.specs))
    loader = make_loader(
        data, views.specs, batch_size, train=False, seed=seed, pin_memory=device.type == "cuda"
    )
    ctx = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    unreadable = 0
    try:
        with ctx:
            for batch in loader:
                if bool(batch.unreadable.any()):
                    bad = batch.indices[batch.unreadable].tolist()
                    if strict:
                        raise DataError(
                            f"unreadable image {data.describe(bad[0])}; remove or replace it, "
                            "or drop --strict to skip such images with a warning"
                        )
                    unreadable += len(bad)
                x = views(to_device(batch, device).images, generator)[0]
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                h = backbone.forward_features(x)
                out = h if head is None else head(h)
                yield FeatureBatch(out.float().cpu(), batch.labels, batch.indices, batch.unreadable)
    finally:
        for m, mode in zip(modules, was_training, strict=True):
            m.train(mode)
    if unreadable:
        warnings.warn(
            f"{unreadable} unreadable image(s) of {len(data)} stood in by others of their batch "
            "in feature extraction; use --strict to make this an error",
            stacklevel=2,
        )


def extract_features(
    backbone: Encoder, data: ImageData, augment: AugmentConfig, **options: Unpack[FeatureOptions]
) -> torch.Tensor:
    """All features of ``data`` in its order: ``(N, D)`` float32 on the CPU.

    Takes the arguments of :func:`iter_features`. Holds ``N x D`` floats; for a feature bank
    too large for that, consume :func:`iter_features` batch by batch (as the kNN does).
    """
    feats: torch.Tensor | None = None
    for batch in iter_features(backbone, data, augment, **options):
        if feats is None:
            feats = torch.empty(len(data), batch.values.shape[1])
        feats[batch.indices] = batch.values
    assert feats is not None, "no images"
    return feats
