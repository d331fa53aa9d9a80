"""SimSiam's moving-average variant: the predictor replaced by a per-image average of targets.

SimSiam's hypothesis (Chen & He, arXiv:2011.10566, Sec. 5) reads it as an alternation between the
network theta and one target eta_x per image, min E||F_theta(T(x)) - eta_x||^2 (Eq. 5). SimSiam
takes one step of each: eta_x <- F_theta_t(T'(x)), i.e. the other view's output, under
stop-gradient ("One-step alternation", Eq. 10). The predictor h is then argued to stand in for
the expectation over augmentations E_T[F(T(x))] that this one sample ignores ("Predictor"). The
proof of concept removes h and estimates the expectation by a moving average instead:

    eta_x <- m * eta_x + (1 - m) * F_theta_t(T'(x)),   m = 0.8,   loss D(F_theta(T(x)), eta_x)

which trains (55.0% ImageNet accuracy) where the same network without h and without the average
collapses (0.1%, Table 1a). ``moving_average: false`` is that collapsing baseline.

Here, with SimSiam's two views and symmetrised loss (Eq. 4), each view's target blends the table
with the *other* view's output (T' is the other view, as in Eq. 10), so that m = 0 (and
``moving_average: false``) is exactly SimSiam without predictor; the table then stores the mean
of the two targets, m * eta_x + (1 - m) * (z1 + z2) / 2.

How eta starts the paper does not say. Two readings are selectable (``initial_targets``):
- ``initial_network`` (default): eta^0_x is the output of the network before training,
  F_theta_0, as the alternation of Eq. 7-8 starts from theta_0: a frozen copy of the initial
  encoder writes an image's row on its first visit (the mean over its views), and the step then
  blends it as any other row. The copy is dropped once every row has been written (in epoch 1).
- ``first_visit``: an empty row takes the current output, m = 0. Every first visit is then a
  step of SimSiam without predictor, so the whole first epoch is the collapsing baseline of
  Table 1a, and the average starts from collapsed outputs (docs/results.md records how this
  reading fares on the CIFAR-10 CPU budget).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from siamkit import distributed
from siamkit.config import MethodConfig
from siamkit.encoders import Encoder
from siamkit.errors import ConfigError
from siamkit.heads import projection_mlp
from siamkit.losses import negative_cosine
from siamkit.methods.base import Method, require_at_least_one


@dataclass
class SimSiamEMAConfig(MethodConfig):
    """SimSiam without predictor, with per-image moving-average targets [Sec. 5].

    Attributes:
        proj_dim: Output width of the projection MLP, 2048 [SimSiam, Sec. 4.1].
        proj_hidden_dim: Hidden width of the projection MLP, 2048 [Sec. 4.1].
        proj_layers: Projection MLP depth: 3 on ImageNet [Sec. 4.1], 2 on CIFAR [Appendix D].
        moving_average: Targets are per-image moving averages (the proof of concept, Sec. 5,
            "Predictor"); off, the target is the other view's output, detached: SimSiam without
            predictor, which collapses [Table 1a].
        momentum: m of the average, 0.8 [Sec. 5].
        initial_targets: How eta starts, which the paper leaves open: ``initial_network``
            (eta^0 = the output of the network before training, Eq. 7-8 started at theta_0) or
            ``first_visit`` (the current output at an image's first visit; see the module
            docstring for why that collapses in the first epoch).
    """

    name: str = "simsiam_ema"
    proj_dim: int = 2048
    proj_hidden_dim: int = 2048
    proj_layers: int = 3
    moving_average: bool = True
    momentum: float = 0.8
    initial_targets: str = "initial_network"

    def __post_init__(self) -> None:
        if self.initial_targets not in ("initial_network", "first_visit"):
            raise ConfigError(
                f"method.initial_targets must be 'initial_network' or 'first_visit', "
                f"got {self.initial_targets!r}"
            )
        require_at_least_one(self, "proj_dim", "proj_hidden_dim", "proj_layers")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(
                f"method.momentum must be in [0, 1), got {self.momentum} (the paper uses 0.8)"
            )


class SimSiamEMA(Method):
    """Encoder f (backbone + projection MLP), no predictor, a per-image table of targets.

    Buffers (in the state dict, so checkpoints keep them): ``targets`` ``(num_images, proj_dim)``
    holds eta; ``seen`` ``(num_images,)`` marks the rows written at least once. Both are empty
    until :meth:`setup` allocates them.

    Args:
        backbone: An :class:`~siamkit.encoders.Encoder`.
        cfg: Heads and the moving average.
    """

    config_class = SimSiamEMAConfig

    targets: torch.Tensor
    seen: torch.Tensor

    def __init__(self, backbone: Encoder, cfg: SimSiamEMAConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        self.projector = projection_mlp(  # SimSiam's f: BN on every layer, output included
            backbone.num_features,
            cfg.proj_hidden_dim,
            cfg.proj_dim,
            cfg.proj_layers,
            hidden_bn=True,
            output_bn=True,
        )
        self.register_buffer("targets", torch.zeros(0, cfg.proj_dim))
        self.register_buffer("seen", torch.zeros(0, dtype=torch.bool))

        # The encoder at theta_0 for ``initial_targets: initial_network``: a plain tuple, so it
        # is neither a parameter nor in the state dict (a resumed run rebuilds it from the seeded
        # initialisation in setup(), before the checkpoint's weights are loaded).
        self._initial: tuple[Encoder, nn.Module] | None = None

    def setup(self, num_images: int) -> None:
        """Allocate one target per training image (zeros, not yet seen).

        Also keeps a frozen copy of the initial encoder when eta^0 comes from it.
        """
        device = self.targets.device
        self.targets = torch.zeros(num_images, self.cfg.proj_dim, device=device)
        self.seen = torch.zeros(num_images, dtype=torch.bool, device=device)
        self._initial = None
        if self.cfg.moving_average and self.cfg.initial_targets == "initial_network":
            backbone, projector = copy.deepcopy(self.backbone), copy.deepcopy(self.projector)
            backbone.requires_grad_(False)
            projector.requires_grad_(False)
            self._initial = (backbone, projector)

    @torch.no_grad()
    def write_initial_targets(self, indices: torch.Tensor, views: list[torch.Tensor]) -> None:
        """eta^0_x = mean over the views of F_theta_0(view) for the batch's rows never written.

        The frozen initial encoder runs in the online network's mode (batch statistics while
        training). Under DDP the rows and outputs are gathered, as in :meth:`update_targets`.
        """
        assert self._initial is not None
        backbone, projector = self._initial
        backbone = backbone.to(views[0].device).train(self.training)
        projector = projector.to(views[0].device).train(self.training)
        self._initial = (backbone, projector)
        features = [backbone.forward_features(v) for v in views]
        eta0 = torch.stack([projector(h).float() for h in features]).mean(dim=0)  # (B, D)
        indices = distributed.gather_no_grad(indices)
        eta0 = distributed.gather_no_grad(eta0.contiguous())  # (global B, proj_dim)
        new = ~self.seen[indices]
        self.targets[indices[new]] = eta0[new]
        self.seen[indices[new]] = True

    def on_epoch_start(self, epoch: int) -> None:
        """Drop the initial encoder after the first epoch.

        The first epoch has visited every image but the few that ``drop_last`` left out; those
        start at their first visit instead.
        """
        if epoch >= 1:
            self._initial = None

    @torch.no_grad()
    def blend(self, indices: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``m * eta_x + (1 - m) * z`` for the images ``indices`` (``(B,)``), ``z`` ``(B, D)``.

        ``z`` itself for rows never written. A constant: no gradient flows into it.
        """
        m = torch.where(self.seen[indices], self.cfg.momentum, 0.0).unsqueeze(1)  # (B, 1)
        return m * self.targets[indices] + (1 - m) * z.detach().float()

    @torch.no_grad()
    def update_targets(self, indices: torch.Tensor, z: torch.Tensor) -> None:
        """``eta_x <- m * eta_x + (1 - m) * z_x`` for the batch's images only [Sec. 5].

        Under DDP the rows and outputs of every process are gathered first, so that every copy
        of the table sees the whole global batch.
        """
        indices = distributed.gather_no_grad(indices)
        z = distributed.gather_no_grad(z.detach().float().contiguous())
        self.targets[indices] = self.blend(indices, z)
        self.seen[indices] = True

    def training_step(
        self, views: list[torch.Tensor], indices: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Loss of one batch.

        Args:
            views: Two tensors ``(B, 3, H, W)``, views of the same images.
            indices: ``(B,)`` positions of the images in the training set (rows of the table);
                required with ``moving_average``.

        Returns:
            ``loss`` (scalar) and ``embedding`` (``(B, proj_dim)``, detached z of view 1).
        """
        z1, z2 = (self.encode(v) for v in views)  # each (B, proj_dim)
        if self.cfg.moving_average:
            if indices is None or self.targets.shape[0] == 0:
                raise ValueError(
                    "simsiam_ema keeps one target per image: call setup(num_images) before "
                    "training and pass the images' indices to training_step"
                )
            indices = indices.to(self.targets.device)
            if self._initial is not None:  # epoch 1: rows never written start at eta^0
                self.write_initial_targets(indices, views)
            # Each view's target: the table blended with the other view's output [Sec. 5].
            target1, target2 = self.blend(indices, z2), self.blend(indices, z1)
            self.update_targets(indices, (z1 + z2).detach() / 2)  # eta_x <- mean of the two
        else:  # SimSiam without predictor: the other view's output, stop-gradient [Table 1a]
            target1, target2 = z2.detach(), z1.detach()
        # D(z, eta_x) with eta_x a constant, symmetrised as SimSiam's Eq. 4.
        loss = 0.5 * negative_cosine(z1, target1) + 0.5 * negative_cosine(z2, target2)
        return {"loss": loss, "embedding": z1.detach()}
