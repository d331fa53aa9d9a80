"""Image folders as lists of files: layouts, labels and a compact path store.

Nothing is decoded here. A folder becomes a :class:`FileList` (paths, labels, class names) that
the storages build on: decoded once into memory (:mod:`siamkit.data.memory`), streamed from disk
(:mod:`siamkit.data.stream`) or packed into shards (:mod:`siamkit.data.shards`).

Layouts (:func:`folder_splits`):
    ``root/train/<class>/*`` with ``root/val/<class>/*`` (ImageNet) or ``root/test/<class>/*``
    (CIFAR-10 as an image folder); ``root/<class>/*`` (a stratified share is held out); or a flat
    or nested folder of unlabelled images.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from siamkit.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
#: Names of the held-out folder beside ``train/``, in the order they are looked for.
HELD_OUT_FOLDERS = ("val", "test")


class PathStore:
    """Many paths in two NumPy arrays (UTF-8 bytes and offsets) instead of a list of strings.

    DataLoader workers are forked from the training process. A list of a million Python strings
    is copied page by page into every worker as the reference counts are touched; two arrays
    are shared for good.
    """

    def __init__(self, paths: list[str]) -> None:
        encoded = [p.encode() for p in paths]
        self.offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in encoded], out=self.offsets[1:])
        self.blob = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> str:
        return self.blob[self.offsets[i] : self.offsets[i + 1]].tobytes().decode()

    def take(self, index: list[int]) -> PathStore:
        """The paths at ``index``, as a new store."""
        return PathStore([self[i] for i in index])

    def tolist(self) -> list[str]:
        """Every path, as strings."""
        return [self[i] for i in range(len(self))]


@dataclass
class FileList:
    """The image files of one split, undecoded.

    Attributes:
        root: The folder they were listed from (for messages and cache keys).
        paths: Absolute path of every image.
        labels: ``(N,)`` int64 class index of each image, or ``None`` for unlabelled folders.
        classes: Class names, index = label.
    """

    root: str
    paths: PathStore
    labels: torch.Tensor | None = None
    classes: list[str] | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, index: torch.Tensor) -> FileList:
        """The files at ``index`` (a 1-D index tensor), in that order."""
        idx = index.tolist()
        return FileList(
            self.root,
            self.paths.take(idx),
            None if self.labels is None else self.labels[index],
            self.classes,
        )


def _walk(root: Path) -> list[str]:
    """Relative paths of every image file under ``root``, sorted.

    ``os.scandir`` makes one system call a folder, several times faster than ``Path.rglob`` on a
    million files. Links to folders are followed; a link back to a folder above it (a loop,
    which would otherwise nest until the system refuses the path) is a data error that names
    it.

    Raises:
        DataError: A symbolic link leads back to a folder above it.
    """
    found: list[str] = []
    top = root.stat()
    # Each folder to list, with the folders above it (device, inode): a link to one of those
    # is a loop; two links to the same folder elsewhere are not.
    stack: list[tuple[str, frozenset[tuple[int, int]]]] = [
        ("", frozenset({(top.st_dev, top.st_ino)}))
    ]
    while stack:
        rel, above = stack.pop()
        with os.scandir(root / rel if rel else root) as entries:
            for entry in entries:
                name = f"{rel}/{entry.name}" if rel else entry.name
                if entry.is_dir(follow_symlinks=True):
                    info = entry.stat(follow_symlinks=True)
                    key = (info.st_dev, info.st_ino)
                    if key in above:
                        raise DataError(
                            f"{str(root / name)!r} leads back to a folder above it "
                            f"({os.path.realpath(root / name)!r}): a symbolic link loop under "
                            "the data; remove that link or point it elsewhere"
                        )
                    stack.append((name, above | {key}))
                elif entry.name.lower().endswith(IMAGE_EXTENSIONS) and entry.is_file():
                    found.append(name)
    return sorted(found)


def check_folder(root: Path) -> None:
    """Raise a :class:`DataError` naming the fix unless ``root`` is an existing folder."""
    if not root.exists():
        raise DataError(
            f"data path {str(root)!r} does not exist; pass --data with a folder of images "
            "(root/<class>/*.jpg for labels, or a flat folder)"
        )
    if not root.is_dir():
        raise DataError(f"data path {str(root)!r} is not a folder; pass the folder that holds it")


def list_files(root: Path, classes: list[str] | None = None) -> FileList:
    """Every image under ``root``, labelled by class folder when the folder is laid out so.

    The folder is labelled when every image sits exactly one level below ``root`` (its parent
    folder is the class). When some do and some do not, it is treated as unlabelled, with a
    warning that counts both.

    Args:
        root: The folder.
        classes: Class names to use (the training split's), so labels agree across splits.

    Raises:
        DataError: Missing or empty folder, or a class the training split lacks.
    """
    check_folder(root)
    rel = _walk(root)
    if not rel:
        raise DataError(
            f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {str(root)!r}; "
            "check the path or the file extensions"
        )
    depth = [r.count("/") for r in rel]
    in_classes = sum(d == 1 for d in depth)
    paths = PathStore([str(root / r) for r in rel])
    if in_classes != len(rel):
        if in_classes:
            warnings.warn(
                f"{root} mixes {in_classes} images in class folders with "
                f"{len(rel) - in_classes} elsewhere; it is read as unlabelled. For labels put "
                "every image in root/<class>/",
                stacklevel=2,
            )
        return FileList(str(root), paths)
    found = sorted({r.split("/", 1)[0] for r in rel})
    classes = classes or found
    unknown = set(found) - set(classes)
    if unknown:
        raise DataError(
            f"{root} has classes {sorted(unknown)} that the training split lacks; "
            "use the same class folders in train/ and test/"
        )
    lookup = {c: i for i, c in enumerate(classes)}
    labels = torch.tensor([lookup[r.split("/", 1)[0]] for r in rel], dtype=torch.int64)
    return FileList(str(root), paths, labels, classes)


def split_folders(root: Path) -> tuple[Path, Path | None] | None:
    """``(train, held-out)`` folders of a ``train/`` + ``val/`` or ``test/`` layout, else None."""
    if not (root / "train").is_dir():
        return None
    held_out = next((root / n for n in HELD_OUT_FOLDERS if (root / n).is_dir()), None)
    return root / "train", held_out


def stratified_split(
    labels: torch.Tensor, test_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of a class-balanced train/test split drawn with a fixed seed."""
    g = torch.Generator().manual_seed(seed)
    train, test = [], []
    for c in labels.unique(sorted=True).tolist():
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_test = max(1, round(len(idx) * test_fraction)) if len(idx) > 1 else 0
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return torch.cat(train).sort().values, torch.cat(test).sort().values


def folder_splits(root: Path, test_fraction: float) -> tuple[FileList, FileList | None]:
    """Training files and, where labels allow, held-out files of an image folder."""
    check_folder(root)
    layout = split_folders(root)
    if layout is not None:
        train = list_files(layout[0])
        held_out = layout[1]
        test = list_files(held_out, classes=train.classes) if held_out is not None else None
        return train, test
    full = list_files(root)
    if full.labels is None:
        return full, None
    train_idx, test_idx = stratified_split(full.labels, test_fraction, seed=0)
    return full.subset(train_idx), full.subset(test_idx)
