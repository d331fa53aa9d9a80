"""Tests for data.storage: what auto picks and says, the memory budget, the default decode side,
and training and evaluation from every storage (an ImageNet-layout folder included)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from siamkit.analysis.run_eval import knn_eval
from siamkit.config import DataConfig
from siamkit.data import memory
from siamkit.data.datasets import ImageSet, load_splits
from siamkit.data.stream import StreamSet
from siamkit.errors import DataError
from siamkit.recipes import load_config
from siamkit.train import pretrain

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _folder(
    root: Path, sizes: list[tuple[int, int]], classes: int = 2, mode: str = "RGB", ext: str = "png"
) -> Path:
    """``root/c<k>/<i>.<ext>`` for each (width, height) in ``sizes``, classes in turn."""
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate(sizes):
        path = root / f"c{i % classes}" / f"{i}.{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        channels = (h, w) if mode == "L" else (h, w, 3)
        Image.fromarray(rng.integers(0, 256, channels, dtype=np.uint8), mode=None).save(path)
    return root


def _cfg(tmp_path: Path, root: Path, **kwargs: object) -> DataConfig:
    options: dict[str, object] = {
        "dataset": "folder",
        "path": str(root),
        "cache_dir": str(tmp_path / "cache"),
        "num_decode_workers": 1,
        "num_workers": 0,
    }
    options.update(kwargs)
    return DataConfig(**options)  # type: ignore[arg-type]


def test_auto_keeps_a_small_folder_of_one_shape_in_memory_at_its_own_side(tmp_path: Path) -> None:
    """28 x 28 grayscale images stay 28 x 28 (not 256): memory, and the note says why."""
    root = _folder(tmp_path / "d", [(28, 28)] * 10, mode="L")
    splits = load_splits(_cfg(tmp_path, root))
    assert isinstance(splits.train, ImageSet)
    assert splits.train.images.shape[1:] == (3, 28, 28)
    assert splits.note.startswith("memory:") and "within the memory budget" in splits.note


def test_auto_streams_a_folder_of_mixed_shapes(tmp_path: Path) -> None:
    """Images of different shapes are streamed, so random crops see each whole image."""
    root = _folder(tmp_path / "d", [(40, 30), (30, 40), (50, 50), (40, 30)])
    splits = load_splits(_cfg(tmp_path, root))
    assert isinstance(splits.train, StreamSet)
    assert splits.note.startswith("stream:") and "differ in shape" in splits.note


def test_auto_streams_a_set_over_the_memory_budget(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d", [(64, 48)] * 10)
    splits = load_splits(_cfg(tmp_path, root, memory_budget_gb=1e-6))
    assert isinstance(splits.train, StreamSet)
    assert "over the memory budget" in splits.note


def test_memory_storage_refuses_a_set_that_does_not_fit_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The figure, the budget and the fix in one message; nothing decoded, nothing written."""
    root = _folder(tmp_path / "d", [(64, 48)] * 10)

    def no_decoding(*args: object) -> None:
        raise AssertionError("decoded although the set was refused")

    monkeypatch.setattr(memory, "decode_into", no_decoding)
    with pytest.raises(DataError, match=r"10 images at 64x48 take 0\.00 GB") as err:
        load_splits(_cfg(tmp_path, root, storage="memory", memory_budget_gb=1e-6))
    assert "data.storage=stream" in str(err.value) and "memory_budget_gb" in str(err.value)
    assert not (tmp_path / "cache").exists()


def test_shards_storage_on_an_image_folder_says_to_pack_it(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d", [(16, 16)] * 4)
    with pytest.raises(DataError, match="siamkit pack"):
        load_splits(_cfg(tmp_path, root, storage="shards"))


def test_memory_and_stream_give_the_same_labels_and_evaluation_views(tmp_path: Path) -> None:
    """One folder both ways: same images in the same order with the same labels."""
    root = _folder(tmp_path / "d", [(24, 24)] * 8)
    mem = load_splits(_cfg(tmp_path, root, storage="memory"))
    streamed = load_splits(_cfg(tmp_path, root, storage="stream"))
    assert isinstance(mem.train, ImageSet) and isinstance(streamed.train, StreamSet)
    assert mem.train.labels is not None and streamed.train.labels is not None
    assert torch.equal(mem.train.labels, streamed.train.labels)
    assert mem.train.paths == [streamed.train.describe(i) for i in range(len(streamed.train))]


SMALL_RUN = [
    "backbone.name=small_cnn",
    "backbone.width=0.25",
    "optim.batch_size=8",
    "train.epochs=1",
    "train.progress_bar=false",
    "train.knn_k=4",
]


@pytest.mark.parametrize(
    ("storage", "decode"), [("memory", "workers"), ("stream", "workers"), ("stream", "device")]
)
def test_pretrain_and_eval_knn_from_each_storage(tmp_path: Path, storage: str, decode: str) -> None:
    """A run from memory or streamed files (JPEGs decoded by workers or on the device) trains,
    checkpoints, and evaluates by kNN; eval knn on its checkpoint reproduces its figure."""
    root = _folder(tmp_path / "d", [(20, 20)] * 20, ext="jpg")
    cfg = load_config(
        CONFIGS / "simsiam" / "digits.yaml",
        [
            *SMALL_RUN,
            "data.dataset=folder",
            f"data.path={root}",
            f"data.storage={storage}",
            f"data.decode={decode}",
            "data.num_workers=1",
            f"data.cache_dir={tmp_path / 'cache'}",
            f"train.output_dir={tmp_path / 'run'}",
            "augment.size=16",
        ],
    )
    result = pretrain(cfg)
    assert result.storage.startswith(f"{storage}:")
    assert result.checkpoint is not None and result.knn_top1 is not None
    assert knn_eval(result.checkpoint)["top1"] == pytest.approx(result.knn_top1)


def test_the_imagenet_recipe_runs_on_an_imagenet_layout_folder(tmp_path: Path) -> None:
    """configs/simsiam/imagenet.yaml end to end (small backbone, a few steps) on
    ``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG`` of 500 x 375 photos, streamed."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("val", 4)):
        for i in range(n):
            path = tmp_path / "imagenet" / split / f"n0144{i % 2:04d}" / f"{split}_{i}.JPEG"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)).save(path)
    cfg = load_config(
        CONFIGS / "simsiam" / "imagenet.yaml",
        [
            f"data.path={tmp_path / 'imagenet'}",
            "data.storage=stream",  # what auto picks for ImageNet itself (1.28 M images)
            "data.num_workers=1",
            "backbone.name=small_cnn",
            "backbone.width=0.25",
            "optim.batch_size=4",
            "train.max_steps=2",
            "train.knn_k=2",
            "train.progress_bar=false",
            f"train.output_dir={tmp_path / 'run'}",
        ],
    )
    result = pretrain(cfg)
    assert result.knn_top1 is not None and result.checkpoint is not None
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


def test_an_unreadable_streamed_image_is_counted_or_stops_a_strict_run(tmp_path: Path) -> None:
    """Streamed files are read during training: a broken one is skipped with a counted warning,
    or stops the run under data.strict with its path in the message."""
    root = tmp_path / "flat"  # unlabelled: every image is a training image
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(16):
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(root / f"{i}.jpg")
    (root / "broken.jpg").write_bytes(b"not a jpeg")
    overrides = [
        *SMALL_RUN,
        "data.dataset=folder",
        f"data.path={root}",
        "data.storage=stream",
        "data.num_workers=0",
        "optim.batch_size=17",  # one batch of every image: the broken one is in it
        "train.knn_every=0",
        "augment.size=16",
    ]
    cfg = load_config(overrides=[*overrides, f"train.output_dir={tmp_path / 'a'}"])
    with pytest.warns(UserWarning, match=r"1 unreadable image\(s\) were skipped in epoch 1"):
        pretrain(cfg)
    strict = load_config(
        overrides=[*overrides, "data.strict=true", f"train.output_dir={tmp_path / 'b'}"]
    )
    with pytest.raises(DataError, match=r"broken\.jpg"):
        pretrain(strict)


@pytest.mark.parametrize("damage", ["truncated array", "marker not JSON", "array of another shape"])
def test_a_damaged_decode_cache_entry_is_decoded_again_with_a_warning(
    tmp_path: Path, damage: str
) -> None:
    """A cut-short copy or a killed write of the shared cache used to fail every later run on
    that folder until the file was deleted by hand."""
    root = _folder(tmp_path / "d", [(20, 20)] * 10)
    cfg = _cfg(tmp_path, root, storage="memory")
    first = load_splits(cfg).train
    assert isinstance(first, ImageSet)
    expected = first.images.clone()  # the first run's array is a mapping of the cache file
    del first
    for array in (tmp_path / "cache").glob("*.npy"):  # the training and held-out splits'
        marker = array.with_suffix(".json")
        if damage == "truncated array":
            array.write_bytes(array.read_bytes()[:-100])
        elif damage == "marker not JSON":
            marker.write_text("{")
        else:
            np.save(array, np.zeros((3, 3, 20, 20), dtype=np.uint8))
    with pytest.warns(UserWarning, match="decode cache entry .* is damaged"):
        again = load_splits(cfg).train
    assert isinstance(again, ImageSet)
    assert torch.equal(again.images, expected)
    import warnings

    with warnings.catch_warnings():  # rebuilt: the next run reads it without a word
        warnings.simplefilter("error")
        assert torch.equal(load_splits(cfg).train.images, expected)  # type: ignore[union-attr]
