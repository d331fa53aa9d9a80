"""Tests for packed shards (litdata): pack, read back, train, and split between processes."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from siamkit.config import DataConfig
from siamkit.data.datasets import load_splits
from siamkit.data.decode import ViewSpec
from siamkit.data.files import list_files
from siamkit.data.loader import make_loader
from siamkit.data.pack import pack
from siamkit.data.shards import META_FILE, ShardSet
from siamkit.data.stream import StreamSet
from siamkit.errors import DataError
from siamkit.safe_io import OutputError
from tests.ddp import run_ddp

SPECS = [ViewSpec(8, (0.3, 1.0)), ViewSpec(8, (0.3, 1.0))]


def _photos(root: Path, n: int, size: tuple[int, int] = (24, 18), classes: int = 2) -> Path:
    rng = np.random.default_rng(1)
    for i in range(n):
        path = root / f"k{i % classes}" / f"{i:03d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        w, h = size
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, quality=90)
    return root


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A labelled folder of 40 small JPEGs (one large), packed once: (folder, shards)."""
    base = tmp_path_factory.mktemp("shards")
    folder = _photos(base / "photos", 40)
    big = folder / "k0" / "000.jpg"
    Image.fromarray(np.full((100, 60, 3), 128, dtype=np.uint8)).save(big, quality=90)
    pack(folder, base / "packed", max_side=32, test_fraction=0.2, num_workers=2)
    return folder, base / "packed"


def test_pack_keeps_order_labels_and_bytes(packed: tuple[Path, Path]) -> None:
    """Item i of a split is image i; labels and classes in the metadata; small images keep
    their bytes, a large one is resized to the max side."""
    from litdata import StreamingDataset

    folder, shards = packed
    meta = json.loads((shards / META_FILE).read_text())
    assert meta["classes"] == ["k0", "k1"]
    assert meta["splits"]["train"]["num_images"] == 32 and meta["splits"]["test"]["num_images"] == 8
    splits = load_splits(DataConfig(dataset="folder", path=str(folder), storage="stream"))
    train = StreamingDataset(str(shards / "train"))
    assert [int(train[i]["index"]) for i in range(len(train))] == list(range(32))
    assert splits.train.labels is not None
    assert meta["splits"]["train"]["labels"] == splits.train.labels.tolist()
    for i in range(32):
        source = Path(splits.train.describe(i))
        stored = bytes(train[i]["image"])
        if source.name == "000.jpg":
            with Image.open(io.BytesIO(stored)) as im:
                assert min(im.size) == 32  # 60 x 100 resized to a shorter side of 32
        else:
            assert stored == source.read_bytes()


def test_shards_give_the_same_evaluation_batches_as_the_stream(packed: tuple[Path, Path]) -> None:
    """Random access by index: same labels, indices and (same bytes) the same crops."""
    folder, shards = packed
    from_shards = load_splits(DataConfig(dataset="folder", path=str(shards), num_workers=0))
    from_files = load_splits(
        DataConfig(dataset="folder", path=str(folder), storage="stream", num_workers=0)
    )
    assert isinstance(from_shards.train, ShardSet) and from_shards.note.startswith("shards:")
    for a_set, b_set in (
        (from_shards.train, from_files.train),
        (from_shards.test, from_files.test),
    ):
        assert a_set is not None and b_set is not None
        a = next(iter(make_loader(a_set, SPECS, 8, train=False, seed=4)))
        b = next(iter(make_loader(b_set, SPECS, 8, train=False, seed=4)))
        assert torch.equal(a.labels, b.labels) and torch.equal(a.indices, b.indices)
        same = [i for i in range(8) if Path(b_set.describe(i)).name != "000.jpg"]
        for x, y in zip(a.images, b.images, strict=True):
            assert torch.equal(x[same], y[same])


def test_a_subset_of_shards_reads_its_own_images(packed: tuple[Path, Path]) -> None:
    _, shards = packed
    train = load_splits(DataConfig(dataset="folder", path=str(shards), num_workers=0)).train
    assert train.labels is not None
    pick = torch.tensor([5, 2, 30])
    sub = train.subset(pick)
    batch = next(iter(make_loader(sub, SPECS, 3, train=False)))
    assert batch.indices.tolist() == [0, 1, 2]
    assert torch.equal(batch.labels, train.labels[pick])
    full = next(iter(make_loader(train.subset(torch.arange(32)), SPECS, 32, train=False)))
    assert torch.equal(batch.images[0][0], full.images[0][5])  # crops seeded by the image


def test_training_from_shards_visits_every_image_once_per_epoch(packed: tuple[Path, Path]) -> None:
    _, shards = packed
    train = load_splits(DataConfig(dataset="folder", path=str(shards), num_workers=1)).train
    assert isinstance(train, ShardSet)
    loader = train.streaming_loader(SPECS, 4, seed=0)
    assert loader is not None
    seen = [i for batch in loader for i in batch.indices.tolist()]
    assert sorted(seen) == list(range(32))
    first = next(iter(loader))
    assert [tuple(x.shape) for x in first.images] == [(4, 3, 8, 8)] * 2


def test_unreadable_images_are_packed_as_counted_placeholders_or_refused(tmp_path: Path) -> None:
    folder = _photos(tmp_path / "photos", 6)
    (folder / "k1" / "zz.jpg").write_bytes(b"broken")
    with pytest.warns(UserWarning, match=r"1 unreadable image\(s\) of \d+ in"):
        meta = pack(folder, tmp_path / "p", test_fraction=0.2, num_workers=1)
    assert sum(len(s["unreadable"]) for s in meta["splits"].values()) == 1
    with pytest.raises(DataError, match="unreadable"):
        pack(folder, tmp_path / "strict", num_workers=1, strict=True)
    assert not (tmp_path / "strict").exists()
    with pytest.raises(OutputError, match="--overwrite"):
        pack(folder, tmp_path / "p", num_workers=1)
    with pytest.raises(OutputError, match="local folder"):
        pack(folder, "s3://bucket/data")


def _tree(root: Path) -> dict[str, str]:
    """Every file below ``root`` (relative path) with a digest of its bytes."""
    import hashlib

    return {
        str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("where", ["the input", "inside the input", "around the input"])
def test_pack_never_writes_over_its_input_even_with_overwrite(tmp_path: Path, where: str) -> None:
    """``siamkit pack --data X --output X --overwrite`` once deleted X before reading it."""
    folder = _photos(tmp_path / "photos", 4)
    data, output = {
        "the input": (folder, folder),
        "inside the input": (folder, folder / "k0" / "shards"),
        "around the input": (folder / "k0", folder),
    }[where]
    before = _tree(tmp_path)
    with pytest.raises(OutputError, match="would destroy the input"):
        pack(data, output, num_workers=1, overwrite=True)
    assert _tree(tmp_path) == before


def test_pack_replaces_only_shards_and_only_once_the_new_ones_are_complete(
    tmp_path: Path,
) -> None:
    folder = _photos(tmp_path / "photos", 6)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "keep.txt").write_text("mine")
    with pytest.raises(OutputError, match="other than siamkit shards"):
        pack(folder, notes, num_workers=1, overwrite=True)
    assert (notes / "keep.txt").read_text() == "mine"

    out = tmp_path / "shards"
    pack(folder, out, num_workers=1)
    earlier = _tree(out)
    (folder / "k1" / "zz.jpg").write_bytes(b"broken")
    with pytest.raises(DataError, match="unreadable"):  # fails after packing the split
        pack(folder, out, num_workers=1, strict=True, overwrite=True)
    assert _tree(out) == earlier
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes", "photos", "shards"]
    with pytest.warns(UserWarning, match="unreadable"):
        pack(folder, out, num_workers=1, overwrite=True)
    assert _tree(out) != earlier
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes", "photos", "shards"]


def test_an_interrupted_pack_exits_130_and_leaves_no_folder(tmp_path: Path) -> None:
    """litdata ends the process with status 0 on Ctrl-C; siamkit's pack exits 130 instead,
    with a message, and removes the half-written output."""
    import signal
    import subprocess
    import sys
    import time

    # 30,000 links to one image: made in a fraction of a second, a second or more to pack. The
    # signal comes once litdata has started writing (a fixed wait after staging once let a
    # quiet machine finish the pack first, and the test read exit 0).
    image = tmp_path / "one.png"
    Image.new("RGB", (8, 8), (5, 0, 0)).save(image)
    folder = tmp_path / "photos"
    for k in range(2):
        (folder / f"k{k}").mkdir(parents=True)
    for i in range(30_000):
        (folder / f"k{i % 2}" / f"{i}.png").symlink_to(image)
    before = sorted(folder.rglob("*")), image.read_bytes()
    # As a terminal starts it: a process started in the background by a non-interactive shell
    # (`cmd &`, as a CI job may run the suite) inherits SIGINT ignored, and would pack on.
    code = (
        "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "from siamkit.cli import main; sys.exit(main())"
    )
    cmd = [sys.executable, "-c", code, "pack", "--data", str(folder), "--output"]
    proc = subprocess.Popen(
        [*cmd, str(tmp_path / "out"), "--workers", "1"],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    # litdata has started once its chunk cache exists inside the staged output.
    while not list(tmp_path.glob(".siamkit-tmp-staged*/*/cache")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    time.sleep(0.2)
    assert proc.poll() is None, "the pack finished before the signal: give it more images"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "siamkit: interrupted" in err and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.png", "photos"]
    assert (sorted(folder.rglob("*")), image.read_bytes()) == before


def _rank_indices(folder: str, shards: str) -> dict[str, list[int]]:
    """One epoch's training indices of this process from the folder streamed and from its
    shards (run under a 2-process group)."""
    import torch.distributed as dist

    out = {}
    for name, root in (("stream", folder), ("shards", shards)):
        storage = "stream" if name == "stream" else "auto"
        cfg = DataConfig(dataset="folder", path=root, storage=storage, num_workers=1)
        train = load_splits(cfg).train
        native = getattr(train, "streaming_loader", None)
        loader = native(SPECS, 4, 0) if native else None
        if loader is None:
            loader = make_loader(train, SPECS, 4, train=True, rank=dist.get_rank(), world=2)
        out[name] = [i for batch in loader for i in batch.indices.tolist()]
    return out


def test_two_processes_see_disjoint_images_that_cover_the_epoch(packed: tuple[Path, Path]) -> None:
    """Streamed (the epoch sampler) and sharded (litdata's split): 16 images each, together
    the 32 training images."""
    folder, shards = packed
    ranks = run_ddp(_rank_indices, 2, str(folder), str(shards))
    for storage in ("stream", "shards"):
        a, b = ranks[0][storage], ranks[1][storage]
        assert len(a) == len(b) == 16, storage  # 32 training images, 20% of 40 held out
        assert not set(a) & set(b), storage
        assert set(a) | set(b) == set(range(32)), storage


def test_stream_set_lists_every_file(packed: tuple[Path, Path]) -> None:
    folder, _ = packed
    data = StreamSet(list_files(folder))
    assert len(data) == 40 and data.classes == ["k0", "k1"]


def test_an_object_store_that_does_not_answer_is_a_data_error_within_the_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import time

    import litdata.streaming.downloader as downloader

    import siamkit.data.shards as shards

    class Silent:
        def download_file(self, remote: str, local: str) -> None:
            time.sleep(30)

    class Refusing:
        def download_file(self, remote: str, local: str) -> None:
            raise PermissionError("denied\n\nDebug source:\n  {...}")

    monkeypatch.setattr(shards, "URL_TIMEOUT_S", 0.5)
    monkeypatch.setattr(downloader, "get_downloader", lambda *args, **kwargs: Silent())
    start = time.monotonic()
    with pytest.raises(DataError, match=r"no answer from s3://bucket/x within 0.5 s"):
        shards.read_meta("s3://bucket/x")
    assert time.monotonic() - start < 5
    monkeypatch.setattr(downloader, "get_downloader", lambda *args, **kwargs: Refusing())
    with pytest.raises(DataError) as err:
        shards.read_meta("s3://bucket/x")
    assert str(err.value).count("\n") == 0 and "(denied)" in str(err.value)
