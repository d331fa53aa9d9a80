"""Every kind of bad input is one line that names the problem and the fix, an exit code, no
traceback, and nothing that was there before is lost.

``python tests/test_bad_input.py`` prints the catalogue as a Markdown table (kind, exit code,
message) by running every case.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from siamkit.cli import main

REPO = Path(__file__).resolve().parents[1]
DIGITS = str(REPO / "configs" / "simsiam" / "digits.yaml")
TINY = [
    "--epochs", "1", "--batch-size", "64", "--no-progress",
    "--set", "augment.size=16", "backbone.name=small_cnn", "backbone.width=0.25",
    "method.proj_layers=2", "method.proj_dim=32", "method.proj_hidden_dim=32",
    "method.pred_hidden_dim=8", "train.knn_every=0", "train.precision=32-true",
]  # fmt: skip


@dataclass
class Case:
    """One kind of bad input: how to make it, and what siamkit must answer."""

    kind: str
    argv: Callable[[Path, Path], list[str]]  # (tmp folder, a finished run folder) -> argv
    code: int
    fragments: tuple[str, ...]
    setup: Callable[[Path], None] = field(default=lambda tmp: None)
    keeps_run: bool = False  # the finished run's checkpoints must survive the command


def _images(root: Path, n: int, size: tuple[int, int] = (12, 12), classes: int = 0) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / f"c{i % classes}" if classes else root
        folder.mkdir(parents=True, exist_ok=True)
        w, h = size
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


def _pretrain(tmp: Path, *extra: str) -> list[str]:
    return ["pretrain", "--config", DIGITS, "--output", str(tmp / "out"), *TINY, *extra]


def _text(name: str, text: str) -> Callable[[Path], None]:
    return lambda tmp: (tmp / name).write_text(text)


def _junk(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda tmp: (tmp / name).write_bytes(data)


def _bad_folder(tmp: Path) -> None:
    _images(tmp / "bad", 3)
    (tmp / "bad" / "x.png").write_bytes(b"junk")


def _crafted(tmp: Path) -> None:
    import torch

    class Payload:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.system, (f"touch {tmp / 'executed'}",))

    torch.save({"siamkit_config": {}, "state_dict": Payload()}, tmp / "crafted.ckpt")


def _lock(tmp: Path) -> None:
    (tmp / "out").mkdir(exist_ok=True)
    (tmp / "out" / ".lock").write_text(f"{os.uname().nodename} {os.getppid()}\n")


def _copy_run(name: str) -> Callable[[Path], None]:
    return lambda tmp: shutil.copytree(tmp / "earlier", tmp / name) and None


def _folder(name: str, n: int = 4, **kwargs: object) -> Callable[[Path], None]:
    def make(tmp: Path) -> None:
        _images(tmp / name, n, **kwargs)  # type: ignore[arg-type]

    return make


def _mkdir(name: str, *files: tuple[str, bytes]) -> Callable[[Path], None]:
    def make(tmp: Path) -> None:
        (tmp / name).mkdir()
        for file, data in files:
            (tmp / name / file).write_bytes(data)

    return make


def _unknown_test_class(tmp: Path) -> None:
    # One training class and one that training lacks: no consistent labels (a held-out folder
    # of no training class at all is read unlabelled, with a warning).
    _images(tmp / "tt" / "train", 4, classes=2)
    _images(tmp / "tt" / "test" / "c0", 1)
    _images(tmp / "tt" / "test" / "wasp", 1)


def _data(path: str, *extra: str) -> Callable[[Path, Path], list[str]]:
    return lambda tmp, run: _pretrain(tmp, "--data", str(tmp / path), *extra)


CASES = [
    # ---- config (exit 2)
    Case("unknown config key", lambda t, r: _pretrain(t, "--set", "train.bogus=1"), 2, ("unknown config key 'train.bogus'", "valid keys")),
    Case("unknown config section", lambda t, r: _pretrain(t, "--set", "bogus.x=1"), 2, ("unknown config key 'bogus'",)),
    Case("value of the wrong type", lambda t, r: _pretrain(t, "--set", "train.knn_k=many"), 2, ("train.knn_k must be an integer",)),
    Case("negative learning rate", lambda t, r: _pretrain(t, "--lr", "-1"), 2, ("argument --lr: must be greater than 0",)),
    Case("batch of one image", lambda t, r: _pretrain(t, "--batch-size", "1"), 2, ("BatchNorm needs at least", "--batch-size")),
    Case("crop scale above 1", lambda t, r: _pretrain(t, "--set", "augment.crop_scale=[0.5,1.5]"), 2, ("augment.crop_scale",)),
    Case("probability above 1", lambda t, r: _pretrain(t, "--set", "augment.flip_prob=2"), 2, ("augment.flip_prob must be a probability",)),
    Case("unknown method", lambda t, r: _pretrain(t, "--method", "nope"), 2, ("unknown method 'nope'", "valid methods")),
    Case("unknown backbone", lambda t, r: _pretrain(t, "--set", "backbone.name=vgg99"), 2, ("unknown backbone 'vgg99'",)),
    Case("unknown timm model", lambda t, r: _pretrain(t, "--set", "backbone.name=timm/vit_tinyy", "backbone.width=1"), 2, ("timm has no model 'vit_tinyy'",)),
    Case("width of a timm model", lambda t, r: _pretrain(t, "--set", "backbone.name=timm/resnet18"), 2, ("backbone.width does not apply to timm models", "timm_kwargs")),
    Case("timm option of the wrong type", lambda t, r: _pretrain(t, "--set", "backbone.name=timm/resnet18", "backbone.width=1", "backbone.timm_kwargs.drop_rate={a: 1}"), 2, ("backbone.timm_kwargs.drop_rate must be an integer, a number",)),
    Case("frozen patch projection of a ResNet", lambda t, r: _pretrain(t, "--set", "backbone.freeze_patch_embed=true"), 2, ("backbone.freeze_patch_embed applies to timm models with a patch embedding",)),
    Case("ViT image size other than the views'", lambda t, r: _pretrain(t, "--set", "backbone.name=timm/vit_tiny_patch16_224", "backbone.width=1", "backbone.timm_kwargs={patch_size: 8, depth: 1}"), 2, ("forward_features failed on a (2, 3, 16, 16) batch", "img_size")),
    Case("recipe with a YAML syntax error", lambda t, r: ["pretrain", "--config", str(t / "bad.yaml")], 2, ("not valid YAML at line 3", "fix the recipe's syntax"), _text("bad.yaml", "train:\n  epochs: [1,\n")),
    Case("recipe that is not a mapping", lambda t, r: ["pretrain", "--config", str(t / "list.yaml")], 2, ("must be a mapping",), _text("list.yaml", "- 1\n- 2\n")),
    Case("missing recipe file", lambda t, r: ["pretrain", "--config", str(t / "none.yaml")], 2, ("not found",)),
    Case("unknown shipped recipe", lambda t, r: ["pretrain", "--recipe", "simsiam/cifar100"], 2, ("no recipe named 'simsiam/cifar100'", "simsiam/cifar10")),
    Case("recipe on a missing base", lambda t, r: ["pretrain", "--config", str(t / "r.yaml")], 2, ("base: no recipe named 'byol/cifar11'",), _text("r.yaml", "base: byol/cifar11\n")),
    Case("recipe bases in a cycle", lambda t, r: ["pretrain", "--config", str(t / "c.yaml")], 2, ("recipe bases form a cycle", "c.yaml -> "), _text("c.yaml", "base: c.yaml\n")),
    Case("--set without '='", lambda t, r: _pretrain(t, "--set", "train.epochs"), 2, ("must look like section.key=value",)),
    Case("zero epochs", lambda t, r: _pretrain(t, "--epochs", "0"), 2, ("argument --epochs: must be at least 1",)),
    Case("unknown logger", lambda t, r: _pretrain(t, "--loggers", "csv,neptune"), 2, ("train.loggers[1] must be one of", "'tensorboard'", "'wandb'", "'mlflow'")),
    Case("loggers not a list", lambda t, r: _pretrain(t, "--set", "train.loggers=csv"), 2, ("train.loggers must be a list",)),
    Case("zero optimiser steps", lambda t, r: _pretrain(t, "--max-steps", "0"), 2, ("argument --max-steps: must be at least 1",)),
    Case("decode side below 8 px", lambda t, r: _pretrain(t, "--set", "data.decode_size=4"), 2, ("data.decode_size must be at least 8",)),
    Case("negative worker count", lambda t, r: _pretrain(t, "--workers", "-1"), 2, ("argument --workers: must be at least 0",)),
    Case("zero memory budget", lambda t, r: _pretrain(t, "--set", "data.memory_budget_gb=0"), 2, ("data.memory_budget_gb must be positive",)),
    Case("--devices two", lambda t, r: _pretrain(t, "--devices", "two"), 2, ("--devices 'two' is not understood",)),
    Case("--devices 0,1 on a CPU", lambda t, r: _pretrain(t, "--accelerator", "cpu", "--devices", "0,1"), 2, ("names GPU indices", "--devices 2")),
    Case("--strategy bogus", lambda t, r: _pretrain(t, "--strategy", "bogus"), 2, ("not a Lightning strategy", "ddp")),
    Case("--accelerator gpu without a GPU", lambda t, r: _pretrain(t, "--accelerator", "gpu"), 2, ("no CUDA GPU", "--accelerator cpu")),
    Case("--accelerator tpu", lambda t, r: _pretrain(t, "--accelerator", "tpu"), 2, ("accelerator must be auto, cpu or gpu",)),
    Case("--num-nodes 0", lambda t, r: _pretrain(t, "--num-nodes", "0"), 2, ("argument --num-nodes: must be at least 1",)),
    Case("SyncBatchNorm on CPU processes", lambda t, r: _pretrain(t, "--accelerator", "cpu", "--set", "train.sync_batchnorm=true"), 2, ("sync_batchnorm needs GPUs",)),
    Case("fine-tuning on no labels", lambda t, r: ["eval", "finetune", "--checkpoint", str(r), "--label-fraction", "0", "--output", str(t / "ft")], 2, ("argument --label-fraction: must be in (0, 1]",)),
    Case("export to an extension of another format", lambda t, r: ["export", "--checkpoint", str(r), "--output", str(t / "b.pth"), "--format", "onnx"], 2, ("onnx export is a .onnx file",)),
    Case("export to .pth without --format", lambda t, r: ["export", "--checkpoint", str(r), "--output", str(t / "b.pth")], 2, ("--format torchvision|timm",)),
    Case("export of a small CNN as torchvision", lambda t, r: ["export", "--checkpoint", str(r), "--output", str(t / "b.pth"), "--format", "torchvision"], 2, ("has no torchvision model", "--format safetensors")),
    Case("embed --model without --weights", lambda t, r: ["embed", "--model", "torchvision/resnet18", "--data", str(t / "imgs"), "--output", str(t / "e.npy")], 2, ("--model and --weights go together",)),
    Case("embed over its own export, with --overwrite", lambda t, r: ["embed", "--checkpoint", str(t / "b.safetensors"), "--data", str(t / "imgs"), "--output", str(t / "b.safetensors"), "--overwrite"], 7, ("is the input --checkpoint",), _junk("b.safetensors", b"x")),
    Case("embed an unknown torchvision model", lambda t, r: ["embed", "--model", "torchvision/resnet81", "--weights", str(t / "w.pth"), "--data", str(t / "imgs"), "--output", str(t / "e.npy")], 2, ("unknown torchvision model 'resnet81'", "resnet18")),
    # ---- the run folder (exit 2), nothing of the earlier run lost
    Case("earlier run's folder without --overwrite", lambda t, r: _pretrain(t, "--output", str(r)), 7, ("already holds checkpoints", "--resume", "--overwrite"), keeps_run=True),
    Case("resume into another run's folder", lambda t, r: _pretrain(t, "--output", str(r), "--resume", str(t / "other"), "--epochs", "2"), 7, ("holds the checkpoints of another run", "--overwrite"), _copy_run("other"), keeps_run=True),
    Case("--overwrite with --devices two", lambda t, r: _pretrain(t, "--output", str(r), "--overwrite", "--devices", "two"), 2, ("--devices 'two'",), keeps_run=True),
    Case("--overwrite with a batch larger than the data", lambda t, r: _pretrain(t, "--output", str(r), "--overwrite", "--batch-size", "4096"), 3, ("fewer than one batch", "--batch-size"), keeps_run=True),
    Case("resume with another batch size", lambda t, r: _pretrain(t, "--output", str(r), "--resume", str(r), "--batch-size", "32"), 2, ("optim.batch_size cannot change on resume",), keeps_run=True),
    Case("resume with another backbone", lambda t, r: _pretrain(t, "--output", str(r), "--resume", str(r), "--set", "backbone.width=0.5"), 5, ("different backbone",), keeps_run=True),
    Case("a second run on a locked folder", lambda t, r: _pretrain(t), 7, ("in use by process",), _lock),
    # ---- data (exit 3)
    Case("missing data path", _data("nowhere"), 3, ("does not exist", "--data")),
    Case("data path is a file", _data("file.png"), 3, ("is not a folder",), _junk("file.png", b"x")),
    Case("empty data folder", _data("empty"), 3, ("no images",), _mkdir("empty")),
    Case("folder of non-images", _data("txt"), 3, ("no images",), _mkdir("txt", ("a.txt", b"x"))),
    Case("folder of unreadable images only", _data("junk", "--set", "data.storage=memory"), 3, ("none of the 1 images",), _mkdir("junk", ("a.png", b"x"))),
    Case("unreadable image under --strict", _data("bad", "--strict", "--set", "data.storage=memory"), 3, ("1 unreadable image(s)", "drop --strict"), _bad_folder),
    Case("test class unknown to training", _data("tt"), 3, ("classes ['wasp']",), _unknown_test_class),
    Case("CIFAR-10 folder without train/", lambda t, r: _pretrain(t, "--dataset", "cifar10", "--data", str(t / "c10")), 3, ("cannot find CIFAR-10",), _mkdir("c10")),
    Case("shards storage on an image folder", _data("imgs", "--storage", "shards"), 3, ("siamkit pack",), _folder("imgs")),
    Case("memory storage over the budget", _data("imgs", "--storage", "memory", "--set", "data.memory_budget_gb=1e-9"), 3, ("over the memory budget", "data.storage=stream"), _folder("imgs")),
    Case("fewer images than one batch", _data("imgs", "--batch-size", "64"), 3, ("fewer than one batch",), _folder("imgs")),
    Case("online probe on unlabelled data", _data("imgs", "--batch-size", "2", "--set", "train.online_probe=true"), 3, ("online_probe needs labelled",), _folder("imgs")),
    Case("shards folder without its metadata", lambda t, r: _pretrain(t, "--data", str(t / "sh"), "--storage", "shards"), 3, ("siamkit pack",), _mkdir("sh")),
    # ---- checkpoints (exit 5)
    Case("missing checkpoint", lambda t, r: ["eval", "knn", "--checkpoint", str(t / "none.ckpt")], 5, ("not found",)),
    Case("run folder without checkpoints", lambda t, r: ["eval", "knn", "--checkpoint", str(t)], 5, ("checkpoints/last.ckpt",)),
    Case("truncated checkpoint", lambda t, r: ["eval", "knn", "--checkpoint", str(t / "half.ckpt")], 5, ("cannot be read",)),
    Case("random bytes as a checkpoint", lambda t, r: ["eval", "knn", "--checkpoint", str(t / "rand.ckpt")], 5, ("cannot be read",), _junk("rand.ckpt", bytes(range(256)) * 4)),
    Case("crafted pickle as a checkpoint", lambda t, r: ["eval", "knn", "--checkpoint", str(t / "crafted.ckpt")], 5, ("not loaded", "weights_only=True"), _crafted),
    Case("pretraining checkpoint as a teacher", lambda t, r: ["eval", "distill", "--teacher", str(r), "--output", str(t / "s")], 5, ("eval finetune",)),
    Case("embed weights that are not a state dict", lambda t, r: ["embed", "--model", "torchvision/resnet18", "--weights", str(t / "w.pth"), "--data", str(t / "imgs"), "--output", str(t / "e.npy")], 5, ("weights file", "cannot be read"), _junk("w.pth", bytes(range(256)) * 4)),
    # ---- outputs (exit 7) and a full disk (exit 6)
    Case("export to a folder", lambda t, r: ["export", "--checkpoint", str(r), "--output", str(t)], 7, ("is a folder",)),
    Case("export under a file", lambda t, r: ["export", "--checkpoint", str(r), "--output", str(t / "f.txt" / "x.safetensors")], 7, ("which is a file",), _text("f.txt", "x")),
]  # fmt: skip
# An output without write permission: tests/test_bad_input_matrix.py runs it as an unprivileged
# user (root may write anywhere), for every command that writes.


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished tiny run (its folder), shared by the cases that need a checkpoint."""
    out = tmp_path_factory.mktemp("finished") / "run"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["pretrain", "--config", DIGITS, "--output", str(out), *TINY]) == 0
    return out


def _digest(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted((folder / "checkpoints").glob("*.ckpt"))
    }


def run_case(case: Case, tmp: Path, finished: Path) -> tuple[int, str]:
    """Run one case; returns the exit code and standard error."""
    run = tmp / "earlier"
    shutil.copytree(finished, run)
    (tmp / "half.ckpt").write_bytes((finished / "checkpoints" / "last.ckpt").read_bytes()[:500])
    case.setup(tmp)
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(case.argv(tmp, run))
    return code, err.getvalue()


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.kind)
def test_bad_input_is_one_clear_line(case: Case, tmp_path: Path, finished: Path) -> None:
    before = _digest(finished)
    code, err = run_case(case, tmp_path, finished)
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("siamkit: error:")]
    assert len(lines) == 1, err
    for fragment in case.fragments:
        assert fragment in lines[0], lines[0]
    assert code == case.code, (code, lines[0])
    if case.keeps_run:
        assert _digest(tmp_path / "earlier") == before
    assert not (tmp_path / "executed").exists()  # nothing a crafted file holds ever runs


def test_the_catalogue_covers_at_least_forty_kinds() -> None:
    assert len({c.kind for c in CASES}) >= 40


def test_a_full_disk_while_exporting_is_a_message_and_keeps_the_earlier_file(
    tmp_path: Path, finished: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import siamkit.export.formats as export

    target = tmp_path / "model.safetensors"
    assert main(["export", "--checkpoint", str(finished), "--output", str(target)]) == 0
    before = target.read_bytes()

    def full(state, path, metadata=None):  # type: ignore[no-untyped-def]
        Path(path).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export, "save_file", full)
    capsys.readouterr()
    argv = ["export", "--checkpoint", str(finished), "--output", str(target), "--overwrite"]
    assert main(argv) == 6
    err = capsys.readouterr().err
    assert "siamkit: error: no space left" in err and "Traceback" not in err
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


if __name__ == "__main__":  # the catalogue as a Markdown table
    import tempfile

    with tempfile.TemporaryDirectory() as base:
        out = Path(base) / "run"
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            main(["pretrain", "--config", DIGITS, "--output", str(out), *TINY])
        print("| kind | exit | message |\n| --- | ---: | --- |")
        for i, case in enumerate(CASES):
            tmp = Path(base) / f"case{i}"
            tmp.mkdir()
            code, err = run_case(case, tmp, out)
            line = next((x for x in err.splitlines() if x.startswith("siamkit: error:")), err)
            message = line.removeprefix("siamkit: error: ").replace(base, "…").replace("|", "\\|")
            print(f"| {case.kind} | {code} | {message} |")
    sys.exit(0)
