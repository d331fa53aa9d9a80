"""Where the images come from (pipeline step 1, the data half): sources and their storage.

:func:`load_splits` turns a :class:`~siamkit.config.DataConfig` into a training set and, where
labels allow, a held-out set, each in one of three storages (``data.storage``):

- ``memory`` (:mod:`siamkit.data.memory`): decoded once into a uint8 tensor; digits, CIFAR-10
  and other sets that fit the memory budget.
- ``stream`` (:mod:`siamkit.data.stream`): files decoded per batch in DataLoader workers;
  memory bounded by the batch, not by the number of images.
- ``shards`` (:mod:`siamkit.data.shards`): litdata chunks written by ``siamkit pack``, from a
  local folder or an object store.

``auto`` picks ``shards`` for packed data, ``memory`` for a folder whose decoded images fit the
budget and share one shape, and ``stream`` otherwise, and says why (:attr:`Splits.note`).
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from siamkit import registry
from siamkit.config import DataConfig
from siamkit.data.files import FileList, stratified_split
from siamkit.data.loader import ImageData
from siamkit.data.manifests import data_splits, is_manifest
from siamkit.data.memory import (
    FolderShape,
    ImageSet,
    default_cache_dir,
    folder_shape,
    load_folder,
)
from siamkit.data.stream import StreamSet
from siamkit.errors import DataError
from siamkit.runtime import default_num_workers, total_memory_bytes

#: Share of the machine's memory a decoded set may take under ``data.storage: auto``.
MEMORY_SHARE = 0.25
#: Images with a shorter side below this are warned about (they are mostly upsampling).
MIN_SIDE = 8


@dataclass
class Splits:
    """A training set and, where labels allow, a held-out set for monitoring and evaluation.

    Attributes:
        train: The training images (any storage).
        test: The held-out images, or ``None``.
        note: Which storage was chosen and why (printed by ``siamkit pretrain``).
        lines: One line per split: where it was read, its images and classes, and where its
            labels came from (:func:`load_splits` prints them).
    """

    train: ImageData
    test: ImageData | None = None
    note: str = ""
    lines: list[str] = field(default_factory=list)


def load_splits(cfg: DataConfig, processes: int = 1, say: bool = True) -> Splits:
    """Load the dataset named by ``cfg`` in the storage ``cfg.storage`` asks for.

    Args:
        cfg: The data section of the run config.
        processes: Training processes on this machine (they share its cores: the default
            number of DataLoader workers is divided between them).
        say: Print each split's line (:attr:`Splits.lines`) to standard error, once a machine.

    Returns:
        Training images and, when labels are known, a held-out split.

    Raises:
        DataError: The path is missing or holds no images, a set too large for
            ``data.storage: memory``, or (``strict``) an unreadable image.
    """
    workers = cfg.num_workers if cfg.num_workers is not None else default_num_workers(processes)
    source = registry.DATA_SOURCES[cfg.dataset].load()
    assert callable(source)  # each registered source is source(cfg, workers) -> Splits
    splits = source(cfg, workers)
    assert isinstance(splits, Splits)
    if not splits.lines:
        splits.lines = [
            split_line(n, s) for n, s in (("train", splits.train), ("test", splits.test))
        ]
    if say and os.environ.get("LOCAL_RANK", "0") == "0":  # one process of a machine says it
        for line in splits.lines:
            print(f"siamkit: data {line}", file=sys.stderr)
    if cfg.require_labels:
        _check_labelled(splits)
    return splits


def split_line(name: str, images: ImageData | None) -> str:
    """``train: 1438 images, 10 classes (labels: ...)`` for a split of any source."""
    if images is None:
        return f"{name}: none (no held-out split: the kNN monitor and evaluations are skipped)"
    if images.labels is None:
        return (
            f"{name}: {len(images)} images, no labels (class folders or data.labels_file=PATH "
            "give them)"
        )
    classes = len(images.classes) if images.classes else int(images.labels.max()) + 1
    return f"{name}: {len(images)} images, {classes} classes (labels from the dataset)"


def _check_labelled(splits: Splits) -> None:
    """``data.require_labels``: both splits labelled, or a data error naming the fix."""
    for name, images in (("training", splits.train), ("held-out", splits.test)):
        if images is None or images.labels is None:
            what = "there is no held-out split" if images is None else f"the {name} split has"
            raise DataError(
                f"data.require_labels is set but {what}{' no labels' if images else ''}; lay "
                "the images out in class folders (train/ + val/ or test/ for a held-out split), "
                "give data.labels_file=PATH, or unset data.require_labels"
            )


def digits_source(cfg: DataConfig, workers: int) -> Splits:
    """``data.dataset: digits``: the bundled digits, in memory (``workers`` unused)."""
    return _in_memory(load_digits(cfg.decode_size or 32), "the bundled digits")


def cifar10_source(cfg: DataConfig, workers: int) -> Splits:
    """``data.dataset: cifar10``: shards, an image folder, a manifest, or torchvision's files.

    An image folder needs ``train/``; torchvision's files are read from ``data.path``, or
    downloaded where allowed.
    """
    path = cfg.path or ""
    shards = _shards(cfg, workers)
    if shards is not None:
        return shards
    root = Path(path) if path else None
    if root is None or not (is_manifest(root) or (root / "train").is_dir()):
        return _in_memory(load_cifar10_arrays(cfg, root), "CIFAR-10 from torchvision's files")
    return load_folder_splits(root, cfg, workers)


def folder_source(cfg: DataConfig, workers: int) -> Splits:
    """``data.dataset: folder``: packed shards, an image folder, or a manifest."""
    shards = _shards(cfg, workers)
    return shards if shards is not None else load_folder_splits(Path(cfg.path or ""), cfg, workers)


def _shards(cfg: DataConfig, workers: int) -> Splits | None:
    """The packed shards at ``data.path``, or ``None`` where it holds none."""
    path = cfg.path or ""
    if not path:
        return None
    from siamkit.data.shards import is_shards, shard_splits

    if is_shards(path):
        if cfg.storage not in ("auto", "shards"):
            raise DataError(
                f"{path} holds packed shards, which can only be read as data.storage=shards "
                f"(or auto), not {cfg.storage}; point --data at the image folder instead"
            )
        train, test = shard_splits(path, workers, cfg.decode)
        return Splits(train, test, f"shards: {path} was written by siamkit pack")
    if cfg.storage == "shards":
        raise DataError(
            f"data.storage=shards needs packed shards, but {path} is not; write them with "
            f"`siamkit pack --data {path} --output SHARDS`, then pass --data SHARDS"
        )
    return None


def _in_memory(splits: Splits, what: str) -> Splits:
    splits.note = f"memory: {what} ({len(splits.train)} training images)"
    return splits


def load_digits(size: int = 32, test_fraction: float = 0.2, seed: int = 0) -> Splits:
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes) as RGB ``size`` x ``size``.

    The embedded default dataset: it ships with scikit-learn, so it works offline on any machine.
    """
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = torch.as_tensor(bunch.images, dtype=torch.float32)[:, None] / 16.0  # (N, 1, 8, 8) in [0,1]
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    images = (x.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    full = ImageSet(images, labels, [str(i) for i in range(10)])
    train_idx, test_idx = stratified_split(labels, test_fraction, seed)
    return Splits(full.subset(train_idx), full.subset(test_idx))


def load_cifar10_arrays(cfg: DataConfig, root: Path | None) -> Splits:
    """CIFAR-10 from a torchvision copy (``cifar-10-batches-py``) or torchvision's download."""
    size = cfg.decode_size or 32
    if root is not None and ((root / "cifar-10-batches-py").is_dir() or cfg.download):
        from torchvision.datasets import CIFAR10

        def part(train: bool) -> ImageSet:
            ds = CIFAR10(str(root), train=train, download=cfg.download)
            x = torch.as_tensor(ds.data).permute(0, 3, 1, 2).contiguous()  # (N, 3, 32, 32)
            if size != 32:
                x = _resize_uint8(x, size)
            return ImageSet(x, torch.as_tensor(ds.targets), list(ds.classes))

        return Splits(part(True), part(False))
    hint = f"{root} has no train/ folder" if root else "data.path is empty"
    raise DataError(
        f"cannot find CIFAR-10: {hint}. Pass --data PATH to an image folder with train/<class>/ "
        "and test/<class>/ (e.g. ../shared/data/cifar10), or set data.download=true when online"
    )


def _resize_uint8(x: torch.Tensor, size: int) -> torch.Tensor:
    y = torch.nn.functional.interpolate(
        x.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    return y.round().clamp(0, 255).to(torch.uint8)


# --------------------------------------------------------------------------------------------
# Image folders: memory or stream
# --------------------------------------------------------------------------------------------
def memory_budget(cfg: DataConfig) -> int:
    """Bytes a decoded set may take.

    ``data.memory_budget_gb``, else a quarter of the machine's memory (the processes of one machine
    share the decoded pages).
    """
    if cfg.memory_budget_gb is not None:
        return int(cfg.memory_budget_gb * 1e9)
    return int(total_memory_bytes() * MEMORY_SHARE)


def choose_storage(cfg: DataConfig, files: list[FileList], shape: FolderShape) -> tuple[str, str]:
    """``(storage, why)`` for an image folder under ``cfg.storage``.

    Raises:
        DataError: ``data.storage: memory`` for a set over the budget (nothing is decoded).
    """
    n = sum(len(f) for f in files)
    need, budget = shape.bytes_for(n), memory_budget(cfg)
    size = f"{n} images at {shape.width}x{shape.height} take {need / 1e9:.2f} GB decoded"
    if cfg.storage == "stream":
        return "stream", "data.storage=stream"
    if need > budget:
        if cfg.storage == "memory":
            raise DataError(
                f"data.storage=memory: {size}, over the memory budget of {budget / 1e9:.2f} GB; "
                "use data.storage=stream (or auto), a smaller data.decode_size, or raise "
                "data.memory_budget_gb"
            )
        return "stream", f"{size}, over the memory budget of {budget / 1e9:.2f} GB"
    if cfg.storage == "memory":
        return "memory", f"data.storage=memory; {size}"
    if not shape.uniform:
        return "stream", (
            "the images differ in shape, so each random crop is cut from the whole image "
            "(data.storage=memory would keep one centre crop of each)"
        )
    return "memory", f"{size}, within the memory budget of {budget / 1e9:.2f} GB"


def load_folder_splits(root: Path, cfg: DataConfig, workers: int = 1) -> Splits:
    """An image folder or a manifest, in memory or streamed.

    Layouts: ``train/`` with ``val/`` or ``test/``; ``root/<class>/*`` with a stratified
    ``test_fraction`` held out; or flat. A manifest (:mod:`siamkit.data.manifests`) lists the
    images, with their splits or a stratified ``test_fraction`` held out.
    """
    train, test = data_splits(root, cfg.test_fraction, cfg.labels, cfg.labels_file)
    files = [f for f in (train, test) if f is not None]
    lines = [train.describe("train")]
    lines.append(test.describe("test") if test is not None else split_line("test", None))
    # CIFAR-10 is 32 x 32 by definition; other folders follow their images.
    shape = folder_shape(train, cfg.decode_size or (32 if cfg.dataset == "cifar10" else None))
    if 0 < shape.smallest < MIN_SIDE:
        warnings.warn(
            f"{root} holds images with a side of {shape.smallest} px (below {MIN_SIDE}): they "
            "are upsampled to the view size and carry little to learn from; check the folder",
            stacklevel=2,
        )
    storage, why = choose_storage(cfg, files, shape)
    if storage == "stream":
        streamed = [StreamSet(f, workers, cfg.decode) for f in files]
        where = ", JPEGs decoded on the device" if cfg.decode == "device" else ""
        note = f"stream: {why} ({workers} DataLoader workers per process{where})"
        return Splits(streamed[0], streamed[1] if test is not None else None, note, lines)
    cache = default_cache_dir(cfg)
    sets = [load_folder(f, shape, cfg, cache) for f in files]
    return Splits(sets[0], sets[1] if test is not None else None, f"memory: {why}", lines)


def require_labels(images: ImageData, what: str) -> torch.Tensor:
    """The labels of ``images``, or a DataError saying that ``what`` needs them."""
    if images.labels is None:
        raise DataError(
            f"{what} needs labels, but the data has none; use a labelled folder "
            "(root/<class>/*.jpg) or a dataset with labels (cifar10, digits)"
        )
    return images.labels


__all__ = [
    "ImageSet",
    "Splits",
    "StreamSet",
    "choose_storage",
    "cifar10_source",
    "digits_source",
    "folder_source",
    "load_cifar10_arrays",
    "load_digits",
    "load_folder_splits",
    "load_splits",
    "memory_budget",
    "require_labels",
    "stratified_split",
]
