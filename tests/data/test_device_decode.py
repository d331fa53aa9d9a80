"""Tests for data.decode: device (JPEGs decoded in whole batches on the training device; the CPU
stands in for the GPU here: torchvision.io.decode_jpeg runs on both)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from siamkit.data.decode import ViewSpec
from siamkit.data.device_decode import EncodedViews, to_device
from siamkit.data.files import list_files
from siamkit.data.loader import make_loader
from siamkit.data.stream import StreamSet

SPECS = [ViewSpec(16, (0.3, 1.0)), ViewSpec(24, (0.3, 1.0))]


def _folder(root: Path) -> Path:
    """Four smooth JPEGs, one PNG, and a JPEG whose data is cut short after its header."""
    yy, xx = np.mgrid[0:60, 0:80]
    for i in range(4):
        img = np.dstack([xx * 3 + i * 10, yy * 4, (xx + yy) * 2]).astype(np.uint8)
        (root / "a").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / "a" / f"{i}.jpg", quality=95)
    Image.fromarray(np.full((50, 40, 3), 90, np.uint8)).save(root / "a" / "4.png")
    whole = (root / "a" / "0.jpg").read_bytes()
    (root / "a" / "5.jpg").write_bytes(whole[: len(whole) // 2])  # header whole, data cut
    return root


def _batch(root: Path, decode: str):
    data = StreamSet(list_files(root), num_workers=0, decode=decode)
    return next(iter(make_loader(data, SPECS, 6, train=False, seed=2)))


def test_device_decoding_gives_the_workers_views(tmp_path: Path) -> None:
    """Same crop boxes (same draws), nearly the same pixels (bilinear antialiased resize in
    torch instead of PIL); the PNG is cut by the worker in both."""
    root = _folder(tmp_path / "d")
    workers = to_device(_batch(root, "workers"), torch.device("cpu"))
    encoded = _batch(root, "device")
    assert isinstance(encoded.images, EncodedViews)
    assert encoded.images.encoded.tolist() == [True, True, True, True, False, True]
    device = to_device(encoded, torch.device("cpu"))
    assert device.unreadable.tolist() == workers.unreadable.tolist()
    for a, b in zip(workers.images, device.images, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype == torch.uint8
        good = slice(0, 5)
        assert (a[good].float() - b[good].float()).abs().mean() < 3.0  # of 255
    assert torch.equal(workers.images[0][4], device.images[0][4])  # the PNG, cut by a worker


def test_a_jpeg_that_fails_on_the_device_is_flagged_and_stood_in_for(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d")
    batch = to_device(_batch(root, "device"), torch.device("cpu"))
    assert batch.unreadable.tolist() == [False, False, False, False, False, True]
    for crops in batch.images:
        assert torch.equal(crops[5], crops[0])  # the batch's first readable image


def test_evaluation_views_are_decoded_by_the_workers(tmp_path: Path) -> None:
    """Centre views are not random crops: the workers decode them whatever data.decode says."""
    root = _folder(tmp_path / "d")
    data = StreamSet(list_files(root), num_workers=0, decode="device")
    batch = next(iter(make_loader(data, [ViewSpec(16)], 6, train=False)))
    assert isinstance(batch.images, list)
