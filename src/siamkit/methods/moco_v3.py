"""MoCo v3 (Chen, Xie & He, arXiv:2104.02057).

A query encoder (backbone, projector, predictor) is trained by gradient; a momentum encoder
(backbone and projector, no predictor) is its EMA copy, updated by ``update_ema`` in
:meth:`MoCoV3.on_step_end` with a cosine-scheduled momentum and run under ``torch.no_grad()``:

    theta_k <- m theta_k + (1 - m) theta_q,   m: 0.99 -> 1            [MoCo, Eq. 2; v3, Sec. 4]

No queue: the symmetric loss ctr(q1, k2) + ctr(q2, k1) takes the other keys of the batch as
negatives [MoCo v3, Alg. 1]. MoCo v2 is in :mod:`siamkit.methods.moco_v2`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from siamkit.config import MethodConfig
from siamkit.encoders import Encoder
from siamkit.errors import ConfigError
from siamkit.heads import mlp, projection_mlp
from siamkit.losses import ctr
from siamkit.methods.base import Method, require_at_least_one
from siamkit.methods.momentum import cosine_momentum, momentum_copy, update_ema


@dataclass
class MoCoV3Config(MethodConfig):
    """MoCo v3's heads, momentum schedule and temperature (ResNet setting).

    Attributes:
        proj_layers: Projection MLP depth, 3 [MoCo v3, Sec. 3 / Appendix: "The projection head
            is a 3-layer MLP"]; the released code builds 2 for ResNet-50 and 3 for ViT.
        proj_hidden_dim: Hidden width of both MLPs, 4096 [MoCo v3, Appendix].
        proj_dim: Output width of both MLPs, 256 [MoCo v3, Appendix].
        pred_hidden_dim: Hidden width of the 2-layer predictor, 4096 [MoCo v3, Appendix].
        momentum: Base momentum 0.99, raised to 1 by a half-cycle cosine over training
            [MoCo v3, Sec. 4 and the released code's ``--moco-m-cos``].
        temperature: tau of ctr. The released code's default is 1.0 for ResNet-50 (main_moco.py,
            ``--moco-t``; its ResNet recipes keep it) and 0.2 for ViT (its ViT recipes pass
            ``--moco-t=.2``); 0.2 also suits small batches and is what the CIFAR recipes use.
    """

    name: str = "moco_v3"
    proj_layers: int = 3
    proj_hidden_dim: int = 4096
    proj_dim: int = 256
    pred_hidden_dim: int = 4096
    momentum: float = 0.99
    temperature: float = 1.0

    def __post_init__(self) -> None:
        require_at_least_one(self, "proj_dim", "proj_hidden_dim", "pred_hidden_dim")
        if self.proj_layers < 2:
            raise ConfigError(f"method.proj_layers must be at least 2, got {self.proj_layers}")
        if not 0.0 <= self.momentum <= 1.0:
            raise ConfigError(f"method.momentum must be in [0, 1], got {self.momentum}")
        if self.temperature <= 0:
            raise ConfigError(f"method.temperature must be positive, got {self.temperature}")


class MoCoV3(Method):
    """MoCo v3: query encoder (backbone, projector, predictor), momentum encoder without predictor.

    "In MoCo v3, all layers in both MLPs have BN" [MoCo v3, Appendix]: hidden layers fc-BN-ReLU,
    output fc-BN; the output BNs have no affine, as in the released code. :meth:`Method.encode`
    gives the query projection before the predictor, :meth:`encode_key` the momentum encoder's.

    Args:
        backbone: An :class:`~siamkit.encoders.Encoder`.
        cfg: Heads, momentum and temperature.
    """

    config_class = MoCoV3Config

    def __init__(self, backbone: Encoder, cfg: MoCoV3Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        self.projector = projection_mlp(
            backbone.num_features,
            cfg.proj_hidden_dim,
            cfg.proj_dim,
            cfg.proj_layers,
            hidden_bn=True,
            output_bn=True,
            output_bn_affine=False,
        )
        self.predictor = mlp(
            [cfg.proj_dim, cfg.pred_hidden_dim, cfg.proj_dim],
            output_bn=True,
            output_bn_affine=False,
        )
        self.key_backbone = momentum_copy(backbone)  # the momentum encoder: no predictor
        self.key_projector = momentum_copy(self.projector)

    def encode_key(self, x: torch.Tensor) -> torch.Tensor:
        """Momentum encoder (backbone + projector, no predictor): ``(B, 3, H, W)`` -> ``(B, D)``."""
        return self.key_projector(self.key_backbone.forward_features(x))

    def training_step(
        self, views: list[torch.Tensor], indices: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Symmetric loss ctr(q1, k2) + ctr(q2, k1) of one batch [MoCo v3, Alg. 1].

        Args:
            views: Two tensors ``(B, 3, H, W)``, the same images augmented twice.
            indices: Unused.

        Returns:
            ``loss`` (scalar) and ``embedding`` (``(B, proj_dim)``, detached projection of view 1).
        """
        z1, z2 = (self.encode(v) for v in views)
        q1, q2 = self.predictor(z1), self.predictor(z2)
        with torch.no_grad():  # the momentum encoder gets no gradient
            k1, k2 = (self.encode_key(v) for v in views)
        tau = self.cfg.temperature
        loss = ctr(q1, k2.detach(), tau) + ctr(q2, k1.detach(), tau)
        return {"loss": loss, "embedding": z1.detach()}

    def momentum_at(self, progress: float) -> float:
        """The momentum m at ``progress`` in [0, 1]: 0.99 -> 1, a half-cosine [MoCo v3, Sec. 4]."""
        return cosine_momentum(progress, self.cfg.momentum)

    def on_step_end(self, progress: float) -> None:
        """Momentum update of the momentum encoder with the scheduled m."""
        m = self.momentum_at(progress)
        update_ema(self.key_backbone, self.backbone, m)
        update_ema(self.key_projector, self.projector, m)
