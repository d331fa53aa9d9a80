"""The ``siamkit`` command: help, clear one-line errors with exit codes, and an end-to-end run
(pretrain -> eval knn -> eval linear -> export -> embed) on digits with tiny settings."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from siamkit import runtime
from siamkit.analysis.run_eval import linear_eval, run_extract_options
from siamkit.checkpoints import load_backbone, read_checkpoint
from siamkit.cli import main
from siamkit.cli.parser import build_parser
from siamkit.data.datasets import load_splits
from siamkit.eval.features import extract_features
from siamkit.methods import METHODS
from siamkit.supervised.classifier import load_classifier, predict_logits

# Lightning's notes about a reused run folder are expected in the overwrite test.
pytestmark = pytest.mark.filterwarnings("ignore:.*exists and is not empty.*")

SIAMKIT = Path(sys.executable).parent / "siamkit"  # the console script of this environment
REPO = Path(__file__).resolve().parents[1]

TINY = [
    "--dataset", "digits",
    "--epochs", "1",
    "--batch-size", "64",
    "--no-progress",
    "--set", "augment.size=16", "backbone.name=small_cnn", "backbone.width=0.25",
    "--set", "method.proj_layers=2",
    "--set", "method.proj_dim=64", "method.proj_hidden_dim=64", "method.pred_hidden_dim=16",
    "--set", "train.knn_every=1",
    "--set", "train.knn_k=10",
    "--set", "train.precision=32-true",
]  # fmt: skip


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _assert_one_error_line(err: str, *fragments: str) -> str:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("siamkit: error:")]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def _subprocess(args: list[str], cwd: Path, env_extra: dict[str, str] | None = None):
    env = {**os.environ, "SIAMKIT_CACHE": str(cwd / "cache"), **(env_extra or {})}
    return subprocess.run(
        [str(SIAMKIT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=1800
    )


@pytest.fixture(autouse=True)
def _decode_cache(tmp_path, monkeypatch):
    # Keep the image-folder decode cache out of the home folder.
    monkeypatch.setenv("SIAMKIT_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> tuple[Path, str]:
    """A finished 1-epoch CLI run shared by the evaluation tests, and what it printed."""
    out = tmp_path_factory.mktemp("cli") / "run"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["pretrain", *TINY, "--output", str(out)])
    assert code == 0
    return out, stdout.getvalue()


@pytest.fixture
def run_dir(cli_run) -> Path:
    return cli_run[0]


def _numpy_knn_top1(
    bank: np.ndarray,
    bank_labels: np.ndarray,
    queries: np.ndarray,
    labels: np.ndarray,
    k: int,
    t: float,
) -> float:
    """Weighted kNN top-1 (%) written out in numpy, float64: the InstDisc monitor.

    Cosine similarity to every bank row, the ``k`` most similar vote for their class with
    weight ``exp(sim / t)``, the heaviest class wins.
    """
    bank = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    sim = queries @ bank.T  # (Q, N)
    nearest = np.argsort(-sim, axis=1, kind="stable")[:, :k]  # (Q, k)
    rows = np.arange(len(queries))[:, None]
    votes = np.zeros((len(queries), int(bank_labels.max()) + 1))
    voters = (np.broadcast_to(rows, nearest.shape), bank_labels[nearest])
    np.add.at(votes, voters, np.exp(sim[rows, nearest] / t))
    return float((votes.argmax(axis=1) == labels).mean() * 100)


def _is_a_count_of(percent: float, total: int) -> bool:
    """Whether ``percent`` is ``100 m / total`` for a whole number ``m`` of images.

    An accuracy over ``total`` images is such a share; a fraction instead of a percentage, a
    mean of per-batch means over unequal batches, or another split's figure is not (but for a
    chance of about 1 in 500).
    """
    return abs(percent * total / 100 - round(percent * total / 100)) < 1e-3


@pytest.fixture
def corrupt_ckpt(run_dir, tmp_path) -> Path:
    data = (run_dir / "checkpoints" / "last.ckpt").read_bytes()
    bad = tmp_path / "half.ckpt"
    bad.write_bytes(data[: len(data) // 2])
    return bad


# --------------------------------------------------------------------------------------------
# Help
# --------------------------------------------------------------------------------------------
def test_console_script_help_in_a_subprocess(tmp_path):
    proc = _subprocess(["--help"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    for command in ("pretrain", "eval", "export", "embed"):
        assert command in proc.stdout


@pytest.mark.parametrize(
    ("argv", "flags"),
    [
        (["pretrain", "--help"], ["--config", "--set", "--resume", "--overwrite", "--batch-size"]),
        (["eval", "knn", "--help"], ["--checkpoint", "--k", "--temperature"]),
        (["eval", "linear", "--help"], ["--checkpoint", "--epochs", "--lr"]),
        (["export", "--help"], ["--checkpoint", "--output", "--format", "onnx", "timm"]),
        (
            ["embed", "--help"],
            ["--checkpoint", "--data", "--output", "--model", "--weights", "--image-size"],
        ),
    ],
)
def test_subcommand_help_exits_zero(argv, flags, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: siamkit")
    for flag in flags:
        assert flag in out


def test_missing_subcommand_is_one_error_line_with_exit_2(capsys):
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("siamkit: error:") and err.count("\n") == 1
    assert "required: command" in err and "siamkit --help" in err


# --------------------------------------------------------------------------------------------
# Bad input: one line, the right exit code, no traceback
# --------------------------------------------------------------------------------------------
def test_missing_data_path_in_a_subprocess(tmp_path):
    proc = _subprocess(
        ["pretrain", "--dataset", "folder", "--data", "/nonexistent/images", "--no-progress"],
        tmp_path,
    )
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("siamkit: error:")
    _assert_one_error_line(proc.stderr, "/nonexistent/images", "does not exist")


def test_unknown_config_key_in_a_subprocess(tmp_path):
    proc = _subprocess(["pretrain", "--set", "train.bogus=1"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]  # exactly one line
    line = _assert_one_error_line(proc.stderr, "train.bogus")
    assert "epochs" in line and "output_dir" in line  # lists the valid keys


def test_empty_data_folder(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    code, _, err = _run(
        ["pretrain", "--dataset", "folder", "--data", str(empty), "--no-progress"], capsys
    )
    assert code == 3
    _assert_one_error_line(err, "no images")


def test_data_path_that_is_a_file(tmp_path, capsys):
    f = tmp_path / "file.png"
    f.write_bytes(b"x")
    code, _, err = _run(["pretrain", "--dataset", "folder", "--data", str(f)], capsys)
    assert code == 3
    _assert_one_error_line(err, "not a folder")


def test_recipe_with_unknown_key(tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("method:\n  name: simsiam\n  temperature: 0.2\n")
    code, _, err = _run(["pretrain", "--config", str(recipe)], capsys)
    assert code == 2
    _assert_one_error_line(err, "method.temperature", "proj_dim")


def test_missing_recipe(tmp_path, capsys):
    code, _, err = _run(["pretrain", "--config", str(tmp_path / "nope.yaml")], capsys)
    assert code == 2
    _assert_one_error_line(err, "not found")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--batch-size", "1"], "BatchNorm"),
        (["--lr", "-0.1"], "argument --lr: must be greater than 0"),
        (["--set", "augment.crop_scale=[0.0, 1.0]"], "augment.crop_scale"),
        (["--set", "augment.crop_scale=[0.9, 0.1]"], "augment.crop_scale"),
        (["--set", "augment.flip_prob=2"], "augment.flip_prob"),
        (["--set", "train.epochs=many"], "train.epochs must be an integer"),
        (["--set", "method.name=nope"], "valid methods: "),
        (["--set", "trainepochs"], "section.key=value"),
        (["--epochs", "0"], "argument --epochs: must be at least 1"),
    ],
)
def test_bad_config_values_exit_2(args, fragment, capsys):
    code, _, err = _run(["pretrain", *args], capsys)
    assert code == 2
    _assert_one_error_line(err, fragment)


def test_corrupt_checkpoint_for_resume(corrupt_ckpt, tmp_path, capsys):
    code, _, err = _run(
        ["pretrain", *TINY, "--output", str(tmp_path / "new"), "--resume", str(corrupt_ckpt)],
        capsys,
    )
    assert code == 5
    _assert_one_error_line(err, str(corrupt_ckpt))


def test_corrupt_checkpoint_for_eval(corrupt_ckpt, capsys):
    code, _, err = _run(["eval", "knn", "--checkpoint", str(corrupt_ckpt)], capsys)
    assert code == 5
    _assert_one_error_line(err, "cannot be read")


@pytest.mark.parametrize("command", ["export", "eval linear", "embed"])
def test_random_bytes_checkpoint_for_other_commands(command, tmp_path, capsys):
    bad = tmp_path / "random.ckpt"
    bad.write_bytes(bytes(range(256)) * 8)
    argv = [*command.split(), "--checkpoint", str(bad)]
    if command in ("export", "embed"):
        argv += ["--output", str(tmp_path / "out")]
    if command == "embed":
        argv += ["--data", str(tmp_path / "images")]
    code, _, err = _run(argv, capsys)
    assert code == 5
    _assert_one_error_line(err, str(bad))
    assert not (tmp_path / "out").exists()


def test_used_run_folder_needs_overwrite(run_dir, tmp_path, capsys):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    shutil.copy(run_dir / "checkpoints" / "last.ckpt", out / "checkpoints" / "last.ckpt")
    code, _, err = _run(["pretrain", *TINY, "--output", str(out)], capsys)
    assert code == 7  # a problem with the output
    _assert_one_error_line(err, "--overwrite", "--resume")


# --------------------------------------------------------------------------------------------
# End to end
# --------------------------------------------------------------------------------------------
def test_pretrain_writes_a_run_and_prints_a_summary(cli_run):
    run_dir, stdout = cli_run
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    results = json.loads((run_dir / "results.json").read_text())
    assert results["epochs"] == 1
    assert results["knn_top1"] is not None and results["random_init_knn_top1"] is not None
    config = read_checkpoint(run_dir).config
    assert config.augment.size == 16  # the --set values reached it, several after one --set too
    assert config.method.pred_hidden_dim == 16 and config.backbone.name == "small_cnn"
    assert "epochs: 1" in stdout
    assert "kNN top-1:" in stdout and "random init" in stdout
    assert f"checkpoint: {run_dir / 'checkpoints' / 'last.ckpt'}" in stdout


def test_eval_knn(run_dir, capsys):
    code, out, err = _run(
        ["eval", "knn", "--checkpoint", str(run_dir), "--k", "10", "--json"], capsys
    )
    assert code == 0, err
    assert out.startswith("kNN top-1:")
    result = json.loads(out.strip().splitlines()[-1])
    assert result["protocol"] == "knn" and result["k"] == 10
    # The figure recomputed here: the run's backbone features of the digits splits (extracted
    # as every evaluation does), classified by a weighted kNN written out in numpy. A wrong k,
    # T, split or representation, or a bug in the vote, changes it.
    cfg, backbone = load_backbone(run_dir)
    splits = load_splits(cfg.data)
    options = run_extract_options(cfg, torch.device("cpu"), backbone)
    bank = extract_features(backbone, splits.train, cfg.augment, **options).double().numpy()
    queries = extract_features(backbone, splits.test, cfg.augment, **options).double().numpy()
    assert splits.train.labels is not None and splits.test.labels is not None
    expected = _numpy_knn_top1(
        bank, splits.train.labels.numpy(), queries, splits.test.labels.numpy(), k=10, t=0.1
    )
    assert result["top1"] == pytest.approx(expected, abs=1e-3)
    assert result["top1"] > 10.0  # above chance (10 classes): the run learnt something
    # the same evaluation as the run's final figure (whole held-out split, same k and T)
    saved = json.loads((run_dir / "results.json").read_text())
    assert result["top1"] == pytest.approx(saved["knn_top1"], abs=1e-3)
    # without --k / --temperature the run's own monitor settings (k=10 here) are used
    code, out, err = _run(["eval", "knn", "--checkpoint", str(run_dir), "--json"], capsys)
    assert code == 0, err
    default = json.loads(out.strip().splitlines()[-1])
    assert (default["k"], default["temperature"]) == (10, 0.1)
    assert default["top1"] == pytest.approx(saved["knn_top1"], abs=1e-3)


def test_eval_linear(run_dir, capsys):
    code, out, err = _run(
        ["eval", "linear", "--checkpoint", str(run_dir), "--epochs", "5", "--json"], capsys
    )
    assert code == 0, err
    assert out.startswith("linear probe: top-1")
    result = json.loads(out.strip().splitlines()[-1])
    assert result["protocol"] == "linear" and result["epochs"] == 5
    # The command's defaults and flags reach the probe: the Python API with the same settings
    # (deterministic on the CPU: seeded order and initialisation) gives the same figures.
    api = linear_eval(run_dir, epochs=5)
    assert {key: result[key] for key in api} == pytest.approx(api, abs=1e-9)
    # Shares (%) of the held-out digits, and of the training ones for train_top1.
    splits = load_splits(read_checkpoint(run_dir).config.data)
    for key, images in (("top1", splits.test), ("top5", splits.test), ("train_top1", splits.train)):
        assert _is_a_count_of(result[key], len(images)), (key, result[key], len(images))
    # top-5 counts every top-1 hit and more (10 classes): swapped keys would fail this.
    assert 10.0 < result["top1"] < result["top5"]


def test_eval_linear_options(run_dir, capsys):
    """L-BFGS on g(h) with augmented training views; the JSON records every choice."""
    code, out, err = _run(
        [
            "eval",
            "linear",
            "--checkpoint",
            str(run_dir),
            "--optimizer",
            "lbfgs",
            "--epochs",
            "20",
            "--features",
            "projection",
            "--augment-copies",
            "2",
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    assert "g(h)" in out.splitlines()[0]
    result = json.loads(out.strip().splitlines()[-1])
    assert (result["optimizer"], result["features"], result["augment_copies"]) == (
        "lbfgs",
        "projection",
        2,
    )
    # Each flag reached the probe: the Python API with these settings (deterministic: L-BFGS,
    # seeded augmented views) gives the same figures.
    api = linear_eval(
        run_dir, epochs=20, features="projection", optimizer="lbfgs", augment_copies=2
    )
    assert {key: result[key] for key in api} == pytest.approx(api, abs=1e-9)
    splits = load_splits(read_checkpoint(run_dir).config.data)
    assert _is_a_count_of(result["top1"], len(splits.test))
    assert _is_a_count_of(result["train_top1"], 2 * len(splits.train))  # two views of each
    assert result["top1"] > 10.0  # above chance (10 classes)


def test_eval_knn_on_projection_differs_from_backbone(run_dir, capsys):
    tops = []
    for features in ("backbone", "projection"):
        code, out, err = _run(
            [
                "eval",
                "knn",
                "--checkpoint",
                str(run_dir),
                "--k",
                "10",
                "--features",
                features,
                "--json",
            ],
            capsys,
        )
        assert code == 0, err
        tops.append(json.loads(out.strip().splitlines()[-1])["top1"])
    assert tops[0] != tops[1]  # different representations, different figures


@pytest.mark.parametrize("args", [["--epochs", "0"], ["--lr", "-1"], ["--augment-copies", "-1"]])
def test_eval_linear_impossible_values(run_dir, capsys, args):
    code, _, err = _run(["eval", "linear", "--checkpoint", str(run_dir), *args], capsys)
    assert code == 2
    _assert_one_error_line(err, f"argument {args[0]}: must be")


def test_eval_finetune_scratch_and_distill(run_dir, tmp_path, capsys, monkeypatch):
    """Fine-tuning writes the shared index file; the scratch baseline reads the same one; the
    distilled student reports against its teacher."""
    monkeypatch.chdir(tmp_path)  # the default index file goes under ./splits
    ft, scratch, student = tmp_path / "ft", tmp_path / "scratch", tmp_path / "student"
    common = ["--checkpoint", str(run_dir), "--label-fraction", "0.2", "--epochs", "3", "--json"]
    code, out, err = _run(["eval", "finetune", *common, "--output", str(ft)], capsys)
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    (index,) = (tmp_path / "splits").glob("digits-*-20pct-seed0.txt")
    assert result["index_file"] == f"splits/{index.name}"
    assert result["source"] == str(run_dir)
    # The figures belong to the classifier written: its logits on the held-out digits give the
    # reported top-1 and top-5 (a report of the training accuracy, of the model before its last
    # step, or a saved model other than the evaluated one would not).
    model, info = load_classifier(ft)
    test = load_splits(info.data).test
    assert test is not None and test.labels is not None
    bf16 = runtime.resolve_precision(info.config["precision"], "cpu") == "bf16-mixed"
    logits = predict_logits(model, test, info.augment, bf16=bf16).numpy()
    labels = test.labels.numpy()
    assert result["top1"] == pytest.approx((logits.argmax(1) == labels).mean() * 100, abs=1e-3)
    top5 = np.argsort(-logits, axis=1)[:, :5]
    assert result["top5"] == pytest.approx((top5 == labels[:, None]).any(1).mean() * 100, abs=1e-3)
    assert json.loads((ft / "results.json").read_text())["top1"] == pytest.approx(result["top1"])
    assert result["top1"] > 10.0  # above chance (10 classes)
    before = index.read_text()
    code, out, err = _run(
        ["eval", "finetune", *common, "--scratch", "--output", str(scratch)], capsys
    )
    assert code == 0, err
    base = json.loads(out.strip().splitlines()[-1])
    assert base["source"] is None and base["num_labelled"] == result["num_labelled"]
    assert index.read_text() == before
    code, out, err = _run(
        [
            "eval",
            "distill",
            "--teacher",
            str(ft),
            "--output",
            str(student),
            "--epochs",
            "1",
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    assert out.startswith("distilled student top-1")
    assert (student / "classifier.pt").is_file()


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["--label-fraction", "0"], 2, "argument --label-fraction: must be in (0, 1]"),
        (["--label-fraction", "1.5"], 2, "argument --label-fraction: must be in (0, 1]"),
    ],
)
def test_eval_finetune_bad_fraction(run_dir, tmp_path, capsys, args, code, fragment):
    got, _, err = _run(
        ["eval", "finetune", "--checkpoint", str(run_dir), "--output", str(tmp_path), *args],
        capsys,
    )
    assert got == code
    _assert_one_error_line(err, fragment)


def test_eval_finetune_and_distill_take_loggers_and_refuse_unknown_ones(run_dir, tmp_path, capsys):
    parser = build_parser()
    common = ["--output", str(tmp_path), "--loggers", "csv, mlflow"]
    args = parser.parse_args(
        ["eval", "finetune", "--checkpoint", "x", "--label-fraction", "0.1", *common]
    )
    assert args.loggers == ["csv", "mlflow"]
    args = parser.parse_args(["eval", "distill", "--teacher", "x", *common])
    assert args.loggers == ["csv", "mlflow"]
    code, _, err = _run(
        [
            *("eval", "finetune", "--checkpoint", str(run_dir), "--label-fraction", "0.2"),
            *("--output", str(tmp_path / "ft"), "--loggers", "csv,neptune", "--epochs", "1"),
        ],
        capsys,
    )
    assert code == 2
    _assert_one_error_line(err, "unknown logger 'neptune'", "valid loggers: csv, tensorboard")
    assert not (tmp_path / "ft").exists()  # refused before the output folder is made


def test_eval_finetune_needs_labels(run_dir, tmp_path, capsys):
    flat = tmp_path / "flat"
    flat.mkdir()
    from PIL import Image

    for i in range(12):
        Image.new("RGB", (16, 16), (i * 20, 0, 0)).save(flat / f"{i}.png")
    code, _, err = _run(
        [
            "eval",
            "finetune",
            "--checkpoint",
            str(run_dir),
            "--label-fraction",
            "0.5",
            "--dataset",
            "folder",
            "--data",
            str(flat),
            "--output",
            str(tmp_path / "o"),
        ],
        capsys,
    )
    assert code == 3
    _assert_one_error_line(err, "label")


def test_eval_distill_refuses_a_pretraining_checkpoint(run_dir, tmp_path, capsys):
    """A checkpoint of another kind of model (an encoder, not a classifier) as the teacher."""
    code, _, err = _run(
        ["eval", "distill", "--teacher", str(run_dir), "--output", str(tmp_path)], capsys
    )
    assert code == 5
    _assert_one_error_line(err, "eval finetune")


def test_export(run_dir, tmp_path, capsys):
    from safetensors.torch import load_file

    target = tmp_path / "x.safetensors"
    code, out, err = _run(["export", "--checkpoint", str(run_dir), "--output", str(target)], capsys)
    assert code == 0, err
    assert f"wrote {target}" in out
    exported = load_file(str(target))
    _, backbone = load_backbone(run_dir)
    expected = backbone.state_dict()
    assert exported.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(exported[key], value)


def test_embed_folder_of_pngs(run_dir, tmp_path, capsys):
    images = tmp_path / "pngs"
    images.mkdir()
    rng = np.random.default_rng(0)
    names = [f"img{i}.png" for i in range(5)]
    for i, name in enumerate(names):
        side = 20 + 4 * i  # different sizes: each is resized and centre-cropped
        Image.fromarray(rng.integers(0, 256, (side, side + 3, 3), dtype=np.uint8)).save(
            images / name
        )
    target = tmp_path / "e.npy"
    code, out, err = _run(
        ["embed", "--checkpoint", str(run_dir), "--data", str(images), "--output", str(target)],
        capsys,
    )
    assert code == 0, err
    assert str(target) in out
    _, backbone = load_backbone(run_dir)
    emb = np.load(target)
    assert emb.shape == (len(names), backbone.num_features)
    assert np.isfinite(emb).all()
    assert not np.allclose(emb[0], emb[1])  # different images, different embeddings
    paths = (tmp_path / "e.npy.paths.txt").read_text().splitlines()
    assert [Path(p).name for p in paths] == names
    assert all(Path(p).is_file() for p in paths)


def test_export_formats_and_embed_from_files(run_dir, tmp_path, capsys):
    """export --format writes the file its extension names and prints how to load it; embed
    reads a .safetensors export (same rows as the run) and --model/--weights with the
    preprocessing flags (same rows as the Python API given the same options)."""
    from siamkit.analysis.run_eval import embed_folder

    images = tmp_path / "pngs"
    images.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (18 + i, 21, 3), dtype=np.uint8)).save(
            images / f"{i}.png"
        )
    code, out, err = _run(
        ["export", "--checkpoint", str(run_dir), "--output", str(tmp_path / "b.onnx")], capsys
    )
    assert code == 0, err
    assert "(onnx); load with: onnxruntime.InferenceSession" in out
    assert "(N, 3, 16, 16)" in out  # the run's evaluation size
    code, out, err = _run(
        ["export", "--checkpoint", str(run_dir), "--output", str(tmp_path / "b.safetensors")],
        capsys,
    )
    assert code == 0, err

    def embed(*source: str) -> np.ndarray:
        target = tmp_path / "e.npy"
        argv = ["embed", *source, "--data", str(images), "--output", str(target), "--overwrite"]
        code, _, err = _run([*argv, "--workers", "0"], capsys)
        assert code == 0, err
        return np.load(target)

    run = embed("--checkpoint", str(run_dir))
    np.testing.assert_allclose(
        embed("--checkpoint", str(tmp_path / "b.safetensors")), run, atol=1e-5, rtol=1e-5
    )
    weights = tmp_path / "tv.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    flags = ["--image-size", "24", "--mean", "0.5", "0.5", "0.5", "--std", "0.2", "0.3", "0.4"]
    got = embed("--model", "torchvision/resnet18", "--weights", str(weights), *flags)
    api = embed_folder(
        weights,
        images,
        tmp_path / "api.npy",
        num_workers=0,
        model="torchvision/resnet18",
        image_size=24,
        mean=(0.5, 0.5, 0.5),
        std=(0.2, 0.3, 0.4),
    )
    assert got.shape == (3, 512)
    np.testing.assert_array_equal(got, np.load(api))


def test_embed_missing_folder(run_dir, tmp_path, capsys):
    code, _, err = _run(
        [
            "embed",
            "--checkpoint", str(run_dir),
            "--data", str(tmp_path / "missing"),
            "--output", str(tmp_path / "e.npy"),
        ],
        capsys,
    )  # fmt: skip
    assert code == 3
    _assert_one_error_line(err, "does not exist")
    assert not (tmp_path / "e.npy").exists()


def test_sync_batchnorm_on_cpu_is_a_clear_config_error(tmp_path, capsys):
    """PyTorch's SyncBatchNorm has no CPU kernel: say so before anything runs."""
    code, _, err = _run(
        ["pretrain", "--output", str(tmp_path / "s"), "--accelerator", "cpu",
         "--set", "train.sync_batchnorm=true"],
        capsys,
    )  # fmt: skip
    assert code == 2
    _assert_one_error_line(err, "train.sync_batchnorm needs GPUs")
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("method", ["simsiam", "simclr", "swav"])
def test_two_process_ddp_pretrain_runs_to_completion(tmp_path, method):
    """`siamkit pretrain` with 2 CPU processes (DDP, gloo) finishes, checkpoints once and prints
    one summary (from rank 0); SimCLR gathers its negatives across the processes; SwAV's frozen
    prototypes need DDP's unused-parameter search; BatchNorm stays per process as asked."""
    sync_bn = False
    # A fixed list: a method dropped from the registry is a failure here, not a silent skip.
    assert method in METHODS, f"{method} is not a registered method: {sorted(METHODS)}"
    out = tmp_path / "ddp"
    proc = _subprocess(
        [
            "pretrain",
            "--config",
            str(REPO / "configs/simsiam/digits.yaml"),
            "--output",
            str(out),
            "--epochs",
            "2",
            "--batch-size",
            "64",
            "--accelerator",
            "cpu",
            "--devices",
            "2",
            "--strategy",
            "ddp",
            "--no-progress",
            "--set",
            "train.knn_every=1",
            "--set",
            f"train.sync_batchnorm={str(sync_bn).lower()}",
            "--method",
            method,
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    mode = "synchronised across processes" if sync_bn else "per process"
    assert f"BatchNorm {mode}" in proc.stderr
    assert proc.stdout.count("kNN top-1:") == 1, proc.stdout
    assert "x2" in proc.stderr  # the run summary names two processes
    assert (out / "checkpoints" / "last.ckpt").is_file()
    metrics = (out / "metrics.csv").read_text()
    assert "val/knn_top1" in metrics and "train/collapse_std" in metrics


def test_pack_then_a_two_process_pretrain_reads_its_own_part_of_the_shards(tmp_path):
    """`siamkit pack` writes shards of a labelled folder; a 2-process DDP `siamkit pretrain`
    from them finishes, says it reads shards, and checkpoints once."""
    rng = np.random.default_rng(0)
    for i in range(80):
        path = tmp_path / "photos" / f"c{i % 2}" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(path)
    shards = tmp_path / "shards"
    proc = _subprocess(
        ["pack", "--data", str(tmp_path / "photos"), "--output", str(shards), "--workers", "1"],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "train: 64 images (0 unreadable)" in proc.stdout
    assert "test: 16 images" in proc.stdout
    out = tmp_path / "run"
    proc = _subprocess(
        [
            "pretrain", *TINY[2:],
            "--data", str(shards),
            "--output", str(out),
            "--batch-size", "16",
            "--workers", "1",
            "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp",
        ],
        tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "data shards:" in proc.stderr and "x2" in proc.stderr
    assert proc.stdout.count("kNN top-1:") == 1, proc.stdout
    assert (out / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.parametrize("bad", ["one unreadable image under --strict", "no readable image"])
def test_a_problem_one_process_sees_stops_both_processes(tmp_path, bad):
    """Two DDP processes (gloo) streaming a folder: one of them meets the bad data. Both stop
    with the data error (exit 3) at once, instead of the other waiting in the next gradient
    all-reduce until the process group's 30-minute timeout."""
    import time

    rng = np.random.default_rng(0)
    for i in range(64):
        path = tmp_path / "photos" / f"{i:02d}.png"  # unlabelled: every image trains
        path.parent.mkdir(parents=True, exist_ok=True)
        if bad == "no readable image" or i == 37:
            path.write_bytes(b"not a png")
        else:
            Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(path)
    strict = ["--strict"] if bad.endswith("--strict") else []
    start = time.monotonic()
    proc = _subprocess(
        [
            "pretrain", *TINY[2:],
            "--data", str(tmp_path / "photos"), "--output", str(tmp_path / "run"),
            "--storage", "stream", "--workers", "0", "--batch-size", "8", *strict,
            "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp",
        ],
        tmp_path,
    )  # fmt: skip
    seconds = time.monotonic() - start
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [x for x in proc.stderr.splitlines() if x.startswith("siamkit: error:")]
    assert errors, proc.stderr[-3000:]
    assert seconds < 300  # stopped, not waiting for the 30-minute timeout
    found = "unreadable image" if strict else "none of the first"
    assert any(found in line for line in errors), errors
    if strict:  # one process found the image; the other was told and stopped with it
        assert any("another process of this run stopped" in line for line in errors), errors


def test_finetune_and_distill_run_in_two_ddp_processes(run_dir, tmp_path):
    """`eval finetune` and `eval distill` on the engine of pretraining: 2 CPU processes (DDP,
    gloo), one report from rank 0, the classifier written once."""
    ddp = ["--accelerator", "cpu", "--devices", "2", "--strategy", "ddp"]
    ft = tmp_path / "ft"
    proc = _subprocess(
        [
            "eval", "finetune", "--checkpoint", str(run_dir), "--label-fraction", "0.2",
            "--epochs", "2", "--batch-size", "16", "--output", str(ft), *ddp,
        ],
        tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("fine-tuned on") == 1, proc.stdout
    assert (ft / "classifier.pt").is_file() and (ft / "checkpoints" / "last.ckpt").is_file()
    student = tmp_path / "student"
    proc = _subprocess(
        [
            "eval", "distill", "--teacher", str(ft), "--epochs", "1", "--batch-size", "16",
            "--output", str(student), *ddp,
        ],
        tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("distilled student top-1") == 1, proc.stdout
    assert (student / "classifier.pt").is_file()
