"""Datasets as in-memory uint8 tensors (pipeline step 1, the data half).

Every source (an image folder, CIFAR-10, scikit-learn's digits) becomes an :class:`ImageSet`: a
``(N, 3, S, S)`` uint8 tensor plus optional labels. Images are decoded once, resized to a square
``S`` (shorter side resized, centre crop) and cached on disk keyed by every file's path, size and
mtime, so a second run starts in seconds and a changed file is decoded again.

Training then indexes this tensor and augments whole batches on the training device
(:mod:`siamkit.data.augment`); no per-image work happens in DataLoader workers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from siamkit.config import DataConfig
from siamkit.errors import DataError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
_CACHE_VERSION = 1


@dataclass
class ImageSet:
    """Decoded images and their labels.

    Attributes:
        images: ``(N, 3, S, S)`` uint8 tensor.
        labels: ``(N,)`` int64 tensor, or ``None`` for unlabelled data.
        classes: Class names, index = label.
        paths: Source file of each image (``None`` for embedded data).
    """

    images: torch.Tensor
    labels: torch.Tensor | None = None
    classes: list[str] | None = None
    paths: list[str] | None = None

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


@dataclass
class Splits:
    """A training set and, where labels allow, a held-out set for monitoring and evaluation."""

    train: ImageSet
    test: ImageSet | None = None


#: A training batch: images (B, 3, S, S) uint8, labels (B,) (-1 if unknown), indices (B,).
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class _IndexDataset(torch.utils.data.Dataset[Batch]):
    """Batches of uint8 images by index; ``__getitems__`` gathers a whole batch in one indexing."""

    def __init__(self, images: ImageSet) -> None:
        self.images = images.images
        n = len(images)
        self.labels = images.labels if images.labels is not None else torch.full((n,), -1)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> Batch:
        return self.images[i], self.labels[i], torch.tensor(i)

    def __getitems__(self, idx: list[int]) -> Batch:
        index = torch.as_tensor(idx)
        return self.images[index], self.labels[index], index


def batch_dataset(images: ImageSet) -> torch.utils.data.Dataset[Batch]:
    """A Dataset whose batches are ``(images (B, 3, S, S) uint8, labels (B,), indices (B,))``.

    Labels are -1 for unlabelled images; indices are positions in ``images`` (methods with
    per-image state, such as SimSiam's moving-average variant, key it by them).

    Use it with ``collate_fn=as_batch`` (the batch is already stacked).
    """
    return _IndexDataset(images)


def as_batch(batch: Batch) -> Batch:
    """Collate function for :func:`batch_dataset`: the batch arrives stacked."""
    return batch


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------
def load_splits(cfg: DataConfig) -> Splits:
    """Load the dataset named by ``cfg`` as uint8 tensors.

    Args:
        cfg: The data section of the run config.

    Returns:
        Training images and, when labels are known, a held-out split.

    Raises:
        DataError: The path is missing or holds no images, or (``strict``) an image is unreadable.
    """
    if cfg.dataset == "digits":
        return load_digits(cfg.decode_size or 32)
    if cfg.dataset == "cifar10":
        return load_cifar10(cfg)
    assert cfg.path is not None  # DataConfig requires it for folders
    return load_folder_splits(Path(cfg.path), cfg)


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


def load_cifar10(cfg: DataConfig) -> Splits:
    """CIFAR-10 from an image folder (``train/<class>/*``, ``test/<class>/*``), a torchvision copy
    (``cifar-10-batches-py``), or torchvision's download when ``cfg.download`` is set."""
    size = cfg.decode_size or 32
    root = Path(cfg.path) if cfg.path else None
    if root is not None and (root / "train").is_dir():
        return load_folder_splits(root, cfg)
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
# Image folders
# --------------------------------------------------------------------------------------------
def list_images(root: Path) -> list[Path]:
    """All image files under ``root`` (recursively), sorted for a stable order."""
    if not root.exists():
        raise DataError(
            f"data path {str(root)!r} does not exist; pass --data with a folder of images "
            "(root/<class>/*.jpg for labels, or a flat folder)"
        )
    if not root.is_dir():
        raise DataError(f"data path {str(root)!r} is not a folder; pass the folder that holds it")
    files = sorted(
        p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
    )
    if not files:
        raise DataError(
            f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {str(root)!r}; "
            "check the path or the file extensions"
        )
    return files


def load_folder_splits(root: Path, cfg: DataConfig) -> Splits:
    """An image folder: ``train/`` + ``test/`` subfolders, a labelled ``root/<class>/*`` tree
    (a stratified ``test_fraction`` is held out), or a flat folder (no held-out split)."""
    size = cfg.decode_size or (32 if cfg.dataset == "cifar10" else 256)
    if (root / "train").is_dir():
        train = load_folder(root / "train", size, cfg)
        test = (
            load_folder(root / "test", size, cfg, classes=train.classes)
            if (root / "test").is_dir()
            else None
        )
        return Splits(train, test)
    full = load_folder(root, size, cfg)
    if full.labels is None:
        return Splits(full, None)
    train_idx, test_idx = stratified_split(full.labels, cfg.test_fraction, seed=0)
    return Splits(full.subset(train_idx), full.subset(test_idx))


def load_folder(
    root: Path, size: int, cfg: DataConfig, classes: list[str] | None = None
) -> ImageSet:
    """Decode (or load from the cache) every image under ``root`` as ``(N, 3, size, size)``.

    The folder is labelled when every image sits exactly one level below ``root`` (its parent
    folder is the class); otherwise it is unlabelled.

    Args:
        root: The folder.
        size: Side of the decoded square images.
        cfg: Data config (cache folder, strictness, decode workers).
        classes: Class names to use (the training split's), so labels agree across splits.

    Raises:
        DataError: Missing/empty folder, or an unreadable image under ``cfg.strict``.
    """
    files = list_images(root)
    rel = [f.relative_to(root) for f in files]
    labelled = all(len(r.parts) == 2 for r in rel)
    if labelled:
        found = sorted({r.parts[0] for r in rel})
        classes = classes or found
        unknown = set(found) - set(classes)
        if unknown:
            raise DataError(
                f"{root} has classes {sorted(unknown)} that the training split lacks; "
                "use the same class folders in train/ and test/"
            )
    cache = _cache_path(root, files, size, cfg)
    if cache is not None and _with_ext(cache, ".json").is_file():
        images = np.load(_with_ext(cache, ".npy"))
        bad = json.loads(_with_ext(cache, ".json").read_text())["bad"]
    else:
        images, bad = _decode_all(files, size, cfg.num_decode_workers)
        if cache is not None:
            _write_cache(cache, images, {"bad": bad, "root": str(root)})
    if bad:
        names = ", ".join(str(files[i]) for i in bad[:5])
        if cfg.strict:
            raise DataError(
                f"{len(bad)} unreadable image(s) under {root} (e.g. {names}); remove or replace "
                "them, or drop --strict to skip them with a warning"
            )
        warnings.warn(
            f"skipped {len(bad)} unreadable image(s) of {len(files)} under {root} "
            f"(e.g. {names}); use --strict to make this an error",
            stacklevel=2,
        )
    keep = [i for i in range(len(files)) if i not in set(bad)]
    if not keep:
        raise DataError(f"none of the {len(files)} images under {root} could be read")
    x = torch.from_numpy(np.ascontiguousarray(images[keep])).permute(0, 3, 1, 2).contiguous()
    labels = None
    if labelled:
        assert classes is not None
        lookup = {c: i for i, c in enumerate(classes)}
        labels = torch.tensor([lookup[rel[i].parts[0]] for i in keep], dtype=torch.int64)
    return ImageSet(x, labels, classes if labelled else None, [str(files[i]) for i in keep])


def decode_image(path: str | Path, size: int) -> np.ndarray | None:
    """Decode one image to ``(size, size, 3)`` uint8: RGB, shorter side resized, centre crop.

    Returns ``None`` when the file cannot be read (corrupt, truncated, not an image).
    """
    try:
        with Image.open(path) as f:
            im = f.convert("RGB")  # forces a full decode: truncated files fail here
            w, h = im.size
            if (w, h) != (size, size):
                scale = size / min(w, h)
                nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
                im = im.resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=None)
                left, top = (nw - size) // 2, (nh - size) // 2
                im = im.crop((left, top, left + size, top + size))
            return np.asarray(im, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None


def _decode_chunk(args: tuple[list[str], int]) -> tuple[np.ndarray, list[int]]:
    paths, size = args
    out = np.zeros((len(paths), size, size, 3), dtype=np.uint8)
    bad = []
    for i, p in enumerate(paths):
        arr = decode_image(p, size)
        if arr is None:
            bad.append(i)
        else:
            out[i] = arr
    return out, bad


def _decode_all(files: list[Path], size: int, workers: int) -> tuple[np.ndarray, list[int]]:
    """Decode ``files`` in ``workers`` processes; returns images and indices of unreadable ones."""
    paths = [str(f) for f in files]
    chunk = max(1, min(2000, len(paths) // (4 * workers) + 1))
    jobs = [(paths[i : i + chunk], size) for i in range(0, len(paths), chunk)]
    log.info("decoding %d images at %dx%d (cached for the next run)", len(paths), size, size)
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_decode_chunk, jobs))
    else:
        results = [_decode_chunk(j) for j in jobs]
    images = np.concatenate([r[0] for r in results])
    starts = range(0, len(paths), chunk)
    bad = [s + i for s, (_, b) in zip(starts, results, strict=True) for i in b]
    return images, bad


def _cache_path(root: Path, files: list[Path], size: int, cfg: DataConfig) -> Path | None:
    """Cache file stem for this exact set of files (path, size, mtime) and decode size."""
    base = cfg.cache_dir or os.environ.get("SIAMKIT_CACHE") or str(Path.home() / ".cache/siamkit")
    if base.lower() in ("none", "off", ""):
        return None
    h = hashlib.sha1(f"{_CACHE_VERSION}|{root.resolve()}|{size}".encode())
    for f in files:
        st = f.stat()
        h.update(f"|{f.name}|{f.parent.name}|{st.st_size}|{st.st_mtime_ns}".encode())
    return Path(base) / f"{root.name}-{size}px-{len(files)}-{h.hexdigest()[:16]}"


def _with_ext(stem: Path, ext: str) -> Path:
    """``stem`` + ``ext`` (not ``with_suffix``, which would cut a folder name like ``set.v1``)."""
    return stem.parent / (stem.name + ext)


def _write_cache(stem: Path, images: np.ndarray, meta: dict[str, object]) -> None:
    try:
        stem.parent.mkdir(parents=True, exist_ok=True)
        tmp = _with_ext(stem, ".tmp.npy")
        np.save(tmp, images)
        os.replace(tmp, _with_ext(stem, ".npy"))
        _with_ext(stem, ".json").write_text(json.dumps(meta))  # written last: marks complete
    except OSError as err:  # a read-only home must not stop training
        warnings.warn(f"could not write the decode cache at {stem}: {err}", stacklevel=2)


def require_labels(images: ImageSet, what: str) -> torch.Tensor:
    """The labels of ``images``, or a DataError saying that ``what`` needs them."""
    if images.labels is None:
        raise DataError(
            f"{what} needs labels, but the data has none; use a labelled folder "
            "(root/<class>/*.jpg) or a dataset with labels (cifar10, digits)"
        )
    return images.labels
