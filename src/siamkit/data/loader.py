"""Batches, the epoch sampler and the resumable loader that every storage shares.

Every storage (memory, stream, shards) is an :class:`ImageData`: a labelled or unlabelled set
of images that makes a map-style dataset whose ``__getitems__`` turns a list of ``(epoch,
index)`` pairs into one :class:`Batch`. :class:`EpochSampler` decides the pairs: a permutation
drawn from ``(seed, epoch)``, split across processes so that each rank sees its own images and
all ranks together one epoch. :class:`ResumableLoader` counts the batches it has handed out, so a
checkpoint taken inside an epoch resumes at the next batch (Lightning saves and restores its
``state_dict``).

Random crops cut in workers draw from a generator seeded by ``(seed, epoch, index)``, so a view
depends on neither the number of workers nor the order they finish in.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from siamkit.data.decode import ViewSpec


class Batch(NamedTuple):
    """One training or evaluation batch.

    Attributes:
        images: ``(B, 3, H, W)`` uint8 whole images (memory storage), one ``(B, 3, S, S)``
            uint8 crop per view (cut by workers: stream and shards), or encoded JPEGs to
            decode on the training device (:class:`~siamkit.data.device_decode.EncodedViews`).
        labels: ``(B,)`` int64 labels, -1 where unknown.
        indices: ``(B,)`` positions of the images in their set (per-image state is keyed by
            them).
        unreadable: ``(B,)`` bool, images that could not be decoded; the batch's first readable
            image stands in for each (the batch keeps its size, which every process of a
            gathering loss needs).
    """

    images: Any  # torch.Tensor | list[torch.Tensor] | EncodedViews
    labels: torch.Tensor
    indices: torch.Tensor
    unreadable: torch.Tensor


class ImageData(Protocol):
    """What every storage offers: a sized, optionally labelled set of images.

    Attributes:
        storage: ``memory``, ``stream`` or ``shards``.
        labels: ``(N,)`` int64 labels, or ``None``.
        classes: Class names, index = label, or ``None``.
        num_workers: DataLoader workers its loaders use (0: in the training process).
    """

    @property
    def storage(self) -> str:
        """``memory``, ``stream`` or ``shards``."""
        ...

    @property
    def labels(self) -> torch.Tensor | None:
        """``(N,)`` int64 labels, or ``None``."""
        ...

    @property
    def classes(self) -> list[str] | None:
        """Class names, index = label, or ``None``."""
        ...

    @property
    def num_workers(self) -> int:
        """DataLoader workers its loaders use (0: in the training process)."""
        ...

    def __len__(self) -> int: ...

    def subset(self, index: torch.Tensor) -> ImageData:
        """The images at ``index`` (a 1-D index tensor), in that order."""
        ...

    def describe(self, i: int) -> str:
        """Where image ``i`` comes from, for messages (a file path, or a position)."""
        ...

    @property
    def image_side(self) -> int | None:
        """The side of every image where the storage holds them at one size, else ``None``.

        Memory storage holds equal-sized images; files and shards keep each image's own size.
        """
        ...

    def dataset(self, specs: list[ViewSpec], seed: int) -> Dataset[Batch]:
        """A map-style dataset of :class:`Batch` es.

        Its ``__getitems__`` takes ``(epoch, index)`` pairs; ``specs`` tell workers which crops
        to cut (memory storage ignores them: its batches hold whole images).
        """
        ...

    def streaming_loader(
        self, specs: list[ViewSpec], batch_size: int, seed: int, pin_memory: bool = False
    ) -> DataLoader[Batch] | None:
        """The storage's own loader for training on the whole set, or ``None``.

        ``None`` where the generic loader (:func:`make_loader`, random access by the epoch
        sampler) serves.
        """
        ...


def image_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one image's crops in one epoch (independent of worker order)."""
    return np.random.default_rng([seed & 0xFFFFFFFF, epoch, index])


def identity_collate(batch: Batch) -> Batch:
    """Collate function for datasets whose ``__getitems__`` returns a whole :class:`Batch`."""
    return batch


class EpochSampler(Sampler[tuple[int, int]]):
    """``(epoch, index)`` pairs of one process, epoch by epoch.

    Args:
        n: Images in the set.
        seed: Seed of the permutations (one per epoch: ``seed + epoch``).
        shuffle: Permute (training) or keep the order (evaluation).
        rank: This process's rank.
        world: Number of processes.
        drop_last: Drop the images left over after an equal share per process (training);
            otherwise the last share is padded by wrapping around, as ``DistributedSampler``
            does.

    Rank ``r`` takes positions ``r, r + world, ...`` of the epoch's permutation, so the ranks'
    shares are disjoint and together cover the epoch.
    """

    def __init__(
        self,
        n: int,
        seed: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world: int = 1,
        drop_last: bool = True,
    ) -> None:
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} outside a world of {world}")
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.rank, self.world, self.drop_last = rank, world, drop_last
        self.epoch = 0
        self.start = 0  # items of this epoch already consumed (resume)

    @property
    def per_rank(self) -> int:
        """Items each process gets per epoch."""
        return self.n // self.world if self.drop_last else math.ceil(self.n / self.world)

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` (Lightning calls this before every epoch)."""
        if epoch != self.epoch:
            self.epoch, self.start = epoch, 0

    def order(self, epoch: int) -> torch.Tensor:
        """The indices this process visits in ``epoch``."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + epoch)
            perm = torch.randperm(self.n, generator=g)
        else:
            perm = torch.arange(self.n)
        total = self.per_rank * self.world
        if total > self.n:  # pad by wrapping around so every process gets the same count
            perm = torch.cat([perm, perm[: total - self.n]])
        return perm[self.rank : total : self.world]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        for i in self.order(epoch)[self.start :].tolist():
            yield epoch, i

    def __len__(self) -> int:
        return self.per_rank


class ResumableLoader(DataLoader[Batch]):
    """A ``DataLoader`` over an :class:`EpochSampler` that can resume inside an epoch.

    ``state_dict()`` records the epoch and the batches handed out so far; after
    ``load_state_dict()`` the next pass skips those batches (their images are not decoded).
    Lightning saves the state in every checkpoint and restores it on ``--resume``.
    """

    def __init__(
        self,
        dataset: Dataset[Batch],
        sampler: EpochSampler,
        batch_size: int,
        drop_last: bool,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        prefetch_factor: int | None = None,
    ) -> None:
        super().__init__(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=num_workers,
            # __getitems__ returns a whole Batch, which torch's stub (a list of samples) cannot say.
            collate_fn=identity_collate,  # type: ignore[arg-type]
            pin_memory=pin_memory,
            persistent_workers=persistent_workers and num_workers > 0,
            prefetch_factor=prefetch_factor if num_workers > 0 else None,
            # The DataLoader draws its workers' base seed from this generator, not from the
            # global one, so loading leaves the training's random stream alone.
            generator=torch.Generator().manual_seed(sampler.seed),
        )
        self.epoch_sampler = sampler
        self.images_per_batch = batch_size  # DataLoader's own batch_size is typed optional
        self._epoch = 0
        self._consumed = 0

    # A generator over the base iterator (to count batches) where torch types its iterator class.
    def __iter__(self) -> Iterator[Batch]:  # type: ignore[override]
        self._epoch = self.epoch_sampler.epoch
        self._consumed = self.epoch_sampler.start // self.images_per_batch
        for batch in super().__iter__():
            self._consumed += 1
            yield batch
        self.epoch_sampler.start = 0

    def state_dict(self) -> dict[str, Any]:
        """``{"epoch", "batches"}``: where the next batch comes from."""
        return {"epoch": self._epoch, "batches": self._consumed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue at batch ``state["batches"]`` of epoch ``state["epoch"]``.

        When that epoch was complete, continue at the start of the next one.
        """
        epoch, batches = int(state["epoch"]), int(state["batches"])
        if batches >= len(self):
            epoch, batches = epoch + 1, 0
        self.epoch_sampler.set_epoch(epoch)
        self.epoch_sampler.start = batches * self.images_per_batch
        self._epoch, self._consumed = epoch, batches


def make_loader(
    data: ImageData,
    specs: list[ViewSpec],
    batch_size: int,
    *,
    train: bool,
    seed: int = 0,
    rank: int = 0,
    world: int = 1,
    pin_memory: bool = False,
) -> ResumableLoader:
    """A loader of :class:`Batch` es over ``data``.

    Args:
        data: Any storage.
        specs: The views workers cut (see :attr:`siamkit.data.views.Views.specs`).
        batch_size: Images per batch of this process.
        train: Shuffled, split across ``world`` processes, incomplete batches dropped, workers
            kept alive between epochs; otherwise every image once, in order, in this process.
        seed: Seed of the order and of the crops.
        rank: This process's rank (training).
        world: Number of processes (training).
        pin_memory: Pin batches for a faster copy to a GPU.
    """
    sampler = EpochSampler(
        len(data),
        seed,
        shuffle=train,
        rank=rank if train else 0,
        world=world if train else 1,
        drop_last=train,
    )
    return ResumableLoader(
        data.dataset(specs, seed),
        sampler,
        batch_size,
        drop_last=train,
        num_workers=data.num_workers,
        pin_memory=pin_memory,
        persistent_workers=train,
        prefetch_factor=2,
    )
