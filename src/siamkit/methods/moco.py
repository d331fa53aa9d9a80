"""MoCo v2 (Chen et al., arXiv:2003.04297, on MoCo, He et al., arXiv:1911.05722) and MoCo v3
(Chen, Xie & He, arXiv:2104.02057).

A query encoder f_q is trained by gradient; a key encoder f_k is its momentum (EMA) copy,
updated by ``update_ema`` in :meth:`on_step_end` and run under ``torch.no_grad()``:

    theta_k <- m theta_k + (1 - m) theta_q                          [MoCo, Eq. 2]

MoCo v2: InfoNCE of q against its key k+ (the other view) and a queue of K earlier keys, which
the batch's keys then enter [MoCo, Alg. 1]. MoCo v3: no queue; a predictor on the query side and
the symmetric loss ctr(q1, k2) + ctr(q2, k1) with the other keys of the batch as negatives
[MoCo v3, Alg. 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from siamkit import distributed
from siamkit.config import MethodConfig
from siamkit.errors import ConfigError
from siamkit.heads import mlp
from siamkit.losses import ctr, info_nce
from siamkit.methods.base import Method
from siamkit.methods.momentum import cosine_momentum, momentum_copy, update_ema


class Queue(nn.Module):
    """MoCo's dictionary: a FIFO of the last ``size`` keys [MoCo, Sec. 3.2].

    The keys live in a buffer with a write pointer, so a state dict saves and restores them.
    It starts with random unit vectors, as in the reference code.

    Args:
        size: Number of keys K.
        dim: Key width D.
    """

    keys: torch.Tensor
    ptr: torch.Tensor

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("keys", F.normalize(torch.randn(size, dim), dim=1))  # (K, D)
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def push(self, keys: torch.Tensor) -> None:
        """Enqueue ``keys`` ``(B, D)`` in order, overwriting the oldest (wrapping around)."""
        size, n = self.keys.shape[0], keys.shape[0]
        if n > size:
            raise ValueError(f"cannot push {n} keys into a queue of {size}")
        slots = (int(self.ptr) + torch.arange(n, device=self.keys.device)) % size
        self.keys[slots] = keys.detach().to(self.keys.dtype)
        self.ptr.fill_((int(self.ptr) + n) % size)


# --------------------------------------------------------------------------------------------
# MoCo v2
# --------------------------------------------------------------------------------------------
@dataclass
class MoCoV2Config(MethodConfig):
    """MoCo v2's heads, dictionary and BatchNorm handling.

    Attributes:
        proj_hidden_dim: Hidden width of the 2-layer MLP head (ReLU, no BN), 2048 [MoCo v2,
            Sec. 2: "a 2-layer MLP head (hidden layer 2048-d, with ReLU)"].
        proj_dim: Output width (key/query dimension), 128 [MoCo, Sec. 4].
        queue_size: Negatives K, 65536 on ImageNet [MoCo, Sec. 4]. On CIFAR-10 the official
            demo (facebookresearch/moco, colab/moco_cifar10_demo.ipynb) uses 4096, noting the
            accuracy saturates there. Must be smaller than the training set (:meth:`setup`).
        momentum: m of the key encoder's EMA, 0.999 [MoCo, Sec. 3.2 and 4.1].
        temperature: tau, 0.2 [MoCo v2, Sec. 2] (0.07 in MoCo v1; 0.1 in the CIFAR demo).
        bn: How the key encoder's BatchNorm is kept from cheating [MoCo, Sec. 3.3].
            ``shuffle``: Shuffling BN: the key batch is shuffled across processes before the
            key encoder and unshuffled after, so a query and its key are normalised with
            statistics of different sub-batches. ``sync``: no shuffle; the training loop's
            SyncBatchNorm (``train.sync_batchnorm: true``) normalises over the global batch,
            the alternative MoCo v3 and SimCLR use.
        shuffle_groups: Sub-batches per process that get their own BN statistics (both
            encoders run on each separately; the key batch is shuffled first). With one
            process and 1 group shuffling is a no-op, since BN over a whole batch does not
            depend on its order; the CIFAR demo simulates 8 GPUs on one with SplitBatchNorm
            (``--bn-splits 8``; "without [ShuffleBN it] loses 4% at 800 epochs"). Running
            statistics then follow the groups one after another instead of their average.
        symmetric: Add the swapped loss (query view 2, key view 1) and push both views' keys:
            the CIFAR demo's option; the paper's loss is asymmetric.
    """

    name: str = "moco_v2"
    proj_hidden_dim: int = 2048
    proj_dim: int = 128
    queue_size: int = 65536
    momentum: float = 0.999
    temperature: float = 0.2
    bn: Literal["shuffle", "sync"] = "shuffle"
    shuffle_groups: int = 1
    symmetric: bool = False

    def __post_init__(self) -> None:
        for key in ("proj_dim", "proj_hidden_dim", "queue_size", "shuffle_groups"):
            if getattr(self, key) < 1:
                raise ConfigError(f"method.{key} must be at least 1, got {getattr(self, key)}")
        if not 0.0 <= self.momentum <= 1.0:
            raise ConfigError(f"method.momentum must be in [0, 1], got {self.momentum}")
        if self.temperature <= 0:
            raise ConfigError(f"method.temperature must be positive, got {self.temperature}")
        if self.bn == "sync" and self.shuffle_groups != 1:
            raise ConfigError("method.shuffle_groups applies to bn: shuffle only; set it to 1")


def _grouped(encode, x: torch.Tensor, groups: int) -> torch.Tensor:
    """``encode`` applied to ``groups`` consecutive sub-batches of ``x`` (own BN statistics)."""
    if groups == 1:
        return encode(x)
    return torch.cat([encode(part) for part in x.tensor_split(groups)])


class MoCoV2(Method):
    """MoCo v2: query encoder (backbone + MLP head), its momentum copy, and a queue of keys.

    Args:
        backbone: An :class:`~siamkit.encoders.Encoder`.
        cfg: Heads, dictionary and BN settings.
    """

    def __init__(self, backbone: nn.Module, cfg: MoCoV2Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        dims = [int(backbone.num_features), cfg.proj_hidden_dim, cfg.proj_dim]  # type: ignore[arg-type]
        self.projector = mlp(dims, hidden_bn=False, output_bn=False)  # fc-ReLU-fc [MoCo v2]
        self.key_backbone = momentum_copy(backbone)
        self.key_projector = momentum_copy(self.projector)
        self.queue = Queue(cfg.queue_size, cfg.proj_dim)

    def setup(self, num_images: int) -> None:
        """Reject a queue that would hold the current images' own earlier keys as negatives."""
        if self.cfg.queue_size >= num_images:
            raise ConfigError(
                f"method.queue_size {self.cfg.queue_size} must be smaller than the training set "
                f"({num_images} images): the CIFAR demo uses 4096 for 50,000 images"
            )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Query encoder f_q: ``(B, 3, H, W)`` -> ``(B, proj_dim)``, with gradient."""
        return self.projector(self.backbone.forward_features(x))  # type: ignore[operator]

    def encode_key(self, x: torch.Tensor) -> torch.Tensor:
        """Key encoder f_k (the momentum copy): ``(B, 3, H, W)`` -> ``(B, proj_dim)``."""
        return self.key_projector(self.key_backbone.forward_features(x))  # type: ignore[operator]

    @torch.no_grad()
    def shuffled_keys(self, x: torch.Tensor) -> torch.Tensor:
        """Keys of ``x`` computed with Shuffling BN [MoCo, Sec. 3.3], l2-normalised, no grad.

        The global key batch is permuted (rank 0's permutation), each process encodes its share
        of the permuted batch in ``shuffle_groups`` sub-batches, and the keys are gathered and
        put back in the original order; this process gets its own rows. A no-op with one
        process and one group.
        """
        groups = self.cfg.shuffle_groups
        if distributed.world_size() == 1 and groups == 1:
            return F.normalize(self.encode_key(x).float(), dim=1)
        x_all = distributed.gather_no_grad(x)  # (WB, 3, H, W)
        n_all = x_all.shape[0]
        perm = torch.randperm(n_all, device=x.device)
        perm = distributed.gather_no_grad(perm)[:n_all]  # rank 0's permutation on every rank
        rows = distributed.local_rows(x.shape[0])
        k = _grouped(self.encode_key, x_all[perm[rows]], groups)  # this process's shuffled share
        k_all = distributed.gather_no_grad(F.normalize(k.float(), dim=1))  # (WB, D) permuted
        return k_all[torch.argsort(perm)][rows]  # unshuffled

    def training_step(
        self, views: list[torch.Tensor], indices: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Loss of one batch; then the batch's keys enter the queue [MoCo, Alg. 1].

        Args:
            views: Two tensors ``(B, 3, H, W)``: x_q and x_k, the same images augmented twice.
            indices: Unused.

        Returns:
            ``loss`` (scalar) and ``embedding`` (``(B, proj_dim)``, detached q of the first view).
        """
        groups = self.cfg.shuffle_groups if self.cfg.bn == "shuffle" else 1
        pairs = [(0, 1), (1, 0)] if self.cfg.symmetric else [(0, 1)]
        negatives = self.queue.keys.clone()  # (K, D), the queue before this batch's push
        loss = torch.zeros((), device=views[0].device)
        keys, embedding = [], None
        for iq, ik in pairs:
            q = _grouped(self.encode, views[iq], groups)  # (B, D), with gradient
            with torch.no_grad():  # the key encoder gets no gradient [MoCo, Sec. 3.2]
                if self.cfg.bn == "shuffle":
                    k = self.shuffled_keys(views[ik])
                else:
                    k = F.normalize(self.encode_key(views[ik]).float(), dim=1)
            loss = loss + info_nce(q, k.detach(), negatives, self.cfg.temperature)
            keys.append(k.detach())
            embedding = q.detach() if embedding is None else embedding
        # Enqueue the keys of the whole (global) batch, oldest out [MoCo, Alg. 1].
        self.queue.push(distributed.gather_no_grad(torch.cat(keys)))
        assert embedding is not None
        return {"loss": loss, "embedding": embedding}

    def on_step_end(self, progress: float) -> None:
        """Momentum update of the key encoder [MoCo, Eq. 2], after the optimiser step."""
        update_ema(self.key_backbone, self.backbone, self.cfg.momentum)
        update_ema(self.key_projector, self.projector, self.cfg.momentum)


# --------------------------------------------------------------------------------------------
# MoCo v3
# --------------------------------------------------------------------------------------------
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
        for key in ("proj_dim", "proj_hidden_dim", "pred_hidden_dim"):
            if getattr(self, key) < 1:
                raise ConfigError(f"method.{key} must be at least 1, got {getattr(self, key)}")
        if self.proj_layers < 2:
            raise ConfigError(f"method.proj_layers must be at least 2, got {self.proj_layers}")
        if not 0.0 <= self.momentum <= 1.0:
            raise ConfigError(f"method.momentum must be in [0, 1], got {self.momentum}")
        if self.temperature <= 0:
            raise ConfigError(f"method.temperature must be positive, got {self.temperature}")


class MoCoV3(Method):
    """MoCo v3: query encoder (backbone, projector, predictor), momentum encoder without predictor.

    "In MoCo v3, all layers in both MLPs have BN" [MoCo v3, Appendix]: hidden layers fc-BN-ReLU,
    output fc-BN; the output BNs have no affine, as in the released code.

    Args:
        backbone: An :class:`~siamkit.encoders.Encoder`.
        cfg: Heads, momentum and temperature.
    """

    def __init__(self, backbone: nn.Module, cfg: MoCoV3Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        width = int(backbone.num_features)  # type: ignore[arg-type]
        proj_dims = [width] + [cfg.proj_hidden_dim] * (cfg.proj_layers - 1) + [cfg.proj_dim]
        self.projector = mlp(proj_dims, output_bn=True, output_bn_affine=False)
        self.predictor = mlp(
            [cfg.proj_dim, cfg.pred_hidden_dim, cfg.proj_dim],
            output_bn=True,
            output_bn_affine=False,
        )
        self.key_backbone = momentum_copy(backbone)  # the momentum encoder: no predictor
        self.key_projector = momentum_copy(self.projector)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Query projection (before the predictor): ``(B, 3, H, W)`` -> ``(B, D)``."""
        return self.projector(self.backbone.forward_features(x))  # type: ignore[operator]

    def encode_key(self, x: torch.Tensor) -> torch.Tensor:
        """Momentum encoder (backbone + projector, no predictor): ``(B, 3, H, W)`` -> ``(B, D)``."""
        return self.key_projector(self.key_backbone.forward_features(x))  # type: ignore[operator]

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
        """m at ``progress`` in [0, 1]: 0.99 -> 1 by a half-cycle cosine [MoCo v3, Sec. 4]."""
        return cosine_momentum(progress, self.cfg.momentum)

    def on_step_end(self, progress: float) -> None:
        """Momentum update of the momentum encoder with the scheduled m."""
        m = self.momentum_at(progress)
        update_ema(self.key_backbone, self.backbone, m)
        update_ema(self.key_projector, self.projector, m)
