"""Stream storage: images read and decoded per batch in DataLoader worker processes.

For sets larger than memory (ImageNet, users' own collections). A process holds the file list
(two NumPy arrays, :class:`~siamkit.data.files.PathStore`) and the batches in flight: memory is
bounded by the batch size, the number of workers and the prefetch depth, not by the number of
images. Each worker decodes an image once, cuts every view's random resized crop from the whole
image (:func:`~siamkit.data.decode.decode_views`) and sends uint8 crops; flip, colour and blur
run batched on the training device.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from siamkit.data.decode import ViewSpec, decode_views
from siamkit.data.device_decode import encode_views, encoded_batch
from siamkit.data.files import FileList
from siamkit.data.loader import Batch, image_rng


def crops_batch(
    views: list[list[np.ndarray] | None],
    sizes: list[int],
    labels: torch.Tensor,
    indices: torch.Tensor,
) -> Batch:
    """Stack per-image crops (one ``(3, S, S)`` array per view) into a :class:`Batch`.

    An unreadable image (``None``) is replaced by the batch's first readable one, or by zeros
    when none is readable, and flagged in ``unreadable`` (the training loop counts these,
    or stops under ``--strict``).
    """
    unreadable = torch.tensor([v is None for v in views], dtype=torch.bool)
    stand_in = next((v for v in views if v is not None), None)
    if stand_in is None:
        stand_in = [np.zeros((3, s, s), dtype=np.uint8) for s in sizes]
    filled = [v if v is not None else stand_in for v in views]
    stacked = [torch.from_numpy(np.stack([v[k] for v in filled])) for k in range(len(sizes))]
    return Batch(stacked, labels, indices, unreadable)


class _StreamDataset(torch.utils.data.Dataset[Batch]):
    """Decodes files and cuts their view crops, a batch at a time, in a worker.

    With ``on_device`` it reads JPEGs and draws their crops for decoding on the training device.
    """

    def __init__(
        self, files: FileList, specs: list[ViewSpec], seed: int, on_device: bool = False
    ) -> None:
        self.files, self.specs, self.seed, self.on_device = files, specs, seed, on_device
        n = len(files)
        self.labels = files.labels if files.labels is not None else torch.full((n,), -1)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, item: tuple[int, int]) -> Batch:
        return self.__getitems__([item])

    def __getitems__(self, items: list[tuple[int, int]]) -> Batch:
        index = torch.tensor([i for _, i in items], dtype=torch.int64)
        sizes = [s.size for s in self.specs]
        # One (file, generator) per image; the generator depends on (seed, epoch, image) alone.
        places = [(self.files.paths[i], image_rng(self.seed, epoch, i)) for epoch, i in items]
        if self.on_device:
            encoded = [encode_views(path, self.specs, rng) for path, rng in places]
            return encoded_batch(encoded, sizes, self.labels[index], index)
        crops = [decode_views(path, self.specs, rng) for path, rng in places]
        return crops_batch(crops, sizes, self.labels[index], index)


@dataclass
class StreamSet:
    """A folder of image files read in DataLoader workers (stream storage).

    Attributes:
        files: The files, labels and class names.
        num_workers: Worker processes per loader.
        decode: ``workers`` or ``device`` (see ``data.decode``).
    """

    files: FileList
    num_workers: int = 1
    decode: str = "workers"

    storage = "stream"

    @property
    def labels(self) -> torch.Tensor | None:
        """``(N,)`` int64 labels from the class folders, or ``None``."""
        return self.files.labels

    @property
    def classes(self) -> list[str] | None:
        """Class names, index = label."""
        return self.files.classes

    @property
    def root(self) -> Path:
        """The folder the files were listed from."""
        return Path(self.files.root)

    def __len__(self) -> int:
        return len(self.files)

    def subset(self, index: torch.Tensor) -> StreamSet:
        """The files at ``index``, in that order."""
        return StreamSet(self.files.subset(index), self.num_workers, self.decode)

    def describe(self, i: int) -> str:
        """The path of image ``i``."""
        return self.files.paths[i]

    @property
    def image_side(self) -> None:
        """None: files keep their own sizes."""
        return None

    def dataset(self, specs: list[ViewSpec], seed: int) -> torch.utils.data.Dataset[Batch]:
        """A dataset that decodes files and cuts ``specs`` crops in workers."""
        return _StreamDataset(self.files, specs, seed, on_device(self.decode, specs))

    def streaming_loader(
        self, specs: list[ViewSpec], batch_size: int, seed: int, pin_memory: bool = False
    ) -> None:
        """None: the generic loader reads files by random access."""
        return None


def on_device(decode: str, specs: list[ViewSpec]) -> bool:
    """Whether JPEGs of these views are decoded on the training device (random crops only)."""
    return decode == "device" and all(s.scale is not None for s in specs)
