"""Tests for image folders, CIFAR-10 folders, digits and the decode cache.

Every test writes its own tiny images into ``tmp_path`` and points the decode cache there too, so
nothing is read from or written to ``~/.cache``.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from siamkit.config import DataConfig
from siamkit.data import memory
from siamkit.data.datasets import ImageSet, load_digits, load_splits, require_labels
from siamkit.data.files import list_files, stratified_split
from siamkit.data.loader import make_loader
from siamkit.data.memory import FolderShape, decode_image, default_cache_dir
from siamkit.errors import DataError

# Solid colours per class, far apart so that lossy JPEG keeps them recognisable.
_COLOURS = {"ant": (220, 30, 30), "bee": (30, 200, 40), "cat": (40, 50, 210)}
_FORMATS = [("png", {}), ("jpg", {"quality": 95}), ("webp", {"lossless": True}), ("bmp", {})]


def _write_image(
    path: Path, colour: tuple[int, int, int] | None = None, size: tuple[int, int] = (20, 14)
) -> Path:
    """Write an RGB image (solid ``colour``, else random) in the format of ``path``'s suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    if colour is None:
        rng = np.random.default_rng(zlib.crc32(path.name.encode()))
        array = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    else:
        array = np.broadcast_to(np.array(colour, dtype=np.uint8), (h, w, 3)).copy()
    options = dict(_FORMATS)[path.suffix[1:]]
    Image.fromarray(array).save(path, **options)
    return path


def _labelled_folder(root: Path, per_class: int = 4) -> Path:
    """``root/<class>/<i>.<fmt>`` with formats cycling through PNG, JPEG, WEBP and BMP."""
    for c, colour in _COLOURS.items():
        for i in range(per_class):
            ext = _FORMATS[i % len(_FORMATS)][0]
            _write_image(root / c / f"{i}.{ext}", colour)
    return root


def _config(tmp_path: Path, root: Path | None = None, **kwargs: object) -> DataConfig:
    """A folder config with the cache under ``tmp_path`` and serial decoding."""
    options: dict[str, object] = {
        "dataset": "folder",
        "path": str(root or tmp_path / "data"),
        "cache_dir": str(tmp_path / "cache"),
        "num_decode_workers": 1,
    }
    options.update(kwargs)
    return DataConfig(**options)  # type: ignore[arg-type]


def load_folder(root: Path, side: int, cfg: DataConfig) -> ImageSet:
    """Every image under ``root`` decoded into memory as ``side`` x ``side`` squares."""
    shape = FolderShape(side, side, uniform=True, sampled=0)
    return memory.load_folder(list_files(root), shape, cfg, default_cache_dir(cfg))


def _mean_colours(images: torch.Tensor) -> torch.Tensor:
    return images.float().mean(dim=(2, 3))  # (N, 3)


# --------------------------------------------------------------------------------------------
# Layouts
# --------------------------------------------------------------------------------------------
def test_labelled_folder_decodes_every_format_with_labels_from_folders(tmp_path: Path) -> None:
    """``root/<class>/*``: (N, 3, S, S) uint8, sorted classes, labels from the parent folder."""
    root = _labelled_folder(tmp_path / "data")
    images = load_folder(root, 16, _config(tmp_path))
    assert images.images.shape == (12, 3, 16, 16)
    assert images.images.dtype == torch.uint8
    assert images.classes == ["ant", "bee", "cat"]
    assert images.labels is not None and images.labels.dtype == torch.int64
    assert images.paths is not None and len(images.paths) == 12
    assert {Path(p).suffix for p in images.paths} == {".png", ".jpg", ".webp", ".bmp"}
    for path, label, colour in zip(
        images.paths, images.labels, _mean_colours(images.images), strict=True
    ):
        cls = Path(path).parent.name
        assert images.classes[int(label)] == cls
        # RGB order and pixel values survive decoding (JPEG within a few levels).
        torch.testing.assert_close(colour, torch.tensor(_COLOURS[cls]).float(), atol=4, rtol=0)


def test_labelled_folder_split_is_stratified_and_disjoint(tmp_path: Path) -> None:
    """A labelled folder without train/test holds out ``test_fraction`` of every class."""
    root = _labelled_folder(tmp_path / "data", per_class=10)
    splits = load_splits(_config(tmp_path, test_fraction=0.2, decode_size=8))
    assert isinstance(splits.train, ImageSet) and isinstance(splits.test, ImageSet)
    assert len(splits.train) == 24 and len(splits.test) == 6
    assert splits.train.labels is not None and splits.test.labels is not None
    assert torch.bincount(splits.train.labels).tolist() == [8, 8, 8]
    assert torch.bincount(splits.test.labels).tolist() == [2, 2, 2]
    assert splits.train.paths is not None and splits.test.paths is not None
    assert not set(splits.train.paths) & set(splits.test.paths)
    assert len(set(splits.train.paths) | set(splits.test.paths)) == 30
    assert splits.train.classes == splits.test.classes == sorted(_COLOURS)
    assert splits.train.images.shape[1:] == (3, 8, 11)  # 20 x 14 images, aspect ratio kept
    assert str(root) in splits.train.paths[0]


def test_stratified_split_keeps_single_image_classes_in_train() -> None:
    """A class with one image cannot be held out; every other class gives at least one."""
    labels = torch.tensor([0] * 10 + [1] * 3 + [2])
    train, test = stratified_split(labels, 0.2, seed=0)
    assert torch.bincount(labels[test], minlength=3).tolist() == [2, 1, 0]
    assert sorted(train.tolist() + test.tolist()) == list(range(14))
    again = stratified_split(labels, 0.2, seed=0)
    assert torch.equal(again[0], train) and torch.equal(again[1], test)


def test_flat_folder_is_unlabelled_without_test_split(tmp_path: Path) -> None:
    """A folder of images without class folders: no labels, no classes, no held-out set."""
    root = tmp_path / "data"
    for i, (ext, _) in enumerate(_FORMATS):
        _write_image(root / f"img{i}.{ext}")
    splits = load_splits(_config(tmp_path, decode_size=12))
    assert splits.test is None and isinstance(splits.train, ImageSet)
    assert splits.train.images.shape == (4, 3, 12, 17)
    assert splits.train.labels is None and splits.train.classes is None
    with pytest.raises(DataError, match="needs labels"):
        require_labels(splits.train, "the linear probe")


def test_train_test_layout_uses_the_training_class_indices(tmp_path: Path) -> None:
    """``train/`` + ``test/``: the test split's labels index the training split's classes."""
    root = tmp_path / "data"
    for c in _COLOURS:
        _write_image(root / "train" / c / "0.png", _COLOURS[c])
        _write_image(root / "train" / c / "1.png", _COLOURS[c])
    _write_image(root / "test" / "cat" / "0.png", _COLOURS["cat"])  # no ant, no bee in test
    _write_image(root / "test" / "bee" / "0.png", _COLOURS["bee"])
    splits = load_splits(_config(tmp_path, decode_size=10))
    assert isinstance(splits.train, ImageSet) and isinstance(splits.test, ImageSet)
    assert splits.train.classes == ["ant", "bee", "cat"]
    assert splits.test is not None and splits.test.classes == ["ant", "bee", "cat"]
    assert splits.test.labels is not None and splits.test.paths is not None
    names = [Path(p).parent.name for p in splits.test.paths]
    assert [splits.train.classes[int(i)] for i in splits.test.labels] == names
    assert sorted(splits.test.labels.tolist()) == [1, 2]
    assert splits.test.images.shape == (2, 3, 10, 14)


def test_test_class_unknown_to_training_is_an_error(tmp_path: Path) -> None:
    """A class folder only in ``test/``, beside training classes, cannot be labelled
    consistently."""
    root = tmp_path / "data"
    _write_image(root / "train" / "ant" / "0.png")
    _write_image(root / "train" / "bee" / "0.png")
    _write_image(root / "test" / "ant" / "1.png")
    _write_image(root / "test" / "wasp" / "0.png")
    with pytest.raises(DataError, match=r"\['wasp'\].*training split lacks"):
        load_splits(_config(tmp_path, decode_size=8))


def test_a_test_folder_of_no_training_class_is_read_unlabelled_with_a_warning(
    tmp_path: Path,
) -> None:
    """test/images/ beside train/<class>/: no class of the training split at all, so it is no
    class layout; it is read as unlabelled, and the warning says so and names the fix."""
    root = tmp_path / "data"
    _write_image(root / "train" / "ant" / "0.png")
    _write_image(root / "train" / "bee" / "0.png")
    _write_image(root / "test" / "images" / "0.png")
    with pytest.warns(
        UserWarning, match=r"\['images'\] that are none of the training.*labels_file"
    ):
        splits = load_splits(_config(tmp_path, decode_size=8))
    assert splits.train.labels is not None and splits.test is not None
    assert splits.test.labels is None


# --------------------------------------------------------------------------------------------
# Errors and unreadable files
# --------------------------------------------------------------------------------------------
def test_missing_path_is_a_data_error_naming_it(tmp_path: Path) -> None:
    """A path that does not exist: DataError with the path in the message."""
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="does not exist") as err:
        load_splits(_config(tmp_path, root=missing))
    assert str(missing) in str(err.value)


def test_file_instead_of_folder_is_a_data_error(tmp_path: Path) -> None:
    """A path to a file: DataError saying it is not a folder."""
    file = _write_image(tmp_path / "one.png")
    with pytest.raises(DataError, match="not a folder") as err:
        load_splits(_config(tmp_path, root=file))
    assert str(file) in str(err.value)


def test_folder_without_images_is_a_data_error_naming_it(tmp_path: Path) -> None:
    """An empty folder, or one with only non-image files: DataError naming the path."""
    root = tmp_path / "data"
    root.mkdir()
    with pytest.raises(DataError, match="no images") as err:
        load_splits(_config(tmp_path))
    assert str(root) in str(err.value)
    (root / "notes.txt").write_text("not an image")
    (root / "cls").mkdir()
    with pytest.raises(DataError, match="no images"):
        load_splits(_config(tmp_path))


def _folder_with_bad_files(root: Path) -> list[Path]:
    """Three good images, a file of random bytes and a truncated JPEG; returns the bad ones."""
    for i in range(3):
        _write_image(root / f"good{i}.png")
    corrupt = root / "corrupt.jpg"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
    full = _write_image(root / "truncated.jpg", size=(64, 64))
    data = full.read_bytes()
    full.write_bytes(data[: len(data) // 2])
    return [corrupt, full]


def test_unreadable_images_are_skipped_with_a_counting_warning(tmp_path: Path) -> None:
    """Corrupt and truncated files are dropped; one warning counts and names them."""
    root = tmp_path / "data"
    bad = _folder_with_bad_files(root)
    with pytest.warns(UserWarning, match=r"skipped 2 unreadable image\(s\) of 5") as record:
        images = load_folder(root, 8, _config(tmp_path))
    message = str(record[0].message)
    assert all(str(p) in message for p in bad)
    assert len(images) == 3
    assert images.paths is not None
    assert sorted(Path(p).name for p in images.paths) == ["good0.png", "good1.png", "good2.png"]


def test_unreadable_images_are_an_error_under_strict(tmp_path: Path) -> None:
    """``strict=True`` turns the skipped images into a DataError that counts them."""
    root = tmp_path / "data"
    _folder_with_bad_files(root)
    with pytest.raises(DataError, match=r"2 unreadable image\(s\)"):
        load_splits(_config(tmp_path, strict=True, decode_size=8, storage="memory"))


def test_folder_of_only_unreadable_images_is_an_error(tmp_path: Path) -> None:
    """If nothing decodes, there is nothing to train on."""
    root = tmp_path / "data"
    root.mkdir()
    (root / "a.png").write_bytes(b"\x89PNG not really")
    with pytest.warns(UserWarning, match="skipped 1"), pytest.raises(DataError, match="none of"):
        load_folder(root, 8, _config(tmp_path))


def test_decode_image_resizes_shorter_side_and_centre_crops(tmp_path: Path) -> None:
    """A 40x20 image: shorter side to S, then the central S columns; any mode becomes RGB."""
    array = np.zeros((20, 40, 3), dtype=np.uint8)
    array[:, :10] = (255, 0, 0)  # left quarter red
    array[:, 10:30] = (0, 255, 0)  # middle half green
    array[:, 30:] = (0, 0, 255)  # right quarter blue
    Image.fromarray(array).save(tmp_path / "wide.png")
    out = decode_image(tmp_path / "wide.png", 16)
    assert out is not None and out.shape == (16, 16, 3) and out.dtype == np.uint8
    assert (out[:, 2:-2] == (0, 255, 0)).all()  # the crop keeps the middle
    Image.fromarray(array[..., 0]).save(tmp_path / "gray.png")  # mode L
    Image.fromarray(np.dstack([array, np.full((20, 40), 128, np.uint8)])).save(
        tmp_path / "rgba.png"
    )
    for name in ("gray.png", "rgba.png"):
        decoded = decode_image(tmp_path / name, 8)
        assert decoded is not None and decoded.shape == (8, 8, 3)
    (tmp_path / "junk.png").write_bytes(b"junk")
    assert decode_image(tmp_path / "junk.png", 8) is None


def test_parallel_decoding_equals_serial_and_maps_bad_files(tmp_path: Path) -> None:
    """Several workers give the same images, and a bad file in a later chunk is found."""
    root = tmp_path / "data"
    for i in range(9):
        _write_image(root / f"{i}.png")
    (root / "7b.png").write_bytes(b"junk")  # sorts between 7.png and 8.png: a later chunk
    files = list_files(root).paths.tolist()
    serial, parallel = tmp_path / "serial.npy", tmp_path / "parallel.npy"
    bad_serial = memory.decode_into(serial, files, 8, 10, workers=1)
    bad_parallel = memory.decode_into(parallel, files, 8, 10, workers=2)
    assert bad_serial == bad_parallel == [files.index(str(root / "7b.png"))] == [8]
    np.testing.assert_array_equal(np.load(serial), np.load(parallel))
    assert np.load(serial).shape == (10, 3, 8, 10)


# --------------------------------------------------------------------------------------------
# Decode cache
# --------------------------------------------------------------------------------------------
def _fail_decode(*args: object, **kwargs: object) -> None:
    raise AssertionError("decoded again although the cache should serve")


def test_cache_is_written_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first load writes .npy + .json; the second decodes nothing and returns the same."""
    root = _labelled_folder(tmp_path / "data", per_class=2)
    cfg = _config(tmp_path)
    first = load_folder(root, 12, cfg)
    written = sorted(p.suffix for p in (tmp_path / "cache").iterdir())
    assert written == [".json", ".npy"]
    monkeypatch.setattr(memory, "decode_into", _fail_decode)
    second = load_folder(root, 12, cfg)
    assert torch.equal(first.images, second.images)
    assert second.labels is not None and first.labels is not None
    assert torch.equal(first.labels, second.labels)
    assert first.paths == second.paths and first.classes == second.classes


def test_cache_keeps_the_list_of_unreadable_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cached folder still skips (and warns about) the files that did not decode."""
    root = tmp_path / "data"
    _folder_with_bad_files(root)
    cfg = _config(tmp_path)
    with pytest.warns(UserWarning, match="skipped 2"):
        load_folder(root, 8, cfg)
    monkeypatch.setattr(memory, "decode_into", _fail_decode)
    with pytest.warns(UserWarning, match="skipped 2"):
        assert len(load_folder(root, 8, cfg)) == 3


def _counting_decoder(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = memory.decode_into

    def counting(out: Path, files: list[str], height: int, width: int, workers: int) -> list[int]:
        calls.append(len(files))
        return real(out, files, height, width, workers)

    monkeypatch.setattr(memory, "decode_into", counting)
    return calls


def test_cache_is_invalidated_by_changed_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rewriting a file (new size and mtime) decodes again and returns the new pixels."""
    root = tmp_path / "data"
    target = _write_image(root / "a.png", (10, 10, 10))
    _write_image(root / "b.png", (20, 20, 20))
    cfg = _config(tmp_path)
    calls = _counting_decoder(monkeypatch)
    assert load_folder(root, 8, cfg).images[0, 0, 0, 0] == 10
    assert load_folder(root, 8, cfg).images[0, 0, 0, 0] == 10
    assert calls == [2]
    _write_image(target, size=(30, 30))  # random pixels: another file size
    reloaded = load_folder(root, 8, cfg)
    assert calls == [2, 2]
    np.testing.assert_array_equal(
        reloaded.images[0].permute(1, 2, 0).numpy(), decode_image(target, 8)
    )


def test_cache_is_invalidated_by_changed_mtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Touching a file (same bytes, new mtime) is enough to decode again."""
    root = tmp_path / "data"
    target = _write_image(root / "a.png")
    cfg = _config(tmp_path)
    calls = _counting_decoder(monkeypatch)
    load_folder(root, 8, cfg)
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    load_folder(root, 8, cfg)
    assert calls == [1, 1]


def test_cache_is_keyed_by_decode_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another decode size is another cache entry, with images of that size."""
    root = _labelled_folder(tmp_path / "data", per_class=1)
    cfg = _config(tmp_path)
    calls = _counting_decoder(monkeypatch)
    assert load_folder(root, 8, cfg).images.shape[-1] == 8
    assert load_folder(root, 12, cfg).images.shape[-1] == 12
    assert calls == [3, 3]


def test_cache_is_keyed_by_decode_size_for_a_dotted_folder_name(tmp_path: Path) -> None:
    """A folder named ``set.v1`` loaded at 8 then 12 pixels gives 12-pixel images."""
    root = _labelled_folder(tmp_path / "set.v1", per_class=1)
    cfg = _config(tmp_path, root=root)
    assert load_folder(root, 8, cfg).images.shape[-1] == 8
    assert load_folder(root, 12, cfg).images.shape[-1] == 12


def test_cache_can_be_turned_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``cache_dir='off'`` writes nothing and decodes every time."""
    root = _labelled_folder(tmp_path / "data", per_class=1)
    cfg = _config(tmp_path, cache_dir="off")
    calls = _counting_decoder(monkeypatch)
    load_folder(root, 8, cfg)
    load_folder(root, 8, cfg)
    assert calls == [3, 3]
    assert not (tmp_path / "cache").exists()


# --------------------------------------------------------------------------------------------
# Embedded and named datasets
# --------------------------------------------------------------------------------------------
def test_digits_are_1797_rgb_32px_images_in_10_classes() -> None:
    """The embedded default: train + test = 1,797, 10 classes in each, gray uint8 3x32x32."""
    splits = load_splits(DataConfig())
    assert splits.test is not None
    train, test = splits.train, splits.test
    assert len(train) + len(test) == 1797
    assert 0.18 < len(test) / 1797 < 0.22
    for part in (train, test):
        assert part.images.dtype == torch.uint8 and part.images.shape[1:] == (3, 32, 32)
        assert part.labels is not None and part.labels.unique().tolist() == list(range(10))
        assert torch.equal(part.images[:, 0], part.images[:, 1])  # gray, as 3 equal channels
        assert torch.equal(part.images[:, 1], part.images[:, 2])
        assert part.classes == [str(i) for i in range(10)]
    assert train.images.max() == 255 and train.images.min() == 0
    assert load_digits(16).train.images.shape[1:] == (3, 16, 16)


def _cifar_style_folder(root: Path, classes: list[str], per_class: int) -> Path:
    for split in ("train", "test"):
        for c in classes:
            for i in range(per_class):
                _write_image(root / split / c / f"{i}.png", size=(40, 40))
    return root


def test_cifar10_from_an_image_folder(tmp_path: Path) -> None:
    """``cifar10`` with a train/ + test/ folder: 32px by default, classes from train/."""
    root = _cifar_style_folder(tmp_path / "cifar10", ["airplane", "bird", "cat"], per_class=2)
    cfg = DataConfig(
        dataset="cifar10",
        path=str(root),
        cache_dir=str(tmp_path / "cache"),
        num_decode_workers=1,
    )
    splits = load_splits(cfg)
    assert isinstance(splits.train, ImageSet) and isinstance(splits.test, ImageSet)
    assert splits.train.images.shape == (6, 3, 32, 32)
    assert splits.test.images.shape == (6, 3, 32, 32)
    assert splits.train.classes == ["airplane", "bird", "cat"]
    assert splits.train.labels is not None and splits.test.labels is not None
    assert splits.train.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert splits.test.labels.tolist() == [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize("layout", ["missing", "no_train_folder"])
def test_cifar10_without_a_usable_folder_is_a_data_error(tmp_path: Path, layout: str) -> None:
    """A cifar10 path that does not exist, or has no train/: DataError naming the path."""
    root = tmp_path / "cifar10"
    if layout == "no_train_folder":
        _write_image(root / "stray.png")
    cfg = DataConfig(dataset="cifar10", path=str(root), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DataError, match="cannot find CIFAR-10") as err:
        load_splits(cfg)
    assert str(root) in str(err.value)


def test_memory_loader_gathers_whole_batches() -> None:
    """A memory set's batches are stacked ``(B, 3, S, S)`` uint8 and labels; -1 unlabelled."""
    images = load_digits(8).test
    assert images.labels is not None
    batch = next(iter(make_loader(images, [], 5, train=False)))
    assert batch.indices.tolist() == [0, 1, 2, 3, 4]
    assert isinstance(batch.images, torch.Tensor)
    assert batch.images.shape == (5, 3, 8, 8) and batch.images.dtype == torch.uint8
    assert torch.equal(batch.images, images.images[:5])
    assert torch.equal(batch.labels, images.labels[:5])
    assert not batch.unreadable.any()
    unlabelled = ImageSet(images.images[:3])
    assert next(iter(make_loader(unlabelled, [], 3, train=False))).labels.tolist() == [-1] * 3
