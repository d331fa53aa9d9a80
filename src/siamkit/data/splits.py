"""Class-balanced labelled subsets for semi-supervised evaluation, and their index files.

SimCLR evaluates fine-tuning with 1% and 10% of ImageNet's labels, "sampled in a class-balanced
way (~12.8 and ~128 images per class respectively)" [arXiv:2002.05709, Sec. 6, following Zhai
et al., arXiv:1905.03670]; SimCLRv2 uses the same subsets [arXiv:2006.10029, Sec. 3]. Here every
class keeps ``round(fraction x count)`` images (at least one), drawn with a fixed seed, and the
choice can be written to a plain-text index file so a pretrained model and a from-scratch baseline
are trained on exactly the same images.

An index file is one index (a position in the training split) per line, after one header line::

    # siamkit label subset {"dataset": "digits", "num_images": 1437, "fraction": 0.1, ...}

The header's ``labels_hash`` (a short hash of the training labels) detects a file made for
another data set.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from siamkit.config import DataConfig
from siamkit.errors import ConfigError, DataError
from siamkit.safe_io import atomic_write_text, read_user_text

#: First words of an index file's header line.
HEADER = "# siamkit label subset "


def check_fraction(fraction: float) -> None:
    """Raise :class:`ConfigError` unless ``0 < fraction <= 1`` (NaN is rejected too)."""
    if not 0.0 < fraction <= 1.0:  # False for NaN as well
        raise ConfigError(
            f"label fraction must be in (0, 1], e.g. 0.01 for 1% or 0.1 for 10% of the labels "
            f"(SimCLR's semi-supervised settings), got {fraction}"
        )


def label_subset(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Indices of a class-balanced subset: ``round(fraction x count)`` images of every class.

    Each class keeps at least one image; counts are rounded half up. The classes are visited in
    sorted order and each draws one permutation of its images from one ``torch.Generator``
    seeded with ``seed``, whatever the fraction, so for one seed a smaller subset is contained
    in a larger one (the 1% images are among the 10% images).

    Args:
        labels: ``(N,)`` integer labels of the training split.
        fraction: Share of each class to keep, in (0, 1].
        seed: Seed of the draw.

    Returns:
        ``(M,)`` int64 indices into ``labels``, sorted ascending.

    Raises:
        ConfigError: ``fraction`` outside (0, 1].
        DataError: No labels.
    """
    check_fraction(fraction)
    if labels.numel() == 0:
        raise DataError("cannot draw a labelled subset from an empty training split")
    g = torch.Generator().manual_seed(seed)
    chosen = []
    for c in labels.unique(sorted=True).tolist():
        idx = (labels == c).nonzero().flatten()
        keep = max(1, math.floor(fraction * len(idx) + 0.5))
        chosen.append(idx[torch.randperm(len(idx), generator=g)][:keep])
    return torch.cat(chosen).sort().values.to(torch.int64)


def labels_hash(labels: torch.Tensor) -> str:
    """Short hash of ``(N,)`` labels: identifies the data set (order and classes) of a subset."""
    data = np.ascontiguousarray(labels.cpu().numpy().astype(np.int64))
    return hashlib.sha1(data.tobytes()).hexdigest()[:12]


def dataset_name(data: DataConfig) -> str:
    """A short name of a data config for file names: ``digits``, ``cifar10`` or the folder's."""
    if data.dataset == "folder" and data.path:
        return Path(data.path).resolve().name or "folder"
    return data.dataset


def _percent(fraction: float) -> str:
    """``0.01`` -> ``1pct``, ``0.1`` -> ``10pct``, ``0.005`` -> ``0.5pct``."""
    return f"{fraction * 100:g}pct"


def default_index_path(dataset_name: str, num_images: int, fraction: float, seed: int) -> Path:
    """``splits/<dataset>-<images>-<percent>-seed<seed>.txt``, relative to the working folder.

    Example: ``default_index_path("cifar10", 50000, 0.01, 0)`` is
    ``splits/cifar10-50000-1pct-seed0.txt``.
    """
    check_fraction(fraction)
    return Path("splits") / f"{dataset_name}-{num_images}-{_percent(fraction)}-seed{seed}.txt"


def subset_meta(labels: torch.Tensor, fraction: float, seed: int, dataset: str) -> dict[str, Any]:
    """The header of an index file for this draw (see the module docstring)."""
    return {
        "dataset": dataset,
        "num_images": len(labels),
        "fraction": fraction,
        "seed": seed,
        "labels_hash": labels_hash(labels),
    }


def write_index_file(path: str | Path, indices: torch.Tensor, meta: dict[str, Any]) -> Path:
    """Write ``indices`` (``(M,)``) one per line under a ``#`` header holding ``meta`` as JSON.

    Written to a temporary file and renamed, so a reader never sees half a file.
    """
    lines = [HEADER + json.dumps(meta, sort_keys=True)] + [str(i) for i in indices.tolist()]
    return atomic_write_text(path, "\n".join(lines) + "\n", "label index file")


def read_index_file(path: str | Path) -> tuple[torch.Tensor, dict[str, Any]]:
    """Read an index file back.

    Returns:
        ``(M,)`` int64 indices in file order and the header's meta.

    Raises:
        DataError: Missing file, no header, or a line that is not an integer.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(
            f"index file {str(p)!r} not found; leave --index-file out to draw a subset, or "
            "pass a file written by an earlier run"
        )
    fix = "delete it or pass another --index-file"
    text = read_user_text(p, "index file", DataError, fix).splitlines()
    if not text or not text[0].startswith(HEADER):
        raise DataError(
            f"{str(p)!r} is not a siamkit index file (its first line should start with "
            f"{HEADER.strip()!r}); {fix}"
        )
    try:
        meta = json.loads(text[0][len(HEADER) :])
    except json.JSONDecodeError as err:
        raise DataError(f"index file {str(p)!r} has an unreadable header ({err})") from None
    values = []
    for n, line in enumerate(text[1:], start=2):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            values.append(int(line))
        except ValueError:
            raise DataError(
                f"index file {str(p)!r}, line {n}: {line!r} is not an image index"
            ) from None
    return torch.tensor(values, dtype=torch.int64), meta


def _describe(meta: dict[str, Any]) -> str:
    return (
        f"{meta.get('dataset', '?')} ({meta.get('num_images', '?')} images, labels "
        f"{meta.get('labels_hash', '?')})"
    )


def check_index_file(
    path: str | Path,
    indices: torch.Tensor,
    meta: dict[str, Any],
    labels: torch.Tensor,
    fraction: float,
    seed: int,
    dataset: str,
) -> None:
    """Check that an index file read back belongs to ``labels`` and this fraction and seed.

    Raises:
        DataError: The file was made for other data (another label hash or image count), or
            holds indices out of range or repeated.
        ConfigError: It holds another fraction or seed than the one asked for.
    """
    mine = subset_meta(labels, fraction, seed, dataset)
    if (meta.get("labels_hash"), meta.get("num_images")) != (
        mine["labels_hash"],
        mine["num_images"],
    ):
        raise DataError(
            f"index file {str(path)!r} was made for {_describe(meta)}, but this data is "
            f"{_describe(mine)}; delete it, or pass an --index-file made for this data"
        )
    if meta.get("fraction") != fraction or meta.get("seed") != seed:
        raise ConfigError(
            f"index file {str(path)!r} holds a {meta.get('fraction')} subset drawn with seed "
            f"{meta.get('seed')}, but label fraction {fraction} with seed {seed} was asked "
            "for; pass the file's fraction and seed, or another --index-file"
        )
    n = len(labels)
    if indices.numel() == 0 or int(indices.min()) < 0 or int(indices.max()) >= n:
        raise DataError(
            f"index file {str(path)!r} holds no indices or indices outside [0, {n}); "
            "delete it to draw the subset again"
        )
    if indices.unique().numel() != indices.numel():
        raise DataError(f"index file {str(path)!r} repeats indices; delete it to draw again")


def subset_indices(
    labels: torch.Tensor,
    fraction: float,
    seed: int,
    path: str | Path | None = None,
    dataset: str = "",
) -> torch.Tensor:
    """The labelled subset, read from ``path`` when it exists, else drawn (and written there).

    Args:
        labels: ``(N,)`` labels of the training split.
        fraction: Share of each class, in (0, 1].
        seed: Seed of the draw.
        path: Index file to reuse or create; ``None`` draws without a file.
        dataset: Name recorded in (and checked against) the file, e.g. ``cifar10``.

    Returns:
        ``(M,)`` sorted int64 indices.

    Raises:
        ConfigError: Bad fraction, or a file for another fraction/seed.
        DataError: A file made for another data set, or an unreadable one.
    """
    check_fraction(fraction)
    if path is not None and Path(path).is_file():
        indices, meta = read_index_file(path)
        check_index_file(path, indices, meta, labels, fraction, seed, dataset)
        return indices.sort().values
    indices = label_subset(labels, fraction, seed)
    if path is not None:
        write_index_file(path, indices, subset_meta(labels, fraction, seed, dataset))
    return indices


__all__ = [
    "check_fraction",
    "check_index_file",
    "dataset_name",
    "default_index_path",
    "label_subset",
    "labels_hash",
    "read_index_file",
    "subset_indices",
    "subset_meta",
    "write_index_file",
]
