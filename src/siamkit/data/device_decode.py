"""JPEG decoding on the training device (``data.decode: device``), and moving batches there.

With ``data.decode: workers`` (the default) DataLoader workers decode every image and cut its
crops. With ``device``, workers only read each JPEG's bytes and header and draw its crop boxes
(the same draws as :func:`~siamkit.data.decode.decode_views`, so the views are the same); the
training process decodes the whole batch at once with ``torchvision.io.decode_jpeg`` on the
device (nvJPEG on a GPU) and cuts the crops there. This moves the most expensive part of the
loader off the CPU cores, which on a GPU machine are often too few to feed the GPU. Images in
other formats are still decoded by the workers. Evaluation (centre) views are always decoded by
the workers.

:func:`to_device` is the one place a :class:`~siamkit.data.loader.Batch` goes to its device:
Lightning's ``transfer_batch_to_device`` of the training module and the evaluation loops call
it, so the encoded bytes stay on the CPU (nvJPEG reads them from there) and are decoded there.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from siamkit.data.decode import DECODE_ERRORS, ViewSpec, decode_views, open_image, sample_crop
from siamkit.data.loader import Batch


class EncodedViews(NamedTuple):
    """A batch whose JPEGs are still encoded.

    Attributes:
        data: ``B`` 1-D uint8 tensors, the encoded JPEG of each row (empty for other rows).
        boxes: ``(B, V, 4)`` int64 crop boxes ``(left, top, right, bottom)`` in the original
            image's pixels, one per view.
        crops: One ``(B, 3, S_v, S_v)`` uint8 tensor per view, cut by the workers for the rows
            that are not encoded.
        encoded: ``(B,)`` bool, rows to decode on the device.
    """

    data: list[torch.Tensor]
    boxes: torch.Tensor
    crops: list[torch.Tensor]
    encoded: torch.Tensor


#: What a worker makes of one image: encoded bytes and boxes, crops, or None (unreadable).
Encoded = tuple[bytes, np.ndarray] | list[np.ndarray] | None


def encode_views(
    source: str | Path | bytes | memoryview, specs: list[ViewSpec], rng: np.random.Generator
) -> Encoded:
    """A worker's part of device decoding.

    A JPEG's bytes and crop boxes, drawn in ``specs`` order as
    :func:`~siamkit.data.decode.decode_views` draws them; other formats decoded here.

    Returns:
        ``(bytes, boxes (V, 4))`` for a JPEG, crops for other formats, ``None`` if unreadable.
    """
    data = bytes(source) if isinstance(source, (bytes, memoryview)) else Path(source).read_bytes()
    try:
        with open_image(data) as im:
            fmt, (width, height) = im.format, im.size
    except DECODE_ERRORS:
        return None
    scales = [s.scale for s in specs]
    if fmt != "JPEG" or None in scales:
        return decode_views(data, specs, rng)
    boxes = [
        sample_crop(rng, width, height, scale, s.ratio)
        for scale, s in zip(scales, specs, strict=True)
        if scale is not None  # all of them (checked above); the test narrows the type
    ]
    return data, np.asarray(boxes, dtype=np.int64)


def encoded_batch(
    items: list[Encoded], sizes: list[int], labels: torch.Tensor, indices: torch.Tensor
) -> Batch:
    """Collate :func:`encode_views` results into a :class:`Batch` of :class:`EncodedViews`."""
    n, views = len(items), len(sizes)
    unreadable = torch.tensor([x is None for x in items], dtype=torch.bool)
    encoded = torch.tensor([isinstance(x, tuple) for x in items], dtype=torch.bool)
    boxes = torch.zeros(n, views, 4, dtype=torch.int64)
    crops = [torch.zeros(n, 3, s, s, dtype=torch.uint8) for s in sizes]
    data = []
    for i, item in enumerate(items):
        if isinstance(item, tuple):
            data.append(torch.frombuffer(bytearray(item[0]), dtype=torch.uint8))
            boxes[i] = torch.from_numpy(item[1])
            continue
        data.append(torch.empty(0, dtype=torch.uint8))
        if item is not None:
            for v in range(views):
                crops[v][i] = torch.from_numpy(item[v])
    return Batch(EncodedViews(data, boxes, crops, encoded), labels, indices, unreadable)


def _decode(data: list[torch.Tensor], device: torch.device) -> list[torch.Tensor | None]:
    """Decode JPEGs in one batched call; one by one when some fail (those become None)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    try:
        return list(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
    except RuntimeError:
        out: list[torch.Tensor | None] = []
        for d in data:
            try:
                out.append(decode_jpeg(d, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                out.append(None)
        return out


def decode_batch(
    images: EncodedViews, unreadable: torch.Tensor, device: torch.device
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Decode the encoded rows on ``device`` and cut their crops (bilinear, antialiased).

    Args:
        images: The encoded batch.
        unreadable: ``(B,)`` rows the workers could not read.
        device: Where to decode.

    Returns:
        One ``(B, 3, S_v, S_v)`` uint8 tensor per view on ``device``, and ``(B,)`` bool of the
        rows that could not be read, by the workers or here (the batch's first readable row
        stands in for them).
    """
    crops = [c.to(device, non_blocking=True) for c in images.crops]
    rows = images.encoded.nonzero().flatten().tolist()
    failed = torch.zeros(len(images.data), dtype=torch.bool)
    decoded = _decode([images.data[i] for i in rows], device) if rows else []
    for i, img in zip(rows, decoded, strict=True):
        if img is None:
            failed[i] = True
            continue
        for v, crop in enumerate(crops):
            left, top, right, bottom = images.boxes[i, v].tolist()
            region = img[None, :, top:bottom, left:right].float()
            size = crop.shape[-1]
            resized = F.interpolate(region, size=(size, size), mode="bilinear", antialias=True)
            crop[i] = resized[0].round_().clamp_(0, 255).to(torch.uint8)
    bad = failed | unreadable.cpu()
    good = (~bad).nonzero().flatten()
    if bool(bad.any()) and len(good):
        stand_in = int(good[0])
        for crop in crops:
            crop[bad.to(crop.device)] = crop[stand_in].clone()
    return crops, bad


def to_device(batch: Batch, device: torch.device) -> Batch:
    """``batch`` on ``device``, its encoded JPEGs decoded there (see the module docstring)."""
    images = batch.images
    if isinstance(images, EncodedViews):
        crops, bad = decode_batch(images, batch.unreadable, device)
        return Batch(crops, batch.labels.to(device), batch.indices.to(device), bad.to(device))
    moved = (
        images.to(device, non_blocking=True)
        if isinstance(images, torch.Tensor)
        else [x.to(device, non_blocking=True) for x in images]
    )
    return Batch(
        moved,
        batch.labels.to(device, non_blocking=True),
        batch.indices.to(device, non_blocking=True),
        batch.unreadable.to(device, non_blocking=True),
    )
