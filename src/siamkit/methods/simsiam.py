"""SimSiam: Exploring Simple Siamese Representation Learning (Chen & He, arXiv:2011.10566).

Two views x1, x2 of each image go through one encoder f (backbone + projection MLP) to z1, z2; a
prediction MLP h maps them to p1, p2; the loss pulls p1 towards z2 and p2 towards z1 with the
target branch stopped:

    L = 1/2 D(p1, stopgrad(z2)) + 1/2 D(p2, stopgrad(z1)),   D(p, z) = -cos(p, z)    (Eq. 3-4)

Every ablation of the paper is a field of :class:`SimSiamConfig`, and so is the multi-step
alternation of its hypothesis (Sec. 5.2): the targets come from a frozen copy of f that is set to
the online f every k steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from siamkit.config import MethodConfig
from siamkit.encoders import Encoder
from siamkit.errors import ConfigError
from siamkit.heads import prediction_mlp, projection_mlp
from siamkit.losses import NEGATIVE_SIMILARITY_LOSSES
from siamkit.methods.base import Method, require_at_least_one
from siamkit.methods.momentum import momentum_copy, update_ema


@dataclass
class SimSiamConfig(MethodConfig):
    """SimSiam's heads, loss and ablation switches.

    Attributes:
        proj_dim: Output width of the projection MLP, 2048 [Sec. 4.1].
        proj_hidden_dim: Hidden width of the projection MLP, 2048 [Sec. 4.1].
        proj_layers: Projection MLP depth: 3 on ImageNet [Sec. 4.1], 2 on CIFAR [Appendix D].
        pred_hidden_dim: Bottleneck width of the prediction MLP, 512 = 2048/4 [Sec. 4.1].
        stop_gradient: Detach the target branch. Off, the output collapses to a constant
            [Sec. 4.1, Fig. 2].
        predictor: ``learned``; ``none`` (h = identity; collapses, Table 1a); ``fixed_random``
            (h frozen at random init; does not learn, Table 1b).
        fixed_predictor_lr: Keep the predictor's lr constant instead of decaying it (68.1% vs
            67.7%, Table 1c); the default recipe.
        loss_symmetry: ``symmetric`` (Eq. 4); ``asymmetric`` (only D(p1, z2); 64.8% vs 68.1%);
            ``asymmetric_2x`` (asymmetric, two pairs of views per image; 67.3%) [Sec. 4.6, its
            unnumbered table].
        similarity: ``cosine`` (Eq. 1) or ``cross_entropy`` (softmax over channels;
            63.2% vs 68.1%) [Sec. 4.5, its unnumbered table].
        bn_placement: Where the MLPs have BatchNorm [Table 3]: ``none`` (34.6%), ``hidden``
            (hidden layers of both MLPs, 67.4%), ``hidden_proj_out`` (+ projection output; the
            default, 68.1%), ``hidden_proj_out_pred_out`` (+ prediction output; unstable).
        proj_output_bn_affine: Learnable scale and shift of the projection output BN. The
            paper's text asks for BN on the output fc [Sec. 4.1], a standard (affine) BN, the
            default; the authors' released code (facebookresearch/simsiam, builder.py) has
            ``BatchNorm1d(dim, affine=False)`` there, which keeps every output channel at unit
            batch variance.
        alternation_steps: k of the multi-step alternation [Sec. 5.2]: theta takes k SGD steps
            against targets eta_x computed by f as it was at the start of those k steps ("we
            pre-compute the eta_x required for all k SGD steps using a single forward pass");
            here a frozen copy of f (backbone and projector) gives the targets and is set to the
            online f every k steps, which yields the same values. 1 is SimSiam itself (the
            target is the current output, detached); 0 sets the copy once per epoch
            ("1-epoch"). ImageNet: 68.1 (1), 68.7 (10), 68.9 (100), 67.0 (1 epoch).
    """

    name: str = "simsiam"
    proj_dim: int = 2048
    proj_hidden_dim: int = 2048
    proj_layers: int = 3
    pred_hidden_dim: int = 512
    stop_gradient: bool = True
    predictor: Literal["learned", "none", "fixed_random"] = "learned"
    fixed_predictor_lr: bool = True
    loss_symmetry: Literal["symmetric", "asymmetric", "asymmetric_2x"] = "symmetric"
    similarity: Literal["cosine", "cross_entropy"] = "cosine"
    bn_placement: Literal["none", "hidden", "hidden_proj_out", "hidden_proj_out_pred_out"] = (
        "hidden_proj_out"
    )
    proj_output_bn_affine: bool = True
    alternation_steps: int = 1

    def __post_init__(self) -> None:
        require_at_least_one(self, "proj_dim", "proj_hidden_dim", "pred_hidden_dim", "proj_layers")
        if self.alternation_steps < 0:
            raise ConfigError(
                f"method.alternation_steps must be 1 (SimSiam), k > 1, or 0 (once per epoch), "
                f"got {self.alternation_steps}"
            )
        if self.alternation_steps != 1 and not self.stop_gradient:
            raise ConfigError(
                "method.alternation_steps other than 1 keeps the targets fixed for several steps, "
                "which is a stop-gradient by construction; set method.stop_gradient=true"
            )


class SimSiam(Method):
    """The SimSiam method: composes backbone, heads, similarity and loss; declares stop-grad.

    Args:
        backbone: An :class:`~siamkit.encoders.Encoder`.
        cfg: Heads and ablation switches.
    """

    config_class = SimSiamConfig

    steps_since_refresh: torch.Tensor
    target_backbone: Encoder
    target_projector: nn.Module

    def __init__(self, backbone: Encoder, cfg: SimSiamConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        bn = cfg.bn_placement
        self.projector = projection_mlp(
            backbone.num_features,
            cfg.proj_hidden_dim,
            cfg.proj_dim,
            cfg.proj_layers,
            hidden_bn=bn != "none",
            output_bn=bn in ("hidden_proj_out", "hidden_proj_out_pred_out"),
            output_bn_affine=cfg.proj_output_bn_affine,
        )
        self.predictor: nn.Module = (
            nn.Identity()
            if cfg.predictor == "none"
            else prediction_mlp(
                cfg.proj_dim,
                cfg.pred_hidden_dim,
                hidden_bn=bn != "none",
                output_bn=bn == "hidden_proj_out_pred_out",
            )
        )
        if cfg.predictor == "fixed_random":
            self.predictor.requires_grad_(False)  # Table 1b: h stays at its random init
        self.loss_fn = NEGATIVE_SIMILARITY_LOSSES[cfg.similarity]
        # asymmetric_2x compares two independent pairs of views per image [Sec. 4.6].
        self.num_views = 4 if cfg.loss_symmetry == "asymmetric_2x" else 2
        # Multi-step alternation [Sec. 5.2]: f as it was k steps ago gives the targets.
        self.alternating = cfg.alternation_steps != 1
        if self.alternating:
            self.target_backbone = momentum_copy(backbone)
            self.target_projector = momentum_copy(self.projector)
            # Steps since the copy was last set (a buffer, so a resumed run keeps its phase).
            self.register_buffer("steps_since_refresh", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def refresh_target(self) -> None:
        """Set the frozen copy of f to the online f: the start of an alternation [Eq. 7-8]."""
        update_ema(self.target_backbone, self.backbone, 0.0)
        update_ema(self.target_projector, self.projector, 0.0)
        self.steps_since_refresh.zero_()

    @torch.no_grad()
    def target_encode(self, x: torch.Tensor) -> torch.Tensor:
        """Eta for ``x``: the frozen copy's ``(B, proj_dim)`` output, a constant."""
        return self.target_projector(self.target_backbone.forward_features(x))

    def training_step(
        self, views: list[torch.Tensor], indices: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Loss of one batch.

        Args:
            views: ``num_views`` tensors ``(B, 3, H, W)``, the same images augmented.
            indices: Unused (no per-image state).

        Returns:
            ``loss`` (scalar) and ``embedding`` (``(B, proj_dim)``, detached z of the first view,
            for the collapse monitor).
        """
        z = [self.encode(v) for v in views]  # each (B, proj_dim)
        p = [self.predictor(zi) for zi in z]
        if self.alternating:  # eta_x from f as it was at the alternation's start [Sec. 5.2]
            target = [self.target_encode(v) for v in views]
        else:  # Stop-gradient on the target branch [Eq. 3]: z is a constant in D(p, z).
            target = [zi.detach() for zi in z] if self.cfg.stop_gradient else z
        d = self.loss_fn
        if self.cfg.loss_symmetry == "symmetric":
            loss = 0.5 * d(p[0], target[1]) + 0.5 * d(p[1], target[0])  # Eq. 4
        elif self.cfg.loss_symmetry == "asymmetric":
            loss = d(p[0], target[1])
        else:  # asymmetric_2x: D(p1, z2) and D(p3, z4), two independent pairs
            loss = 0.5 * d(p[0], target[1]) + 0.5 * d(p[2], target[3])
        return {"loss": loss, "embedding": z[0].detach()}

    def on_step_end(self, progress: float) -> None:
        """Every ``alternation_steps`` steps, a new alternation starts from the online f."""
        if self.alternating and self.cfg.alternation_steps > 1:
            self.steps_since_refresh += 1
            if int(self.steps_since_refresh) >= self.cfg.alternation_steps:
                self.refresh_target()

    def on_epoch_start(self, epoch: int) -> None:
        """``alternation_steps: 0``: one alternation per epoch."""
        if self.alternating and self.cfg.alternation_steps == 0:
            self.refresh_target()

    def param_groups(self) -> list[dict[str, Any]]:
        """Parameters to optimise; the predictor's group keeps a constant lr if so configured."""
        trainable = lambda m: [q for q in m.parameters() if q.requires_grad]  # noqa: E731
        groups: list[dict[str, Any]] = [
            {"params": trainable(self.backbone) + trainable(self.projector), "name": "encoder"}
        ]
        predictor = trainable(self.predictor)
        if predictor:
            groups.append(
                {"params": predictor, "name": "predictor", "fixed_lr": self.cfg.fixed_predictor_lr}
            )
        return groups
