"""MINE as a pretraining objective: maximise a neural lower bound on I(z_a; z_b).

Mutual Information Neural Estimation (Belghazi et al., arXiv:1801.04062) trains a statistics
network T to tighten a lower bound on mutual information; since the bound is differentiable in
its inputs too, an encoder can be trained to raise it (Sec. 5 of the paper maximises it for a
generator). Here the two random variables are the projections of two augmented views of one
image: the encoder f and head g map both views (shared weights), T scores the pair, and the loss
is minus the bound. Joint samples are ``(z_a[i], z_b[i])``; samples of the product of the
marginals pair ``z_a[i]`` with the ``z_b`` of another image of the batch.

SimCLR's NT-Xent is the InfoNCE bound with a fixed critic (cosine / temperature);
``method.bound: infonce`` gives InfoNCE with the learned critic T instead, on the same encoder.
No stop-gradient: both views and T get gradient from one loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from siamkit.config import MethodConfig
from siamkit.encoders import Encoder
from siamkit.errors import ConfigError
from siamkit.heads import projection_mlp
from siamkit.heads.statistics import StatisticsNetwork
from siamkit.losses.mi_bounds import BOUNDS, Bound, MutualInformation
from siamkit.methods.base import Method, require_at_least_one


@dataclass
class MINEConfig(MethodConfig):
    """The projection head, the statistics network and the bound.

    Attributes:
        proj_layers: Depth of the projection head g (SimCLR's 2-layer head, arXiv:2002.05709,
            Sec. 2.1, so that the two objectives share an encoder).
        proj_hidden_dim: Hidden width of g.
        proj_dim: Output width of g, the input of T on each side.
        head_bn: BatchNorm after every fc of g, the output one included (as SimCLR's head): it
            keeps the projections at unit scale, where T trains well.
        bound: ``mine`` (Donsker-Varadhan bound with the bias-corrected gradient of Algorithm 1),
            ``dv``, ``mine_f`` or ``infonce``.
        critic_hidden_dim: Width of T's hidden layers.
        critic_depth: T's hidden layers.
        ema_rate: Rate of the moving average of ``E_Q[e^T]`` (``mine``); Algorithm 1 leaves it
            open, 0.01 averages over about 100 batches.
        normalize: T reads each projection l2-normalised and scaled by sqrt(proj_dim) (unit
            scale a coordinate), as NT-Xent's cosine critic reads directions only. The bound
            then measures what the two views' directions share, and T's inputs stay bounded, so
            the exponentials in the bound cannot grow with the projections' norm: with raw
            projections the CIFAR-10 CPU recipe (SimCLR's LARS, lr 0.4 per 256) drove the bound
            to -1e24 within the first epoch, twice (docs/results.md).
    """

    name: str = "mine"
    proj_layers: int = 2
    proj_hidden_dim: int = 2048
    proj_dim: int = 128
    head_bn: bool = True
    bound: Bound = "mine"
    critic_hidden_dim: int = 512
    critic_depth: int = 1
    ema_rate: float = 0.01
    normalize: bool = True

    def __post_init__(self) -> None:
        require_at_least_one(self, "proj_dim", "proj_hidden_dim", "proj_layers")
        require_at_least_one(self, "critic_hidden_dim", "critic_depth")
        if self.bound not in BOUNDS:
            raise ConfigError(
                f"method.bound must be one of {', '.join(BOUNDS)}, got {self.bound!r}"
            )
        if not 0.0 < self.ema_rate <= 1.0:
            raise ConfigError(f"method.ema_rate must be in (0, 1], got {self.ema_rate}")


class MINE(Method):
    """Backbone f, projection head g, statistics network T on the two views' projections.

    Args:
        backbone: An :class:`~siamkit.encoders.Encoder`.
        cfg: Head, statistics network and bound.
    """

    config_class = MINEConfig

    def __init__(self, backbone: Encoder, cfg: MINEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        self.projector = projection_mlp(
            backbone.num_features,
            cfg.proj_hidden_dim,
            cfg.proj_dim,
            cfg.proj_layers,
            hidden_bn=cfg.head_bn,
            output_bn=cfg.head_bn,
        )
        # No bias on the score where the bound ignores a constant shift of T (every bound but
        # MINE-f): it would carry nothing, yet MINE's corrected gradient still moves it, and an
        # optimiser that steps biases without adapting them (LARS) moves it far.
        critic = StatisticsNetwork(
            cfg.proj_dim,
            cfg.proj_dim,
            cfg.critic_hidden_dim,
            cfg.critic_depth,
            output_bias=cfg.bound == "mine_f",
        )
        # The statistics network and the moving average of E_Q[e^T] (a buffer: saved and resumed).
        self.mi = MutualInformation(critic, cfg.bound, cfg.ema_rate)

    def critic_input(self, z: torch.Tensor) -> torch.Tensor:
        """What T reads of ``(B, D)`` projections: ``sqrt(D) z / ||z||`` (``normalize``) or z."""
        return F.normalize(z.float(), dim=1) * z.shape[1] ** 0.5 if self.cfg.normalize else z

    def training_step(
        self, views: list[torch.Tensor], indices: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Loss of one batch.

        Args:
            views: Two tensors ``(B, 3, H, W)``, the same images augmented twice.
            indices: Unused (no per-image state).

        Returns:
            ``loss`` (minus the bound), ``mi`` (the bound, detached, in nats) and ``embedding``
            (``(B, proj_dim)``, detached z of the first view).
        """
        z_a, z_b = (self.encode(v) for v in views)  # (B, proj_dim) each, both with gradient
        x, z = self.critic_input(z_a), self.critic_input(z_b)
        bound = self.mi(x, z)  # marginal pairs: x[i] with z[j], j != i
        return {"loss": -bound, "mi": bound.detach(), "embedding": z_a.detach()}
