"""siamkit's own files recognised where a checkpoint is expected: each message says what the
file is and which command takes it (instead of "corrupt" or "not a siamkit checkpoint")."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from siamkit.checkpoints import read_checkpoint
from siamkit.errors import CheckpointError
from siamkit.supervised.classifier import load_classifier


def _make(kind: str, tmp_path: Path) -> Path:
    if kind == "export":
        path = tmp_path / "b.safetensors"
        path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    elif kind == "onnx":
        path = tmp_path / "b.onnx"
        path.write_bytes(b"\x08\x07")
    elif kind == "embeddings":
        path = tmp_path / "e.npy"
        path.write_bytes(b"\x93NUMPY")
    elif kind == "shards":
        path = tmp_path / "shards"
        path.mkdir()
        (path / "siamkit-shards.json").write_text("{}")
    elif kind == "experiment":
        path = tmp_path / "exp"
        path.mkdir()
        (path / "experiment.json").write_text("{}")
    elif kind == "fine-tuning output":
        path = tmp_path / "ft"
        path.mkdir()
        (path / "classifier.pt").write_bytes(b"x")
    else:  # a plain state dict, as export --format torchvision writes
        path = tmp_path / "r18.pth"
        torch.save({"conv1.weight": torch.zeros(2, 3, 1, 1)}, path)
    return path


@pytest.mark.parametrize(
    ("kind", "says"),
    [
        ("export", "`siamkit embed --checkpoint` takes it"),
        ("onnx", "ONNX Runtime"),
        ("embeddings", "written by `siamkit embed`"),
        ("shards", "pass them as --data"),
        ("experiment", "cells' run folders"),
        ("fine-tuning output", "`siamkit eval distill --teacher` takes it"),
        ("state dict", "--model torchvision/NAME --weights FILE"),
    ],
)
def test_another_kind_of_siamkit_file_is_named_with_the_command_that_takes_it(
    kind: str, says: str, tmp_path: Path
) -> None:
    path = _make(kind, tmp_path)
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    assert str(path) in str(err.value) and says in str(err.value)
    assert "corrupt" not in str(err.value) and "cannot be read" not in str(err.value)


@pytest.mark.parametrize("kind", ["export", "shards", "embeddings"])
def test_a_teacher_of_another_kind_is_named_too(kind: str, tmp_path: Path) -> None:
    path = _make(kind, tmp_path)
    with pytest.raises(CheckpointError, match="a teacher is the output folder of") as err:
        load_classifier(path)
    assert str(path) in str(err.value)
