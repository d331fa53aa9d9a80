"""Decoding one image and cutting its views, as DataLoader workers do for streamed data.

Every storage decodes through :func:`open_rgb`, so 16-bit, palette, grayscale and transparent
images come out the same way everywhere. Streamed views (:func:`decode_views`) take each view's
random resized crop from the whole image, with its aspect ratio, by torchvision's
``RandomResizedCrop`` rule (Szegedy et al., 2015), and only the geometric part: flip, colour
and blur are applied to whole batches on the training device
(:class:`~siamkit.data.augment.BatchViews`).

When every view's crop is at least twice the view's side, a JPEG is decoded at 1/2, 1/4 or 1/8
scale (libjpeg's DCT scaling, PIL's ``draft``): a 3000 x 2000 photo cropped to 224 px costs a
fraction of a full decode.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

#: Errors PIL raises for files that are not (whole) images.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)
#: Background that transparent pixels are composited onto (white, as image viewers show them).
ALPHA_BACKGROUND = (255, 255, 255)


@dataclass(frozen=True)
class ViewSpec:
    """The geometric part of one view, as a worker cuts it.

    Attributes:
        size: Side of the square output.
        scale: Area range of a random resized crop; ``None``: the evaluation centre view
            (shorter side resized to ``size x 256/224``, centre ``size x size`` crop; an image
            whose shorter side already equals ``size`` is only centre-cropped).
        ratio: Aspect-ratio range of the random crop (log-uniform).
    """

    size: int
    scale: tuple[float, float] | None = None
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)


def open_image(source: str | Path | bytes | memoryview) -> Image.Image:
    """Open a file or encoded bytes lazily (only the header is read)."""
    if isinstance(source, (bytes, memoryview)):
        return Image.open(io.BytesIO(source))
    return Image.open(source)


def open_rgb(im: Image.Image) -> Image.Image:
    """Decode ``im`` fully as 8-bit RGB.

    16-bit and 32-bit integer images are scaled to 8 bits (``convert("RGB")`` would clip them to
    near-white); images with transparency are composited onto :data:`ALPHA_BACKGROUND` (dropping
    the alpha channel would show whatever colour the transparent pixels happen to hold).
    """
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im)
        if mode == "F":
            arr = arr * (255.0 if arr.max() <= 1.0 else 1.0)
        elif mode.startswith("I;16") or arr.max() > 255:
            arr = arr / 257.0  # 65535 -> 255
        gray = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))
        return gray.convert("RGB")
    if mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*ALPHA_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB") if mode != "RGB" else _loaded(im)


def _loaded(im: Image.Image) -> Image.Image:
    im.load()  # forces the full decode: a truncated file fails here, not later
    return im


def sample_crop(
    rng: np.random.Generator,
    width: int,
    height: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    attempts: int = 10,
) -> tuple[int, int, int, int]:
    """A crop box by torchvision's ``RandomResizedCrop.get_params`` rule.

    Up to ``attempts`` candidates (area uniform in ``scale``, aspect ratio log-uniform in
    ``ratio``); the first that fits is placed uniformly; if none fits, the largest centred crop
    with the ratio clamped into range.

    Returns:
        ``(left, top, right, bottom)`` in pixels.
    """
    area = width * height
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(attempts):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return left, top, left + w, top + h
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def centre_resize_side(short_side: int, size: int) -> int:
    """The shorter side an evaluation centre view is cut from.

    ``size`` itself for an image of that side, else ``round(size x 256 / 224)`` (ImageNet's
    resize-256, crop-224 rule).
    """
    return size if short_side == size else round(size * 256 / 224)


def _reduction(im: Image.Image, needed: float) -> float:
    """Decode a JPEG at the largest scale 1/k (k in 8, 4, 2) that keeps ``needed`` >= k.

    Returns the scale factor k applied (1 when none).
    """
    if im.format != "JPEG" or needed < 2:
        return 1.0
    k = 8 if needed >= 8 else 4 if needed >= 4 else 2
    w, h = im.size
    result = im.draft(im.mode, (max(1, w // k), max(1, h // k)))
    return w / result[1][2] if result else 1.0


def decode_views(
    source: str | Path | bytes | memoryview, specs: list[ViewSpec], rng: np.random.Generator
) -> list[np.ndarray] | None:
    """Decode one image and cut every view in ``specs``.

    Args:
        source: A file path or encoded bytes.
        specs: The views (random resized crops and/or a centre view).
        rng: The image's own generator (crops drawn in ``specs`` order).

    Returns:
        One ``(3, size, size)`` uint8 array per spec, or ``None`` if the image cannot be read.
    """
    try:
        with open_image(source) as im:
            width, height = im.size
            boxes = [
                None if s.scale is None else sample_crop(rng, width, height, s.scale, s.ratio)
                for s in specs
            ]
            # How much smaller than the original each view's source region may be decoded.
            needed = min(
                _shrink_room(s, b, width, height) for s, b in zip(specs, boxes, strict=True)
            )
            k = _reduction(im, needed)
            rgb = open_rgb(im)
            out = []
            for spec, box in zip(specs, boxes, strict=True):
                if box is None:
                    view = _centre(rgb, spec.size, min(width, height))
                else:
                    scaled = (box[0] / k, box[1] / k, box[2] / k, box[3] / k)
                    view = rgb.resize((spec.size, spec.size), Image.Resampling.BILINEAR, scaled)
                out.append(
                    np.ascontiguousarray(np.asarray(view, dtype=np.uint8).transpose(2, 0, 1))
                )
            return out
    except DECODE_ERRORS:
        return None


def _shrink_room(spec: ViewSpec, box: tuple[int, int, int, int] | None, w: int, h: int) -> float:
    """How many times larger than needed the view's source region is.

    That is its shorter side over the side it is resized to.
    """
    if box is None:
        return min(w, h) / centre_resize_side(min(w, h), spec.size)
    return min(box[2] - box[0], box[3] - box[1]) / spec.size


def _centre(im: Image.Image, size: int, original_short: int) -> Image.Image:
    """Evaluation centre view.

    Resize the shorter side (see :func:`centre_resize_side`), then crop the centre ``size x size``,
    as torchvision's ``Resize`` + ``CenterCrop`` do.
    """
    side = centre_resize_side(original_short, size)
    w, h = im.size
    if min(w, h) != side:
        if w <= h:
            w, h = side, int(side * h / w)
        else:
            w, h = int(side * w / h), side
        im = im.resize((w, h), Image.Resampling.BILINEAR)
    top, left = round((h - size) / 2), round((w - size) / 2)
    return im.crop((left, top, left + size, top + size))


def image_size(path: str | Path) -> tuple[int, int] | None:
    """``(width, height)`` from the file's header, or ``None`` if it is not a readable image."""
    try:
        with Image.open(path) as im:
            return im.size
    except DECODE_ERRORS:
        return None
