"""Fine-tuning with few labels: the trunk (backbone [+ head layers]), training on a labelled
subset, the scratch baseline, classifier checkpoints and their errors. Digits at 16 px with a
small CNN keep each run to seconds."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from siamkit.checkpoints import CONFIG_KEY, load_method
from siamkit.config import BackboneConfig, DataConfig, MethodConfig
from siamkit.data.datasets import load_digits
from siamkit.data.splits import label_subset, read_index_file
from siamkit.encoders import create_backbone
from siamkit.errors import CheckpointError, ConfigError, DataError
from siamkit.methods import METHODS, SimCLR, create_method
from siamkit.recipes import load_config
from siamkit.strict import to_dict
from siamkit.supervised.classifier import (
    Classifier,
    Trunk,
    head_layers,
    load_classifier,
    predict_logits,
    topk_accuracy,
    trunk_from_method,
)
from siamkit.supervised.finetune import FinetuneConfig, finetune

HIDDEN = 24  # the projection head's hidden width in the tiny checkpoint

TINY = [
    "data.dataset=digits",
    "data.decode_size=16",
    "augment.size=16",
    "backbone.name=small_cnn",
    "backbone.width=0.5",
    "method.name=simclr",
    "method.proj_layers=2",
    f"method.proj_hidden_dim={HIDDEN}",
    "method.proj_dim=16",
]

#: Fast settings: strong crops would wash out 16 px digits; 32-bit for exact reproducibility.
FAST = {"precision": "32-true", "crop_scale": (0.5, 1.0), "lr": 0.2, "accelerator": "cpu"}


# One intra-op thread for the whole module; ``splits`` (600 digits) is in conftest.py.
pytestmark = pytest.mark.usefixtures("one_thread")


def _randomise_batch_norm(model: nn.Module, seed: int) -> None:
    """Non-trivial BN statistics, so copying the checkpoint's buffers is checked too."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    """A pretraining checkpoint in the training loop's format (run config + ``method.*``
    weights), of a SimCLR with a 2-layer head, written directly to keep the tests fast."""
    cfg = load_config(overrides=TINY)
    torch.manual_seed(7)
    method = create_method(create_backbone(cfg.backbone), cfg.method)
    _randomise_batch_norm(method, 7)
    state = {f"method.{k}": v for k, v in method.state_dict().items()}
    path = tmp_path_factory.mktemp("pretrain") / "last.ckpt"
    torch.save({CONFIG_KEY: to_dict(cfg), "state_dict": state, "epoch": 0}, path)
    return path


@pytest.fixture(scope="module")
def finetuned(pretrained, splits, tmp_path_factory):
    """Fine-tuned from the backbone output on half the labels, with an index file."""
    out = tmp_path_factory.mktemp("ft") / "run"
    index = out.parent / "splits" / "digits-600-50pct-seed0.txt"
    cfg = FinetuneConfig(epochs=8, label_fraction=0.5, **FAST)  # type: ignore[arg-type]
    result = finetune(None, cfg, pretrained, index_file=index, output=out, splits=splits)
    return result, out, index


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------
def test_config_defaults_follow_simclr_appendix_b5() -> None:
    """60 epochs for 1% labels, 30 for 10%; lr 0.05 x batch / 256; no weight decay; Nesterov."""
    cfg = FinetuneConfig()
    assert (cfg.label_fraction, cfg.num_epochs) == (0.01, 60)
    assert FinetuneConfig(label_fraction=0.1).num_epochs == 30
    assert cfg.peak_lr == pytest.approx(0.05 * cfg.batch_size / 256)
    assert cfg.weight_decay == 0.0 and cfg.nesterov and cfg.momentum == 0.9
    assert FinetuneConfig(epochs=3, lr=0.5).num_epochs == 3


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"label_fraction": 0.0}, r"label fraction must be in \(0, 1\]"),
        ({"label_fraction": 1.5}, r"label fraction must be in \(0, 1\]"),
        ({"from_head_layers": -1}, "from_head_layers must be >= 0"),
        ({"batch_size": 1}, "at least 2"),
        ({"lr": 0.0}, "lr must be positive"),
        ({"crop_scale": (0.5, 1.5)}, "crop_scale"),
    ],
)
def test_impossible_config_values(change: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        FinetuneConfig(**change)


# --------------------------------------------------------------------------------------------
# The trunk
# --------------------------------------------------------------------------------------------
def test_from_head_layers_1_keeps_the_checkpoints_first_head_layer(pretrained) -> None:
    """SimCLRv2's trunk: backbone + fc-BN-ReLU of the head, with the checkpoint's weights and
    BN statistics; its output width is the head's hidden width."""
    _, method = load_method(pretrained)
    trunk = trunk_from_method(method, 1)
    assert [type(m) for m in trunk.head] == [nn.Linear, nn.BatchNorm1d, nn.ReLU]
    assert trunk.num_features == HIDDEN
    assert Classifier(trunk, 10).fc.in_features == HIDDEN
    raw = torch.load(pretrained, weights_only=False)["state_dict"]
    for key, value in trunk.state_dict().items():
        source = key.replace("head.", "method.projector.").replace("backbone.", "method.backbone.")
        torch.testing.assert_close(value, raw[source], rtol=0, atol=0)
    # The same modules SimCLR's own head_first_layer() keeps.
    assert isinstance(method, SimCLR)
    assert list(method.head_first_layer())[1:] == list(trunk.head)
    x = torch.randn(4, 3, 16, 16)
    trunk.eval()
    assert trunk(x).shape == (4, HIDDEN)
    assert (trunk(x) >= 0).all()  # it ends with the ReLU


def test_from_head_layers_0_is_the_backbone(pretrained) -> None:
    _, method = load_method(pretrained)
    trunk = trunk_from_method(method, 0).eval()
    assert len(trunk.head) == 0 and trunk.num_features == method.backbone.num_features
    x = torch.randn(3, 3, 16, 16)
    torch.testing.assert_close(trunk(x), method.backbone.forward_features(x))


def _small(cfg: MethodConfig) -> MethodConfig:
    """The method's default config with small heads (every field that sizes one)."""
    small = {
        "proj_hidden_dim": 24,
        "proj_dim": 16,
        "pred_hidden_dim": 8,
        "queue_size": 64,
        "num_prototypes": 10,
        "w_size": 32,
    }
    names = {f.name for f in dataclasses.fields(cfg)}
    return dataclasses.replace(cfg, **{k: v for k, v in small.items() if k in names})


@pytest.mark.parametrize("name", sorted(METHODS))
def test_head_layers_are_found_in_every_methods_projector(name: str) -> None:
    """The walk up to the first ReLU works on every registered method's head; asking for more
    hidden layers than the head has is a ConfigError."""
    method = create_method(
        create_backbone(BackboneConfig(name="small_cnn", width=0.25)),
        _small(METHODS[name].config_class()),
    )
    layers = head_layers(method.projector, 1)
    assert isinstance(layers[0], nn.Linear) and isinstance(layers[-1], nn.ReLU)
    trunk = trunk_from_method(method, 1).eval()
    assert trunk(torch.randn(2, 3, 16, 16)).shape == (2, layers[0].out_features)
    depth = sum(isinstance(m, nn.ReLU) for m in method.projector)
    with pytest.raises(ConfigError, match=f"has {depth} hidden layer"):
        head_layers(method.projector, depth + 1)


# --------------------------------------------------------------------------------------------
# Fine-tuning
# --------------------------------------------------------------------------------------------
def test_finetune_beats_chance_and_writes_a_readable_classifier(
    finetuned, pretrained, splits
) -> None:
    result, out, index = finetuned
    counts = torch.bincount(splits.train.labels)
    assert result.num_labelled == int((counts + 1).div(2, rounding_mode="floor").sum())  # 50%
    assert result.num_classes == 10
    assert result.top1 > 40.0  # chance is 10%
    assert result.top5 >= result.top1
    assert result.losses[-1] < result.losses[0]
    assert result.epochs == 8 and result.lr == 0.2
    # The subset: the seeded draw, recorded both in the shared index file and in the run.
    expected = label_subset(splits.train.labels, 0.5, 0)
    assert torch.equal(read_index_file(index)[0], expected)
    assert torch.equal(read_index_file(out / "label_indices.txt")[0], expected)
    saved = json.loads((out / "results.json").read_text())
    assert saved["top1"] == pytest.approx(result.top1) and saved["protocol"] == "finetune"
    # The checkpoint gives back the same classifier: same test accuracy, same architecture.
    model, info = load_classifier(out)
    assert not model.training
    assert info.kind == "finetune" and info.source == str(pretrained)
    assert info.backbone == BackboneConfig(name="small_cnn", width=0.5)
    assert torch.equal(info.label_indices, expected)
    logits = predict_logits(model, splits.test, info.augment)
    assert topk_accuracy(logits, splits.test.labels) == pytest.approx(result.top1)


def test_finetune_from_head_layer_1_round_trips(pretrained, splits, tmp_path) -> None:
    """With from_head_layers=1 the saved classifier rebuilds the kept head from the method's
    config: its trunk is HIDDEN wide and the loaded weights match the trained ones."""
    cfg = FinetuneConfig(epochs=1, label_fraction=0.1, from_head_layers=1, **FAST)  # type: ignore[arg-type]
    result = finetune(None, cfg, pretrained, output=tmp_path / "ft1", splits=splits)
    assert result.from_head_layers == 1
    model, info = load_classifier(tmp_path / "ft1" / "classifier.pt")
    assert info.from_head_layers == 1 and info.method is not None
    assert model.num_features == HIDDEN and model.fc.in_features == HIDDEN
    logits = predict_logits(model, splits.test, info.augment)
    assert topk_accuracy(logits, splits.test.labels) == pytest.approx(result.top1)


def test_too_deep_head_layers_is_a_config_error(pretrained, splits) -> None:
    cfg = FinetuneConfig(epochs=1, from_head_layers=2, **FAST)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="has 1 hidden layer"):
        finetune(None, cfg, pretrained, splits=splits)


def test_scratch_baseline_trains_on_the_same_indices(finetuned, splits, tmp_path) -> None:
    """The from-scratch baseline reads the pretrained run's index file: same labelled images."""
    _, out, index = finetuned
    cfg = FinetuneConfig(epochs=1, label_fraction=0.5, **FAST)  # type: ignore[arg-type]
    backbone = BackboneConfig(name="small_cnn", width=0.5)
    result = finetune(
        DataConfig(dataset="digits", decode_size=16),
        cfg,
        None,
        index_file=index,
        backbone=backbone,
        output=tmp_path / "scratch",
        splits=splits,
    )
    assert result.source is None and result.num_labelled == finetuned[0].num_labelled
    ours = read_index_file(tmp_path / "scratch" / "label_indices.txt")[0]
    assert torch.equal(ours, read_index_file(out / "label_indices.txt")[0])
    _, info = load_classifier(tmp_path / "scratch")
    assert info.kind == "scratch" and info.source is None


def test_scratch_baseline_needs_a_backbone_and_no_head_layers(splits) -> None:
    data = DataConfig(dataset="digits")
    with pytest.raises(ConfigError, match="needs a backbone config"):
        finetune(data, FinetuneConfig(**FAST), None, splits=splits)  # type: ignore[arg-type]
    cfg = FinetuneConfig(from_head_layers=1, **FAST)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="from-scratch baseline has none"):
        finetune(data, cfg, None, backbone=BackboneConfig(name="small_cnn"), splits=splits)


def test_index_file_of_other_data_is_detected(finetuned, pretrained) -> None:
    """The index file was drawn on 600 digits; on all 1,438 training digits it is refused."""
    _, _, index = finetuned
    full = load_digits(16)
    cfg = FinetuneConfig(epochs=1, label_fraction=0.5, **FAST)  # type: ignore[arg-type]
    with pytest.raises(DataError, match=r"600 images.*1438 images"):
        finetune(None, cfg, pretrained, index_file=index, splits=full)


def test_finetune_on_unlabelled_data_is_a_data_error(pretrained, tmp_path) -> None:
    """A flat folder of images has no labels: fine-tuning says it needs them."""
    rng = np.random.default_rng(0)
    for i in range(6):
        pixels = rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"img{i}.png")
    data = DataConfig(dataset="folder", path=str(tmp_path), decode_size=16, cache_dir="off")
    with pytest.raises(DataError, match="fine-tuning needs labels"):
        finetune(data, FinetuneConfig(**FAST), pretrained)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Classifier checkpoints
# --------------------------------------------------------------------------------------------
def test_load_classifier_on_a_pretraining_checkpoint(pretrained) -> None:
    with pytest.raises(CheckpointError, match=r"not a classifier checkpoint.*eval finetune"):
        load_classifier(pretrained)


def test_load_classifier_missing_and_other_architecture(finetuned, tmp_path) -> None:
    with pytest.raises(CheckpointError, match=r"not found.*eval finetune"):
        load_classifier(tmp_path / "nothing")
    _, out, _ = finetuned
    other = BackboneConfig(name="resnet18", width=0.25)
    with pytest.raises(CheckpointError, match=r"holds a small_cnn .*resnet18 \(width 0.25"):
        load_classifier(out, expect_backbone=other)
    # Weights that do not fit the recorded architecture.
    payload = torch.load(out / "classifier.pt", weights_only=False)
    payload["siamkit_classifier"]["backbone"]["width"] = 0.25
    torch.save(payload, tmp_path / "edited.pt")
    with pytest.raises(CheckpointError, match="weights belong to another architecture"):
        load_classifier(tmp_path / "edited.pt")


def test_classifier_records_its_trunk_width() -> None:
    trunk = Trunk(create_backbone(BackboneConfig(name="small_cnn", width=0.25)))
    model = Classifier(trunk, 7)
    assert model.num_features == trunk.num_features == 32
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 7)


# --------------------------------------------------------------------------------------------
# The engine: the same result as a plain SGD loop, logs and checkpoints, resume
# --------------------------------------------------------------------------------------------
def _plain_loop(pretrained: Path, splits, cfg: FinetuneConfig, indices: torch.Tensor) -> Classifier:
    """The fine-tuning recipe as a plain PyTorch loop: the oracle the Lightning module must
    reproduce exactly (same init, order, views, SGD and per-step cosine)."""
    from siamkit.data.loader import make_loader
    from siamkit.supervised.sgd import crop_flip_views
    from siamkit.train.schedules import cosine_with_warmup

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        run_cfg, method = load_method(pretrained)
        model = Classifier(trunk_from_method(method, cfg.from_head_layers), 10)
    labelled = splits.train.subset(indices)
    views = crop_flip_views(run_cfg.augment, cfg.crop_scale)
    loader = make_loader(labelled, views.specs, min(cfg.batch_size, len(labelled)), train=True)
    opt = torch.optim.SGD(
        model.parameters(), lr=cfg.peak_lr, momentum=cfg.momentum, nesterov=cfg.nesterov
    )
    total = cfg.num_epochs * len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_with_warmup(s, total, 0))
    gen = torch.Generator().manual_seed(cfg.seed)
    model.train()
    for epoch in range(cfg.num_epochs):
        loader.epoch_sampler.set_epoch(epoch)
        for batch in loader:
            loss = torch.nn.functional.cross_entropy(
                model(views(batch.images, gen)[0]), batch.labels
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model


def test_finetuning_on_the_engine_equals_a_plain_sgd_loop(pretrained, splits, tmp_path) -> None:
    """Bit for bit on the CPU in float32: every weight and BN statistic of the classifier."""
    cfg = FinetuneConfig(epochs=3, label_fraction=0.2, **FAST)  # type: ignore[arg-type]
    result = finetune(None, cfg, pretrained, output=tmp_path / "ft", splits=splits)
    model, info = load_classifier(tmp_path / "ft")
    assert info.label_indices is not None
    oracle = _plain_loop(pretrained, splits, cfg, info.label_indices)
    mine, theirs = model.state_dict(), oracle.state_dict()
    assert mine.keys() == theirs.keys()
    for key in mine:
        assert torch.equal(mine[key], theirs[key]), key
    # The engine's run folder: logs and a checkpoint of the last epoch.
    assert (tmp_path / "ft" / "metrics.csv").is_file()
    assert (tmp_path / "ft" / "checkpoints" / "last.ckpt").is_file()
    assert len(result.losses) == 3


def test_a_finetuning_resumed_from_its_second_epoch_ends_where_the_whole_run_ends(
    pretrained, splits, tmp_path
) -> None:
    """Resumed from the checkpoint of epoch 2 of 3 (weights, optimiser, schedule, loader
    position and the views' random stream): the same classifier as the uninterrupted run."""
    cfg = FinetuneConfig(epochs=3, label_fraction=0.2, **FAST)  # type: ignore[arg-type]
    finetune(None, cfg, pretrained, output=tmp_path / "whole", splits=splits)
    index = tmp_path / "whole" / "label_indices.txt"
    second = tmp_path / "whole" / "checkpoints" / "epoch001.ckpt"
    cut = tmp_path / "cut"
    finetune(None, cfg, pretrained, index_file=index, output=cut, splits=splits, resume=second)
    a, _ = load_classifier(tmp_path / "whole")
    b, _ = load_classifier(cut)
    for key, value in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[key], value, rtol=0, atol=0, msg=key)


def test_finetuning_logs_to_the_chosen_loggers_and_a_resumed_one_goes_on(
    pretrained, splits, tmp_path, monkeypatch
) -> None:
    """``loggers`` reaches the fine-tuning engine: MLflow (a file store in the output folder)
    gets the run's settings and the scheduled learning rate; no TensorBoard folder is made;
    resumed from its first epoch in the same folder, it goes on in the same MLflow run and
    metrics.csv holds each step once."""
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # 600 images, batch 64: 9 steps an epoch, 18 in all; Lightning logs step 9 (every 10th).
    cfg = FinetuneConfig(epochs=2, label_fraction=1.0, loggers=["csv", "mlflow"], **FAST)  # type: ignore[arg-type]
    out = tmp_path / "ft"
    finetune(None, cfg, pretrained, output=out, splits=splits)
    assert not (out / "tensorboard").exists()
    run_id = json.loads((out / "loggers.json").read_text())["mlflow"]
    client = mlflow.MlflowClient((out / "mlruns").as_uri())
    run = client.get_run(run_id)
    assert (run.info.run_name, run.info.status) == ("ft", "FINISHED")
    assert run.data.params["finetune.label_fraction"] == "1.0"
    assert run.data.params["finetune.lr"] == str(FAST["lr"])
    assert run.data.params["checkpoint"] == str(pretrained)
    assert run.data.params["backbone.name"] == "small_cnn"
    # cosine of 0.2 over 18 steps at step 9: 0.2 x 0.5 (1 + cos(pi / 2)) = 0.1, as float32
    lrs = client.get_metric_history(run_id, "lr/all")
    assert [(m.step, m.value) for m in lrs] == [(9, float(np.float32(0.1)))]
    assert len(client.get_metric_history(run_id, "train/loss_epoch")) == 2

    finetune(
        None,
        cfg,
        pretrained,
        output=out,
        splits=splits,
        resume=out / "checkpoints" / "epoch000.ckpt",
    )
    assert json.loads((out / "loggers.json").read_text())["mlflow"] == run_id
    assert len(client.search_runs([run.info.experiment_id])) == 1
    with (out / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows if r["train/loss_step"]] == [9]
    assert [int(r["epoch"]) for r in rows if r["train/loss_epoch"]] == [0, 1]  # epoch 0's kept
