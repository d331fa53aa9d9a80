"""Statistics of augmented views, shared by the tests that compare two view pipelines in
distribution (batched against torchvision's per-image transforms, memory against streamed)."""

from __future__ import annotations

import torch
from scipy.stats import ks_2samp

UNIT = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}  # views stay in [0, 1]
P_MIN = 1e-3  # KS p-value below which two samples are called different


def random_uint8(n: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Random ``(n, 3, height, width)`` uint8 images."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, height, width), dtype=torch.uint8, generator=g)


def coordinate_image(size: int) -> torch.Tensor:
    """uint8 ``(3, size, size)``: R = 8 x, G = 8 y, B = 0 (exact in uint8 for size <= 32)."""
    ramp = torch.arange(size, dtype=torch.float32) * 8
    r = ramp.view(1, -1).expand(size, -1)
    g = ramp.view(-1, 1).expand(-1, size)
    return torch.stack([r, g, torch.zeros(size, size)]).to(torch.uint8)


def estimate_boxes(views: torch.Tensor) -> dict[str, torch.Tensor]:
    """Crop box of each view of the coordinate image, from the ramps in its interior.

    Output column j of a crop (left, width w) resized to S samples source x =
    left + (j + 0.5) w / S - 0.5; a line fitted over the central half of the columns gives w
    and left (the border is left out: there clamping differs, and it is not what is compared).
    """
    size = views.shape[-1]
    j = torch.arange(size // 4, 3 * size // 4, dtype=torch.float64)
    out = {}
    for name, coords in (("x", views[:, 0].mean(dim=1)), ("y", views[:, 1].mean(dim=2))):
        v = coords.double()[:, size // 4 : 3 * size // 4] * 255 / 8  # (N, S/2) source coordinate
        jc = j - j.mean()
        slope = (jc * (v - v.mean(1, keepdim=True))).sum(1) / (jc**2).sum()
        intercept = v.mean(1) - slope * j.mean()
        out["w" if name == "x" else "h"] = slope * size
        out["left" if name == "x" else "top"] = intercept - 0.5 * slope + 0.5
    return out


def crop_stats(views: torch.Tensor, tolerance: float = 0.02) -> dict[str, torch.Tensor]:
    """Area fraction, log aspect ratio and position of the crop behind each view of the
    coordinate image; asserts that every crop is an integer box inside the image."""
    size = views.shape[-1]
    est = estimate_boxes(views)
    for key, value in est.items():
        assert (value - value.round()).abs().max() < tolerance, key
    w, h = est["w"].round(), est["h"].round()
    assert (est["left"] >= -tolerance).all() and (est["left"] + w <= size + tolerance).all()
    return {
        "area": w * h / size**2,
        "log_aspect": (w / h).log(),
        "left": est["left"].round(),
        "top": est["top"].round(),
    }


def colour_stats(views: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-view channel means, std and chroma, and the share of gray views, of views in [0, 1]."""
    assert views.min() >= 0 and views.max() <= 1
    gray = (views[:, 0] == views[:, 1]).all(dim=(1, 2)) & (views[:, 1] == views[:, 2]).all(
        dim=(1, 2)
    )
    return {
        "gray": gray.float().mean(),
        "mean_r": views[:, 0].mean(dim=(1, 2)),
        "mean_g": views[:, 1].mean(dim=(1, 2)),
        "mean_b": views[:, 2].mean(dim=(1, 2)),
        "std": views.std(dim=(1, 2, 3)),
        "chroma": (views.amax(dim=1) - views.amin(dim=1)).mean(dim=(1, 2)),
    }


def assert_same_colour_distribution(
    ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor], gray: float = 0.2
) -> None:
    """KS tests of :func:`colour_stats` of two pipelines, and a gray share near ``gray``.

    The ~20% views left alone (no jitter) put point masses into every statistic; the statistics
    are rounded to 1e-4 so that float noise (torchvision's uint8 -> float differs from x / 255 in
    the last bit) or the 1e-4 luma difference cannot split a point mass and fool the KS test.
    """
    for stats in (ours, theirs):
        assert gray - 0.05 < float(stats["gray"]) < gray + 0.05, float(stats["gray"])
    for key in ("mean_r", "mean_g", "mean_b", "std", "chroma"):
        a, b = ((stats[key].double() * 1e4).round() for stats in (ours, theirs))
        p = ks_2samp(a, b).pvalue
        assert p > P_MIN, (key, p)
    # The jitter really varies the views (the test would be vacuous otherwise).
    assert ours["std"].std() > 0.01
