"""Tests for streamed images: per-image decoding, crops from whole images, the same views as the
memory path, and unreadable files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import ks_2samp
from torchvision.transforms import RandomResizedCrop

from siamkit.config import AugmentConfig
from siamkit.data import decode
from siamkit.data.augment import BatchViews, eval_views
from siamkit.data.decode import ViewSpec, decode_views, open_rgb, sample_crop
from siamkit.data.files import list_files
from siamkit.data.loader import image_rng, make_loader
from siamkit.data.stream import StreamSet
from siamkit.data.views import Views
from tests.data.view_stats import (
    P_MIN,
    UNIT,
    assert_same_colour_distribution,
    colour_stats,
    coordinate_image,
    crop_stats,
    random_uint8,
)


def _save(array: np.ndarray, path: Path, **options: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **options)
    return path


def _stream_views(path: Path, cfg: AugmentConfig, n: int, seed: int) -> torch.Tensor:
    """``n`` views of one image file through the stream path: worker crops, device finish.

    Each epoch gives the image a new crop (the generator is seeded by seed, epoch, index).
    """
    data = StreamSet(list_files(path.parent), num_workers=0)
    views = Views([cfg])
    batch = data.dataset(views.specs, seed).__getitems__([(e, 0) for e in range(n)])
    assert not batch.unreadable.any()
    return views(batch.images, torch.Generator().manual_seed(seed))[0]


def test_stream_crops_match_the_memory_path_in_distribution(tmp_path: Path) -> None:
    """Crop area, aspect ratio and position: KS tests over 1000 views of each path."""
    size, n = 32, 1000
    cfg = AugmentConfig(size=size, jitter_prob=0.0, grayscale_prob=0.0, flip_prob=0.0, **UNIT)
    image = coordinate_image(size)
    path = _save(image.permute(1, 2, 0).numpy(), tmp_path / "img" / "coords.png")
    # Worker crops are rounded to uint8, so the recovered boxes are integers to within 0.15 px.
    streamed = crop_stats(_stream_views(path, cfg, n, seed=0), tolerance=0.15)
    memory = BatchViews(cfg)(image.expand(n, -1, -1, -1), torch.Generator().manual_seed(0))
    in_memory = crop_stats(memory)
    assert streamed["area"].min() >= 0.2 - 0.05 and streamed["area"].max() > 0.9
    for key in streamed:
        p = ks_2samp(streamed[key], in_memory[key]).pvalue
        assert p > P_MIN, (key, p)


def test_stream_colour_changes_match_the_memory_path_in_distribution(tmp_path: Path) -> None:
    """Jitter, its order and grayscale: the device finishes streamed crops like memory views."""
    size, n = 32, 1000
    cfg = AugmentConfig(
        size=size, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_prob=0.0, **UNIT
    )
    image = random_uint8(1, size, size, seed=5)[0]
    path = _save(image.permute(1, 2, 0).numpy(), tmp_path / "img" / "random.png")
    streamed = colour_stats(_stream_views(path, cfg, n, seed=1))
    memory = BatchViews(cfg)(image.expand(n, -1, -1, -1), torch.Generator().manual_seed(1))
    assert_same_colour_distribution(streamed, colour_stats(memory))


def test_crop_boxes_follow_torchvision_on_a_non_square_image() -> None:
    """sample_crop against RandomResizedCrop.get_params on a 500 x 375 image, in distribution."""
    w, h, n = 500, 375, 2000
    rng = np.random.default_rng(0)
    ours = np.array([sample_crop(rng, w, h, (0.08, 1.0), (3 / 4, 4 / 3)) for _ in range(n)])
    torch.manual_seed(0)
    ref = [RandomResizedCrop.get_params(torch.empty(3, h, w), [0.08, 1.0], [3 / 4, 4 / 3])]
    ref += [
        RandomResizedCrop.get_params(torch.empty(3, h, w), [0.08, 1.0], [3 / 4, 4 / 3])
        for _ in range(n - 1)
    ]
    theirs = np.array([(j, i, j + cw, i + ch) for i, j, ch, cw in ref])
    for k, name in enumerate(("left", "top", "right", "bottom")):
        assert ks_2samp(ours[:, k], theirs[:, k]).pvalue > P_MIN, name
    assert (ours[:, 0] >= 0).all() and (ours[:, 2] <= w).all() and (ours[:, 3] <= h).all()


def test_streamed_crops_reach_the_sides_of_a_wide_image(tmp_path: Path) -> None:
    """A 64 x 16 image: random crops come from all of it, not from a centre square."""
    ramp = np.tile((np.arange(64) * 4).astype(np.uint8), (16, 1))
    path = _save(np.dstack([ramp, ramp, ramp]), tmp_path / "img" / "wide.png")
    specs = [ViewSpec(8, (0.2, 1.0))]
    means = [
        float(decode_views(path, specs, image_rng(0, e, 0))[0].mean()) / 4  # (3, 8, 8)
        for e in range(300)
    ]
    # Column means of crops: a centre 16 x 16 square would keep them within 24..40.
    assert min(means) < 12 and max(means) > 52


def test_jpeg_is_decoded_at_a_reduced_scale_when_every_crop_allows_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 1024 x 768 JPEG cut to 32 px views: DCT-scaled decode, nearly the same pixels."""
    yy, xx = np.mgrid[0:768, 0:1024]
    smooth = np.dstack([xx / 4, yy / 3, (xx + yy) / 7]).astype(np.uint8)
    path = _save(smooth, tmp_path / "img" / "big.jpg", quality=95)
    factors: list[float] = []
    real = decode._reduction

    def spy(im: Image.Image, needed: float) -> float:
        factors.append(real(im, needed))
        return factors[-1]

    monkeypatch.setattr(decode, "_reduction", spy)
    specs = [ViewSpec(32, (0.5, 1.0)), ViewSpec(32)]
    reduced = decode_views(path, specs, image_rng(0, 0, 0))
    assert factors == [8.0]
    monkeypatch.setattr(decode, "_reduction", lambda im, needed: 1.0)
    full = decode_views(path, specs, image_rng(0, 0, 0))
    assert reduced is not None and full is not None
    for a, b in zip(reduced, full, strict=True):
        assert a.shape == b.shape == (3, 32, 32)
        assert np.abs(a.astype(float) - b.astype(float)).mean() < 2.0  # of 255


def test_centre_view_matches_the_memory_evaluation_view(tmp_path: Path) -> None:
    """A 40 x 40 image at evaluation size 32: resize 37, centre 32, as eval_views does."""
    image = random_uint8(1, 40, 40, seed=2)[0]
    smooth = torch.nn.functional.avg_pool2d(image.float()[None], 5, 1, 2)[0].to(torch.uint8)
    path = _save(smooth.permute(1, 2, 0).numpy(), tmp_path / "img" / "a.png")
    cfg = AugmentConfig(size=24, eval_size=32, **UNIT)
    crop = decode_views(path, Views.centre(cfg).specs, image_rng(0, 0, 0))
    assert crop is not None
    streamed = Views.centre(cfg)([torch.from_numpy(crop[0])[None]])[0]
    memory = eval_views(smooth[None], cfg)
    assert streamed.shape == memory.shape == (1, 3, 32, 32)
    assert (streamed - memory).abs().mean() < 2 / 255


def test_open_rgb_decodes_16_bit_palette_alpha_and_gray_images(tmp_path: Path) -> None:
    """Every mode becomes 8-bit RGB with its real intensities (not clipped, not dropped)."""
    gray16 = np.full((4, 4), 32768, dtype=np.uint16)  # half of the 16-bit range
    _save(gray16, tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as im:
        assert np.asarray(open_rgb(im)).tolist() == [[[128] * 3] * 4] * 4
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red, fully transparent on the left half
    rgba[:, 2:, 3] = 255
    _save(rgba, tmp_path / "rgba.png")
    with Image.open(tmp_path / "rgba.png") as im:
        out = np.asarray(open_rgb(im))
    assert out[0, 0].tolist() == [255, 255, 255] and out[0, 3].tolist() == [255, 0, 0]
    palette = Image.fromarray(np.array([[0, 1], [1, 0]], dtype=np.uint8), mode="P")
    palette.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    palette.info["transparency"] = 0
    palette.save(tmp_path / "p.png", transparency=0)
    with Image.open(tmp_path / "p.png") as im:
        out = np.asarray(open_rgb(im))
    assert out[0, 0].tolist() == [255, 255, 255] and out[0, 1].tolist() == [200, 100, 50]
    _save(np.full((4, 4), 77, dtype=np.uint8), tmp_path / "l.png")
    with Image.open(tmp_path / "l.png") as im:
        assert np.asarray(open_rgb(im))[1, 1].tolist() == [77, 77, 77]


def test_an_unreadable_file_in_a_batch_is_stood_in_for_and_flagged(tmp_path: Path) -> None:
    """The batch keeps its size; the unreadable image is flagged, the batch's first readable
    image stands in."""
    root = tmp_path / "data"
    for i in range(3):
        _save(random_uint8(1, 12, 12, seed=i)[0].permute(1, 2, 0).numpy(), root / f"{i}.png")
    (root / "1b.png").write_bytes(b"not an image")
    data = StreamSet(list_files(root), num_workers=0)
    specs = [ViewSpec(8, (0.5, 1.0)), ViewSpec(8, (0.5, 1.0))]
    batch = next(iter(make_loader(data, specs, 4, train=False)))
    assert batch.unreadable.tolist() == [False, False, True, False]  # 0, 1, 1b, 2
    assert data.describe(2).endswith("1b.png")
    for crops in batch.images:
        assert crops.shape == (4, 3, 8, 8) and crops.dtype == torch.uint8
        assert torch.equal(crops[2], crops[0])


def test_stream_views_do_not_depend_on_the_number_of_workers(tmp_path: Path) -> None:
    """Crops are seeded by (seed, epoch, index): 0 and 2 workers give the same batches."""
    root = tmp_path / "data"
    for i in range(8):
        _save(random_uint8(1, 20, 16, seed=i)[0].permute(1, 2, 0).numpy(), root / f"{i}.png")
    files = list_files(root)
    specs = [ViewSpec(8, (0.2, 1.0))]
    out = []
    for workers in (0, 2):
        loader = make_loader(StreamSet(files, workers), specs, 4, train=True, seed=3)
        out.append([(b.indices.tolist(), b.images[0]) for b in loader])
    assert [i for i, _ in out[0]] == [i for i, _ in out[1]]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(out[0], out[1], strict=True))


def test_log_uniform_ratio_is_drawn_like_torchvision() -> None:
    """The aspect ratio of accepted crops is log-uniform over the range (when they all fit)."""
    rng = np.random.default_rng(1)
    boxes = [sample_crop(rng, 1000, 1000, (0.05, 0.05), (0.5, 2.0)) for _ in range(3000)]
    log_ratio = np.log([(r - left) / (b - t) for left, t, r, b in boxes])
    assert (
        ks_2samp(
            log_ratio, np.random.default_rng(2).uniform(math.log(0.5), math.log(2.0), 3000)
        ).pvalue
        > P_MIN
    )
