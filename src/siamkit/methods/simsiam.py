"""SimSiam: Exploring Simple Siamese Representation Learning (Chen & He, arXiv:2011.10566).

Two views x1, x2 of each image go through one encoder f (backbone + projection MLP) to z1, z2; a
prediction MLP h maps them to p1, p2; the loss pulls p1 towards z2 and p2 towards z1 with the
target branch stopped:

    L = 1/2 D(p1, stopgrad(z2)) + 1/2 D(p2, stopgrad(z1)),   D(p, z) = -cos(p, z)    (Eq. 3-4)

Every ablation of the paper is a field of :class:`SimSiamConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from siamkit.config import MethodConfig
from siamkit.encoders import Encoder
from siamkit.heads import prediction_mlp, projection_mlp
from siamkit.losses import NEGATIVE_SIMILARITY_LOSSES
from siamkit.methods.base import Method, require_at_least_one


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
            66.7%, Table 1c); the default recipe.
        loss_symmetry: ``symmetric`` (Eq. 4); ``asymmetric`` (only D(p1, z2); 64.8% vs 68.1%);
            ``asymmetric_2x`` (asymmetric, two pairs of views per image; 67.3%) [Table 5].
        similarity: ``cosine`` (Eq. 1) or ``cross_entropy`` (softmax over channels;
            63.2% vs 68.1%) [Sec. 4.4, Table 4].
        bn_placement: Where the MLPs have BatchNorm [Table 3]: ``none`` (34.6%), ``hidden``
            (hidden layers of both MLPs, 67.4%), ``hidden_proj_out`` (+ projection output; the
            default, 68.1%), ``hidden_proj_out_pred_out`` (+ prediction output; unstable).
        proj_output_bn_affine: Learnable scale and shift of the projection output BN. The
            paper's text asks for BN on the output fc [Sec. 4.1], a standard (affine) BN, the
            default; the authors' released code (facebookresearch/simsiam, builder.py) has
            ``BatchNorm1d(dim, affine=False)`` there, which keeps every output channel at unit
            batch variance.
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

    def __post_init__(self) -> None:
        require_at_least_one(self, "proj_dim", "proj_hidden_dim", "pred_hidden_dim", "proj_layers")


class SimSiam(Method):
    """The SimSiam method: composes backbone, heads, similarity and loss; declares stop-grad.

    Args:
        backbone: An :class:`~siamkit.encoders.Encoder`.
        cfg: Heads and ablation switches.
    """

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
        # asymmetric_2x compares two independent pairs of views per image [Table 5].
        self.num_views = 4 if cfg.loss_symmetry == "asymmetric_2x" else 2

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
        # Stop-gradient on the target branch [Eq. 3]: z is a constant in D(p, z).
        target = [zi.detach() for zi in z] if self.cfg.stop_gradient else z
        d = self.loss_fn
        if self.cfg.loss_symmetry == "symmetric":
            loss = 0.5 * d(p[0], target[1]) + 0.5 * d(p[1], target[0])  # Eq. 4
        elif self.cfg.loss_symmetry == "asymmetric":
            loss = d(p[0], target[1])
        else:  # asymmetric_2x: D(p1, z2) and D(p3, z4), two independent pairs
            loss = 0.5 * d(p[0], target[1]) + 0.5 * d(p[2], target[3])
        return {"loss": loss, "embedding": z[0].detach()}

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
