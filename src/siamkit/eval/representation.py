"""Representation metrics of a checkpoint, for the backbone output h and the projection g(h).

For both outputs: the collapse std of SimSiam [arXiv:2011.10566, Sec. 4.1], the effective rank
RankMe [arXiv:2210.02885, Eq. 1] and the uniformity of Wang & Isola [arXiv:2005.10242, Eq. 5] on
centre views of held-out images, and their alignment [arXiv:2005.10242, Eq. 4] between two
augmented views (the run's own recipe) of the same images.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from siamkit.config import AugmentConfig
from siamkit.data.loader import ImageData
from siamkit.data.views import Views
from siamkit.encoders import Encoder
from siamkit.eval.features import extract_features
from siamkit.eval.metrics import alignment, output_std, rankme, uniformity
from siamkit.methods import Method


def projection_features(
    method: Method, images: ImageData, augment: AugmentConfig, batch_size: int | None = None
) -> torch.Tensor:
    """Projections g(h) of centre views of images, in eval mode.

    Args:
        method: A method (``.backbone``, ``.projector``).
        images: Any storage.
        augment: Gives the view size and normalisation.
        batch_size: Images per forward pass.

    Returns:
        ``(N, proj_dim)`` float32 on the CPU.
    """
    return extract_features(
        method.backbone,
        images,
        augment,
        batch_size=batch_size,
        head=method.projector,
    )


@torch.no_grad()
def project(projector: nn.Module, h: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """g(h) of precomputed backbone features ``h`` (``(N, num_features)``), in eval mode.

    Returns:
        ``(N, proj_dim)`` float32 on the CPU.
    """
    was_training = projector.training
    projector.eval()  # BatchNorm on running statistics
    device = next(projector.parameters()).device
    g = [projector(chunk.to(device)).float().cpu() for chunk in h.split(batch_size)]
    projector.train(was_training)
    return torch.cat(g)


def output_metrics(
    centre: torch.Tensor, view1: torch.Tensor, view2: torch.Tensor
) -> dict[str, float]:
    """Collapse std, RankMe and uniformity of ``centre`` and alignment of ``view1``/``view2``.

    Args:
        centre: ``(N, D)`` outputs of centre views.
        view1: ``(N, D)`` outputs of one augmented view of the same images.
        view2: ``(N, D)`` outputs of a second augmented view.

    Returns:
        ``{"dim", "collapse_std", "rankme", "uniformity", "alignment"}``.
    """
    return {
        "dim": int(centre.shape[1]),
        "collapse_std": output_std(centre),
        "rankme": rankme(centre),
        "uniformity": uniformity(centre),
        "alignment": alignment(view1, view2),
    }


def two_view_features(
    backbone: Encoder,
    images: ImageData,
    augment: AugmentConfig,
    seed: int = 0,
    batch_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Backbone features of two augmented views of every image: two ``(N, D)`` tensors.

    Both views follow the run's recipe ``augment``; one device generator (seeded with ``seed``)
    draws the first view's augmentation and then the second's, and streamed crops are cut with
    seeds ``seed`` and ``seed + 1``, so the two views of an image differ.
    """
    device = next(backbone.parameters()).device
    generator = torch.Generator(device).manual_seed(seed)
    views = Views([augment])
    h1, h2 = (
        extract_features(
            backbone,
            images,
            augment,
            batch_size=batch_size,
            views=views,
            generator=generator,
            seed=s,
        )
        for s in (seed, seed + 1)
    )
    return h1, h2


def method_metrics(
    method: Method,
    images: ImageData,
    augment: AugmentConfig,
    seed: int = 0,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """:func:`output_metrics` of h and g(h) of a loaded method on ``images``.

    Args:
        method: A method (``.backbone``, ``.projector``).
        images: Any storage, N >= 2.
        augment: The run's view recipe (centre views and the two augmented views).
        seed: Seed of the augmented views.
        batch_size: Images per forward pass.

    Returns:
        ``{"h": {...}, "g": {...}, "num_images": N}``.
    """
    backbone, projector = method.backbone, method.projector
    h = extract_features(backbone, images, augment, batch_size=batch_size)
    h1, h2 = two_view_features(backbone, images, augment, seed, batch_size)
    g, g1, g2 = (project(projector, x) for x in (h, h1, h2))
    return {
        "h": output_metrics(h, h1, h2),
        "g": output_metrics(g, g1, g2),
        "num_images": len(images),
    }
