"""Plots: training curves carry the CSV's values; t-SNE has one scatter per class; PNGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.collections import PathCollection
from PIL import Image

from siamkit.analysis.plots import epoch_positions, save_png, training_curves, tsne_plot
from siamkit.errors import CheckpointError, DataError

# A CSVLogger file as siamkit's loop writes it: per-step loss rows, one epoch-end row with the
# monitors (2 epochs of 20 steps, logged every 10 steps).
CSV = """epoch,step,train/collapse_std,train/images_per_sec,train/loss,val/knn_top1
0,9,,,6.0,
0,19,,,5.0,
0,19,0.9,250.0,,37.5
1,29,,,4.5,
1,39,,,4.0,
1,39,0.8,260.0,,41.25
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "metrics.csv"
    path.write_text(text)
    return path


def _lines(ax) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {
        line.get_label(): (np.asarray(line.get_xdata()), np.asarray(line.get_ydata()))
        for line in ax.get_lines()
    }


def test_training_curves_plot_the_csv_values(tmp_path: Path) -> None:
    fig = training_curves(_write(tmp_path, CSV))
    loss_ax, knn_ax, std_ax = fig.axes[:3]
    assert len(fig.axes) == 3
    assert "loss" in loss_ax.get_title() and "kNN" in knn_ax.get_title()
    assert "collapse" in std_ax.get_title()
    assert all(ax.get_xlabel() == "epoch" for ax in fig.axes)

    loss = _lines(loss_ax)
    x, y = loss["per step"]
    np.testing.assert_allclose(y, [6.0, 5.0, 4.5, 4.0])
    # Step s of epoch e at e + (s - first) / (last - first): epoch 0 spans steps -1..19.
    np.testing.assert_allclose(x, [0.5, 1.0, 1.5, 2.0])
    x, y = loss["epoch mean"]
    np.testing.assert_allclose(x, [1, 2])
    np.testing.assert_allclose(y, [5.5, 4.25])

    (x, y), *_ = _lines(knn_ax).values()
    np.testing.assert_allclose(x, [1, 2])
    np.testing.assert_allclose(y, [37.5, 41.25])
    (x, y), *_ = _lines(std_ax).values()
    np.testing.assert_allclose(y, [0.9, 0.8])


def test_training_curves_tolerate_missing_columns(tmp_path: Path) -> None:
    """A run without the kNN and collapse monitors (a SwAV log in progress): the loss is drawn
    and the other panels say what was not logged."""
    fig = training_curves(_write(tmp_path, "epoch,step,train/loss\n0,9,4.6\n0,19,4.4\n"))
    loss_ax, knn_ax, std_ax = fig.axes
    np.testing.assert_allclose(_lines(loss_ax)["per step"][1], [4.6, 4.4])
    for ax, column in ((knn_ax, "val/knn_top1"), (std_ax, "train/collapse_std")):
        assert ax.get_lines() == []
        assert any(column in t.get_text() and "not logged" in t.get_text() for t in ax.texts)


def test_training_curves_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="siamkit pretrain"):
        training_curves(tmp_path / "missing.csv")
    with pytest.raises(CheckpointError, match="CSVLogger"):
        training_curves(_write(tmp_path, "a,b\n1,2\n"))


def test_epoch_positions() -> None:
    assert epoch_positions([0, 0, 1, 1], [9, 19, 29, 39]) == {0: (-1, 19), 1: (19, 39)}


def _blobs(n_per: int, k: int, dim: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    centres = 5 * torch.randn(k, dim, generator=g)
    labels = torch.arange(k).repeat_interleave(n_per)
    return centres[labels] + torch.randn(k * n_per, dim, generator=g), labels


def test_tsne_plot_has_one_scatter_per_class_with_legend() -> None:
    x, y = _blobs(30, 4)
    fig = tsne_plot(x, y, ["zero", "one", "two", "three"], seed=0)
    (ax,) = fig.axes
    scatters = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert [s.get_label() for s in scatters] == ["zero", "one", "two", "three"]
    assert [len(s.get_offsets()) for s in scatters] == [30, 30, 30, 30]
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["zero", "one", "two", "three"]
    colours = {tuple(np.round(s.get_facecolor()[0], 3)) for s in scatters}
    assert len(colours) == 4
    # Well separated blobs stay separated: each class's centroid is nearer its own points.
    pts = [np.asarray(s.get_offsets()) for s in scatters]
    centroids = np.stack([p.mean(0) for p in pts])
    for c, p in enumerate(pts):
        assert (np.linalg.norm(p[:, None] - centroids[None], axis=2).argmin(1) == c).mean() > 0.9
    # Seeded: the same map again.
    again = [np.asarray(c.get_offsets()) for c in tsne_plot(x, y, None, seed=0).axes[0].collections]
    for a, b in zip(pts, again, strict=True):
        np.testing.assert_allclose(a, b)


def test_tsne_plot_caps_points_and_handles_missing_labels() -> None:
    x, y = _blobs(40, 3)
    fig = tsne_plot(x, y, None, max_points=60, seed=1)
    scatters = fig.axes[0].collections
    assert sum(len(s.get_offsets()) for s in scatters) == 60
    assert {s.get_label() for s in scatters} <= {"0", "1", "2"}
    fig = tsne_plot(x[:50], None)
    assert [s.get_label() for s in fig.axes[0].collections] == ["all images"]
    with pytest.raises(DataError, match="at least 4"):
        tsne_plot(x[:3], y[:3])


def test_save_png_writes_a_non_blank_image(tmp_path: Path) -> None:
    path = save_png(training_curves(_write(tmp_path, CSV)), tmp_path / "sub" / "curves.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = np.asarray(Image.open(path).convert("RGB"))
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10  # more than a blank canvas
