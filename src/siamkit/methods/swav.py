"""SwAV: Swapping Assignments between Views (Caron et al., arXiv:2006.09882).

Every crop x_v of an image goes through the encoder (backbone + projection MLP) to an
l2-normalised embedding z_v, scored against K unit prototypes C. The codes q of the two
full-resolution crops come from their scores by Sinkhorn-Knopp (an equal partition of the batch
among the prototypes, without gradient); every other crop of the image predicts them:

    L = 1/2 sum_{i=1,2} 1/(V-1) sum_{v != i} -q_i . log softmax(z_v^T C / tau)   [Eq. 1-3, Sec. 3.2]

Multi-crop [Sec. 3.2]: 2 crops at the run's size plus ``num_small_crops`` low-resolution crops,
all made by the same batched augmentation (one recipe per view). Small batches [Sec. 3.1]: a
queue of past embeddings enlarges the batch that Sinkhorn partitions.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from siamkit import distributed
from siamkit.config import AugmentConfig, MethodConfig
from siamkit.encoders import Encoder
from siamkit.errors import ConfigError
from siamkit.heads.mlp import projection_mlp
from siamkit.heads.prototypes import Prototypes
from siamkit.losses.swapped_prediction import sinkhorn, swapped_prediction
from siamkit.methods.base import Method, require_at_least_one

#: "two standard resolution crops" [Sec. 3.2]; the codes are computed from these only.
NUM_GLOBAL_CROPS = 2


@dataclass
class SwAVConfig(MethodConfig):
    """SwAV's heads, codes, multi-crop and queue. Defaults: the paper's ImageNet recipe.

    Attributes:
        proj_hidden_dim: Hidden width of the 2-layer projection MLP, 2048 [Appendix A.1].
        proj_dim: Output width of the projection MLP, 128 [Appendix A.1]; l2-normalised.
        num_prototypes: K, 3000 on ImageNet [Appendix A.1].
        temperature: tau of the swapped prediction's softmax, 0.1 [Appendix A.1].
        sinkhorn_epsilon: Entropic regularisation of the codes, 0.05 [Appendix A.1].
        sinkhorn_iterations: 3 [Sec. 3.1, Appendix A.1].
        freeze_prototypes_epochs: Epochs at the start during which the prototypes get no
            gradient: 1, "we freeze the prototypes during the first epoch of training"
            [Appendix A.1].
        num_small_crops: V low-resolution crops, 6 (2x224 + 6x96) [Sec. 3.2, Appendix A.1].
        small_crop_size: Side of the small crops; ``None``: ``96/224`` of the run's view size,
            the paper's ratio (96 px for 224 px).
        global_crop_scale: Crop area range of the two global crops, (0.14, 1) [Appendix A.1].
        small_crop_scale: Crop area range of the small crops, (0.05, 0.14) [Appendix A.1].
        queue_length: Embeddings of past batches (over all processes) added to Sinkhorn's batch;
            0 (off) for the paper's batch of 4096. For batch 256: "around 3K features ... the
            last 15 batches" [Sec. 3.1], i.e. 3840.
        queue_start_epoch: Epoch (0-based) from which the queue is filled; it is used once
            full. 15 in the authors' batch-256 recipe, when the embeddings have stabilised.
    """

    name: str = "swav"
    proj_hidden_dim: int = 2048
    proj_dim: int = 128
    num_prototypes: int = 3000
    temperature: float = 0.1
    sinkhorn_epsilon: float = 0.05
    sinkhorn_iterations: int = 3
    freeze_prototypes_epochs: int = 1
    num_small_crops: int = 6
    small_crop_size: int | None = None
    global_crop_scale: tuple[float, float] = (0.14, 1.0)
    small_crop_scale: tuple[float, float] = (0.05, 0.14)
    queue_length: int = 0
    queue_start_epoch: int = 15

    def __post_init__(self) -> None:
        require_at_least_one(
            self, "proj_hidden_dim", "proj_dim", "num_prototypes", "sinkhorn_iterations"
        )
        for key in ("num_small_crops", "freeze_prototypes_epochs", "queue_length"):
            if getattr(self, key) < 0:
                raise ConfigError(f"method.{key} must be >= 0, got {getattr(self, key)}")
        if self.queue_start_epoch < 0:
            raise ConfigError(
                f"method.queue_start_epoch must be >= 0, got {self.queue_start_epoch}"
            )
        if self.temperature <= 0 or self.sinkhorn_epsilon <= 0:
            raise ConfigError(
                "method.temperature and method.sinkhorn_epsilon must be positive "
                f"(SwAV: 0.1 and 0.05), got {self.temperature} and {self.sinkhorn_epsilon}"
            )
        if self.small_crop_size is not None and self.small_crop_size < 4:
            raise ConfigError(f"method.small_crop_size must be >= 4, got {self.small_crop_size}")
        for key in ("global_crop_scale", "small_crop_scale"):
            lo, hi = getattr(self, key)
            if not 0.0 < lo <= hi <= 1.0:
                raise ConfigError(f"method.{key} must satisfy 0 < min <= max <= 1, got {(lo, hi)}")


class EmbeddingQueue(nn.Module):
    """Embeddings of the global crops of past batches, newest first [Sec. 3.1, small batches].

    Args:
        num_crops: Crops that give codes (one queue each, as in the authors' code).
        length: Rows per crop.
        dim: Embedding width.
    """

    def __init__(self, num_crops: int, length: int, dim: int) -> None:
        super().__init__()
        self.keys: torch.Tensor
        self.filled: torch.Tensor
        self.register_buffer("keys", torch.zeros(num_crops, length, dim))  # (C, L, D)
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))  # rows holding data

    @torch.no_grad()
    def push(self, z: torch.Tensor) -> None:
        """Prepend a batch ``(C, B, D)`` of embeddings, dropping the oldest rows."""
        length = self.keys.shape[1]
        n = min(z.shape[1], length)
        self.keys.copy_(torch.cat([z[:, :n].to(self.keys), self.keys[:, : length - n]], dim=1))
        self.filled.fill_(min(int(self.filled) + n, length))

    def newest(self, n: int) -> torch.Tensor | None:
        """The ``n`` newest rows ``(C, n, D)`` once that many were pushed, else ``None``."""
        return self.keys[:, :n] if 0 < n <= int(self.filled) else None


class SwAV(Method):
    """The SwAV method: multi-crop embeddings, prototypes, Sinkhorn codes, swapped prediction.

    Args:
        backbone: An :class:`~siamkit.encoders.Encoder`.
        cfg: Heads, codes, multi-crop and queue settings.
    """

    config_class = SwAVConfig

    skips_parameters = True  # the prototypes get no gradient while frozen (first epoch)

    def __init__(self, backbone: Encoder, cfg: SwAVConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        # "a 2-layer MLP projection head" of 2048 hidden units and output 128 [Appendix A.1];
        # BN + ReLU after the hidden fc, none after the output, as in the authors' code.
        self.projector = projection_mlp(
            backbone.num_features,
            cfg.proj_hidden_dim,
            cfg.proj_dim,
            num_layers=2,
            hidden_bn=True,
            output_bn=False,
        )
        self.prototypes = Prototypes(cfg.proj_dim, cfg.num_prototypes)
        self.queue = (
            EmbeddingQueue(NUM_GLOBAL_CROPS, cfg.queue_length, cfg.proj_dim)
            if cfg.queue_length > 0
            else None
        )
        self.num_views = NUM_GLOBAL_CROPS + cfg.num_small_crops
        self.epoch = 0
        self.prototypes_frozen = cfg.freeze_prototypes_epochs > 0

    def view_recipes(self, base: AugmentConfig) -> list[AugmentConfig]:
        """2 global crops at ``base.size`` and ``num_small_crops`` small ones [Sec. 3.2]."""
        cfg = self.cfg
        small_size = cfg.small_crop_size or max(4, round(base.size * 96 / 224))
        global_crop = dataclasses.replace(base, crop_scale=cfg.global_crop_scale)
        small_crop = dataclasses.replace(base, size=small_size, crop_scale=cfg.small_crop_scale)
        return [global_crop] * NUM_GLOBAL_CROPS + [small_crop] * cfg.num_small_crops

    def on_epoch_start(self, epoch: int) -> None:
        """The prototypes are frozen (no gradient) during the first epoch(s) [Appendix A.1]."""
        self.epoch = epoch
        self.prototypes_frozen = epoch < self.cfg.freeze_prototypes_epochs

    def embed(self, views: list[torch.Tensor]) -> list[torch.Tensor]:
        """Unit embeddings ``(B, proj_dim)`` (float32) of every crop.

        As in the authors' code, crops of one resolution go through the backbone together and
        all crops through the projector together (its BN sees every crop).
        """
        by_size = itertools.groupby(views, key=lambda v: v.shape[-2:])
        h = torch.cat([self.backbone.forward_features(torch.cat(list(g))) for _, g in by_size])
        z = F.normalize(self.projector(h).float(), dim=1)  # (num_views * B, proj_dim)
        return list(z.split(views[0].shape[0]))

    def training_step(
        self, views: list[torch.Tensor], indices: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Loss of one batch.

        Args:
            views: The 2 global crops, then the small crops, each ``(B, 3, H_v, W_v)``.
            indices: Unused.

        Returns:
            ``loss`` (scalar) and ``embedding`` (``(B, proj_dim)``, detached unit embedding of
            the first global crop, for the collapse monitor).
        """
        cfg = self.cfg
        # 1. Prototypes back onto the unit sphere before every forward [authors' code, App. A.1].
        self.prototypes.normalize_()
        # 2. Unit embeddings of every crop.
        z = self.embed(views)  # num_views x (B, proj_dim)
        # fp32 from here on: Sinkhorn amplifies score errors by 1/epsilon = 20.
        with torch.autocast(z[0].device.type, enabled=False):
            # 3. Scores (cosines z^T c_k); the prototypes get no gradient while frozen.
            c: torch.Tensor = self.prototypes.weight  # (K, proj_dim)
            if self.prototypes_frozen:
                c = c.detach()  # "we freeze the prototypes during the first epoch" [App. A.1]
            scores = [zi @ c.t() for zi in z]  # num_views x (B, K)
            # 4. Codes of the global crops only, without gradient [Sec. 3.2]; the queue's
            #    scores (current prototypes) are prepended, only the batch's codes are kept.
            queue = self.queue if self.epoch >= cfg.queue_start_epoch else None
            with torch.no_grad():
                # Under DDP each process holds its share of the queue [authors' code].
                n_queued = cfg.queue_length // distributed.world_size()
                queued = queue.newest(n_queued) if queue is not None else None
                codes = []
                for i in range(NUM_GLOBAL_CROPS):
                    s = scores[i].detach()
                    if queued is not None:
                        s = torch.cat([queued[i] @ c.detach().t(), s])  # (L + B, K)
                    q = sinkhorn(s, cfg.sinkhorn_epsilon, cfg.sinkhorn_iterations)
                    codes.append(q[-len(scores[i]) :])  # (B, K)
            # 5. The batch's global embeddings join the queue (after it was used).
            if queue is not None:
                queue.push(torch.stack(z[:NUM_GLOBAL_CROPS]).detach())
            # 6. Every other crop predicts each global crop's code [Eq. 1-3, Sec. 3.2].
            loss = swapped_prediction(scores, codes, cfg.temperature)
        return {"loss": loss, "embedding": z[0].detach()}
