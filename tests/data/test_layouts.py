"""Folders as users lay them out: ImageFolder's class rule, hidden files, label files, and the
line each split prints about what was read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from siamkit.config import DataConfig
from siamkit.data.datasets import load_splits
from siamkit.data.files import folder_splits, list_files
from siamkit.errors import ConfigError, DataError

CLASSES = ["n01443537", "n01629819", "n01641577"]


def _image(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((12, 12, 3), value, dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG" if path.suffix == ".JPEG" else None)


def tiny_imagenet(root: Path, per_class: int = 4, val_per_class: int = 2) -> Path:
    """Tiny ImageNet's layout: ``train/<wnid>/images/*.JPEG`` with a boxes file beside them,
    ``val/images/*.JPEG`` labelled by ``val/val_annotations.txt`` (six tab-separated columns),
    an unlabelled ``test/images/``, and macOS's hidden files."""
    for c, wnid in enumerate(CLASSES):
        for i in range(per_class):
            _image(root / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", 40 * c + i)
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("x 0 0 8 8\n")
    lines = []
    for c, wnid in enumerate(CLASSES):
        for i in range(val_per_class):
            name = f"val_{c * val_per_class + i}.JPEG"
            _image(root / "val" / "images" / name, 40 * c)
            lines.append(f"{name}\t{wnid}\t0\t0\t8\t8")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    for i in range(3):
        _image(root / "test" / "images" / f"test_{i}.JPEG", 7 * i)
    for folder in (root, root / "train", root / "val" / "images"):
        (folder / ".DS_Store").write_bytes(b"\0\1")
    _image(root / "train" / CLASSES[0] / "images" / "._n01443537_0.JPEG", 1)  # AppleDouble
    _image(root / "__MACOSX" / "train" / "x.JPEG", 1)
    _image(root / ".cache" / "y.jpg", 1)
    return root


def test_tiny_imagenet_reads_nested_class_folders_and_the_val_label_file(tmp_path: Path) -> None:
    train, val = folder_splits(tiny_imagenet(tmp_path / "tin"), 0.2)
    assert val is not None and train.labels is not None and val.labels is not None
    assert (len(train), train.classes, train.label_source) == (12, CLASSES, "class folders")
    assert all("/._" not in p and "__MACOSX" not in p for p in train.paths.tolist())
    assert len(val) == 6 and val.classes == CLASSES
    assert val.label_source == f"label file {tmp_path / 'tin' / 'val' / 'val_annotations.txt'}"
    assert val.labels.tolist() == [0, 0, 1, 1, 2, 2]


def test_load_splits_prints_one_line_per_split_with_where_its_labels_came_from(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tiny_imagenet(tmp_path / "tin")
    cfg = DataConfig(dataset="folder", path=str(root), storage="stream", num_workers=0)
    splits = load_splits(cfg)
    err = capsys.readouterr().err.splitlines()
    assert err == [f"siamkit: data {line}" for line in splits.lines]
    assert err[0].startswith(f"siamkit: data train: 12 images in {root / 'train'}, 3 classes")
    assert "labels from class folders; data.labels=none reads it unlabelled" in err[0]
    assert err[1].startswith(f"siamkit: data test: 6 images in {root / 'val'}, 3 classes")
    assert "labels from label file" in err[1]


@pytest.mark.parametrize(
    "text",
    [
        # ImageNet's LOC_val_solution.csv: a header, the class the first token of column 2.
        "ImageId,PredictionString\n{s0},{c0} 1 2 3 4 {c0} 5 6 7 8\n{s1},{c1} 1 2 3 4\n",
        # Space-separated, names with their extension, a third column ignored.
        "{n0} {c0} 0.9\n{n1} {c1} 0.8\n",
        # Comma-separated with a header naming the columns.
        "filename,label\n{n0},{c0}\n{n1},{c1}\n",
    ],
)
def test_label_files_in_every_accepted_form(tmp_path: Path, text: str) -> None:
    root = tmp_path / "data"
    for c, wnid in enumerate(CLASSES[:2]):
        _image(root / "train" / wnid / f"a{c}.jpg", 10 * c)
        _image(root / "train" / wnid / f"b{c}.jpg", 10 * c + 1)
    _image(root / "val" / "v0.jpg", 0)
    _image(root / "val" / "v1.jpg", 10)
    fields = {"s0": "v0", "s1": "v1", "n0": "v0.jpg", "n1": "v1.jpg"}
    labels = tmp_path / "labels.txt"
    labels.write_text(text.format(c0=CLASSES[0], c1=CLASSES[1], **fields))
    train, val = folder_splits(root, 0.2, labels_file=labels)
    assert val is not None and val.labels is not None
    assert val.labels.tolist() == [0, 1] and val.classes == train.classes == CLASSES[:2]
    assert val.label_source == f"label file {labels}"


def test_a_label_file_with_classes_the_training_split_lacks_names_them(tmp_path: Path) -> None:
    root = tiny_imagenet(tmp_path / "tin")
    notes = root / "val" / "val_annotations.txt"
    notes.write_text(notes.read_text().replace(CLASSES[2], "n99999999"))
    with pytest.raises(DataError, match=r"classes \['n99999999'\].*training split lacks"):
        folder_splits(root, 0.2)


def test_a_label_file_missing_some_images_is_an_error_naming_one(tmp_path: Path) -> None:
    root = tiny_imagenet(tmp_path / "tin")
    notes = root / "val" / "val_annotations.txt"
    notes.write_text("\n".join(notes.read_text().splitlines()[1:]) + "\n")
    with pytest.raises(DataError, match=r"no class for 1 of the 6 images .*val_0.JPEG"):
        folder_splits(root, 0.2)


def test_a_held_out_folder_without_its_label_file_is_unlabelled_and_said(tmp_path: Path) -> None:
    """val/images/ without its label file: 'images' is no class of the training split, so the
    held-out split is read as unlabelled (not as one class named 'images'), with a warning
    naming the fix; data.require_labels makes it an error."""
    root = tiny_imagenet(tmp_path / "tin")
    (root / "val" / "val_annotations.txt").unlink()
    with pytest.warns(UserWarning, match=r"\['images'\].*none of the training.*labels_file"):
        train, val = folder_splits(root, 0.2)
    assert train.labels is not None and val is not None and val.labels is None
    cfg = DataConfig(dataset="folder", path=str(root), storage="stream", require_labels=True)
    with (
        pytest.warns(UserWarning),
        pytest.raises(DataError, match=r"require_labels is set but the held-out split"),
    ):
        load_splits(cfg)


def test_a_given_label_file_labels_the_held_out_split_not_the_training_one(
    tmp_path: Path,
) -> None:
    """Training images named as the held-out ones keep their class folders."""
    root = tmp_path / "d"
    for i, cls in enumerate(["cat", "cat", "dog", "dog"]):
        _image(root / "train" / cls / f"{i}.jpg", 10 * i)
        _image(root / "val" / f"{i}.jpg", 10 * i)
    labels = tmp_path / "labels.csv"
    labels.write_text("".join(f"{i}.jpg,{c}\n" for i, c in enumerate(["dog", "dog", "cat", "cat"])))
    train, val = folder_splits(root, 0.2, labels_file=labels)
    assert train.label_source == "class folders" and train.labels is not None
    assert train.labels.tolist() == [0, 0, 1, 1]
    assert val is not None and val.labels is not None and val.labels.tolist() == [1, 1, 0, 0]


def test_images_sharing_a_name_need_paths_in_the_label_file(tmp_path: Path) -> None:
    root = tmp_path / "d"
    for cls in ("a", "b"):
        _image(root / "train" / cls / "x.jpg", 1)
    _image(root / "val" / "s1" / "001.jpg", 1)
    _image(root / "val" / "s2" / "001.jpg", 2)
    labels = tmp_path / "labels.csv"
    labels.write_text("001.jpg,a\n")
    with pytest.raises(DataError, match=r"share a name \('001.jpg'\).*relative to"):
        folder_splits(root, 0.2, labels_file=labels)
    labels.write_text("s1/001.jpg,a\ns2/001.jpg,b\n")
    _, val = folder_splits(root, 0.2, labels_file=labels)
    assert val is not None and val.labels is not None and val.labels.tolist() == [0, 1]


def test_a_class_name_with_spaces_is_kept_whole_and_names_match_extensions(tmp_path: Path) -> None:
    from siamkit.data.label_files import labels_from_file, read_label_file

    path = tmp_path / "l.csv"
    path.write_text("a.jpg,golden retriever\nb.jpg,golden eagle\nc,n01 1 2 3 4 n01 5 6 7 8\n")
    table = read_label_file(path)
    got = labels_from_file(["a.jpg", "b.jpg", "c.png"], table, path, tmp_path)
    assert got == ["golden retriever", "golden eagle", "n01"]
    # x.png is listed, x.jpg is not: x.jpg does not borrow x.png's class.
    path.write_text("x.png,cat\ny.jpg,dog\n")
    with pytest.raises(DataError, match=r"no class for 1 of the 2 images.*x.jpg"):
        labels_from_file(["x.jpg", "y.jpg"], read_label_file(path), path, tmp_path)


def test_a_wrapper_folder_is_no_class_and_a_label_file_above_a_plain_folder_is_not_used(
    tmp_path: Path,
) -> None:
    for i in range(3):
        _image(tmp_path / "w" / "train" / "images" / "c" / f"{i}.jpg", i)
    train, _ = folder_splits(tmp_path / "w", 0.2)
    assert train.labels is None  # one first-level folder, 'images', is no classification
    inet = tmp_path / "inet"
    (inet / "val_subset").mkdir(parents=True)
    (inet / "LOC_val_solution.csv").write_text("ImageId,PredictionString\nv0,n01 1 2 3 4\n")
    for name in ("v0.jpg", "mine.jpg"):
        _image(inet / "val_subset" / name, 3)
    assert list_files(inet / "val_subset").labels is None  # read, not refused


def test_require_labels_makes_an_unlabelled_folder_an_error(tmp_path: Path) -> None:
    for i in range(4):
        _image(tmp_path / "flat" / f"{i}.jpg", i)
    cfg = DataConfig(dataset="folder", path=str(tmp_path / "flat"), require_labels=True)
    with pytest.raises(DataError, match=r"data\.require_labels is set but the training split"):
        load_splits(cfg)


def test_photos_by_year_read_as_classes_by_auto_and_unlabelled_with_none(tmp_path: Path) -> None:
    for year, value in (("2019", 0), ("2020", 50)):
        for i in range(3):
            _image(tmp_path / "photos" / year / "trip" / f"{i}.jpg", value + i)
    full = list_files(tmp_path / "photos")
    assert full.classes == ["2019", "2020"] and full.label_source == "class folders"
    assert list_files(tmp_path / "photos", labels="none").labels is None


def test_one_first_level_folder_is_no_classification(tmp_path: Path) -> None:
    for i in range(3):
        _image(tmp_path / "photos" / "all" / f"{i}.jpg", i)
    assert list_files(tmp_path / "photos").labels is None
    labelled = list_files(tmp_path / "photos", labels="folders")
    assert labelled.classes == ["all"]


def test_the_insisting_modes_say_what_is_missing(tmp_path: Path) -> None:
    _image(tmp_path / "d" / "c1" / "a.jpg", 0)
    _image(tmp_path / "d" / "c2" / "b.jpg", 1)
    _image(tmp_path / "d" / "loose.jpg", 2)
    with pytest.raises(DataError, match=r"1 images sit directly in .*no class folder"):
        list_files(tmp_path / "d", labels="folders")
    with pytest.raises(DataError, match="no label file names the images"):
        list_files(tmp_path / "d", labels="file")
    with pytest.raises(DataError, match="does not exist"):
        list_files(tmp_path / "d", labels_file=tmp_path / "nope.txt")


def test_data_labels_is_checked_by_the_config() -> None:
    from siamkit.strict import from_dict

    with pytest.raises(ConfigError, match="labels"):
        from_dict(DataConfig, {"dataset": "digits", "labels": "classes"})


def test_data_inspect_says_what_a_run_would_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from siamkit.cli import main

    root = tiny_imagenet(tmp_path / "tin")
    (root / "train" / CLASSES[1] / "images" / "broken.JPEG").write_bytes(b"not a jpeg")
    assert main(["data", "inspect", "--data", str(root)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"data train: 13 images in {root / 'train'}, 3 classes")
    assert out[1].startswith(f"data test: 6 images in {root / 'val'}, 3 classes (labels from")
    assert out[2] == "image sizes: smallest 12x12, median 12x12, largest 12x12"
    assert out[3] == f"unreadable: 1 file(s): {root / 'train' / CLASSES[1] / 'images/broken.JPEG'}"
    assert out[4].startswith("storage: ")
    assert main(["data", "inspect", "--data", str(tmp_path / "missing")]) == 3
    assert "does not exist" in capsys.readouterr().err


def test_one_epoch_on_the_tiny_imagenet_layout_reports_its_knn(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from siamkit.cli import main

    root = tiny_imagenet(tmp_path / "tin", per_class=8, val_per_class=4)
    argv = ["pretrain", "--recipe", "simsiam/digits", "--dataset", "folder", "--data", str(root)]
    argv += ["--epochs", "1", "--batch-size", "8", "--output", str(tmp_path / "run")]
    argv += ["--set", "train.knn_k=5", "augment.size=12"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert f"siamkit: data train: 24 images in {root / 'train'}, 3 classes" in captured.err
    assert "siamkit: data test: 12 images" in captured.err
    assert "kNN top-1:" in captured.out
