"""Memory storage: every image decoded once into one uint8 tensor, for sets known to be small.

Digits, CIFAR-10 at 32 px and other small folders train fastest this way: batches are index
gathers from one ``(N, 3, H, W)`` tensor, and the whole view recipe runs batched on the
training device. A folder is decoded by several processes straight into a memory-mapped ``.npy``
file in the decode cache (keyed by every file's path, size and mtime), so no process holds a
second copy, a second run starts in seconds, and the processes of a multi-GPU run share the
same pages. :func:`~siamkit.data.datasets.load_splits` refuses sets that would not fit before
decoding anything, and picks streaming for them under ``data.storage: auto``.

Images keep their shape: the common shape of the folder (its most frequent size), its shorter
side at most ``data.decode_size``. An image of another shape is resized to cover it and
centre-cropped (a folder of mixed shapes is streamed under ``auto``, so that random crops see
whole images).
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import os
import tempfile
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from siamkit.config import DataConfig
from siamkit.data.decode import DECODE_ERRORS, ViewSpec, image_size, open_image, open_rgb
from siamkit.data.files import FileList
from siamkit.data.loader import Batch
from siamkit.errors import DataError
from siamkit.safe_io import atomic_write_text

log = logging.getLogger(__name__)

_CACHE_VERSION = 2  # 2: (N, 3, H, W) arrays of any aspect ratio
#: Shorter side kept in memory when ``data.decode_size`` is not set (the usual ImageNet size).
DEFAULT_MAX_SIDE = 256
#: Headers read to find a folder's common image shape.
SHAPE_SAMPLE = 256


@dataclass
class ImageSet:
    """Decoded images and their labels (memory storage).

    Attributes:
        images: ``(N, 3, H, W)`` uint8 tensor.
        labels: ``(N,)`` int64 tensor, or ``None`` for unlabelled data.
        classes: Class names, index = label.
        paths: Source file of each image (``None`` for embedded data).
    """

    images: torch.Tensor
    labels: torch.Tensor | None = None
    classes: list[str] | None = None
    paths: list[str] | None = None

    storage = "memory"
    num_workers = 0  # batches are index gathers in the training process

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, index: torch.Tensor) -> ImageSet:
        """The images at ``index`` (a 1-D index tensor)."""
        return ImageSet(
            images=self.images[index],
            labels=None if self.labels is None else self.labels[index],
            classes=self.classes,
            paths=None if self.paths is None else [self.paths[i] for i in index.tolist()],
        )

    def describe(self, i: int) -> str:
        """The source file of image ``i``, or its position for embedded data."""
        return self.paths[i] if self.paths else f"image {i}"

    @property
    def image_side(self) -> int:
        """The side of the (square, equal-sized) images held."""
        return int(self.images.shape[-1])

    def dataset(self, specs: list[ViewSpec], seed: int) -> torch.utils.data.Dataset[Batch]:
        """Whole-image batches (the device cuts the views, so ``specs`` are not needed)."""
        return _MemoryDataset(self)

    def streaming_loader(
        self, specs: list[ViewSpec], batch_size: int, seed: int, pin_memory: bool = False
    ) -> None:
        """None: the generic loader gathers batches from memory."""
        return None


class _MemoryDataset(torch.utils.data.Dataset[Batch]):
    """Batches of whole uint8 images; ``__getitems__`` gathers a batch in one indexing."""

    def __init__(self, images: ImageSet) -> None:
        self.images = images.images
        n = len(images)
        self.labels = images.labels if images.labels is not None else torch.full((n,), -1)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, item: tuple[int, int]) -> Batch:
        return self.__getitems__([item])

    def __getitems__(self, items: list[tuple[int, int]]) -> Batch:
        index = torch.tensor([i for _, i in items], dtype=torch.int64)
        x = self.images[index]
        return Batch(x, self.labels[index], index, torch.zeros(len(index), dtype=torch.bool))


# --------------------------------------------------------------------------------------------
# The shape a folder is kept at
# --------------------------------------------------------------------------------------------
@dataclass
class FolderShape:
    """The common image shape of a folder, from a sample of headers.

    Attributes:
        height: Rows kept in memory.
        width: Columns kept in memory.
        uniform: Every sampled image has the same shape.
        sampled: Headers read.
        smallest: Shorter side of the smallest sampled image.
    """

    height: int
    width: int
    uniform: bool
    sampled: int
    smallest: int = 0

    def bytes_for(self, n: int) -> int:
        """Bytes of ``n`` decoded RGB images of this shape."""
        return n * 3 * self.height * self.width


def folder_shape(files: FileList, decode_size: int | None) -> FolderShape:
    """The most frequent size among up to :data:`SHAPE_SAMPLE` headers.

    Its shorter side is reduced to ``decode_size`` (default :data:`DEFAULT_MAX_SIDE`) but never
    enlarged: a folder of 28 x 28 images stays 28 x 28.
    """
    rng = np.random.default_rng(0)
    n = len(files)
    pick = rng.choice(n, size=min(n, SHAPE_SAMPLE), replace=False)
    sizes = [s for s in (image_size(files.paths[int(i)]) for i in pick) if s is not None]
    if not sizes:
        return FolderShape(
            decode_size or DEFAULT_MAX_SIDE, decode_size or DEFAULT_MAX_SIDE, True, 0
        )
    (w, h), _ = collections.Counter(sizes).most_common(1)[0]
    # An explicit side is kept (enlarging small images if asked to); the default never enlarges.
    side = decode_size if decode_size is not None else min(min(w, h), DEFAULT_MAX_SIDE)
    scale = side / min(w, h)
    return FolderShape(
        height=max(side, round(h * scale)),
        width=max(side, round(w * scale)),
        uniform=len(set(sizes)) == 1,
        sampled=len(sizes),
        smallest=min(min(s) for s in sizes),
    )


# --------------------------------------------------------------------------------------------
# Decoding into memory
# --------------------------------------------------------------------------------------------
def decode_image(path: str | Path, height: int, width: int | None = None) -> np.ndarray | None:
    """Decode one image to ``(height, width, 3)`` uint8 RGB.

    Resized to cover that shape (aspect ratio kept), then centre-cropped. ``width`` defaults to
    ``height`` (a square).

    Returns ``None`` when the file cannot be read (corrupt, truncated, not an image).
    """
    width = width or height
    try:
        with open_image(path) as f:
            im = open_rgb(f)
            w, h = im.size
            if (w, h) != (width, height):
                scale = max(width / w, height / h)
                nw, nh = max(width, round(w * scale)), max(height, round(h * scale))
                im = im.resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=None)
                left, top = (nw - width) // 2, (nh - height) // 2
                im = im.crop((left, top, left + width, top + height))
            return np.asarray(im, dtype=np.uint8)
    except DECODE_ERRORS:
        return None


def _decode_chunk(job: tuple[list[str], int, str, int, int]) -> list[int]:
    """Decode ``paths`` into rows ``start...`` of the ``.npy`` at ``out``; the bad rows."""
    paths, start, out, height, width = job
    array = np.load(out, mmap_mode="r+")
    bad = []
    for i, p in enumerate(paths):
        img = decode_image(p, height, width)
        if img is None:
            bad.append(start + i)
        else:
            array[start + i] = img.transpose(2, 0, 1)
    array.flush()
    return bad


def decode_into(out: Path, files: list[str], height: int, width: int, workers: int) -> list[int]:
    """Decode ``files`` into a new ``(N, 3, height, width)`` uint8 ``.npy`` at ``out``.

    Workers write their rows straight into the memory-mapped file: nothing is pickled back,
    and no process holds the whole array. Returns the indices of unreadable files (their rows
    stay zero).
    """
    np.lib.format.open_memmap(out, mode="w+", dtype=np.uint8, shape=(len(files), 3, height, width))
    chunk = max(1, min(2000, len(files) // (4 * workers) + 1))
    jobs = [(files[i : i + chunk], i, str(out), height, width) for i in range(0, len(files), chunk)]
    log.info("decoding %d images at %dx%d (cached for the next run)", len(files), width, height)
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_decode_chunk, jobs))
    else:
        results = [_decode_chunk(j) for j in jobs]
    return [i for bad in results for i in bad]


def load_folder(
    files: FileList, shape: FolderShape, cfg: DataConfig, cache_dir: str | None
) -> ImageSet:
    """Decode (or load from the cache) every file of ``files`` at ``shape``.

    Args:
        files: The split's files and labels.
        shape: The shape to keep (:func:`folder_shape`).
        cfg: Data config (strictness, decode workers).
        cache_dir: Folder of the decode cache, or ``None`` for no cache (a temporary file then
            holds the decoded array while it is in use).

    Raises:
        DataError: An unreadable image under ``cfg.strict``, or no readable image at all.
    """
    paths = files.paths.tolist()
    stem = _cache_stem(files, shape, cache_dir) if cache_dir else None
    cached = _read_cache(stem, (len(paths), 3, shape.height, shape.width)) if stem else None
    if cached is not None:
        array, bad = cached
    else:
        array, bad = _decode(paths, shape, cfg.num_decode_workers, stem, files.root)
    if bad:
        names = ", ".join(paths[i] for i in bad[:5])
        if cfg.strict:
            raise DataError(
                f"{len(bad)} unreadable image(s) under {files.root} (e.g. {names}); remove or "
                "replace them, or drop --strict to skip them with a warning"
            )
        warnings.warn(
            f"skipped {len(bad)} unreadable image(s) of {len(paths)} under {files.root} "
            f"(e.g. {names}); use --strict to make this an error",
            stacklevel=2,
        )
    images = torch.from_numpy(array)
    if not bad:
        return ImageSet(images, files.labels, files.classes, paths)
    bad_set = set(bad)
    keep = torch.tensor([i for i in range(len(paths)) if i not in bad_set], dtype=torch.int64)
    if not len(keep):
        raise DataError(f"none of the {len(paths)} images under {files.root} could be read")
    return ImageSet(images, files.labels, files.classes, paths).subset(keep)


def _decode(
    paths: list[str], shape: FolderShape, workers: int, stem: Path | None, root: str
) -> tuple[np.ndarray, list[int]]:
    """Decode into the cache (``stem``) or, without one, into a temporary file."""
    if stem is None:
        fd, name = tempfile.mkstemp(suffix=".npy", prefix="siamkit-decoded-")
        os.close(fd)
        try:
            bad = decode_into(Path(name), paths, shape.height, shape.width, workers)
            return np.load(name, mmap_mode="c"), bad  # the mapping outlives the file name
        finally:
            os.unlink(name)
    try:
        stem.parent.mkdir(parents=True, exist_ok=True)
        tmp = _with_ext(stem, f".{os.getpid()}.tmp.npy")
        bad = decode_into(tmp, paths, shape.height, shape.width, workers)
        array_file = _with_ext(stem, ".npy")
        # A process that decoded the same set at the same time may have published first: its
        # file is the same images, and is kept (a cache file is never replaced while in use).
        if not _publish(tmp, array_file):
            cached = _read_cache(stem, (len(paths), 3, shape.height, shape.width))
            if cached is not None:
                return cached
        marker = json.dumps({"bad": bad, "root": root, "bytes": array_file.stat().st_size})
        atomic_write_text(_with_ext(stem, ".json"), marker, "decode cache")  # written last
        return np.load(array_file, mmap_mode="c"), bad
    except OSError as err:  # a read-only or full cache folder must not stop training
        warnings.warn(f"could not write the decode cache at {stem}: {err}", stacklevel=2)
        return _decode(paths, shape, workers, None, root)


def _publish(tmp: Path, dest: Path) -> bool:
    """Move ``tmp`` to ``dest`` unless ``dest`` exists; whether it was moved.

    A hard link fails where the name exists, atomically; where the filesystem has no hard
    links, a rename is made only if ``dest`` is absent.
    """
    try:
        os.link(tmp, dest)
    except FileExistsError:
        tmp.unlink(missing_ok=True)
        return False
    except OSError:
        if dest.exists():
            tmp.unlink(missing_ok=True)
            return False
        os.replace(tmp, dest)
        return True
    tmp.unlink(missing_ok=True)
    return True


def _read_cache(stem: Path, shape: tuple[int, ...]) -> tuple[np.ndarray, list[int]] | None:
    """The cached array and its unreadable rows, or ``None`` when there is no usable entry.

    An entry is checked before use: the marker must be valid JSON, the array file as many
    bytes as the marker recorded, and its header of the expected shape. A damaged entry (a
    truncated file, a copy cut short) is removed with a warning and decoded again.
    """
    marker, array_file = _with_ext(stem, ".json"), _with_ext(stem, ".npy")
    if not marker.is_file():
        return None
    try:
        info = json.loads(marker.read_text())
        bad = [int(i) for i in info["bad"]]
        size = array_file.stat().st_size
        if "bytes" in info and size != int(info["bytes"]):
            raise ValueError(f"{size} bytes where {info['bytes']} were written")
        array = np.load(array_file, mmap_mode="c")
        if tuple(array.shape) != shape or array.dtype != np.uint8:
            raise ValueError(f"an array of shape {tuple(array.shape)}, expected {shape}")
        return array, bad
    except (OSError, ValueError, KeyError, TypeError) as err:
        warnings.warn(
            f"the decode cache entry {array_file} is damaged ({err}); it is removed and the "
            "images are decoded again",
            stacklevel=3,
        )
        marker.unlink(missing_ok=True)
        array_file.unlink(missing_ok=True)
        return None


def default_cache_dir(cfg: DataConfig) -> str | None:
    """``data.cache_dir``, else ``$SIAMKIT_CACHE``, else ``~/.cache/siamkit``.

    ``None`` when turned off (``none``, ``off`` or empty).
    """
    base = cfg.cache_dir or os.environ.get("SIAMKIT_CACHE") or str(Path.home() / ".cache/siamkit")
    return None if base.lower() in ("none", "off", "") else base


def _cache_stem(files: FileList, shape: FolderShape, base: str) -> Path:
    """Cache file stem for this exact set of files (path, size, mtime) and decoded shape."""
    root = Path(files.root)
    key = f"{_CACHE_VERSION}|{root.resolve()}|{shape.height}x{shape.width}"
    h = hashlib.sha1(key.encode())
    for i in range(len(files)):
        path = files.paths[i]
        st = os.stat(path)
        rel = os.path.relpath(path, root)
        h.update(f"|{rel}|{st.st_size}|{st.st_mtime_ns}".encode())
    side = f"{shape.height}x{shape.width}px"
    return Path(base) / f"{root.name}-{side}-{len(files)}-{h.hexdigest()[:16]}"


def _with_ext(stem: Path, ext: str) -> Path:
    """``stem`` + ``ext`` (not ``with_suffix``, which would cut a folder name like ``set.v1``)."""
    return stem.parent / (stem.name + ext)
