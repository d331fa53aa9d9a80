"""W-MSE: Whitening for Self-Supervised Representation Learning (Ermolov et al., arXiv:2007.06346).

``num_positives`` (d) views of each image go through one encoder (backbone + projector); the
embeddings of each view are whitened per sub-batch of ``w_size`` images (zero mean, identity
covariance: the "scattering" that prevents collapse), l2-normalised, and every pair of positives
is pulled together by an MSE:

    Whitening(v) = W_V (v - mu_V),  W_V^T W_V = Sigma_V^{-1}                          (Eq. 4-5)
    zhat = Whitening(v) / ||Whitening(v)||
    L = 2 / (N d (d-1)) sum_i sum_{j<k} ||zhat_ij - zhat_ik||^2                        (Eq. 6)

No negatives, no predictor, no stop-gradient: gradients flow through the whitening.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from siamkit.config import AugmentConfig, MethodConfig
from siamkit.encoders import Encoder
from siamkit.errors import ConfigError
from siamkit.heads import projection_mlp
from siamkit.losses import wmse
from siamkit.methods.base import Method, require_at_least_one


@dataclass
class WMSEConfig(MethodConfig):
    """W-MSE's projector, positives and whitening.

    Attributes:
        proj_hidden_dim: Hidden width of the projector, 1024 (authors' code, ``head_size``;
            solo-learn's CIFAR recipe likewise).
        proj_dim: Embedding size, 64 on CIFAR-10/100 and 128 on STL-10, Tiny ImageNet and
            ImageNet-100 [Sec. 5; authors' README].
        proj_layers: Linear layers of the projector, 2 (Linear -> BN -> ReLU -> Linear; authors'
            code). The output has no bias: the whitening removes any shift.
        num_positives: d, views of each image; every one of the d(d-1)/2 pairs is a positive
            pair. 2 (W-MSE 2) by default; the paper's best is 4 (W-MSE 4) [Sec. 5, Tables].
        w_size: Images per whitening sub-batch [Sec. 3.1 batch slicing]: 128 for embedding 64,
            256 for 128 (authors' README); must exceed ``proj_dim`` for a full-rank covariance.
        w_iter: Repetitions of the slicing with fresh random permutations, averaged: 1 (4 in
            the authors' W-MSE 2 runs on STL-10 and Tiny ImageNet).
        w_eps: Ridge added to each sub-batch covariance before the Cholesky factorisation, times
            the mean variance. Not in the paper (the code uses 0); 1e-9 keeps the (float64)
            factorisation defined for singular sub-batches while every direction with more than
            a billionth of the mean variance is still whitened (a larger ridge lets training
            shrink directions out of the loss; see :func:`~siamkit.heads.whitening.whiten`).
    """

    name: str = "wmse"
    proj_hidden_dim: int = 1024
    proj_dim: int = 64
    proj_layers: int = 2
    num_positives: int = 2
    w_size: int = 128
    w_iter: int = 1
    w_eps: float = 1e-9

    def __post_init__(self) -> None:
        require_at_least_one(self, "proj_hidden_dim", "proj_dim", "proj_layers", "w_iter")
        if self.num_positives < 2:
            raise ConfigError(
                f"method.num_positives must be at least 2 (a positive pair), got "
                f"{self.num_positives}; the paper uses 2 and 4"
            )
        if self.w_size <= self.proj_dim:
            raise ConfigError(
                f"method.w_size ({self.w_size}) must exceed method.proj_dim ({self.proj_dim}): "
                "a sub-batch's covariance needs more samples than dimensions to be whitened "
                "(the paper uses w_size 128 for 64 dimensions, 256 for 128)"
            )
        if self.w_eps < 0:
            raise ConfigError(f"method.w_eps must be >= 0, got {self.w_eps}")


class WMSE(Method):
    """The W-MSE method: encoder f = projector(backbone(x)), whitened MSE over all positive pairs.

    Args:
        backbone: An :class:`~siamkit.encoders.Encoder`.
        cfg: Projector, positives and whitening.
    """

    config_class = WMSEConfig

    def __init__(self, backbone: Encoder, cfg: WMSEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        self.projector = projection_mlp(
            backbone.num_features,
            cfg.proj_hidden_dim,
            cfg.proj_dim,
            cfg.proj_layers,
            hidden_bn=True,
            output_bn=False,
            output_bias=False,  # the whitening removes any shift
        )
        self.num_views = cfg.num_positives

    def view_recipes(self, base: AugmentConfig) -> list[AugmentConfig]:
        """``num_positives`` views, all from the run's recipe (W-MSE's views are symmetric)."""
        return [base] * self.cfg.num_positives

    def training_step(
        self, views: list[torch.Tensor], indices: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Loss of one batch.

        Args:
            views: ``num_positives`` tensors ``(B, 3, H, W)``, the same images augmented.
            indices: Unused (no per-image state).

        Returns:
            ``loss`` (scalar) and ``embedding`` (``(B, proj_dim)``, detached projector output of
            the first view, before whitening).
        """
        z = [self.encode(v) for v in views]  # d tensors (B, proj_dim), before whitening
        # Every view carries gradient, through the whitening too [Sec. 3].
        loss = wmse(z, self.cfg.w_size, self.cfg.w_iter, self.cfg.w_eps)
        return {"loss": loss, "embedding": z[0].detach()}
