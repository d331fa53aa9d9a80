"""What a data source holds, without training: ``siamkit data inspect``.

For an image folder or a manifest (or CIFAR-10 as a folder): each split's line (images,
classes, where the labels come from), the image sizes found from the files' headers (smallest,
median, largest by pixel count), the files that cannot be opened (counted, the first ten named),
and the storage ``data.storage: auto`` would choose, with its reason. Other sources (the
bundled digits, torchvision's CIFAR-10 files, packed shards) are loaded as a run loads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from siamkit.config import DataConfig
from siamkit.data.datasets import choose_storage, load_splits, split_line
from siamkit.data.decode import DECODE_ERRORS, open_image
from siamkit.data.files import FileList
from siamkit.data.manifests import data_splits, is_manifest
from siamkit.data.memory import folder_shape

#: Unreadable files named in the report (all are counted).
NAMED_UNREADABLE = 10


@dataclass
class Survey:
    """What :func:`survey` found.

    Attributes:
        lines: One line per split (as a run prints them).
        sizes: ``(width, height)`` of the smallest, the median and the largest image by pixel
            count; empty where the source holds no files.
        unreadable: Files that could not be opened as images.
        storage: The storage ``auto`` would choose (or the one asked for), and why.
    """

    lines: list[str]
    sizes: list[tuple[int, int]] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    storage: str = ""

    def report(self) -> list[str]:
        """The lines ``siamkit data inspect`` prints."""
        out = [f"data {line}" for line in self.lines]
        if self.sizes:
            small, median, large = (f"{w}x{h}" for w, h in self.sizes)
            out.append(f"image sizes: smallest {small}, median {median}, largest {large}")
        if self.unreadable:
            named = ", ".join(self.unreadable[:NAMED_UNREADABLE])
            more = " ..." if len(self.unreadable) > NAMED_UNREADABLE else ""
            out.append(f"unreadable: {len(self.unreadable)} file(s): {named}{more}")
        else:
            out.append("unreadable: none")
        out.append(f"storage: {self.storage}")
        return out


def survey(cfg: DataConfig) -> Survey:
    """What the data of ``cfg`` holds (see the module docstring).

    Raises:
        DataError: As a run reading the same data would raise it.
    """
    root = Path(cfg.path) if cfg.path else None
    # A manifest lists files as a folder holds them: surveyed the same way.
    is_folder = root is not None and (
        is_manifest(root) or (root.is_dir() and not (root / "siamkit-shards.json").exists())
    )
    if cfg.dataset == "cifar10" and root is not None and not is_manifest(root):
        is_folder = is_folder and (root / "train").is_dir()  # else torchvision's files
    if is_folder and cfg.storage == "shards":
        is_folder = False  # a run refuses a folder as shards: so does the survey, by loading
    if cfg.dataset == "digits" or not is_folder or root is None:
        splits = load_splits(cfg, say=False)
        return Survey(list(splits.lines), storage=splits.note)
    train, test = data_splits(root, cfg.test_fraction, cfg.labels, cfg.labels_file)
    files = [f for f in (train, test) if f is not None]
    lines = [f.describe(name) for name, f in zip(("train", "test"), files, strict=False)]
    if test is None:
        lines.append(split_line("test", None))
    sizes, unreadable = _header_sizes(files)
    shape = folder_shape(train, cfg.decode_size or (32 if cfg.dataset == "cifar10" else None))
    storage, why = choose_storage(cfg, files, shape)
    return Survey(lines, _extremes(sizes), unreadable, f"{storage} ({why})")


def _header_sizes(files: list[FileList]) -> tuple[list[tuple[int, int]], list[str]]:
    """Every image's ``(width, height)`` from its header, and the files that cannot be opened."""
    sizes: list[tuple[int, int]] = []
    unreadable: list[str] = []
    for listed in files:
        for path in listed.paths.tolist():
            try:
                with open_image(path) as im:  # the header only
                    sizes.append(im.size)
            except DECODE_ERRORS:
                unreadable.append(path)
    return sizes, unreadable


def _extremes(sizes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The smallest, median and largest size by pixel count (empty for no sizes)."""
    if not sizes:
        return []
    ordered = sorted(sizes, key=lambda s: (s[0] * s[1], s))
    return [ordered[0], ordered[len(ordered) // 2], ordered[-1]]


__all__ = ["Survey", "survey"]
