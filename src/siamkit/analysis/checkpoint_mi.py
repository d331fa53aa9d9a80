"""``siamkit eval mi``: MINE estimates of the information a checkpoint's representations share.

Two quantities (arXiv:1801.04062 for the estimator):

- **two views**: ``I(h(v1); h(v2))`` between the backbone features of two augmented views of the
  same images, and the same for the projections ``g(h)``. Every siamese method pulls the two views
  together; how much they still share, beyond agreeing, is what this measures.
- **label**: ``I(h; y)`` between centre-view features and the label, at most the label's entropy
  ``H(y)`` (``log 10 = 2.30`` nats for ten balanced classes).

The estimate is the Donsker-Varadhan bound of a statistics network fitted on 60% of the pairs,
stopped at the step where its bound on another 20% is highest, and read at that step on the last
20%, which no choice saw (:func:`siamkit.eval.mi_estimator.estimate_from_pairs`); with a
few thousand images it is a lower bound limited by the sample, comparable between checkpoints
measured the same way, not an absolute figure.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from siamkit.analysis.run_eval import metric_images
from siamkit.checkpoints import load_method, read_checkpoint
from siamkit.config import DataConfig
from siamkit.encoders import create_backbone
from siamkit.errors import ConfigError
from siamkit.eval.features import extract_features
from siamkit.eval.mi_estimator import FitSettings, estimate_from_pairs, one_hot
from siamkit.eval.representation import project, two_view_features
from siamkit.methods import create_method


def label_entropy(labels: torch.Tensor) -> float:
    """``H(y)`` in nats of the empirical label distribution."""
    p = torch.bincount(labels.long()).float()
    p = p[p > 0] / p.sum()
    return float(-(p * p.log()).sum())


def checkpoint_mi(
    checkpoint: str | Path,
    data: DataConfig | None = None,
    max_images: int = 5000,
    seed: int = 0,
    device: torch.device | None = None,
    settings: FitSettings | None = None,
    random_init: bool = False,
) -> dict[str, Any]:
    """Two-view and label MI of a checkpoint's h and g(h).

    Args:
        checkpoint: A ``.ckpt`` file or a run folder.
        data: Images to measure on (default: the run's own data; its test split where it has one).
        max_images: At most this many images (a seeded random subset).
        seed: Seed of the subset, the views, the fit / validation / test split and the
            statistics networks.
        device: Where features are computed (default: the CPU); MINE trains on the CPU.
        settings: The statistics network and its training (default :class:`FitSettings`).
        random_init: Measure the same architecture at a random initialisation (seeded with the
            run's ``train.seed``) instead of the trained weights.

    Returns:
        ``{"h": {"two_view": nats, "label": nats}, "g": {"two_view": nats}, "label_entropy":
        nats, "num_images": N, "split": ..., "bound": ...}``; the label entries only with labels.

    Raises:
        ConfigError: ``max_images`` below 10.
        CheckpointError: The checkpoint cannot be read.
        DataError: The data is missing.
    """
    if max_images < 10:
        raise ConfigError(
            f"max_images must be at least 10 to fit and hold out pairs, got {max_images}"
        )
    settings = settings or FitSettings()
    method: nn.Module
    if random_init:
        cfg = read_checkpoint(checkpoint).config
        torch.manual_seed(cfg.train.seed)
        method = create_method(create_backbone(cfg.backbone), cfg.method).eval()
    else:
        cfg, method = load_method(checkpoint)
    method.to(device or torch.device("cpu"))
    images, split = metric_images(data or cfg.data, max_images, seed)
    h1, h2 = two_view_features(method.backbone, images, cfg.augment, seed)
    g1, g2 = (project(method.projector, h) for h in (h1, h2))
    result: dict[str, Any] = {
        "h": {"two_view": estimate_from_pairs(h1, h2, settings, seed=seed).value},
        "g": {"two_view": estimate_from_pairs(g1, g2, settings, seed=seed).value},
        "num_images": len(images),
        "split": split,
        "bound": settings.bound,
        "random_init": random_init,
    }
    if images.labels is not None:
        h = extract_features(method.backbone, images, cfg.augment)
        y = one_hot(images.labels)
        result["h"]["label"] = estimate_from_pairs(h, y, settings, seed=seed).value
        result["label_entropy"] = label_entropy(images.labels)
    for key in ("h", "g"):
        for name, value in result[key].items():
            if not math.isfinite(value):
                result[key][name] = None
    return result


__all__ = ["checkpoint_mi", "label_entropy"]
