"""BYOL: Bootstrap Your Own Latent (Grill et al., arXiv:2006.07733).

An online network (backbone f_theta, projector g_theta, predictor q_theta) predicts the projection
that a target network (f_xi, g_xi: no predictor) gives for the other view. The target gets no
gradient; after each step it follows the online weights by an exponential moving average:

    L = ||q(z1)/||q(z1)|| - z2'/||z2'|| ||^2 + (the same with the views swapped)  (Eq. 2, Sec. 3.1)
    xi <- tau * xi + (1 - tau) * theta,  tau: 0.996 -> 1 by a cosine schedule    (Sec. 3.1-3.2)

The views are asymmetric (Table 6): blur always on view 1 and 10% on view 2, solarisation only on
view 2 (20%). The BatchNorm question (does BN act as a hidden negative term?) is the ``norm``
field here and ``backbone.norm``: ``group_ws`` removes every batch statistic [arXiv:2010.10241].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from siamkit.config import AugmentConfig, MethodConfig
from siamkit.data.augment import asymmetric_view_recipes, check_view_probabilities
from siamkit.encoders import Encoder
from siamkit.errors import ConfigError
from siamkit.heads import mlp, projection_mlp
from siamkit.losses.normalized_mse import normalized_mse
from siamkit.methods.base import Method, require_at_least_one
from siamkit.methods.momentum import cosine_momentum, momentum_copy, update_ema


@dataclass
class BYOLConfig(MethodConfig):
    """BYOL's heads, target momentum, normalisation and view asymmetry.

    Attributes:
        proj_hidden_dim: Hidden width of the projector, 4096 [Sec. 3.3].
        proj_dim: Output width of the projector, 256 [Sec. 3.3].
        pred_hidden_dim: Hidden width of the predictor, 4096: "the same architecture as g"
            [Sec. 3.3].
        base_momentum: tau_base, the target's EMA rate at the start, 0.996 [Sec. 3.2].
        final_momentum: tau at the end of training, 1 [Sec. 3.2].
        norm: Normalisation of the projector's and predictor's hidden layers: ``batch``
            (Linear -> BN -> ReLU, Sec. 3.3), ``none`` (no normalisation in the heads, one of
            the BN ablations of arXiv:2010.10241), or ``group_ws`` (GroupNorm with
            weight-standardised Linear layers, no batch statistics [arXiv:2010.10241, Sec. 3]).
            The output layers have no norm in every case, as in the paper.
        blur_probs: Gaussian-blur probability of view 1 and view 2, (1.0, 0.1) [Table 6]. Applied
            where the run's recipe blurs at all (ImageNet-size views, or ``augment.blur_prob``
            set above 0); small (CIFAR) views keep no blur, as the common CIFAR recipes do.
        solarize_probs: Solarisation probability of view 1 and view 2, (0.0, 0.2) [Table 6].
    """

    name: str = "byol"
    proj_hidden_dim: int = 4096
    proj_dim: int = 256
    pred_hidden_dim: int = 4096
    base_momentum: float = 0.996
    final_momentum: float = 1.0
    norm: Literal["batch", "none", "group_ws"] = "batch"
    blur_probs: tuple[float, float] = (1.0, 0.1)
    solarize_probs: tuple[float, float] = (0.0, 0.2)

    def __post_init__(self) -> None:
        require_at_least_one(self, "proj_hidden_dim", "proj_dim", "pred_hidden_dim")
        if not 0.0 <= self.base_momentum <= self.final_momentum <= 1.0:
            raise ConfigError(
                "method.base_momentum and method.final_momentum must satisfy 0 <= base <= final "
                f"<= 1, got {self.base_momentum} and {self.final_momentum} (BYOL: 0.996 -> 1)"
            )
        check_view_probabilities(self.blur_probs, self.solarize_probs)


class BYOL(Method):
    """The BYOL method: online backbone + projector + predictor, EMA target backbone + projector.

    Args:
        backbone: An :class:`~siamkit.encoders.Encoder`.
        cfg: Heads, momentum schedule and normalisation.
    """

    config_class = BYOLConfig

    def __init__(self, backbone: Encoder, cfg: BYOLConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        normed = cfg.norm != "none"
        kind: Literal["batch", "group_ws"] = "group_ws" if cfg.norm == "group_ws" else "batch"
        # "a linear layer with output size 4096 followed by batch normalization, rectified
        # linear units (ReLU), and a final linear layer with output dimension 256" [Sec. 3.3]
        # The predictor's first Linear -> BN removes any shift of z common to the batch, so a
        # projector output bias would get no gradient and the target's would stay at its random
        # init: it has one only where the predictor does not batch-normalise.
        self.projector = projection_mlp(
            backbone.num_features,
            cfg.proj_hidden_dim,
            cfg.proj_dim,
            num_layers=2,
            hidden_bn=normed,
            output_bn=False,
            norm=kind,
            output_bias=cfg.norm != "batch",
        )
        pred_dims = [cfg.proj_dim, cfg.pred_hidden_dim, cfg.proj_dim]
        self.predictor = mlp(pred_dims, hidden_bn=normed, output_bn=False, norm=kind)
        # Target network xi: a frozen copy of f and g, moved only by update_ema [Sec. 3.1].
        self.target_backbone = momentum_copy(backbone)
        self.target_projector = momentum_copy(self.projector)

    def view_recipes(self, base: AugmentConfig) -> list[AugmentConfig]:
        """Two asymmetric views [Table 6]: blur (1.0, 0.1), solarisation (0.0, 0.2)."""
        return asymmetric_view_recipes(base, self.cfg.blur_probs, self.cfg.solarize_probs)

    def training_step(
        self, views: list[torch.Tensor], indices: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Loss of one batch.

        Args:
            views: Two tensors ``(B, 3, H, W)``, views 1 and 2 of the same images.
            indices: Unused (no per-image state).

        Returns:
            ``loss`` (scalar) and ``embedding`` (``(B, proj_dim)``, detached online projection
            of view 1, for the collapse monitor).
        """
        z = [self.encode(v) for v in views]  # online projections, (B, proj_dim) each
        p = [self.predictor(zi) for zi in z]
        with torch.no_grad():  # the target network is never differentiated [Sec. 3.1]
            t = [self.target_projector(self.target_backbone.forward_features(v)) for v in views]
        # Symmetrised loss L + L~: each view's prediction regresses the other's target [Eq. 2].
        loss = normalized_mse(p[0], t[1].detach()) + normalized_mse(p[1], t[0].detach())
        return {"loss": loss, "embedding": z[0].detach()}

    def on_step_end(self, progress: float) -> None:
        """Move the target towards the online network with the scheduled tau [Sec. 3.1-3.2]."""
        tau = cosine_momentum(progress, self.cfg.base_momentum, self.cfg.final_momentum)
        update_ema(self.target_backbone, self.backbone, tau)
        update_ema(self.target_projector, self.projector, tau)

    def param_groups(self) -> list[dict[str, Any]]:
        """The online network only; the target is moved by :meth:`on_step_end`."""
        online = [self.backbone, self.projector, self.predictor]
        return [{"params": [q for m in online for q in m.parameters() if q.requires_grad]}]
