"""Image folders as lists of files: layouts, labels and a compact path store.

Nothing is decoded here. A folder becomes a :class:`FileList` (paths, labels, class names) that
the storages build on: decoded once into memory (:mod:`siamkit.data.memory`), streamed from disk
(:mod:`siamkit.data.stream`) or packed into shards (:mod:`siamkit.data.shards`).

Layouts (:func:`folder_splits`):
    ``root/train/<class>/...`` with ``root/val/...`` (ImageNet) or ``root/test/...`` (CIFAR-10
    as an image folder); ``root/<class>/...`` (a stratified share is held out); or a flat or
    nested folder of unlabelled images. A manifest, a file that lists the images, gives the
    same lists (:mod:`siamkit.data.manifests`).

Labels (``data.labels``), as torchvision's ``ImageFolder`` reads folders: an image's class is
the first-level folder of its split, at any depth below it (``train/<class>/images/x.jpg``).
``auto`` takes a label file where one is given (``data.labels_file``) or found beside the images
(:mod:`siamkit.data.label_files`), else class folders where the data has a ``train/`` split or
where every image sits below one of at least two first-level folders, else no labels. Hidden
files and folders (``.x``, macOS's ``._x.jpg``, ``__MACOSX``) are neither images nor classes.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from siamkit.data.label_files import find_label_file, labels_from_file, read_label_file
from siamkit.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
#: Endings of a manifest, a file that lists the images (:mod:`siamkit.data.manifests`).
MANIFEST_EXTENSIONS = (".csv", ".jsonl", ".parquet")
#: Names of the held-out folder beside ``train/``, in the order they are looked for.
HELD_OUT_FOLDERS = ("val", "test")
#: Paths copied at a time by :meth:`PathStore.take` (its scratch memory is bounded by them).
_TAKE_CHUNK = 16384
#: How a folder's labels are read (``data.labels``).
LABEL_MODES = ("auto", "folders", "file", "none")


def hidden(name: str) -> bool:
    """Whether a file or folder name is hidden: never an image, never a class."""
    return name.startswith(".") or name == "__MACOSX"


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

    @classmethod
    def from_encoded(cls, blob: bytes | bytearray | np.ndarray, offsets: np.ndarray) -> PathStore:
        """A store of paths already encoded, with no string per path on the way.

        Args:
            blob: The UTF-8 paths, one after the other (a manifest of millions of rows).
            offsets: ``N + 1`` positions in ``blob``, the first 0: path ``i`` is
                ``blob[offsets[i]:offsets[i + 1]]``.
        """
        store = cls([])
        store.blob = np.frombuffer(blob, dtype=np.uint8).copy()
        store.offsets = np.array(offsets, dtype=np.int64)  # a copy: the store owns both
        return store

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> str:
        return self.blob[self.offsets[i] : self.offsets[i + 1]].tobytes().decode()

    def take(self, index: list[int] | np.ndarray) -> PathStore:
        """The paths at ``index``, as a new store.

        Copied as bytes, a chunk of paths at a time: a subset of millions of paths makes no
        string per path on the way.
        """
        idx = np.asarray(index, dtype=np.int64).reshape(-1)
        starts = self.offsets[idx]
        lengths = self.offsets[idx + 1] - starts
        offsets = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        blob = np.empty(int(offsets[-1]), dtype=np.uint8)
        for lo in range(0, len(idx), _TAKE_CHUNK):
            hi = min(lo + _TAKE_CHUNK, len(idx))
            # Where each byte of these paths lies in this store's blob.
            shift = np.repeat(starts[lo:hi] - offsets[lo:hi], lengths[lo:hi])
            blob[offsets[lo] : offsets[hi]] = self.blob[shift + np.arange(offsets[lo], offsets[hi])]
        return PathStore.from_encoded(blob, offsets)

    def tolist(self) -> list[str]:
        """Every path, as strings."""
        return [self[i] for i in range(len(self))]


@dataclass
class FileList:
    """The image files of one split, undecoded.

    Attributes:
        root: The folder they were listed from, or the manifest that lists them (for
            messages and cache keys).
        paths: Absolute path of every image.
        labels: ``(N,)`` int64 class index of each image, or ``None`` for unlabelled folders.
        classes: Class names, index = label.
        label_source: Where the labels came from, for messages: ``class folders``,
            ``label file <path>``, ``manifest column label``, or ``none``.
    """

    root: str
    paths: PathStore
    labels: torch.Tensor | None = None
    classes: list[str] | None = None
    label_source: str = "none"

    def __len__(self) -> int:
        return len(self.paths)

    def describe(self, split: str) -> str:
        """One line on what was read: the split, its images, classes and label source."""
        if self.labels is None:
            give = (
                "a label column gives them"
                if self.root.lower().endswith(MANIFEST_EXTENSIONS)
                else "class folders or data.labels_file=PATH give them"
            )
            return f"{split}: {len(self)} images in {self.root}, no labels ({give})"
        other = (
            "; data.labels=none reads it unlabelled" if self.label_source == "class folders" else ""
        )
        return (
            f"{split}: {len(self)} images in {self.root}, {len(self.classes or [])} classes "
            f"(labels from {self.label_source}{other})"
        )

    def subset(self, index: torch.Tensor) -> FileList:
        """The files at ``index`` (a 1-D index tensor), in that order."""
        return FileList(
            self.root,
            self.paths.take(index.numpy()),
            None if self.labels is None else self.labels[index],
            self.classes,
            self.label_source,
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
                if hidden(entry.name):
                    continue
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


def list_files(
    root: Path,
    classes: list[str] | None = None,
    labels: str = "auto",
    labels_file: str | Path | None = None,
    search: tuple[Path, ...] | None = None,
) -> FileList:
    """Every image under ``root``, with its labels read as ``labels`` says.

    Args:
        root: The folder (a split, or the whole data).
        classes: The training split's class names, so that labels agree across splits.
        labels: ``auto``, ``folders``, ``file`` or ``none`` (see the module docstring).
        labels_file: A label file given by the user, for this split.
        search: Folders where a well-known label file is looked for (default: ``root``).

    Raises:
        DataError: Missing or empty folder, classes the training split lacks, images in no
            class folder under ``labels: folders``, or no label file under ``labels: file``.
    """
    check_folder(root)
    rel = _walk(root)
    if not rel:
        raise DataError(
            f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {str(root)!r}; "
            "check the path or the file extensions"
        )
    paths = PathStore([str(root / r) for r in rel])
    if labels == "none":
        return FileList(str(root), paths)
    places = (root,) if search is None else search
    by_file = _file_labels(root, rel, labels_file, places) if labels in ("auto", "file") else None
    if by_file is not None:
        names, source = by_file
        return _labelled(root, paths, names, classes, f"label file {source}")
    if labels == "file":
        raise DataError(
            f"data.labels is 'file' but no label file names the images of {str(root)!r}; pass "
            "data.labels_file=PATH (lines of 'file name, class'), or data.labels=auto"
        )
    firsts = [r.split("/", 1)[0] if "/" in r else None for r in rel]
    return _folder_labels(root, paths, firsts, classes, labels)


def _file_labels(
    root: Path, rel: list[str], labels_file: str | Path | None, search: tuple[Path, ...]
) -> tuple[list[str], Path] | None:
    """The classes a label file gives ``root``'s images, with the file.

    The file given is tried first, then a well-known one found beside the images; ``None``
    where no file names them.
    """
    found = (find_label_file(place) for place in search)
    for path in (Path(labels_file) if labels_file else None, *found):
        if path is None:
            continue
        if not path.is_file():
            raise DataError(f"data.labels_file {str(path)!r} does not exist; check the path")
        names = labels_from_file(rel, read_label_file(path), path, root)
        if names is not None:
            return names, path
    return None


def _folder_labels(
    root: Path,
    paths: PathStore,
    firsts: list[str | None],
    classes: list[str] | None,
    labels: str,
) -> FileList:
    """Labels from first-level class folders, or none where ``auto`` finds no such layout."""
    loose = sum(f is None for f in firsts)
    found = sorted({f for f in firsts if f is not None})
    if labels == "folders" and loose:
        raise DataError(
            f"data.labels is 'folders' but {loose} images sit directly in {str(root)!r}, in no "
            "class folder; move them into root/<class>/, or use data.labels=auto or none"
        )
    if loose:
        if found:
            warnings.warn(
                f"{root} mixes {len(firsts) - loose} images in class folders with {loose} "
                "elsewhere; it is read as unlabelled. For labels put every image in "
                "root/<class>/",
                stacklevel=3,
            )
        return FileList(str(root), paths)
    if labels == "auto" and classes is None and len(found) < 2:
        return FileList(str(root), paths)  # one folder of photos (or a wrapper) is no class
    if labels == "auto" and classes is not None and not set(found) & set(classes):
        # A held-out folder whose folders are none of the training classes (test/images/):
        # not labelled, and said so, where an error would stop a run that needs no labels.
        warnings.warn(
            f"{root} holds its images in folders {found[:3]} that are none of the training "
            "classes: it is read as unlabelled, so its evaluations are skipped; give its "
            "labels with data.labels_file=PATH (lines of 'file name, class')",
            stacklevel=3,
        )
        return FileList(str(root), paths)
    names = [f for f in firsts if f is not None]
    return _labelled(root, paths, names, classes, "class folders")


def _labelled(
    root: Path, paths: PathStore, names: list[str], classes: list[str] | None, source: str
) -> FileList:
    """A file list labelled by class ``names`` (one per image), in ``classes``'s order."""
    found = sorted(set(names))
    classes = classes or found
    unknown = set(found) - set(classes)
    if unknown:
        shown = sorted(unknown)
        fix = (
            "give the images' labels with data.labels_file=PATH (lines of 'file name, class'), "
            "or move them into class folders named as the training split's"
            if source == "class folders"
            else "use the training split's class names in the label file"
        )
        raise DataError(
            f"{root} has classes {shown[:5]}{' ...' if len(shown) > 5 else ''} ({len(shown)}) "
            f"that the training split lacks (from {source}); {fix}"
        )
    lookup = {c: i for i, c in enumerate(classes)}
    labels = torch.tensor([lookup[n] for n in names], dtype=torch.int64)
    return FileList(str(root), paths, labels, classes, source)


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


def folder_splits(
    root: Path,
    test_fraction: float,
    labels: str = "auto",
    labels_file: str | Path | None = None,
) -> tuple[FileList, FileList | None]:
    """Training files and, where labels allow, held-out files of an image folder."""
    check_folder(root)
    layout = split_folders(root)
    if layout is not None:
        # A label file is the held-out split's (ImageNet's and Tiny ImageNet's val/): the one
        # given, or a well-known one in val/ or beside it; the training split has its folders.
        train = list_files(layout[0], None, labels, None, search=())
        held_out = layout[1]
        test = None
        if held_out is not None:
            places = (held_out, root)
            test = list_files(held_out, train.classes, labels, labels_file, places)
        return train, test
    full = list_files(root, None, labels, labels_file)
    if full.labels is None:
        return full, None
    train_idx, test_idx = stratified_split(full.labels, test_fraction, seed=0)
    return full.subset(train_idx), full.subset(test_idx)
