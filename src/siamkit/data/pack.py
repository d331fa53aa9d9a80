"""Packing an image folder (or a manifest) into shards: ``siamkit pack`` (:func:`pack`).

The format and why litdata are :mod:`siamkit.data.shards`'s, which reads the shards back.
"""

from __future__ import annotations

import io
import json
import multiprocessing as mp
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

from litdata import optimize
from PIL import Image

from siamkit.data.decode import DECODE_ERRORS, open_image, open_rgb
from siamkit.data.files import FileList
from siamkit.data.manifests import data_splits
from siamkit.data.process_group import in_own_process_group
from siamkit.data.shards import CHUNK_BYTES, FORMAT_VERSION, META_FILE, is_url
from siamkit.errors import ConfigError, DataError
from siamkit.safe_io import (
    OutputError,
    atomic_write_text,
    check_apart,
    check_folder_writable,
    staged_folder,
)


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
    labels: str = "auto",
    labels_file: str | Path | None = None,
) -> dict[str, Any]:
    """Pack an image folder into litdata shards (see the module docstring).

    Args:
        data: The image folder (any layout of :func:`~siamkit.data.files.folder_splits`) or
            a manifest (:mod:`siamkit.data.manifests`).
        output: A local folder for the shards (upload it to an object store afterwards).
        max_side: Images whose shorter side is larger are resized to it.
        test_fraction: Held-out share for a ``root/<class>/*`` folder or a labelled manifest
            without a split column (fixed at packing time).
        num_workers: Processes that read and encode.
        strict: Fail on an unreadable image instead of packing it as a counted placeholder.
        overwrite: Replace an existing output folder.
        labels: How labels are read (``data.labels``: auto, folders, file or none).
        labels_file: A label file for the held-out folder (``data.labels_file``).

    Returns:
        The metadata written to ``SHARDS/siamkit-shards.json``.

    Raises:
        ConfigError: ``max_side`` or ``test_fraction`` out of range.
        DataError: Bad folder, or (``strict``) an unreadable image.
        OutputError: The output is the input, inside it or around it; is a file; holds
            something other than shards; or holds shards and ``overwrite`` is not set.
    """
    _check_arguments(output, max_side, test_fraction)
    out = Path(output)
    # Every check comes before anything is read or written: the output is never the input
    # (nor around it), and an existing output is replaced only with ``overwrite`` and only
    # when it is shards (or empty).
    check_apart(out, "--output", {"--data": Path(data)})
    check_folder_writable(out, "shards output")
    _check_replaceable(out, overwrite)
    train, test = data_splits(Path(data), test_fraction, labels, labels_file)
    for split, files in (("train", train), ("test", test)):
        if files is not None:
            print(f"siamkit: data {files.describe(split)}", file=sys.stderr)
    meta: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "source": str(data),
        "max_side": max_side,
        "classes": train.classes,
        "splits": {},
    }
    # Built beside the output and renamed into place at the end: an interrupted or failed pack
    # leaves the earlier output (or nothing), never a half-written folder.
    with staged_folder(out, "shards") as stage:
        for name, files in (("train", train), ("test", test)):
            if files is None:
                continue
            bad = in_own_process_group(_pack_split, files, stage / name, max_side, num_workers)
            _check_unreadable(files, bad, strict)
            meta["splits"][name] = {
                "num_images": len(files),
                "labels": None if files.labels is None else files.labels.tolist(),
                "unreadable": bad,
            }
        atomic_write_text(stage / META_FILE, json.dumps(meta), "shard metadata")
    return meta


def _check_arguments(output: str | Path, max_side: int, test_fraction: float) -> None:
    """Refuse a ``max_side`` or ``test_fraction`` out of range, or an output that is a URL."""
    if max_side < 8:
        raise ConfigError(f"--max-side must be at least 8 pixels, got {max_side}")
    if not 0 <= test_fraction < 1:
        raise ConfigError(f"--test-fraction must be in [0, 1), got {test_fraction}")
    if is_url(str(output)):
        raise OutputError(
            f"pack writes to a local folder, got {output}; pack locally, then upload the folder "
            "and train from its URL"
        )


def _check_unreadable(files: FileList, bad: list[int], strict: bool) -> None:
    """Refuse a split of no readable image (or, ``strict``, any unreadable); else warn of them."""
    if len(bad) == len(files):
        raise DataError(
            f"none of the {len(files)} images in {files.root} could be decoded, so there "
            "is nothing to pack (nothing was written); check the files (corrupt, or not "
            "images)"
        )
    if bad:
        names = ", ".join(files.paths[i] for i in bad[:5])
        if strict:
            raise DataError(
                f"{len(bad)} unreadable image(s) in {files.root} (e.g. {names}); remove "
                "or replace them, or drop --strict to pack them as skipped placeholders"
            )
        warnings.warn(
            f"{len(bad)} unreadable image(s) of {len(files)} in {files.root} (e.g. "
            f"{names}) were packed as placeholders; training skips them with a count",
            stacklevel=3,  # the caller of pack
        )


def _check_replaceable(out: Path, overwrite: bool) -> None:
    """Refuse an output that exists unless it may be replaced (see :func:`pack`)."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"--output {str(out)!r} is a file; pass a folder for the shards")
    if not out.is_dir() or not any(out.iterdir()):
        return
    others = sorted(p.name for p in out.iterdir() if p.name not in (META_FILE, "train", "test"))
    if not (out / META_FILE).is_file() or others:
        shown = f" ({', '.join(others[:3])})" if others else ""
        raise OutputError(
            f"--output {str(out)!r} is a folder that holds files other than siamkit shards"
            f"{shown}; choose another --output (--overwrite replaces only earlier shards)"
        )
    if not overwrite:
        raise OutputError(
            f"--output {str(out)!r} already holds packed shards; choose another --output or pass "
            "--overwrite to replace them"
        )


def _pack_split(files: FileList, folder: Path, max_side: int, num_workers: int) -> list[int]:
    """Write one split's litdata folder; returns the indices of its unreadable images."""
    with tempfile.TemporaryDirectory(dir=folder.parent) as work:
        # litdata keeps its chunk cache in DATA_OPTIMIZER_CACHE_FOLDER (default: TMPDIR/chunks,
        # which it empties at start); pointed inside the staged output, nothing is written
        # outside it.
        previous = os.environ.get("DATA_OPTIMIZER_CACHE_FOLDER")
        os.environ["DATA_OPTIMIZER_CACHE_FOLDER"] = str(Path(work) / "cache")
        try:
            optimize(
                fn=_PackItem(files, max_side, str(Path(work))),
                inputs=list(range(len(files))),
                output_dir=str(folder),
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
        finally:
            if previous is None:
                os.environ.pop("DATA_OPTIMIZER_CACHE_FOLDER", None)
            else:
                os.environ["DATA_OPTIMIZER_CACHE_FOLDER"] = previous
        return sorted(int(x) for f in Path(work).glob("*.txt") for x in f.read_text().split())


__all__ = ["pack"]
