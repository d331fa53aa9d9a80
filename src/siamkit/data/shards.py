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

import io
import json
import multiprocessing as mp
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from litdata import StreamingDataLoader, StreamingDataset, optimize
from PIL import Image

from siamkit.data.decode import DECODE_ERRORS, ViewSpec, decode_views, open_image, open_rgb
from siamkit.data.device_decode import encode_views, encoded_batch
from siamkit.data.files import FileList, folder_splits
from siamkit.data.loader import Batch, image_rng
from siamkit.data.stream import crops_batch, on_device
from siamkit.errors import DataError
from siamkit.safe_io import atomic_write_text

#: The metadata file beside the litdata folders.
META_FILE = "siamkit-shards.json"
_FORMAT = 1
#: Chunk size of the packed files (litdata's unit of download and of work per rank).
CHUNK_BYTES = "64MB"
URL_PREFIXES = ("s3://", "gs://", "azure://", "hf://", "local:")


def is_url(path: str) -> bool:
    """Whether ``path`` is an object-store URL that litdata reads."""
    return path.startswith(URL_PREFIXES)


def is_shards(path: str) -> bool:
    """Whether ``path`` is a folder (or URL) written by :func:`pack`."""
    return is_url(path) or (Path(path) / META_FILE).is_file()


# --------------------------------------------------------------------------------------------
# Packing
# --------------------------------------------------------------------------------------------
class _PackItem:
    """litdata's per-item function: the bytes of image ``i``, resized when too large.

    An unreadable image is written as empty bytes (so that positions stay the image indices)
    and its index appended to a side file that :func:`pack` collects.
    """

    def __init__(self, files: FileList, max_side: int, bad_dir: str) -> None:
        self.files, self.max_side, self.bad_dir = files, max_side, bad_dir

    def __call__(self, i: int) -> dict[str, Any]:
        path = self.files.paths[i]
        label = -1 if self.files.labels is None else int(self.files.labels[i])
        data = Path(path).read_bytes()
        try:
            with open_image(data) as im:
                rgb = open_rgb(im)  # full decode: a truncated file is found now, not in training
                if min(rgb.size) > self.max_side:
                    scale = self.max_side / min(rgb.size)
                    size = (max(1, round(rgb.size[0] * scale)), max(1, round(rgb.size[1] * scale)))
                    out = io.BytesIO()
                    rgb.resize(size, Image.Resampling.BILINEAR).save(out, "JPEG", quality=95)
                    data = out.getvalue()
        except DECODE_ERRORS:
            with open(Path(self.bad_dir) / f"{os.getpid()}.txt", "a") as f:
                f.write(f"{i}\n")
            data = b""
        return {"image": data, "label": label, "index": i}


def pack(
    data: str | Path,
    output: str | Path,
    max_side: int = 512,
    test_fraction: float = 0.2,
    num_workers: int = 1,
    strict: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Pack an image folder into litdata shards (see the module docstring).

    Args:
        data: The image folder (any layout of :func:`~siamkit.data.files.folder_splits`).
        output: A local folder for the shards (upload it to an object store afterwards).
        max_side: Images whose shorter side is larger are resized to it.
        test_fraction: Held-out share for a ``root/<class>/*`` folder (fixed at packing time).
        num_workers: Processes that read and encode.
        strict: Fail on an unreadable image instead of packing it as a counted placeholder.
        overwrite: Replace an existing output folder.

    Returns:
        The metadata written to ``SHARDS/siamkit-shards.json``.

    Raises:
        DataError: Bad folder, an existing output without ``overwrite``, or (``strict``) an
            unreadable image.
    """
    if max_side < 8:
        raise DataError(f"--max-side must be at least 8 pixels, got {max_side}")
    out = Path(output)
    if is_url(str(output)):
        raise DataError(
            f"pack writes to a local folder, got {output}; pack locally, then upload the folder "
            "and train from its URL"
        )
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise DataError(
                f"{out} already exists and is not empty; choose another --output or pass "
                "--overwrite to replace it"
            )
        shutil.rmtree(out)
    train, test = folder_splits(Path(data), test_fraction)
    meta: dict[str, Any] = {
        "format": _FORMAT,
        "source": str(data),
        "max_side": max_side,
        "classes": train.classes,
        "splits": {},
    }
    for name, files in (("train", train), ("test", test)):
        if files is None:
            continue
        with tempfile.TemporaryDirectory() as bad_dir:
            optimize(
                fn=_PackItem(files, max_side, bad_dir),
                inputs=list(range(len(files))),
                output_dir=str(out / name),
                chunk_bytes=CHUNK_BYTES,
                num_workers=max(1, min(num_workers, len(files))),
                reorder_files=False,
                keep_data_ordered=True,  # position i is image i
                mode="overwrite",
                verbose=False,
                # Forked workers start in a fraction of a second; spawned ones import torch
                # again (about 10 s each on a 2-core machine).
                start_method="fork" if "fork" in mp.get_all_start_methods() else None,
            )
            bad = sorted(int(x) for f in Path(bad_dir).glob("*.txt") for x in f.read_text().split())
        if bad:
            names = ", ".join(files.paths[i] for i in bad[:5])
            if strict:
                shutil.rmtree(out)
                raise DataError(
                    f"{len(bad)} unreadable image(s) in {files.root} (e.g. {names}); remove or "
                    "replace them, or drop --strict to pack them as skipped placeholders"
                )
            warnings.warn(
                f"{len(bad)} unreadable image(s) of {len(files)} in {files.root} (e.g. {names}) "
                "were packed as placeholders; training skips them with a count",
                stacklevel=2,
            )
        meta["splits"][name] = {
            "num_images": len(files),
            "labels": None if files.labels is None else files.labels.tolist(),
            "unreadable": bad,
        }
    atomic_write_text(out / META_FILE, json.dumps(meta), "shard metadata")
    return meta


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------
def read_meta(url: str) -> dict[str, Any]:
    """The metadata of packed shards, from a local folder or an object-store URL.

    Raises:
        DataError: There is none, or it is not siamkit's.
    """
    if is_url(url):
        from litdata.streaming.downloader import get_downloader

        local = Path(tempfile.mkdtemp(prefix="siamkit-shards-"))
        try:
            get_downloader(url, str(local), []).download_file(
                f"{url.rstrip('/')}/{META_FILE}", str(local / META_FILE)
            )
        except Exception as err:  # network and permission errors of every provider
            raise DataError(f"cannot read {META_FILE} from {url} ({err})") from None
        path = local / META_FILE
    else:
        path = Path(url) / META_FILE
    if not path.is_file():
        raise DataError(
            f"{url} holds no packed shards ({META_FILE} is missing); write them with "
            f"`siamkit pack --data IMAGE_FOLDER --output {url}`"
        )
    meta: dict[str, Any] = json.loads(path.read_text())
    if meta.get("format") != _FORMAT:
        raise DataError(f"{path} is of format {meta.get('format')}; pack the folder again")
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
