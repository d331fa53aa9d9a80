"""Manifests as a data source: CSV, JSON Lines and Parquet lists of images give the file lists a
folder gives, in every storage, through ``siamkit pack`` and ``siamkit data inspect``."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from siamkit.config import DataConfig
from siamkit.data.datasets import load_splits
from siamkit.data.files import PathStore
from siamkit.data.manifests import LABEL_SOURCE, data_splits, is_manifest, manifest_splits
from siamkit.data.memory import ImageSet
from siamkit.data.stream import StreamSet
from siamkit.errors import DataError

HAS_PYARROW = importlib.util.find_spec("pyarrow") is not None


@pytest.fixture(autouse=True)
def _decode_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Keep the decode cache of the memory storage out of the home folder.
    monkeypatch.setenv("SIAMKIT_CACHE", str(tmp_path / "cache"))


def _image(path: Path, value: int) -> Path:
    """A 10 x 10 image of one grey ``value`` (PNG: read back exactly; JPEG: nearly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((10, 10, 3), value, dtype=np.uint8)).save(path)
    return path


def _rows(root: Path) -> list[dict[str, str]]:
    """Images of two classes in two folders (neither a class folder), 8 training and 4 test."""
    rows = []
    for i in range(12):
        label = ("cat", "dog")[i % 2]
        folder = root / ("photos/a" if i < 6 else "more")
        ext = "png" if i % 3 else "jpg"
        path = _image(folder / f"img{i}.{ext}", 20 * i)
        rows.append({"path": str(path), "label": label, "split": "test" if i >= 8 else "train"})
    return rows


def _csv(path: Path, rows: list[dict[str, str]], columns: list[str], relative: bool = True) -> Path:
    """A CSV manifest of ``rows``' ``columns``; paths relative to its folder where asked."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join(columns)]
    for row in rows:
        cells = dict(row)
        if relative:
            cells["path"] = str(Path(row["path"]).relative_to(path.parent.parent).as_posix())
            cells["path"] = f"../{cells['path']}"
        lines.append(",".join(cells.get(c, "") for c in columns))
    path.write_text("\n".join(lines) + "\n")
    return path


def _labelled_csv(tmp_path: Path) -> tuple[Path, list[dict[str, str]]]:
    rows = _rows(tmp_path / "images")
    return _csv(tmp_path / "images" / "lists" / "list.csv", rows, ["path", "label", "split"]), rows


def test_csv_with_relative_paths_labels_and_a_split_column(tmp_path: Path) -> None:
    manifest, rows = _labelled_csv(tmp_path)
    assert is_manifest(manifest) and not is_manifest(manifest.parent)
    train, test = manifest_splits(manifest, 0.2)
    assert test is not None and train.labels is not None and test.labels is not None
    assert (len(train), len(test)) == (8, 4)
    assert train.classes == test.classes == ["cat", "dog"]
    # Relative paths are read from the manifest's folder, and come out absolute.
    assert train.paths.tolist() == [str(Path(r["path"]).absolute()) for r in rows[:8]]
    assert test.paths.tolist() == [str(Path(r["path"]).absolute()) for r in rows[8:]]
    assert train.labels.tolist() == [0, 1] * 4 and test.labels.tolist() == [0, 1, 0, 1]
    assert train.root == str(manifest) and train.label_source == LABEL_SOURCE
    assert train.describe("train") == (
        f"train: 8 images in {manifest}, 2 classes (labels from manifest column label)"
    )


def test_jsonl_with_absolute_paths_and_no_split_holds_out_a_stratified_share(
    tmp_path: Path,
) -> None:
    rows = _rows(tmp_path / "images")
    manifest = tmp_path / "list.jsonl"
    # Integers are class names too, sorted by name: "10" before "3".
    lines = [
        json.dumps({"path": r["path"], "label": 3 if r["label"] == "cat" else 10}) for r in rows
    ]
    manifest.write_text("\n".join(lines) + "\n\n")
    train, test = data_splits(manifest, 0.2)
    assert test is not None and train.labels is not None and test.labels is not None
    assert train.classes == ["10", "3"] and (len(train), len(test)) == (10, 2)
    assert sorted(test.labels.tolist()) == [0, 1]  # one of each class held out
    assert set(train.paths.tolist()) | set(test.paths.tolist()) == {r["path"] for r in rows}
    again = manifest_splits(manifest, 0.2)[1]
    assert again is not None and again.paths.tolist() == test.paths.tolist()  # fixed seed


@pytest.mark.parametrize("columns", [["path"], ["path", "label"]])
def test_a_manifest_without_labels_is_unlabelled_without_a_held_out_split(
    tmp_path: Path, columns: list[str]
) -> None:
    rows = [{"path": r["path"], "label": ""} for r in _rows(tmp_path / "images")]
    manifest = _csv(tmp_path / "images" / "lists" / "list.csv", rows, columns)
    train, test = manifest_splits(manifest, 0.2)
    assert test is None and train.labels is None and len(train) == 12
    assert train.describe("train").endswith("no labels (a label column gives them)")


def test_data_labels_none_ignores_the_label_column_and_keeps_the_splits(tmp_path: Path) -> None:
    manifest, _ = _labelled_csv(tmp_path)
    train, test = manifest_splits(manifest, 0.2, labels="none")
    assert test is not None and (len(train), len(test)) == (8, 4)
    assert train.labels is None and test.labels is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "path,label,caption\na.png,cat,x\n",
            r"unknown column\(s\) 'caption'; .*path, label, split",
        ),
        ("label,split\ncat,train\n", r"no 'path' column"),
        (",path,label\n0,{img},cat\n", r"unknown column\(s\) ''; .*pandas' index"),
        ("path,split\n{img},val\n", r"line 2 has split 'val'; a split is 'train' or 'test'"),
        ("path,label\n{img},cat\n{img},\n", r"line 3 has no label, where other rows have one"),
        ("path,split\n{img},train\n{img},\n", r"line 3 has no split"),
        ("path,label\n,cat\n", r"line 2 has no path"),
        ("path,label\n", r"lists no images"),
        ("path,label\n{img},cat,extra\n", r"line 2 has 3 fields where the header names 2"),
    ],
)
def test_bad_manifests_are_one_line_errors_naming_the_row(
    tmp_path: Path, text: str, message: str
) -> None:
    img = _image(tmp_path / "a.png", 1)
    manifest = tmp_path / "list.csv"
    manifest.write_text(text.format(img=img))
    with pytest.raises(DataError, match=message) as err:
        manifest_splits(manifest, 0.2)
    assert "\n" not in str(err.value)


def test_missing_files_are_counted_and_the_first_named(tmp_path: Path) -> None:
    manifest, rows = _labelled_csv(tmp_path)
    Path(rows[2]["path"]).unlink()
    Path(rows[5]["path"]).unlink()
    with pytest.raises(DataError, match=r"2 of the 12 files .* do not exist \(e.g. .*img2\.png"):
        manifest_splits(manifest, 0.2)
    with pytest.raises(DataError, match=r"manifest .*missing\.csv' does not exist"):
        manifest_splits(tmp_path / "missing.csv", 0.2)


def test_a_test_class_the_training_split_lacks_is_named(tmp_path: Path) -> None:
    rows = _rows(tmp_path / "images")
    rows[9]["label"] = "bird"
    manifest = _csv(tmp_path / "images" / "lists" / "list.csv", rows, ["path", "label", "split"])
    with pytest.raises(DataError, match=r"classes \['bird'\] \(1\) in its test split .*lacks"):
        manifest_splits(manifest, 0.2)


def test_folder_label_options_are_refused_for_a_manifest(tmp_path: Path) -> None:
    manifest, _ = _labelled_csv(tmp_path)
    with pytest.raises(DataError, match=r"data\.labels=folders reads folders"):
        manifest_splits(manifest, 0.2, labels="folders")
    with pytest.raises(DataError, match=r"drop data\.labels_file"):
        data_splits(manifest, 0.2, labels_file=tmp_path / "labels.txt")


def test_memory_and_stream_read_the_same_images_and_labels(tmp_path: Path) -> None:
    manifest, _ = _labelled_csv(tmp_path)
    base = {"dataset": "folder", "path": str(manifest), "num_workers": 0}
    memory = load_splits(DataConfig(**base, storage="memory", num_decode_workers=1), say=False)
    stream = load_splits(DataConfig(**base, storage="stream"), say=False)
    assert isinstance(memory.train, ImageSet) and isinstance(stream.train, StreamSet)
    assert memory.test is not None and stream.test is not None
    for kept, streamed in ((memory.train, stream.train), (memory.test, stream.test)):
        assert isinstance(kept, ImageSet) and isinstance(streamed, StreamSet)
        assert kept.classes == streamed.classes == ["cat", "dog"]
        assert torch.equal(kept.labels, streamed.labels)  # type: ignore[arg-type]
        assert kept.paths == streamed.files.paths.tolist()
    # Each decoded image is the grey of its file (PNG exactly, JPEG nearly), from both folders.
    values = torch.tensor([20 * i for i in range(12)], dtype=torch.float32)
    means = torch.cat([memory.train.images, memory.test.images]).float().mean(dim=(1, 2, 3))
    assert torch.allclose(means, values, atol=2)
    # The decode cache is keyed by the files wherever they lie: a second read is served from it.
    cached = sorted((tmp_path / "cache").glob("list.csv-*.npy"))
    assert len(cached) == 2
    again = load_splits(DataConfig(**base, storage="memory", num_decode_workers=1), say=False)
    assert isinstance(again.train, ImageSet)
    assert torch.equal(again.train.images, memory.train.images)
    assert sorted((tmp_path / "cache").glob("list.csv-*.npy")) == cached


def test_pack_a_manifest_then_read_the_shards_with_the_same_labels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from siamkit.cli import main

    manifest, _ = _labelled_csv(tmp_path)
    shards = tmp_path / "shards"
    argv = ["pack", "--data", str(manifest), "--output", str(shards), "--workers", "1"]
    assert main(argv) == 0
    assert "train: 8 images (0 unreadable)" in capsys.readouterr().out
    packed = load_splits(DataConfig(dataset="folder", path=str(shards), num_workers=0), say=False)
    read = load_splits(
        DataConfig(dataset="folder", path=str(manifest), storage="stream", num_workers=0),
        say=False,
    )
    assert packed.test is not None and read.test is not None
    assert packed.train.classes == read.train.classes == ["cat", "dog"]
    assert torch.equal(packed.train.labels, read.train.labels)  # type: ignore[arg-type]
    assert torch.equal(packed.test.labels, read.test.labels)  # type: ignore[arg-type]


def test_data_inspect_prints_the_split_lines_of_a_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from siamkit.cli import main

    manifest, rows = _labelled_csv(tmp_path)
    Path(rows[1]["path"]).write_bytes(b"not an image")  # exists, so counted as unreadable
    assert main(["data", "inspect", "--data", str(manifest)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"data train: 8 images in {manifest}, 2 classes (labels from {LABEL_SOURCE})"
    assert out[1] == f"data test: 4 images in {manifest}, 2 classes (labels from {LABEL_SOURCE})"
    assert out[2] == "image sizes: smallest 10x10, median 10x10, largest 10x10"
    assert out[3] == f"unreadable: 1 file(s): {Path(rows[1]['path']).absolute()}"
    assert out[4].startswith("storage: ")


def test_path_store_subsets_copy_the_bytes_of_any_paths() -> None:
    paths = [f"/data/é{i}/" + "x" * (i % 7) + "ü.png" for i in range(40000)]
    store = PathStore(paths)
    for index in ([], [5], [3, 3, 1], list(range(39999, -1, -3))):
        assert store.take(index).tolist() == [paths[i] for i in index]


@pytest.mark.skipif(not HAS_PYARROW, reason="pyarrow is not installed")
def test_a_parquet_manifest_reads_as_its_csv(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    manifest, rows = _labelled_csv(tmp_path)
    table = pa.table({c: [r[c] for r in rows] for c in ("path", "label", "split")})
    parquet = tmp_path / "list.parquet"
    pq.write_table(table, parquet)
    for got, want in zip(
        manifest_splits(parquet, 0.2), manifest_splits(manifest, 0.2), strict=True
    ):
        assert got is not None and want is not None
        assert got.paths.tolist() == want.paths.tolist() and got.classes == want.classes
        assert torch.equal(got.labels, want.labels)  # type: ignore[arg-type]
    pq.write_table(pa.table({"path": [rows[0]["path"]], "caption": ["x"]}), parquet)
    with pytest.raises(DataError, match="unknown column"):
        manifest_splits(parquet, 0.2)


@pytest.mark.skipif(HAS_PYARROW, reason="pyarrow is installed")
def test_a_parquet_manifest_without_pyarrow_names_the_install(tmp_path: Path) -> None:
    parquet = tmp_path / "list.parquet"
    parquet.write_bytes(b"PAR1")
    with pytest.raises(DataError, match=r"needs pyarrow: pip install pyarrow"):
        manifest_splits(parquet, 0.2)
