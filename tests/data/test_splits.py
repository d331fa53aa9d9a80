"""Class-balanced labelled subsets and their index files."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from siamkit.config import DataConfig
from siamkit.data.splits import (
    dataset_name,
    default_index_path,
    label_subset,
    labels_hash,
    read_index_file,
    subset_indices,
    subset_meta,
    write_index_file,
)
from siamkit.errors import ConfigError, DataError


def _labels(counts: list[int], seed: int = 0) -> torch.Tensor:
    """Shuffled labels with ``counts[c]`` images of class ``c``."""
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    return y[torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))]


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.5, 1.0])
def test_subset_is_class_balanced(fraction: float) -> None:
    """Each class keeps round(fraction x count) images (at least one); indices sorted, unique."""
    counts = [500, 120, 37, 5]
    y = _labels(counts)
    idx = label_subset(y, fraction, seed=0)
    assert idx.dtype == torch.int64
    assert torch.equal(idx, idx.sort().values) and idx.unique().numel() == idx.numel()
    kept = torch.bincount(y[idx], minlength=len(counts)).tolist()
    assert kept == [max(1, math.floor(fraction * n + 0.5)) for n in counts]


def test_one_percent_of_a_cifar_sized_set() -> None:
    """50,000 images in 10 classes: 1% is 50 a class, 500 in all (SimCLR's ~12.8/class on
    ImageNet is the same rule)."""
    y = _labels([5000] * 10)
    idx = label_subset(y, 0.01, seed=0)
    assert len(idx) == 500
    assert torch.bincount(y[idx]).tolist() == [50] * 10


def test_subset_is_deterministic_per_seed_and_differs_across_seeds() -> None:
    y = _labels([200, 200, 200])
    a, b = label_subset(y, 0.1, seed=3), label_subset(y, 0.1, seed=3)
    assert torch.equal(a, b)
    c = label_subset(y, 0.1, seed=4)
    assert not torch.equal(a, c)
    assert len(c) == len(a)  # another draw, same class counts


def test_smaller_fraction_is_nested_in_larger_one() -> None:
    """For one seed the 1% images are among the 10% images (one permutation per class)."""
    y = _labels([1000, 800, 300])
    small, large = label_subset(y, 0.01, seed=0), label_subset(y, 0.1, seed=0)
    assert set(small.tolist()) <= set(large.tolist())


def test_subset_does_not_touch_the_global_rng() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    label_subset(_labels([50, 50]), 0.2, seed=0)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("fraction", [0.0, 1.5, -0.1, float("nan")])
def test_bad_fraction_is_a_config_error(fraction: float) -> None:
    with pytest.raises(ConfigError, match=r"label fraction must be in \(0, 1\].*0.01 for 1%"):
        label_subset(_labels([10, 10]), fraction, seed=0)


def test_index_file_round_trip(tmp_path: Path) -> None:
    y = _labels([60, 40])
    idx = label_subset(y, 0.1, seed=0)
    meta = subset_meta(y, 0.1, 0, "toy")
    path = write_index_file(tmp_path / "sub" / "toy.txt", idx, meta)
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# ") and '"labels_hash"' in lines[0]
    assert [int(x) for x in lines[1:]] == idx.tolist()  # plain text, one index a line
    back, back_meta = read_index_file(path)
    assert torch.equal(back, idx)
    assert back_meta == meta
    assert back_meta["num_images"] == 100 and back_meta["fraction"] == 0.1


def test_subset_indices_creates_then_reuses_the_file(tmp_path: Path) -> None:
    y = _labels([60, 40])
    path = tmp_path / "toy.txt"
    first = subset_indices(y, 0.1, 0, path, dataset="toy")
    assert path.is_file()
    # A hand-edited (still valid) file is what is reused: the file wins over a fresh draw.
    edited = torch.tensor([i for i in range(100) if i not in set(first.tolist())][:10])
    write_index_file(path, edited, subset_meta(y, 0.1, 0, "toy"))
    assert torch.equal(subset_indices(y, 0.1, 0, path, dataset="toy"), edited.sort().values)
    assert torch.equal(subset_indices(y, 0.1, 0, None), first)  # no file: the seeded draw


def test_index_file_for_another_dataset_is_detected(tmp_path: Path) -> None:
    """A file written for other labels raises a DataError naming both data sets."""
    path = tmp_path / "a.txt"
    subset_indices(_labels([60, 40]), 0.1, 0, path, dataset="digits")
    other = _labels([60, 40], seed=1)  # same size, other order: another data set
    with pytest.raises(DataError, match=r"made for digits.*this data is cifar10"):
        subset_indices(other, 0.1, 0, path, dataset="cifar10")
    with pytest.raises(DataError, match=r"100 images.*120 images"):
        subset_indices(_labels([60, 60]), 0.1, 0, path, dataset="digits")


def test_index_file_for_another_fraction_is_a_config_error(tmp_path: Path) -> None:
    y = _labels([60, 40])
    path = tmp_path / "a.txt"
    subset_indices(y, 0.1, 0, path)
    with pytest.raises(ConfigError, match=r"0.1 subset.*label fraction 0.2"):
        subset_indices(y, 0.2, 0, path)


def test_bad_index_files_are_data_errors(tmp_path: Path) -> None:
    y = _labels([60, 40])
    with pytest.raises(DataError, match="not found"):
        read_index_file(tmp_path / "missing.txt")
    plain = tmp_path / "plain.txt"
    plain.write_text("1\n2\n")
    with pytest.raises(DataError, match="not a siamkit index file"):
        read_index_file(plain)
    out_of_range = tmp_path / "range.txt"
    write_index_file(out_of_range, torch.tensor([3, 100]), subset_meta(y, 0.1, 0, ""))
    with pytest.raises(DataError, match=r"outside \[0, 100\)"):
        subset_indices(y, 0.1, 0, out_of_range)
    garbage = tmp_path / "garbage.txt"
    garbage.write_text(out_of_range.read_text().splitlines()[0] + "\n4\nfive\n")
    with pytest.raises(DataError, match="line 3"):
        read_index_file(garbage)


def test_default_index_path_and_names() -> None:
    assert default_index_path("cifar10", 50000, 0.01, 0) == Path(
        "splits/cifar10-50000-1pct-seed0.txt"
    )
    assert default_index_path("digits", 1437, 0.1, 2).name == "digits-1437-10pct-seed2.txt"
    assert default_index_path("x", 10, 0.005, 0).name == "x-10-0.5pct-seed0.txt"
    assert dataset_name(DataConfig(dataset="digits")) == "digits"
    assert dataset_name(DataConfig(dataset="folder", path="/data/flowers")) == "flowers"
    with pytest.raises(ConfigError):
        default_index_path("x", 10, 0.0, 0)


def test_labels_hash_tells_data_sets_apart() -> None:
    y = _labels([30, 30])
    assert labels_hash(y) == labels_hash(y.clone())
    assert labels_hash(y) != labels_hash(y.flip(0))
    assert len(labels_hash(y)) == 12
