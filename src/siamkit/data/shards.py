"""Shards storage: images packed once into chunk files with Lightning's litdata, then streamed.

Why litdata (over webdataset, FFCV or DALI): it is the streaming format of the engine siamkit
trains on (Lightning); one :class:`litdata.StreamingDataset` reads a local folder or an object
store URL (``s3://``, ``gs://``, ``azure://``) through the same code, splits the chunks between
ranks, nodes and workers so that each process reads its own part and all of them together one
epoch, and its :class:`litdata.StreamingDataLoader` saves and restores its position inside an
epoch (Lightning checkpoints it). webdataset splits by whole tar shards (uneven epochs across
ranks unless the shard count divides evenly, no random access); FFCV and DALI are fast but bring
their own decoders and pipelines, where siamkit's crops and batched augmentation must stay the
same across storages.

``siamkit pack --data DIR --output SHARDS`` writes ``SHARDS/train`` and, where the folder has a
held-out split, ``SHARDS/test`` (litdata folders), plus ``SHARDS/siamkit-shards.json`` with the
class names and every image's label. Images keep their encoded bytes unless their shorter side
exceeds ``--max-side``; then they are resized and stored as JPEG (quality 95). Items keep the
folder's order (litdata's ordered mode), so position ``i`` of a split is image ``i``: random
access (evaluation on subsets) and the labels in the JSON agree with the shards.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from litdata import StreamingDataLoader, StreamingDataset

from siamkit.data.decode import ViewSpec, decode_views
from siamkit.data.device_decode import encode_views, encoded_batch
from siamkit.data.loader import Batch, image_rng
from siamkit.data.stream import crops_batch, on_device
from siamkit.errors import DataError

#: The metadata file beside the litdata folders.
META_FILE = "siamkit-shards.json"
FORMAT_VERSION = 1
#: Chunk size of the packed files (litdata's unit of download and of work per rank).
CHUNK_BYTES = "64MB"
URL_PREFIXES = ("s3://", "gs://", "azure://", "hf://", "local:")


def is_url(path: str) -> bool:
    """Whether ``path`` is an object-store URL that litdata reads."""
    return path.startswith(URL_PREFIXES)


def is_shards(path: str) -> bool:
    """Whether ``path`` is a folder (or URL) written by :func:`siamkit.data.pack.pack`."""
    return is_url(path) or (Path(path) / META_FILE).is_file()


#: Seconds to wait for an object store's answer before a data error (a blocked network or an
#: address that does not answer would otherwise hang the command).
URL_TIMEOUT_S = 120.0


def _download_meta(url: str, dest: Path) -> None:
    """Fetch ``url``'s metadata file to ``dest``, within :data:`URL_TIMEOUT_S` seconds.

    Raises:
        DataError: The store did not answer in time, or refused (credentials, no such bucket).
    """
    import threading

    from litdata.streaming.downloader import get_downloader

    outcome: list[BaseException | None] = []

    def fetch() -> None:
        try:
            get_downloader(url, str(dest.parent), []).download_file(
                f"{url.rstrip('/')}/{META_FILE}", str(dest)
            )
            outcome.append(None)
        except BaseException as err:  # network and permission errors of every provider
            outcome.append(err)

    worker = threading.Thread(target=fetch, daemon=True)  # left behind if it never answers
    worker.start()
    worker.join(URL_TIMEOUT_S)
    if not outcome:
        raise DataError(
            f"no answer from {url} within {URL_TIMEOUT_S:g} s while reading {META_FILE}; check "
            "the address, the network and the credentials"
        )
    if outcome[0] is not None:
        first = str(outcome[0]).strip().splitlines()
        reason = first[0] if first else type(outcome[0]).__name__
        raise DataError(
            f"cannot read {META_FILE} from {url} ({reason}); check the address and the credentials"
        )


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------
def read_meta(url: str) -> dict[str, Any]:
    """The metadata of packed shards, from a local folder or an object-store URL.

    Raises:
        DataError: There is none, or it is not siamkit's.
    """
    if is_url(url):  # fetched into a temporary folder, read, and the folder removed
        with tempfile.TemporaryDirectory(prefix="siamkit-shards-") as local:
            _download_meta(url, Path(local) / META_FILE)
            return _parse_meta(Path(local) / META_FILE, url)
    return _parse_meta(Path(url) / META_FILE, url)


def _parse_meta(path: Path, url: str) -> dict[str, Any]:
    """The checked contents of a metadata file ``path`` of the shards at ``url``."""
    if not path.is_file():
        raise DataError(
            f"{url} holds no packed shards ({META_FILE} is missing); write them with "
            f"`siamkit pack --data IMAGE_FOLDER --output {url}`"
        )
    try:
        meta: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:  # not JSON, or not UTF-8
        raise DataError(
            f"{path} is damaged ({err}); pack the folder again (siamkit pack --overwrite)"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise DataError(f"{path} is of format {found}; pack the folder again")
    return meta


class _ShardDataset(torch.utils.data.Dataset[Batch]):
    """Random access into shards by image index (evaluation, subsets).

    Each worker opens its own litdata reader on first use.

    Args:
        url: The split's litdata folder.
        specs: The views to cut.
        seed: Seed of the crops.
        labels: ``(N,)`` labels of this set (-1 where unknown).
        positions: Item of the split behind each image of this set (``None``: the same).
        device_decode: Leave JPEGs encoded for the training device (``data.decode: device``).
    """

    def __init__(
        self,
        url: str,
        specs: list[ViewSpec],
        seed: int,
        labels: torch.Tensor,
        positions: torch.Tensor | None,
        device_decode: bool = False,
    ) -> None:
        self.url, self.specs, self.seed = url, specs, seed
        self.labels, self.positions = labels, positions
        self.collate = _CollateCrops([s.size for s in specs], device_decode)
        self._reader: StreamingDataset | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitems__(self, items: list[tuple[int, int]]) -> Batch:
        if self._reader is None:
            self._reader = StreamingDataset(self.url, batch_decode=False)
        samples = []
        for epoch, i in items:
            pos = i if self.positions is None else int(self.positions[i])
            data = self._reader[pos]["image"] or b"-"  # b"": packed as unreadable
            rng = image_rng(self.seed, epoch, pos)
            samples.append((self.collate.cut(data, self.specs, rng), int(self.labels[i]), i))
        return self.collate(samples)

    def __getitem__(self, item: tuple[int, int]) -> Batch:
        return self.__getitems__([item])


class _CollateCrops:
    """How a worker cuts one sample (:attr:`cut`) and stacks samples into a :class:`Batch`.

    Crops, or with ``device_decode`` encoded JPEGs and their boxes.
    """

    def __init__(self, sizes: list[int], device_decode: bool = False) -> None:
        self.sizes, self.device_decode = sizes, device_decode
        self.cut = encode_views if device_decode else decode_views

    def __call__(self, samples: list[tuple[Any, int, int]]) -> Batch:
        labels = torch.tensor([s[1] for s in samples], dtype=torch.int64)
        index = torch.tensor([s[2] for s in samples], dtype=torch.int64)
        stack = encoded_batch if self.device_decode else crops_batch
        return stack([s[0] for s in samples], self.sizes, labels, index)


@dataclass
class ShardSet:
    """One split of packed shards (shards storage).

    Attributes:
        url: The litdata folder of the split (local path or object-store URL).
        labels: ``(N,)`` labels of the selected images (``None``: unlabelled).
        classes: Class names.
        positions: The images of the split this set holds (``None``: all, in order).
        size: Images in the whole split.
        num_workers: Worker processes per loader.
        unreadable: Images found unreadable when packed.
        decode: ``workers`` or ``device`` (see ``data.decode``).
    """

    url: str
    labels: torch.Tensor | None
    classes: list[str] | None
    size: int
    positions: torch.Tensor | None = None
    num_workers: int = 1
    unreadable: list[int] = field(default_factory=list)
    decode: str = "workers"

    storage = "shards"

    def __len__(self) -> int:
        return self.size if self.positions is None else len(self.positions)

    def subset(self, index: torch.Tensor) -> ShardSet:
        """The images at ``index`` (read by random access from then on)."""
        base = torch.arange(self.size) if self.positions is None else self.positions
        return ShardSet(
            self.url,
            None if self.labels is None else self.labels[index],
            self.classes,
            self.size,
            base[index],
            self.num_workers,
            decode=self.decode,
        )

    def describe(self, i: int) -> str:
        """Where image ``i`` lives."""
        pos = i if self.positions is None else int(self.positions[i])
        return f"item {pos} of {self.url}"

    @property
    def image_side(self) -> None:
        """None: shards keep each image's own size."""
        return None

    def dataset(self, specs: list[ViewSpec], seed: int) -> torch.utils.data.Dataset[Batch]:
        """Random access by index (evaluation and subsets)."""
        labels = self.labels if self.labels is not None else torch.full((len(self),), -1)
        device = on_device(self.decode, specs)
        return _ShardDataset(self.url, specs, seed, labels, self.positions, device)

    def streaming_loader(
        self, specs: list[ViewSpec], batch_size: int, seed: int, pin_memory: bool = False
    ) -> torch.utils.data.DataLoader[Batch] | None:
        """The litdata loader for training on the whole split.

        Shuffled chunks, each rank and worker reading its own part, resumable inside an epoch.
        ``None`` for a subset (then the generic loader with random access is used).
        """
        if self.positions is not None:
            return None
        collate = _CollateCrops([s.size for s in specs], on_device(self.decode, specs))
        return StreamingDataLoader(
            _EpochViews(self.url, specs, seed, collate),
            batch_size=batch_size,
            num_workers=self.num_workers,
            collate_fn=collate,
            pin_memory=pin_memory,
            drop_last=True,
        )


class _EpochViews(StreamingDataset):
    """A shuffled litdata stream of one split whose samples become view crops.

    ``(views, label, index)``, the crops drawn from ``(seed, epoch, index)``.
    """

    def __init__(self, url: str, specs: list[ViewSpec], seed: int, collate: _CollateCrops) -> None:
        super().__init__(url, shuffle=True, drop_last=True, seed=seed, batch_decode=False)
        self.specs, self.view_seed, self.cut = specs, seed, collate.cut

    def __getitem__(self, index: Any) -> tuple[Any, int, int]:
        item = super().__getitem__(index)
        i = int(item["index"])
        rng = image_rng(self.view_seed, self.current_epoch, i)
        return self.cut(item["image"] or b"-", self.specs, rng), int(item["label"]), i


def shard_splits(
    url: str, num_workers: int, decode: str = "workers"
) -> tuple[ShardSet, ShardSet | None]:
    """The training split and, where packed, the held-out split of shards at ``url``."""
    meta = read_meta(url)
    out: list[ShardSet | None] = []
    for name in ("train", "test"):
        info = meta["splits"].get(name)
        if info is None:
            out.append(None)
            continue
        labels = info["labels"]
        if info["unreadable"]:
            warnings.warn(
                f"{len(info['unreadable'])} image(s) of the {name} split of {url} were "
                "unreadable when packed; batches skip them with a count",
                stacklevel=2,
            )
        out.append(
            ShardSet(
                f"{url.rstrip('/')}/{name}",
                None if labels is None else torch.tensor(labels, dtype=torch.int64),
                meta["classes"],
                int(info["num_images"]),
                num_workers=num_workers,
                unreadable=list(info["unreadable"]),
                decode=decode,
            )
        )
    train, test = out
    if train is None:
        raise DataError(f"{url} has no train split; pack the folder again")
    return train, test
