"""MoCo v2 (Chen et al., arXiv:2003.04297), on MoCo (He et al., arXiv:1911.05722).

A query encoder f_q is trained by gradient; a key encoder f_k is its momentum (EMA) copy,
updated by ``update_ema`` in :meth:`MoCoV2.on_step_end` and run under ``torch.no_grad()``:

    theta_k <- m theta_k + (1 - m) theta_q                          [MoCo, Eq. 2]

The loss is InfoNCE of q against its key k+ (the other view) and a queue of K earlier keys,
which the batch's keys then enter [MoCo, Alg. 1]; the key encoder's BatchNorm is kept from
cheating by Shuffling BN or SyncBatchNorm [MoCo, Sec. 3.3]. MoCo v3 is in
:mod:`siamkit.methods.moco_v3`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from siamkit import distributed
from siamkit.config import MethodConfig
from siamkit.encoders import Encoder
from siamkit.errors import ConfigError
from siamkit.heads import projection_mlp
from siamkit.losses.info_nce import info_nce
from siamkit.methods.base import Method, require_at_least_one
from siamkit.methods.momentum import momentum_copy, update_ema


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
        require_at_least_one(self, "proj_dim", "proj_hidden_dim", "queue_size", "shuffle_groups")
        if not 0.0 <= self.momentum <= 1.0:
            raise ConfigError(f"method.momentum must be in [0, 1], got {self.momentum}")
        if self.temperature <= 0:
            raise ConfigError(f"method.temperature must be positive, got {self.temperature}")
        if self.bn == "sync" and self.shuffle_groups != 1:
            raise ConfigError("method.shuffle_groups applies to bn: shuffle only; set it to 1")


def _grouped(
    encode: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, groups: int
) -> torch.Tensor:
    """``encode`` applied to ``groups`` consecutive sub-batches of ``x`` (own BN statistics)."""
    if groups == 1:
        return encode(x)
    return torch.cat([encode(part) for part in x.tensor_split(groups)])


class MoCoV2(Method):
    """MoCo v2: query encoder (backbone + MLP head), its momentum copy, and a queue of keys.

    The query encoder f_q is :meth:`Method.encode` (``(B, 3, H, W)`` -> ``(B, proj_dim)``, with
    gradient); the key encoder f_k is :meth:`encode_key`.

    Args:
        backbone: An :class:`~siamkit.encoders.Encoder`.
        cfg: Heads, dictionary and BN settings.
    """

    config_class = MoCoV2Config

    def __init__(self, backbone: Encoder, cfg: MoCoV2Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        self.projector = projection_mlp(  # fc-ReLU-fc [MoCo v2]
            backbone.num_features,
            cfg.proj_hidden_dim,
            cfg.proj_dim,
            num_layers=2,
            hidden_bn=False,
            output_bn=False,
        )
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

    def encode_key(self, x: torch.Tensor) -> torch.Tensor:
        """Key encoder f_k (the momentum copy): ``(B, 3, H, W)`` -> ``(B, proj_dim)``."""
        return self.key_projector(self.key_backbone.forward_features(x))

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
