"""Tests for the batched view recipe against torchvision's per-image transforms.

Each batched op is compared with its ``torchvision.transforms.v2.functional`` counterpart image by
image; :class:`BatchViews` is compared with :func:`torchvision_views` in distribution (KS tests on
fixed seeds, so the tests are deterministic).
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import ks_2samp
from torchvision import transforms as tv1
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from siamkit.config import AugmentConfig
from siamkit.data import augment
from siamkit.data.augment import (
    BatchViews,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    blur_kernel_size,
    eval_views,
    gaussian_blur,
    grayscale,
    resized_crop,
    sample_crop_boxes,
    torchvision_views,
)
from siamkit.errors import ConfigError
from tests.data.view_stats import (
    P_MIN,
    UNIT,
    assert_same_colour_distribution,
    colour_stats,
    coordinate_image,
    crop_stats,
    random_uint8,
)

# torchvision's tensor rgb_to_grayscale weighs red by 0.2989, not ITU-R 601's 0.299 that siamkit
# uses (a difference of at most 1e-4; see test_grayscale_weights_match_torchvision). The op parity
# tests patch siamkit's weights to torchvision's so that they check the algorithms to 1e-5.
_TORCHVISION_LUMA = (0.2989, 0.587, 0.114)
CUDA = pytest.param(
    "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
)


def _colour_images(n: int = 6, size: int = 12, seed: int = 0) -> torch.Tensor:
    """Random ``(n, 3, size, size)`` images in [0, 1] with gray, saturated and tied pixels."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g)
    special = torch.tensor(
        [
            [0.5, 0.5, 0.5],  # gray: hue undefined, chroma 0
            [0.0, 0.0, 0.0],
            [1.0, 1.0, 1.0],
            [1.0, 0.0, 0.0],  # saturated primaries and secondaries
            [0.0, 1.0, 0.0],
            [0.0, 0.0, 1.0],
            [1.0, 1.0, 0.0],  # max tied between R and G
            [0.0, 1.0, 1.0],  # max tied between G and B
            [1.0, 0.0, 1.0],  # max tied between R and B
            [0.8, 0.8, 0.3],
            [0.2, 0.7, 0.7],
        ]
    )
    x[:, :, 0, : len(special)] = special.T  # first row of every image
    x[0] = x[0, :1].expand(3, -1, -1)  # one fully gray image
    return x


def _per_image_reference(op, x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    return torch.stack([op(img, float(f)) for img, f in zip(x, factors, strict=True)])


_FACTOR_OPS = {
    # name: (siamkit op, torchvision op, factor range, atol)
    "brightness": (adjust_brightness, TF.adjust_brightness, (0.0, 2.0), 1e-5),
    "contrast": (adjust_contrast, TF.adjust_contrast, (0.0, 2.0), 1e-5),
    "saturation": (adjust_saturation, TF.adjust_saturation, (0.0, 2.0), 1e-5),
    "hue": (adjust_hue, TF.adjust_hue, (-0.5, 0.5), 1e-4),
}


@pytest.mark.parametrize("name", sorted(_FACTOR_OPS))
def test_colour_op_matches_torchvision_per_image(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each batched jitter op with per-image factors equals torchvision's op image by image."""
    monkeypatch.setattr(augment, "_LUMA", _TORCHVISION_LUMA)
    ours, ref, (lo, hi), atol = _FACTOR_OPS[name]
    x = _colour_images()
    g = torch.Generator().manual_seed(1)
    factors = lo + (hi - lo) * torch.rand(len(x), generator=g)
    factors[:2] = torch.tensor([lo, hi])  # the ends of the range
    out = ours(x, factors)
    assert out.shape == x.shape
    torch.testing.assert_close(out, _per_image_reference(ref, x, factors), atol=atol, rtol=0)


def test_hue_shift_is_a_rotation_that_leaves_gray_alone() -> None:
    """Shift 0 changes nothing, +-1/2 turn are the same rotation, gray pixels never change."""
    x = _colour_images()
    torch.testing.assert_close(adjust_hue(x, torch.zeros(len(x))), x, atol=1e-6, rtol=0)
    half = torch.full((len(x),), 0.5)
    torch.testing.assert_close(adjust_hue(x, half), adjust_hue(x, -half), atol=1e-6, rtol=0)
    shifted = adjust_hue(x, torch.full((len(x),), 0.3))
    torch.testing.assert_close(shifted[0], x[0], atol=1e-6, rtol=0)  # the fully gray image
    assert not torch.allclose(shifted[1:], x[1:], atol=1e-2)


def test_grayscale_matches_torchvision_algorithm(monkeypatch: pytest.MonkeyPatch) -> None:
    """``grayscale`` is torchvision's ``rgb_to_grayscale`` (given the same luma weights)."""
    monkeypatch.setattr(augment, "_LUMA", _TORCHVISION_LUMA)
    x = _colour_images()
    out = grayscale(x)
    assert out.shape == (len(x), 1, *x.shape[-2:])
    ref = torch.stack([TF.rgb_to_grayscale(img) for img in x])
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)


def test_grayscale_weights_match_torchvision() -> None:
    """Unpatched ``grayscale`` equals torchvision's within 1e-5, as augment.py's comment says."""
    x = _colour_images()
    ref = torch.stack([TF.rgb_to_grayscale(img) for img in x])
    torch.testing.assert_close(grayscale(x), ref, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------------------------
# Geometry: crop + resize, blur
# --------------------------------------------------------------------------------------------
def _torchvision_crops(x: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    out = []
    for img, (left, top, right, bottom) in zip(x, boxes.int().tolist(), strict=True):
        crop = TF.resized_crop(
            img, top, left, bottom - top, right - left, [size, size], antialias=True
        )
        out.append(crop)
    return torch.stack(out)


# Boxes (left, top, right, bottom) in a 32x32 image, upsampled to 32 (factors 1 to 2.7).
_UPSAMPLE_BOXES = torch.tensor(
    [[8, 8, 24, 24], [0, 0, 16, 16], [16, 16, 32, 32], [3, 5, 19, 17], [10, 2, 22, 30]],
    dtype=torch.float32,
)


def test_resized_crop_matches_torchvision_inside_the_border_when_upsampling() -> None:
    """Bilinear upsampling of a box equals torchvision's crop-then-resize inside a 1-px ring."""
    x = torch.rand(len(_UPSAMPLE_BOXES), 3, 32, 32, generator=torch.Generator().manual_seed(0))
    out = resized_crop(x, _UPSAMPLE_BOXES, 32)
    assert out.shape == (len(x), 3, 32, 32)
    ref = _torchvision_crops(x, _UPSAMPLE_BOXES, 32)
    torch.testing.assert_close(out[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1], atol=1e-5, rtol=0)


def test_resized_crop_of_the_whole_image_equals_torchvision_resize() -> None:
    """A box covering the whole image is a plain resize, edge pixels included."""
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    whole = torch.tensor([[0.0, 0.0, 16.0, 16.0]]).expand(2, -1)
    # grid_sample's [-1, 1] coordinate round trip costs ~1e-6 in float32; a misplaced sample
    # (half a pixel) would cost ~1e-1.
    torch.testing.assert_close(resized_crop(x, whole, 16), x, atol=1e-5, rtol=0)
    ref = torch.stack([TF.resize(img, [40, 40], antialias=True) for img in x])
    torch.testing.assert_close(resized_crop(x, whole, 40), ref, atol=1e-5, rtol=0)


def test_resized_crop_matches_torchvision_when_upsampling() -> None:
    """The whole upsampled crop, border included, equals torchvision's ``resized_crop``."""
    x = torch.rand(len(_UPSAMPLE_BOXES), 3, 32, 32, generator=torch.Generator().manual_seed(0))
    out = resized_crop(x, _UPSAMPLE_BOXES, 32)
    torch.testing.assert_close(out, _torchvision_crops(x, _UPSAMPLE_BOXES, 32), atol=1e-3, rtol=0)


@pytest.mark.parametrize("kernel_size", [3, 7, 13])
def test_gaussian_blur_matches_torchvision(kernel_size: int) -> None:
    """Per-image sigma, separable, reflect padding: torchvision's ``gaussian_blur``."""
    g = torch.Generator().manual_seed(kernel_size)
    x = torch.rand(4, 3, 20, 20, generator=g)
    sigma = torch.tensor([0.1, 0.5, 1.3, 2.0])
    out = gaussian_blur(x, sigma, kernel_size)
    ref = torch.stack(
        [
            TF.gaussian_blur(img, [kernel_size] * 2, [float(s)] * 2)
            for img, s in zip(x, sigma, strict=True)
        ]
    )
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("size", [6, 7, 32, 96, 224])
def test_blur_kernel_is_odd_and_fits_the_view(size: int) -> None:
    """The kernel is odd, covers +-3 sigma of the largest sigma, and is at most the view size."""
    cfg = AugmentConfig(size=size, blur_prob=1.0)
    k = blur_kernel_size(cfg)
    assert k % 2 == 1
    assert k <= size
    assert k == min(2 * math.ceil(3 * 2.0 * size / 224) + 1, size if size % 2 else size - 1)


# --------------------------------------------------------------------------------------------
# Crop boxes
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("height", "width", "scale", "ratio"),
    [
        (32, 32, (0.2, 1.0), (3 / 4, 4 / 3)),
        (24, 40, (0.08, 1.0), (3 / 4, 4 / 3)),
        (64, 20, (0.5, 0.9), (0.5, 2.0)),
    ],
)
def test_crop_boxes_lie_in_the_image_with_area_and_ratio_in_range(
    height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float]
) -> None:
    """Integer boxes inside the image; fitted boxes have area and aspect in range (+-rounding)."""
    g = torch.Generator().manual_seed(0)
    boxes = sample_crop_boxes(2000, height, width, scale, ratio, torch.device("cpu"), g)
    assert boxes.shape == (2000, 4)
    assert torch.equal(boxes, boxes.round())
    left, top, right, bottom = boxes.unbind(1)
    w, h = right - left, bottom - top
    assert (left >= 0).all() and (top >= 0).all()
    assert (right <= width).all() and (bottom <= height).all()
    assert (w > 0).all() and (h > 0).all()
    # w = round(sqrt(area * r)), h = round(sqrt(area / r)): rounding moves each by <= 0.5.
    area = height * width
    slack = 0.5 * (w + h) + 0.25
    assert (w * h >= scale[0] * area - slack).all()
    assert (w * h <= scale[1] * area + slack).all()
    assert ((w + 0.5) / (h - 0.5) >= ratio[0]).all()
    assert ((w - 0.5) / (h + 0.5) <= ratio[1]).all()
    # Positions are spread over the free range, not stuck at a corner.
    free = width - w
    assert (left[free > 0] > 0).any() and (left[free > 0] == free[free > 0]).any()


@pytest.mark.parametrize(
    ("height", "width", "scale", "ratio", "expected"),
    [
        (10, 100, (0.9, 1.0), (3 / 4, 4 / 3), [43, 0, 56, 10]),  # too wide: ratio clamped to max
        (100, 10, (0.9, 1.0), (3 / 4, 4 / 3), [0, 43, 10, 56]),  # too tall: ratio clamped to min
        (10, 10, (1.0, 1.0), (2.0, 3.0), [0, 2, 10, 7]),  # no candidate fits the 10x10 image
    ],
)
def test_crop_boxes_fall_back_to_a_centred_clamped_crop(
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    expected: list[int],
) -> None:
    """When no candidate fits, every box is RandomResizedCrop's centred fallback."""
    boxes = sample_crop_boxes(50, height, width, scale, ratio, torch.device("cpu"))
    assert torch.equal(boxes, torch.tensor([expected], dtype=boxes.dtype).expand(50, -1))


def test_crop_boxes_match_torchvision_get_params_in_distribution() -> None:
    """Width, height and corner are distributed as RandomResizedCrop.get_params draws them.

    A 16x48 image with scale (0.3, 1) makes the centred fallback frequent, so both branches count.
    """
    height, width, scale, ratio, n = 16, 48, (0.3, 1.0), (3 / 4, 4 / 3), 2000
    g = torch.Generator().manual_seed(0)
    ours = sample_crop_boxes(n, height, width, scale, ratio, torch.device("cpu"), g)
    img = torch.zeros(1, height, width)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        params = [tv1.RandomResizedCrop.get_params(img, list(scale), list(ratio)) for _ in range(n)]
    top, left, h, w = (torch.tensor(p, dtype=torch.float32) for p in zip(*params, strict=True))
    theirs = torch.stack([left, top, left + w, top + h], dim=1)
    centred = torch.tensor([13.0, 0.0, 34.0, 16.0])  # the fallback: 21x16, ratio clamped to 4/3
    fallback = [(b == centred).all(dim=1).float().mean().item() for b in (ours, theirs)]
    assert 0.1 < fallback[1] < 0.9
    assert abs(fallback[0] - fallback[1]) < 0.05
    for name, i in [("left", 0), ("top", 1)]:
        assert ks_2samp(ours[:, i], theirs[:, i]).pvalue > P_MIN, name
    for name, a, b in [
        ("width", ours[:, 2] - ours[:, 0], w),
        ("height", ours[:, 3] - ours[:, 1], h),
    ]:
        assert ks_2samp(a, b).pvalue > P_MIN, name


# --------------------------------------------------------------------------------------------
# BatchViews: contract
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_batch_views_shape_dtype_device(device: str) -> None:
    """uint8 ``(B, 3, H, W)`` in (any H, W); float32 ``(B, 3, S, S)`` out, on the same device."""
    images = random_uint8(5, 24, 40).to(device)
    out = BatchViews(AugmentConfig(size=16))(images)
    assert out.shape == (5, 3, 16, 16)
    assert out.dtype == torch.float32
    assert out.device == images.device
    assert torch.isfinite(out).all()


def test_batch_views_normalise_with_config_mean_and_std() -> None:
    """With every random op off, a view is the normalised image."""
    cfg = AugmentConfig(
        size=16,
        crop_scale=(1.0, 1.0),
        crop_ratio=(1.0, 1.0),
        jitter_prob=0.0,
        grayscale_prob=0.0,
        flip_prob=0.0,
    )
    images = random_uint8(3, 16, 16)
    mean = torch.tensor(cfg.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std).view(1, 3, 1, 1)
    expected = (images.float() / 255 - mean) / std
    torch.testing.assert_close(BatchViews(cfg)(images), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(eval_views(images, cfg), expected, atol=1e-6, rtol=0)


def test_batch_views_generator_makes_views_reproducible() -> None:
    """The same seed gives the same views; another seed and the two calls of a pair differ."""
    views = BatchViews(AugmentConfig(size=16))
    images = random_uint8(8, 20, 20)
    a = views(images, generator=torch.Generator().manual_seed(3))
    b = views(images, generator=torch.Generator().manual_seed(3))
    c = views(images, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert not torch.allclose(a, c)
    g = torch.Generator().manual_seed(3)
    assert not torch.allclose(views(images, generator=g), views(images, generator=g))


def test_effective_blur_prob_follows_the_view_size_rule() -> None:
    """0.5 from ``blur_min_size`` (96) up, 0 below; an explicit ``blur_prob`` wins."""
    assert AugmentConfig(size=32).effective_blur_prob == 0.0
    assert AugmentConfig(size=95).effective_blur_prob == 0.0
    assert AugmentConfig(size=96).effective_blur_prob == 0.5
    assert AugmentConfig(size=224).effective_blur_prob == 0.5
    assert AugmentConfig(size=32, blur_prob=0.3).effective_blur_prob == 0.3
    assert AugmentConfig(size=224, blur_prob=0.0).effective_blur_prob == 0.0


@pytest.mark.parametrize(
    ("size", "blur_prob", "blurred"),
    [(32, None, False), (96, None, True), (32, 1.0, True), (96, 0.0, False)],
)
def test_blur_is_applied_only_when_effective_blur_prob_is_positive(
    size: int, blur_prob: float | None, blurred: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BatchViews calls the blur (on some images) iff the effective probability is positive, and
    torchvision_views has a GaussianBlur step iff so."""
    calls: list[int] = []

    def spy(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
        calls.append(x.shape[0])
        return gaussian_blur(x, sigma, kernel_size)

    monkeypatch.setattr(augment, "gaussian_blur", spy)
    cfg = AugmentConfig(size=size, blur_prob=blur_prob)
    n = 32
    BatchViews(cfg)(random_uint8(n, size, size), generator=torch.Generator().manual_seed(0))
    if not blurred:
        assert calls == []
    elif cfg.effective_blur_prob == 1.0:
        assert calls == [n]
    else:
        assert len(calls) == 1 and 5 <= calls[0] <= n - 5  # about half of the images
    steps = torchvision_views(cfg).transforms
    has_blur = any(
        isinstance(t, v2.RandomApply) and isinstance(t.transforms[0], v2.GaussianBlur)
        for t in steps
    )
    assert has_blur == blurred


def test_eval_views_centre_crop_224_of_256() -> None:
    """Eval input: a 256 image gives its central 224 pixels; other sizes are resized to 256."""
    cfg = AugmentConfig(size=224, **UNIT)
    images = random_uint8(1, 256, 256)
    out = eval_views(images, cfg)
    torch.testing.assert_close(out, images[..., 16:240, 16:240].float() / 255, atol=1e-6, rtol=0)
    assert eval_views(random_uint8(2, 300, 300), cfg).shape == (2, 3, 224, 224)


def test_eval_views_use_eval_size_when_set() -> None:
    """Trained on 24-pixel crops, tested on the whole 32-pixel image, untouched."""
    images = random_uint8(2, 32, 32)
    cfg = AugmentConfig(size=24, eval_size=32, **UNIT)
    torch.testing.assert_close(eval_views(images, cfg), images.float() / 255, atol=1e-6, rtol=0)
    assert BatchViews(cfg)(images).shape == (2, 3, 24, 24)  # training views keep ``size``
    assert eval_views(images, AugmentConfig(size=24, **UNIT)).shape == (2, 3, 24, 24)


def test_crop_flip_recipe_trains_the_evaluation_protocols_at_the_evaluation_size() -> None:
    cfg = AugmentConfig(size=16, eval_size=32, **UNIT)
    recipe = augment.crop_flip_recipe(cfg, (0.08, 1.0))
    assert (recipe.size, recipe.eval_size, recipe.crop_scale) == (32, None, (0.08, 1.0))
    assert recipe.jitter_prob == recipe.grayscale_prob == recipe.effective_blur_prob == 0.0
    assert recipe.solarize_prob == 0.0 and recipe.flip_prob == cfg.flip_prob
    assert augment.crop_flip_recipe(AugmentConfig(size=24), (0.2, 1.0)).size == 24


def test_eval_size_must_be_a_real_image_side() -> None:
    with pytest.raises(ConfigError, match="eval_size"):
        AugmentConfig(eval_size=2)


# --------------------------------------------------------------------------------------------
# BatchViews against torchvision_views, in distribution
# --------------------------------------------------------------------------------------------
def _batch_outputs(cfg: AugmentConfig, image: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    images = image.unsqueeze(0).expand(n, -1, -1, -1).contiguous()
    return BatchViews(cfg)(images, generator=torch.Generator().manual_seed(seed))


def _torchvision_outputs(
    cfg: AugmentConfig, image: torch.Tensor, n: int, seed: int
) -> torch.Tensor:
    transform = torchvision_views(cfg)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return torch.stack([transform(image).as_subclass(torch.Tensor) for _ in range(n)])


def test_batch_views_crops_match_torchvision_views_in_distribution() -> None:
    """Crop area fraction, aspect ratio and position: KS tests over 1000 views each."""
    size, n = 32, 1000
    cfg = AugmentConfig(size=size, jitter_prob=0.0, grayscale_prob=0.0, flip_prob=0.0, **UNIT)
    image = coordinate_image(size)
    ours = crop_stats(_batch_outputs(cfg, image, n, seed=0))
    theirs = crop_stats(_torchvision_outputs(cfg, image, n, seed=0))
    assert ours["area"].min() >= 0.2 - 0.05
    assert ours["area"].max() > 0.9
    for key in ours:
        p = ks_2samp(ours[key], theirs[key]).pvalue
        assert p > P_MIN, (key, p)


def test_batch_views_colour_matches_torchvision_views_in_distribution(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Per-view channel means and std (jitter, its random order, grayscale) and the gray rate.

    The ~20% views left alone (no jitter) put point masses into every statistic; the statistics
    are rounded to 1e-4 so that float noise (torchvision's uint8 -> float differs from x / 255 in
    the last bit) or the 1e-4 luma difference cannot split a point mass and fool the KS test.
    """
    monkeypatch.setattr(augment, "_LUMA", _TORCHVISION_LUMA)
    size, n = 32, 1000
    cfg = AugmentConfig(
        size=size, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_prob=0.0, **UNIT
    )
    image = random_uint8(1, size, size, seed=5)[0]
    ours = colour_stats(_batch_outputs(cfg, image, n, seed=1))
    theirs = colour_stats(_torchvision_outputs(cfg, image, n, seed=1))
    assert_same_colour_distribution(ours, theirs)


def _hue_angle(views: torch.Tensor) -> torch.Tensor:
    """Mean colour's angle on the opponent-colour plane: monotone in a hue rotation."""
    r, g, b = views.mean(dim=(2, 3)).unbind(1)
    return torch.atan2(math.sqrt(3) / 2 * (g - b), r - (g + b) / 2)


# op: (statistic monotone in that op's factor, image seed or a solid colour)
_SINGLE_OP_STATS = {
    "brightness": (lambda v: v.mean(dim=(1, 2, 3)), None),
    "contrast": (lambda v: v.std(dim=(1, 2, 3)), None),
    "saturation": (lambda v: (v.amax(dim=1) - v.amin(dim=1)).mean(dim=(1, 2)), None),
    "hue": (_hue_angle, (200, 120, 60)),
}


@pytest.mark.parametrize("op", sorted(_SINGLE_OP_STATS))
def test_each_jitter_op_draws_its_factor_like_torchvision(op: str) -> None:
    """With one jitter op on, a statistic monotone in its factor has the same distribution.

    Far more sensitive to a factor range than the mixed test above: a range of 0.3 instead of 0.4
    (0.15 instead of 0.1 for hue) gives p < 1e-7 here.
    """
    size, n = 16, 1000
    strengths = {"brightness": 0.0, "contrast": 0.0, "saturation": 0.0, "hue": 0.0}
    strengths[op] = 0.1 if op == "hue" else 0.4
    cfg = AugmentConfig(
        size=size,
        crop_scale=(1.0, 1.0),
        crop_ratio=(1.0, 1.0),
        flip_prob=0.0,
        grayscale_prob=0.0,
        jitter_prob=1.0,
        **strengths,
        **UNIT,
    )
    statistic, colour = _SINGLE_OP_STATS[op]
    if colour is None:
        image = random_uint8(1, size, size, seed=6)[0]
    else:
        image = torch.tensor(colour, dtype=torch.uint8).view(3, 1, 1).expand(3, size, size)
    ours = statistic(_batch_outputs(cfg, image, n, seed=4))
    theirs = statistic(_torchvision_outputs(cfg, image, n, seed=4))
    assert ours.std() > 1e-3  # the op varies the statistic
    p = ks_2samp((ours.double() * 1e4).round(), (theirs.double() * 1e4).round()).pvalue
    assert p > P_MIN, p


def test_batch_views_flip_half_of_the_views() -> None:
    """Flip rate ~0.5 in both pipelines, and a flipped view is the mirrored image."""
    size, n = 32, 1000
    cfg = AugmentConfig(
        size=size,
        crop_scale=(1.0, 1.0),
        crop_ratio=(1.0, 1.0),
        jitter_prob=0.0,
        grayscale_prob=0.0,
        **UNIT,
    )
    image = coordinate_image(size)
    ours = _batch_outputs(cfg, image, n, seed=2)
    theirs = _torchvision_outputs(cfg, image, n, seed=2)
    for views in (ours, theirs):
        flipped = views[:, 0, :, 0].mean(1) > views[:, 0, :, -1].mean(1)
        assert 0.45 < flipped.float().mean().item() < 0.55
    flipped = ours[:, 0, :, 0].mean(1) > ours[:, 0, :, -1].mean(1)
    x = image.float() / 255
    torch.testing.assert_close(ours[flipped], x.flip(-1).expand_as(ours[flipped]))
    torch.testing.assert_close(ours[~flipped], x.expand_as(ours[~flipped]))


def test_solarize_matches_torchvision_and_the_batched_views_apply_it() -> None:
    """``solarize`` equals torchvision's ``solarize`` at BYOL's threshold 0.5 (x -> 1 - x from
    0.5 up); with every other step off, BatchViews and torchvision_views (RandomSolarize) give
    the same views of the same images at probability 1, and leave them alone at 0."""
    x = _colour_images(size=12)
    x[:, :, 1, :3] = torch.tensor([0.5, 0.5 - 1e-6, 128 / 255])  # at and around the threshold
    ref = torch.stack([TF.solarize(img, threshold=0.5) for img in x])
    torch.testing.assert_close(augment.solarize(x), ref, atol=0, rtol=0)

    images = random_uint8(6, 16, 16)
    plain = {
        "size": 16,
        "crop_scale": (1.0, 1.0),
        "crop_ratio": (1.0, 1.0),
        "jitter_prob": 0.0,
        "grayscale_prob": 0.0,
        "blur_prob": 0.0,
        "flip_prob": 0.0,
        **UNIT,
    }
    unit = images.float() / 255
    for prob, expected in ((1.0, augment.solarize(unit)), (0.0, unit)):
        cfg = AugmentConfig(**plain, solarize_prob=prob)
        batched = BatchViews(cfg)(images, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(batched, expected, atol=1e-5, rtol=0)
        per_image = torch.stack([torchvision_views(cfg)(img) for img in images])
        torch.testing.assert_close(per_image, expected, atol=1e-5, rtol=0)
    steps = torchvision_views(AugmentConfig(**plain, solarize_prob=0.2)).transforms
    solar = [t for t in steps if isinstance(t, v2.RandomSolarize)]
    assert len(solar) == 1 and solar[0].p == 0.2 and solar[0].threshold == 0.5

    # Probability 0.5: about half of a batch of views is solarised, per image.
    many = random_uint8(200, 16, 16)
    cfg = AugmentConfig(**plain, solarize_prob=0.5)
    out = BatchViews(cfg)(many, generator=torch.Generator().manual_seed(1))
    solarised = (out - augment.solarize(many.float() / 255)).flatten(1).abs().amax(1) < 1e-5
    assert 70 <= int(solarised.sum()) <= 130
