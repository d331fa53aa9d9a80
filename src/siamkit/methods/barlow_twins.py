"""Barlow Twins: self-supervised learning via redundancy reduction (Zbontar et al., 2103.03230).

Two views go through one encoder (backbone + projector) to z_a, z_b; the loss drives the
cross-correlation matrix C of their dimensions, computed along the (global) batch, to the identity:

    C_ij = sum_b za_bi zb_bj / (||za_:i|| ||zb_:j||)   (dimensions mean-centred)      (Eq. 2)
    L = sum_i (1 - C_ii)^2 + lambda sum_{i != j} C_ij^2                                (Eq. 1)

No stop-gradient, no predictor, no momentum encoder: both branches get gradient, symmetrically.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from siamkit.config import AugmentConfig, MethodConfig
from siamkit.data.augment import asymmetric_view_recipes, check_view_probabilities
from siamkit.encoders import Encoder
from siamkit.errors import ConfigError
from siamkit.heads import projection_mlp
from siamkit.losses import barlow_twins
from siamkit.methods.base import Method, require_at_least_one


@dataclass
class BarlowTwinsConfig(MethodConfig):
    """Barlow Twins' projector, loss weight and view recipe.

    Attributes:
        proj_hidden_dim: Hidden width of the projector, 8192 on ImageNet ("three linear layers,
            each with 8192 output units" [Implementation Details]); 2048 in solo-learn's CIFAR
            recipe.
        proj_dim: Output width of the projector, 8192 [Implementation Details]; wider helps
            (Ablations).
        proj_layers: Linear layers of the projector, 3 [Implementation Details]: the first two
            are followed by BN and ReLU; the last has neither (C's standardisation plays the role
            of the official code's affine-free BN) and no bias (C is invariant to a shift).
        lambda_offdiag: lambda, weight of the redundancy-reduction term, 5e-3 [Implementation
            Details]; 0 keeps only the invariance term (Table 5: 57.3%).
        invariance_weight: Weight of the invariance term, 1 [Eq. 1]; 0 keeps only the
            redundancy-reduction term (Table 5: 0.1%).
        loss_scale: Factor on the loss, 1 (the paper's loss). The loss is a sum over D dimensions
            (hundreds at the start), and LARS adapts only the weights' step to the gradient's
            scale: biases and BN parameters get ``lr x gradient``. The paper gives them a 40x
            smaller lr (0.0048 vs 0.2, Implementation Details), which one lr cannot express;
            solo-learn's CIFAR recipe scales the loss by 0.1 instead, as the small recipes here do.
        blur_probs: Gaussian-blur probability of view 1 and 2, (1.0, 0.1) [Appendix, as BYOL].
        solarize_probs: Solarisation probability of view 1 and 2, (0.0, 0.2) [Appendix].
    """

    name: str = "barlow_twins"
    proj_hidden_dim: int = 8192
    proj_dim: int = 8192
    proj_layers: int = 3
    lambda_offdiag: float = 5e-3
    invariance_weight: float = 1.0
    loss_scale: float = 1.0
    blur_probs: tuple[float, float] = (1.0, 0.1)
    solarize_probs: tuple[float, float] = (0.0, 0.2)

    def __post_init__(self) -> None:
        require_at_least_one(self, "proj_hidden_dim", "proj_dim", "proj_layers")
        if self.loss_scale <= 0:
            raise ConfigError(f"method.loss_scale must be positive, got {self.loss_scale}")
        if self.invariance_weight < 0:
            raise ConfigError(
                f"method.invariance_weight must be >= 0, got {self.invariance_weight} (paper: 1)"
            )
        if self.lambda_offdiag < 0:
            raise ConfigError(
                f"method.lambda_offdiag must be >= 0, got {self.lambda_offdiag} (paper: 5e-3)"
            )
        check_view_probabilities(self.blur_probs, self.solarize_probs)


class BarlowTwins(Method):
    """The Barlow Twins method: encoder f = projector(backbone(x)), loss on its two outputs.

    Args:
        backbone: An :class:`~siamkit.encoders.Encoder`.
        cfg: Projector and loss weight.
    """

    config_class = BarlowTwinsConfig

    def __init__(self, backbone: Encoder, cfg: BarlowTwinsConfig) -> None:
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
            output_bias=False,
        )

    def view_recipes(self, base: AugmentConfig) -> list[AugmentConfig]:
        """Two asymmetric views: blur (1.0, 0.1), solarisation (0.0, 0.2) [Appendix]."""
        return asymmetric_view_recipes(base, self.cfg.blur_probs, self.cfg.solarize_probs)

    def training_step(
        self, views: list[torch.Tensor], indices: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Loss of one batch.

        Args:
            views: Two tensors ``(B, 3, H, W)``, the same images augmented.
            indices: Unused (no per-image state).

        Returns:
            ``loss`` (scalar) and ``embedding`` (``(B, proj_dim)``, detached z_a).
        """
        z_a, z_b = self.encode(views[0]), self.encode(views[1])  # (B, proj_dim) each
        # Both branches carry gradient: no stop-gradient anywhere [Sec. 2].
        loss = self.cfg.loss_scale * barlow_twins(
            z_a, z_b, self.cfg.lambda_offdiag, invariance_weight=self.cfg.invariance_weight
        )
        return {"loss": loss, "embedding": z_a.detach()}
