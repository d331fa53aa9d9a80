"""The method contract: what the training loop may call. No training logic lives here."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from siamkit.config import AugmentConfig, MethodConfig
from siamkit.encoders import Encoder
from siamkit.errors import ConfigError


def require_at_least_one(cfg: object, *keys: str) -> None:
    """Raise :class:`~siamkit.errors.ConfigError` unless every field ``keys`` of ``cfg`` is >= 1.

    The widths, depths and sizes of a method config (``proj_dim``, ``queue_size``, ...) are
    counts; the check names the first offending field as ``method.<key>``.
    """
    for key in keys:
        value = getattr(cfg, key)
        if value < 1:
            raise ConfigError(f"method.{key} must be at least 1, got {value}")


class Method(nn.Module):
    """Base of every method (a small declaration, not a framework).

    Attributes:
        backbone: The encoder whose features are evaluated and exported (h).
        projector: The projection head g of the online branch; evaluation compares h with g(h)
            and SimCLRv2 fine-tunes from g's first layer.
        num_views: Augmented views of each image that ``training_step`` takes.
        config_class: The method's config dataclass; ``Method(backbone, cfg)`` takes one.
    """

    config_class: ClassVar[type[MethodConfig]]
    backbone: Encoder
    projector: nn.Module
    num_views: int = 2
    #: Some trainable parameters get no gradient in some steps (SwAV's prototypes while frozen),
    #: so DDP must look for unused parameters.
    skips_parameters: bool = False

    def view_recipes(self, base: AugmentConfig) -> list[AugmentConfig]:
        """One view recipe per view, derived from the run's recipe ``base``.

        Two-view methods use ``base`` for every view. Methods with asymmetric views (BYOL) or
        multi-crop (SwAV) return ``dataclasses.replace(base, ...)`` per view; every view goes
        through the same batched augmentation.
        """
        return [base] * self.num_views

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The online encoder g(f(x)): ``(B, 3, H, W)`` -> ``(B, D)`` projections, with gradient.

        Most methods compare exactly these; a method whose compared output differs (SwAV's unit
        embeddings, a predictor on top) builds it from this or overrides it.
        """
        return self.projector(self.backbone.forward_features(x))

    def setup(self, num_images: int) -> None:
        """Called once with the training set's size before training (per-image state)."""

    def training_step(
        self, views: list[torch.Tensor], indices: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """``{"loss": scalar, "embedding": (B, D) detached output, ...}`` for one batch.

        Args:
            views: ``len(view_recipes(...))`` tensors ``(B, 3, H_v, W_v)``, views of the same
                images in the same order.
            indices: ``(B,)`` positions of the images in the training set (per-image state).
        """
        raise NotImplementedError

    def param_groups(self) -> list[dict[str, Any]]:
        """Parameter groups for the optimiser; ``fixed_lr: True`` exempts a group from decay."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def on_epoch_start(self, epoch: int) -> None:
        """Per-epoch state (SwAV freezes its prototypes during the first epoch); 0-based."""

    def on_step_end(self, progress: float) -> None:
        """Per-step state updates (EMA, queues); ``progress`` runs from 0 to 1 over training."""
