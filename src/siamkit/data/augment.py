"""View recipes, applied to whole batches of uint8 images on the training device.

:class:`BatchViews` draws every random parameter of a view (crop box, flip, jitter factors and
order, grayscale, blur sigma) per image, as torchvision's per-image transforms do, and applies them
to the whole batch with a few tensor operations. This keeps the two CPU cores (or the GPU) busy
with the network instead of with per-image PIL work in DataLoader workers.

:func:`torchvision_views` builds the same recipe from per-image ``torchvision.transforms.v2``
transforms; tests check that both produce the same distribution of crops and colour changes.

Shapes: images ``(B, 3, H, W)`` uint8 in; views ``(B, 3, S, S)`` float32, normalised, out.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F

from siamkit.config import AugmentConfig
from siamkit.errors import ConfigError

# ITU-R 601-2 luma weights as torchvision's rgb_to_grayscale rounds them (red 0.2989, not 0.299),
# so that both augmentation paths agree to float precision.
_LUMA = (0.2989, 0.587, 0.114)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """Luma of ``(B, 3, H, W)`` images in [0, 1], as ``(B, 1, H, W)``."""
    r, g, b = x.unbind(1)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(1)


def _per_image(f: torch.Tensor) -> torch.Tensor:
    """Reshape ``(B,)`` factors to broadcast over ``(B, C, H, W)``."""
    return f.view(-1, 1, 1, 1)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Scale intensities by ``factor`` (``(B,)``): a blend with black."""
    return (x * _per_image(factor)).clamp(0, 1)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend each image with its mean luma (a flat gray image)."""
    mean = grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    f = _per_image(factor)
    return (f * x + (1 - f) * mean).clamp(0, 1)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend each image with its own grayscale version."""
    f = _per_image(factor)
    return (f * x + (1 - f) * grayscale(x)).clamp(0, 1)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate hue by ``shift`` (``(B,)``, fraction of the colour wheel) in HSV space."""
    r, g, b = x.unbind(1)
    v, _ = x.max(dim=1)
    chroma = v - x.min(dim=1).values
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    # Hue in sextants (0..6), from whichever channel holds the maximum.
    h = torch.where(
        v == r,
        torch.remainder((g - b) / safe, 6.0),
        torch.where(v == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0),
    )
    h = torch.where(chroma > 0, h, torch.zeros_like(h))
    h = torch.remainder(h + 6.0 * shift.view(-1, 1, 1), 6.0)
    # Back to RGB: channel n (R=5, G=3, B=1) is v - chroma * clamp(min(k, 4 - k), 0, 1) with
    # k = (n + h) mod 6; chroma = v * saturation is unchanged by a hue rotation.
    out = []
    for n in (5.0, 3.0, 1.0):
        k = torch.remainder(n + h, 6.0)
        out.append(v - chroma * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0))
    return torch.stack(out, dim=1).clamp(0, 1)


_JITTER_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def sample_crop_boxes(
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    device: torch.device,
    generator: torch.Generator | None = None,
    attempts: int = 10,
) -> torch.Tensor:
    """Random crop boxes by RandomResizedCrop's rule, for ``n`` images at once.

    Each image draws ``attempts`` candidates (area uniform in ``scale``, aspect ratio log-uniform
    in ``ratio``) and keeps the first that fits; if none fits, it falls back to the largest
    centred crop with the ratio clamped to ``ratio`` (Szegedy et al., 2015; torchvision's rule).

    Returns:
        ``(n, 4)`` float boxes ``(left, top, right, bottom)`` in pixel units.
    """
    area = height * width
    u = torch.rand(n, attempts, 3, device=device, generator=generator)
    target = area * (scale[0] + (scale[1] - scale[0]) * u[..., 0])
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[..., 1]
    aspect = torch.exp(log_r)
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.float().argmax(dim=1, keepdim=True)  # index of the first fitting attempt
    any_fit = fits.any(dim=1)
    w = w.gather(1, first).squeeze(1)
    h = h.gather(1, first).squeeze(1)
    # Fallback: whole image, ratio clamped into range, centred.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = float(width), float(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        fw, fh = float(round(height * ratio[1])), float(height)
    else:
        fw, fh = float(width), float(height)
    w = torch.where(any_fit, w, torch.full_like(w, fw))
    h = torch.where(any_fit, h, torch.full_like(h, fh))
    # Top-left corner uniform over the valid integer positions (centred for the fallback).
    u_pos = u[:, 0, 2], torch.rand(n, device=device, generator=generator)
    top = torch.floor(u_pos[0] * (height - h + 1))
    left = torch.floor(u_pos[1] * (width - w + 1))
    top = torch.where(any_fit, top, torch.floor((height - h) / 2))
    left = torch.where(any_fit, left, torch.floor((width - w) / 2))
    return torch.stack([left, top, left + w, top + h], dim=1)


def resized_crop(x: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Crop ``boxes`` (``(B, 4)``) out of ``x`` (``(B, C, H, W)`` float) and resize to ``size``.

    Bilinear with half-pixel centres and samples clamped to the box, which is what cropping and
    then ``resize(align_corners=False)`` computes. When a box is shrunk, each output pixel averages
    ``r x r`` bilinear samples spread over its footprint (a box filter standing in for
    torchvision's ``antialias=True``); when it is enlarged, the ``r`` samples coincide.
    """
    b = x.shape[0]
    dev, dt = x.device, x.dtype
    left, top, right, bottom = boxes.to(dt).unbind(1)  # each (B,)
    step_x, step_y = (right - left) / size, (bottom - top) / size  # source px per output px
    r = max(1, math.ceil(float(torch.maximum(step_x, step_y).max())))
    sub = (torch.arange(r, device=dev, dtype=dt) + 0.5) / r - 0.5  # (r,) offsets in output px
    centre = torch.arange(size, device=dev, dtype=dt) + 0.5  # (S,)

    def coords(start: torch.Tensor, end: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        spread = (step > 1).to(dt)[:, None, None]  # only shrinking boxes average a footprint
        pos = centre[None, :, None] + spread * sub[None, None, :]  # (B, S, r), output px
        src = start[:, None, None] + pos * step[:, None, None] - 0.5  # pixel-centre coords
        src = torch.minimum(torch.maximum(src, start[:, None, None]), (end - 1)[:, None, None])
        return src.reshape(b, size * r)

    gx = coords(left, right, step_x) * (2 / max(1, x.shape[-1] - 1)) - 1  # to [-1, 1]
    gy = coords(top, bottom, step_y) * (2 / max(1, x.shape[-2] - 1)) - 1
    n = size * r
    grid = torch.stack([gx[:, None, :].expand(b, n, n), gy[:, :, None].expand(b, n, n)], dim=-1)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return F.avg_pool2d(out, r) if r > 1 else out


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Blur each image of ``x`` with its own ``sigma`` (``(B,)``), separable, reflect padding."""
    b, c, hgt, wid = x.shape
    half = kernel_size // 2
    t = torch.arange(kernel_size, device=x.device, dtype=x.dtype) - half
    kernel = torch.exp(-0.5 * (t[None, :] / sigma[:, None].to(x.dtype)) ** 2)  # (B, K)
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (B*C, K)
    y = F.pad(x.reshape(1, b * c, hgt, wid), (half, half, half, half), mode="reflect")
    y = F.conv2d(y, kernel.view(b * c, 1, kernel_size, 1), groups=b * c)  # vertical pass
    y = F.conv2d(y, kernel.view(b * c, 1, 1, kernel_size), groups=b * c)  # horizontal pass
    return y.view(b, c, hgt, wid)


#: Solarisation inverts intensities from half the range up: ``x -> 1 - x`` for ``x >= 0.5``
#: [BYOL, arXiv:2006.07733, Appendix B]; PIL's ``ImageOps.solarize`` threshold 128 on uint8.
SOLARIZE_THRESHOLD = 0.5


def solarize(x: torch.Tensor, threshold: float = SOLARIZE_THRESHOLD) -> torch.Tensor:
    """Invert every intensity at or above ``threshold`` of images in [0, 1] (any shape)."""
    return torch.where(x >= threshold, 1.0 - x, x)


def blur_kernel_size(cfg: AugmentConfig) -> int:
    """Odd kernel covering +-3 of the largest sigma, at most the view size."""
    k = 2 * math.ceil(3 * max_blur_sigma(cfg)) + 1
    return min(k, cfg.size - 1 if cfg.size % 2 == 0 else cfg.size)


def max_blur_sigma(cfg: AugmentConfig) -> float:
    """Largest blur sigma in pixels of this view size (the paper's range is for 224 px)."""
    return cfg.blur_sigma[1] * cfg.size / 224


def normalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """Per-channel ``(x - mean) / std`` of ``(B, C, H, W)`` images."""
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - m) / s


class BatchViews:
    """A view recipe applied to a whole batch; call it once per view.

    Args:
        cfg: The augmentation config (SimSiam's recipe by default).

    Example:
        >>> views = BatchViews(AugmentConfig(size=32))
        >>> x1, x2 = views(images), views(images)  # images: (B, 3, 32, 32) uint8
    """

    def __init__(self, cfg: AugmentConfig) -> None:
        self.cfg = cfg
        self.blur_prob = cfg.effective_blur_prob
        self.kernel_size = blur_kernel_size(cfg)

    @torch.no_grad()
    def __call__(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """One random view of every image.

        Args:
            images: ``(B, 3, H, W)`` uint8.
            generator: Optional RNG (on the images' device) for reproducible views.

        Returns:
            ``(B, 3, size, size)`` float32 views, normalised.
        """
        cfg, dev = self.cfg, images.device
        n, _, height, width = images.shape
        x = images.float().div_(255)
        # 1. RandomResizedCrop (the flip follows in finish(); a flip commutes with the rest).
        boxes = sample_crop_boxes(n, height, width, cfg.crop_scale, cfg.crop_ratio, dev, generator)
        return self.finish(resized_crop(x, boxes, cfg.size), generator)

    @torch.no_grad()
    def finish(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Everything after the crop.

        Flip, colour jitter, grayscale, blur, solarisation and normalisation, for crops cut
        elsewhere (DataLoader workers of streamed data).

        Args:
            x: ``(B, 3, size, size)`` float32 crops in [0, 1] (modified in place).
            generator: Optional RNG on the crops' device.

        Returns:
            ``(B, 3, size, size)`` float32 views, normalised.
        """
        cfg, dev, n = self.cfg, x.device, x.shape[0]

        def rand(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, device=dev, generator=generator)

        flip = rand(n) < cfg.flip_prob
        x = torch.where(_per_image(flip), x.flip(-1), x)

        # 2. Colour jitter with probability p, its four ops in a random order per image.
        jitter = rand(n) < cfg.jitter_prob
        if jitter.any():
            u = rand(4, n) * 2 - 1  # uniform in [-1, 1]
            factors = (
                1 + cfg.brightness * u[0],
                1 + cfg.contrast * u[1],
                1 + cfg.saturation * u[2],
                cfg.hue * u[3],
            )
            order = rand(n, 4).argsort(dim=1)  # (B, 4): a random permutation per image
            for step in range(4):
                for op_index, op in enumerate(_JITTER_OPS):
                    idx = (jitter & (order[:, step] == op_index)).nonzero().flatten()
                    if idx.numel():
                        x[idx] = op(x[idx], factors[op_index][idx])

        # 3. Random grayscale.
        gray = rand(n) < cfg.grayscale_prob
        x = torch.where(_per_image(gray), grayscale(x).expand_as(x), x)

        # 4. Gaussian blur (ImageNet-size views only, by default).
        if self.blur_prob > 0:
            idx = (rand(n) < self.blur_prob).nonzero().flatten()
            if idx.numel():
                lo = cfg.blur_sigma[0] * cfg.size / 224
                sigma = lo + (max_blur_sigma(cfg) - lo) * rand(idx.numel())
                x[idx] = gaussian_blur(x[idx], sigma, self.kernel_size)

        # 4b. Solarisation, after the blur as in BYOL's pipeline [arXiv:2006.07733, Table 6].
        if cfg.solarize_prob > 0:  # drawing nothing otherwise keeps other recipes' streams
            solar = rand(n) < cfg.solarize_prob
            x = torch.where(_per_image(solar), solarize(x), x)

        # 5. Normalise.
        return normalize(x, cfg.mean, cfg.std)


def eval_views(images: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """Deterministic evaluation input: centre crop (ImageNet's 224-of-256 rule) and normalise.

    The shorter side is resized to ``round(S x 256/224)`` (left alone when it already equals
    ``S``), then the centre ``S x S`` is cut, as torchvision's ``Resize`` + ``CenterCrop`` do.

    Args:
        images: ``(B, 3, H, W)`` uint8 images.
        cfg: The augmentation config (its ``eval_size`` or else ``size``, ``mean`` and ``std``).

    Returns:
        ``(B, 3, S, S)`` float32, ``S`` the evaluation size.
    """
    x = images.float().div_(255)
    size = cfg.effective_eval_size
    height, width = x.shape[-2:]
    if min(height, width) != size:
        side = round(size * 256 / 224)
        if (height, width) != (side, side) and min(height, width) != side:
            scale = side / min(height, width)
            height, width = max(side, round(height * scale)), max(side, round(width * scale))
            x = F.interpolate(x, size=(height, width), mode="bilinear", antialias=True)
    top, left = (height - size) // 2, (width - size) // 2
    x = x[..., top : top + size, left : left + size]
    return normalize(x, cfg.mean, cfg.std)


def finish_crops(crops: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """Normalised float32 input from ``(B, 3, S, S)`` uint8 crops cut by workers.

    The centre views of streamed data arrive already at the evaluation size.
    """
    return normalize(crops.float().div_(255), cfg.mean, cfg.std)


def crop_flip_recipe(cfg: AugmentConfig, crop_scale: tuple[float, float]) -> AugmentConfig:
    """The training views of the evaluation protocols.

    RandomResizedCrop and horizontal flip only, at the evaluation size.

    The linear probe with augmented copies (scale 0.08-1, MoCo's and SimSiam's linear
    classification code), fine-tuning and distillation [arXiv:2002.05709, Appendix B.5;
    arXiv:2006.10029, Sec. 3] train on these views and are tested on :func:`eval_views`, so they
    train at the side they are tested at (``eval_size`` where the run set one). ``cfg`` gives the
    aspect-ratio range, flip probability and normalisation; colour jitter, grayscale, blur and
    solarisation are turned off.
    """
    return replace(
        cfg,
        size=cfg.effective_eval_size,
        eval_size=None,
        crop_scale=crop_scale,
        jitter_prob=0.0,
        grayscale_prob=0.0,
        blur_prob=0.0,
        solarize_prob=0.0,
    )


def torchvision_views(cfg: AugmentConfig) -> Callable[[Any], torch.Tensor]:
    """The same recipe as per-image ``torchvision.transforms.v2`` transforms.

    For PIL or per-image pipelines, and as the reference the batched path is tested against.
    Takes a uint8 ``(3, H, W)`` tensor or PIL image, returns a normalised float32 view.
    """
    import torch as _torch
    from torchvision.transforms import v2

    steps: list[object] = [
        v2.ToImage(),
        v2.ToDtype(_torch.float32, scale=True),
        v2.RandomResizedCrop(cfg.size, scale=cfg.crop_scale, ratio=cfg.crop_ratio, antialias=True),
        v2.RandomApply(
            [v2.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)],
            p=cfg.jitter_prob,
        ),
        v2.RandomGrayscale(p=cfg.grayscale_prob),
    ]
    blur = cfg.effective_blur_prob
    if blur > 0:
        lo = cfg.blur_sigma[0] * cfg.size / 224
        steps.append(
            v2.RandomApply(
                [v2.GaussianBlur(blur_kernel_size(cfg), sigma=(lo, max_blur_sigma(cfg)))], p=blur
            )
        )
    if cfg.solarize_prob > 0:
        steps.append(v2.RandomSolarize(threshold=SOLARIZE_THRESHOLD, p=cfg.solarize_prob))
    steps += [v2.RandomHorizontalFlip(p=cfg.flip_prob), v2.Normalize(cfg.mean, cfg.std)]
    return v2.Compose(steps)


def asymmetric_view_recipes(
    base: AugmentConfig, blur_probs: tuple[float, float], solarize_probs: tuple[float, float]
) -> list[AugmentConfig]:
    """Two views differing only in blur and solarisation probabilities (BYOL's Table 6 recipe).

    BYOL (arXiv:2006.07733, Table 6), Barlow Twins and VICReg (their appendices) use it: blur
    (1.0, 0.1), solarisation (0.0, 0.2). Blur is applied only where the run's recipe blurs at all
    (ImageNet-size views, or ``augment.blur_prob`` set above 0), so small CIFAR views keep the
    CIFAR recipes' no-blur rule.
    """
    blurs = base.effective_blur_prob > 0
    return [
        replace(base, blur_prob=blur if blurs else 0.0, solarize_prob=solarize)
        for blur, solarize in zip(blur_probs, solarize_probs, strict=True)
    ]


def check_view_probabilities(
    blur_probs: tuple[float, ...], solarize_probs: tuple[float, ...]
) -> None:
    """Raise :class:`ConfigError` unless every per-view probability lies in [0, 1]."""
    for p in (*blur_probs, *solarize_probs):
        if not 0.0 <= p <= 1.0:
            raise ConfigError(
                f"method.blur_probs and method.solarize_probs are probabilities, got {p}"
            )
