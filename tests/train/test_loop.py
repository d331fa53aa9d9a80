"""The training loop end to end on digits: outputs, resume, overwrite, divergence, bad
checkpoints. Tiny settings keep each run to a second or two on a CPU."""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from siamkit.checkpoints import load_backbone, load_method, read_checkpoint
from siamkit.config import BackboneConfig, RunConfig
from siamkit.data.datasets import Splits, load_digits
from siamkit.encoders import as_encoder, create_backbone
from siamkit.errors import CheckpointError, ConfigError, OutputError, TrainingDivergedError
from siamkit.losses import negative_similarity
from siamkit.recipes import load_config
from siamkit.train import pretrain

# Lightning's notes about reusing a run folder are expected here (resume, overwrite).
pytestmark = pytest.mark.filterwarnings("ignore:.*exists and is not empty.*")

BATCH = 64

SMALL = [
    "data.dataset=digits",
    "augment.size=16",
    "backbone.name=small_cnn",
    "backbone.width=0.25",
    "method.proj_layers=2",
    "method.proj_dim=64",
    "method.proj_hidden_dim=64",
    "method.pred_hidden_dim=16",
    f"optim.batch_size={BATCH}",
    "train.epochs=1",
    "train.progress_bar=false",
    "train.knn_every=0",
    "train.knn_k=10",
    "train.precision=32-true",
]


def small_config(out: Path, *overrides: str) -> RunConfig:
    return load_config(overrides=[*SMALL, f"train.output_dir={out}", *overrides])


@pytest.fixture(scope="module")
def splits() -> Splits:
    return load_digits(32)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, splits):
    """One finished 1-epoch run with the kNN monitor, shared by the read-only tests."""
    out = tmp_path_factory.mktemp("run") / "run"
    cfg = small_config(out, "train.knn_every=1")
    result = pretrain(cfg, splits=splits)
    return cfg, out, result


def _steps_per_epoch(splits: Splits) -> int:
    return len(splits.train) // BATCH


# --------------------------------------------------------------------------------------------
# A short run and its outputs
# --------------------------------------------------------------------------------------------
def test_pretrain_writes_checkpoint_logs_and_results(trained):
    _, out, result = trained
    assert result.epochs == 1
    assert result.output_dir == str(out)
    assert result.checkpoint == str(out / "checkpoints" / "last.ckpt")
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert (out / "config.yaml").is_file()

    with (out / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {"train/loss", "train/collapse_std", "val/knn_top1"} <= set(rows[0])
    logged = {int(r["step"]): float(r["train/loss"]) for r in rows if r["train/loss"]}
    assert sorted(logged) == [9, 19]  # every 10 of the epoch's 22 steps
    collapse = [float(r["train/collapse_std"]) for r in rows if r["train/collapse_std"]]
    assert len(collapse) == 1 and collapse[0] == pytest.approx(result.collapse_std)

    events = list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0

    saved = json.loads((out / "results.json").read_text())
    assert saved["epochs"] == 1
    assert saved["knn_top1"] == pytest.approx(result.knn_top1)
    assert saved["random_init_knn_top1"] == pytest.approx(result.random_init_knn_top1)
    assert saved["checkpoint"] == result.checkpoint


def test_metrics_csv_holds_the_loss_of_every_logged_step(tmp_path, splits, monkeypatch):
    """The loss in metrics.csv is the one the step computed, at the steps Lightning logs."""
    from siamkit.train.loop import PretrainModule

    computed: list[float] = []
    step = PretrainModule.training_step

    def recording(self, batch, idx):  # type: ignore[no-untyped-def]
        out = step(self, batch, idx)
        computed.append(float(out["loss"]))
        return out

    monkeypatch.setattr(PretrainModule, "training_step", recording)
    out = tmp_path / "run"
    pretrain(small_config(out), splits=splits)
    with (out / "metrics.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["train/loss"]]
    assert [int(r["step"]) for r in rows] == [9, 19]
    for r in rows:
        assert float(r["train/loss"]) == pytest.approx(computed[int(r["step"])], rel=1e-6)


def test_pretrain_reports_knn_against_random_init(trained, splits):
    """The random-init figure is the kNN of the backbone the run started from (the seed's
    initialisation), the trained one that of the checkpoint's backbone."""
    from siamkit.eval.knn import knn_top1

    cfg, out, result = trained
    torch.manual_seed(cfg.train.seed)
    initial = create_backbone(cfg.backbone)
    _, trained_backbone = load_backbone(out)
    k, t = cfg.train.knn_k, cfg.train.knn_temperature
    args = (splits.train, splits.test, cfg.augment, k, t)
    assert result.random_init_knn_top1 == pytest.approx(knn_top1(initial, *args))
    assert result.knn_top1 == pytest.approx(knn_top1(trained_backbone, *args))
    assert result.knn_top1 != result.random_init_knn_top1
    assert result.knn_history and result.knn_history[-1][0] == 1
    assert result.collapse_std is not None and result.collapse_std > 0.1
    assert result.images_per_sec is not None and result.images_per_sec > 0


def test_a_bf16_run_reads_its_final_knn_in_float32(tmp_path, splits):
    """Features at random init (eval-mode BN at its initial statistics) and early in training
    differ by less than bf16 resolves, so both final figures are taken in float32 whatever the
    run's precision."""
    from siamkit.eval.knn import knn_top1

    cfg = small_config(
        tmp_path / "run", "train.knn_every=1", "train.precision=bf16-mixed", "train.max_steps=2"
    )
    result = pretrain(cfg, splits=splits)
    torch.manual_seed(cfg.train.seed)
    initial = create_backbone(cfg.backbone)
    _, trained_backbone = load_backbone(tmp_path / "run")
    args = (splits.train, splits.test, cfg.augment, cfg.train.knn_k, cfg.train.knn_temperature)
    assert result.random_init_knn_top1 == pytest.approx(knn_top1(initial, *args, bf16=False))
    assert result.knn_top1 == pytest.approx(knn_top1(trained_backbone, *args, bf16=False))


def test_checkpoint_holds_config_and_epoch(trained, splits):
    cfg, out, _ = trained
    ckpt = read_checkpoint(out)  # a run folder resolves to checkpoints/last.ckpt
    assert ckpt.path == str(out / "checkpoints" / "last.ckpt")
    assert ckpt.epoch == 1
    assert ckpt.config == cfg
    raw = torch.load(ckpt.path, map_location="cpu", weights_only=False)
    assert raw["global_step"] == _steps_per_epoch(splits)


def test_load_method_returns_the_trained_weights(trained):
    cfg, out, _ = trained
    config, method = load_method(out)
    assert config == cfg
    assert not method.training
    state = read_checkpoint(out).state_dict
    backbone_keys = [k for k in state if k.startswith("method.backbone.")]
    assert backbone_keys
    mine = method.backbone.state_dict()
    assert len(mine) == len(backbone_keys)
    for key in backbone_keys:
        torch.testing.assert_close(mine[key[len("method.backbone.") :]], state[key])
    # The weights are the trained ones, not a fresh initialisation of the same architecture.
    fresh = create_backbone(cfg.backbone).state_dict()
    assert any(not torch.equal(mine[k], fresh[k]) for k in mine if mine[k].is_floating_point())
    _, backbone = load_backbone(out)
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(
            backbone.forward_features(x), method.backbone.forward_features(x)
        )


# --------------------------------------------------------------------------------------------
# Resume and overwrite
# --------------------------------------------------------------------------------------------
def _batches_seen(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """Record the image indices of every training batch of the runs that follow."""
    from siamkit.train.loop import PretrainModule

    seen: list[list[int]] = []
    step = PretrainModule.training_step

    def recording(self: PretrainModule, batch, idx):  # type: ignore[no-untyped-def]
        seen.append(batch.indices.tolist())
        return step(self, batch, idx)

    monkeypatch.setattr(PretrainModule, "training_step", recording)
    return seen


def test_a_run_stopped_inside_an_epoch_resumes_at_the_next_batch(
    tmp_path: Path, splits: Splits, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step checkpoint holds the loader's position (epoch 0, 5 batches); the run resumed from
    it trains on batches 6-9 of the uninterrupted run, not on a restart of the epoch."""
    seen = _batches_seen(monkeypatch)
    pretrain(small_config(tmp_path / "whole", "train.max_steps=9"), splits=splits)
    whole = list(seen)
    seen.clear()
    out = tmp_path / "cut"
    pretrain(
        small_config(out, "train.max_steps=7", "train.checkpoint_every_steps=5"), splits=splits
    )
    step5 = out / "checkpoints" / "step0000005.ckpt"
    raw = torch.load(step5, map_location="cpu", weights_only=False)
    assert raw["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 0, "batches": 5}]
    assert seen == whole[:7]
    seen.clear()
    pretrain(small_config(out, "train.max_steps=9"), resume=str(step5), splits=splits)
    assert seen == whole[5:9]


def test_resume_continues_to_the_requested_epoch(tmp_path, splits):
    out = tmp_path / "run"
    first = pretrain(small_config(out), splits=splits)
    assert first.epochs == 1
    before = read_checkpoint(out)

    resumed = pretrain(small_config(out, "train.epochs=2"), resume=str(out), splits=splits)
    assert resumed.epochs == 2
    after = read_checkpoint(out)
    assert after.epoch == 2
    raw = torch.load(after.path, map_location="cpu", weights_only=False)
    assert raw["global_step"] == 2 * _steps_per_epoch(splits)  # continued, not restarted
    changed = [
        k
        for k, v in after.state_dict.items()
        if v.is_floating_point() and not torch.equal(v, before.state_dict[k])
    ]
    assert changed
    assert json.loads((out / "results.json").read_text())["epochs"] == 2


def test_fresh_run_into_a_used_folder_needs_overwrite(tmp_path, splits):
    out = tmp_path / "run"
    pretrain(small_config(out), splits=splits)
    stamp = (out / "checkpoints" / "last.ckpt").stat().st_mtime_ns
    with pytest.raises(OutputError, match="--resume") as err:
        pretrain(small_config(out), splits=splits)
    assert "--overwrite" in str(err.value)
    assert (out / "checkpoints" / "last.ckpt").stat().st_mtime_ns == stamp  # nothing lost

    result = pretrain(small_config(out), splits=splits, overwrite=True)
    assert result.epochs == 1
    assert read_checkpoint(out).epoch == 1


def _run_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_resuming_into_another_runs_folder_is_refused_and_loses_nothing(tmp_path, splits):
    """``--resume A --output C`` once replaced run C's checkpoint, config and history with A's
    continuation (C's metrics.csv then mixed the two runs)."""
    a, c = tmp_path / "a", tmp_path / "c"
    pretrain(small_config(a), splits=splits)
    pretrain(small_config(c, "train.seed=5"), splits=splits)
    before_a, before_c = _run_files(a), _run_files(c)
    with pytest.raises(OutputError, match="another run") as err:
        pretrain(small_config(c, "train.epochs=2"), resume=str(a), splits=splits)
    assert "--overwrite" in str(err.value) and str(a) in str(err.value)
    assert _run_files(a) == before_a
    assert _run_files(c) == before_c

    # Its own folder (the folder, or one of its checkpoints) and a new folder are fine.
    step = a / "checkpoints" / "epoch000.ckpt"
    pretrain(small_config(tmp_path / "new", "train.epochs=2"), resume=str(step), splits=splits)
    assert read_checkpoint(tmp_path / "new").epoch == 2
    pretrain(small_config(a, "train.epochs=2"), resume=str(step), splits=splits)
    assert read_checkpoint(a).epoch == 2

    # --overwrite replaces C's run whole: its checkpoints and history are A's continuation.
    pretrain(small_config(c, "train.epochs=3"), resume=str(a), splits=splits, overwrite=True)
    assert read_checkpoint(c).epoch == 3
    assert sorted(p.name for p in (c / "checkpoints").iterdir()) == ["epoch002.ckpt", "last.ckpt"]
    with (c / "metrics.csv").open() as f:
        epochs = {row["epoch"] for row in csv.DictReader(f)}
    assert epochs == {"2"}  # no row of C's own run


# --------------------------------------------------------------------------------------------
# Divergence
# --------------------------------------------------------------------------------------------
def test_nan_loss_raises_with_the_last_good_checkpoint(tmp_path, splits, monkeypatch):
    out = tmp_path / "run"
    steps = _steps_per_epoch(splits)
    calls = {"n": 0}
    cosine_loss = negative_similarity.NEGATIVE_SIMILARITY_LOSSES["cosine"]

    def nan_after_first_epoch(p, z):
        calls["n"] += 1
        loss = cosine_loss(p, z)
        # two calls per step (symmetric loss): NaN from the first step of epoch 2 on
        return loss * float("nan") if calls["n"] > 2 * steps else loss

    monkeypatch.setitem(
        negative_similarity.NEGATIVE_SIMILARITY_LOSSES, "cosine", nan_after_first_epoch
    )
    with pytest.raises(TrainingDivergedError) as err:
        pretrain(small_config(out, "train.epochs=3"), splits=splits)
    last = out / "checkpoints" / "last.ckpt"
    message = str(err.value)
    assert "nan" in message.lower()
    assert "epoch 2" in message
    assert str(last) in message
    assert "--resume" in message
    assert TrainingDivergedError.exit_code == 4
    assert calls["n"] == 2 * steps + 2  # stopped at the first bad step

    ckpt = read_checkpoint(last)
    assert ckpt.epoch == 1
    assert all(torch.isfinite(v).all() for v in ckpt.state_dict.values() if v.is_floating_point())


def test_divergence_in_the_first_epoch_says_there_is_no_checkpoint(tmp_path, splits):
    out = tmp_path / "run"
    with pytest.raises(TrainingDivergedError, match="no checkpoint"):
        pretrain(small_config(out, "optim.base_lr=1.0e+30"), splits=splits)
    assert not (out / "checkpoints" / "last.ckpt").exists()


# --------------------------------------------------------------------------------------------
# Bad checkpoints
# --------------------------------------------------------------------------------------------
def test_truncated_checkpoint_raises_checkpoint_error(trained, tmp_path, splits):
    _, out, _ = trained
    data = (out / "checkpoints" / "last.ckpt").read_bytes()
    bad = tmp_path / "truncated.ckpt"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_checkpoint(bad)
    new_out = tmp_path / "resumed"
    with pytest.raises(CheckpointError, match=str(bad)):
        pretrain(small_config(new_out, "train.epochs=2"), resume=str(bad), splits=splits)
    assert not (new_out / "checkpoints").exists()


def test_random_bytes_checkpoint_raises_checkpoint_error(tmp_path, splits):
    bad = tmp_path / "random.ckpt"
    bad.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    with pytest.raises(CheckpointError):
        pretrain(small_config(tmp_path / "run", "train.epochs=2"), resume=str(bad), splits=splits)


def test_missing_and_foreign_checkpoints_raise(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "nope.ckpt")
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path)  # a folder without checkpoints/last.ckpt
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not a siamkit checkpoint"):
        read_checkpoint(foreign)


@pytest.mark.parametrize(
    "change", ["backbone.width=0.5", "method.proj_dim=32", "method.predictor=none"]
)
def test_resume_with_a_different_architecture_raises(trained, tmp_path, splits, change):
    _, out, _ = trained
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    with pytest.raises(CheckpointError, match=r"different (backbone|method)"):
        pretrain(small_config(copy, "train.epochs=2", change), resume=str(copy), splits=splits)
    assert read_checkpoint(copy).epoch == 1  # untouched


# --------------------------------------------------------------------------------------------
# A backbone module of the user's own, and timm ViTs
# --------------------------------------------------------------------------------------------
class UserBackbone(nn.Module):
    """Meets the encoder contract without subclassing siamkit's Encoder."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.num_features = width

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean(dim=(2, 3))


TINY_VIT = [
    "backbone.name=timm/vit_tiny_patch16_224",
    "backbone.width=1",  # SMALL's 0.25 is for siamkit's own backbones
    "backbone.timm_kwargs={img_size: 16, patch_size: 4, embed_dim: 32, depth: 1, num_heads: 2}",
]


@pytest.fixture(scope="module")
def module_run(tmp_path_factory, splits):
    """A 1-epoch run of a UserBackbone passed to pretrain."""
    out = tmp_path_factory.mktemp("module") / "run"
    torch.manual_seed(0)
    module = UserBackbone()
    initial = {k: v.clone() for k, v in module.state_dict().items()}
    result = pretrain(small_config(out), splits=splits, backbone=module)
    return out, module, initial, result


def test_a_module_backbone_is_trained_in_place_and_recorded_by_its_class(module_run):
    out, module, initial, result = module_run
    assert result.epochs == 1 and result.checkpoint
    ckpt = read_checkpoint(out)
    assert ckpt.config.backbone == BackboneConfig(name=f"custom/{__name__}.UserBackbone")
    now = module.state_dict()
    for key, value in now.items():  # the module passed holds the checkpoint's weights
        torch.testing.assert_close(value, ckpt.state_dict[f"method.backbone.{key}"])
    assert not torch.equal(now["body.0.weight"], initial["body.0.weight"])


def test_a_module_backbone_checkpoint_loads_only_into_a_module(module_run):
    out, module, _, _ = module_run
    with pytest.raises(CheckpointError, match=r"UserBackbone\).*backbone=module"):
        load_method(out)
    _, backbone = load_backbone(out, backbone=UserBackbone())
    x = torch.randn(4, 3, 16, 16)
    module.eval()
    with torch.no_grad():
        torch.testing.assert_close(backbone.forward_features(x), module.forward_features(x))
    with pytest.raises(CheckpointError, match="does not match the backbone module passed"):
        load_backbone(out, backbone=UserBackbone(width=4))
    with pytest.raises(CheckpointError, match="has no int num_features"):
        load_backbone(out, backbone=nn.Conv2d(3, 8, 3))


@pytest.mark.filterwarnings("ignore:The dirpath has changed")  # the copied run folder
def test_a_module_backbone_run_resumes_with_a_module_of_its_class(module_run, tmp_path, splits):
    out, *_ = module_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    resumed = pretrain(
        small_config(copy, "train.epochs=2"),
        resume=str(copy),
        splits=splits,
        backbone=UserBackbone(),
    )
    assert resumed.epochs == 2 and read_checkpoint(copy).epoch == 2
    other = as_encoder(nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()), 8)
    with pytest.raises(CheckpointError, match="different backbone"):
        pretrain(
            small_config(copy, "train.epochs=3"), resume=str(copy), splits=splits, backbone=other
        )


def test_a_backbone_breaking_the_contract_stops_the_run_before_it_starts(tmp_path, splits):
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"Conv2d has no int num_features.*as_encoder"):
        pretrain(small_config(out), splits=splits, backbone=nn.Conv2d(3, 8, 3))
    pytest.importorskip("timm")
    fixed = [TINY_VIT[0], TINY_VIT[1].replace("img_size: 16", "img_size: 32")]
    with pytest.raises(ConfigError, match=r"failed on a \(2, 3, 16, 16\) batch.*16-px"):
        pretrain(small_config(out, *fixed), splits=splits)
    assert not out.exists()


def test_a_frozen_patch_projection_stays_at_its_initialisation(tmp_path, splits):
    """MoCo v3 with a frozen random patch projection: AdamW with weight decay moves every other
    weight; the projection, in the online and the momentum encoder, keeps its seeded init."""
    pytest.importorskip("timm")
    out = tmp_path / "run"
    options = ["method.name=moco_v3", "optim.optimizer=adamw", "optim.weight_decay=0.1"]
    cfg = small_config(out, *TINY_VIT, "backbone.freeze_patch_embed=true", *options)
    torch.manual_seed(cfg.train.seed)  # pretrain seeds, then builds the backbone first
    initial = create_backbone(cfg.backbone).state_dict()
    pretrain(
        dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_steps=3)), splits=splits
    )
    state = read_checkpoint(out).state_dict
    for encoder in ("backbone", "key_backbone"):
        for name in ("weight", "bias"):
            key = f"model.patch_embed.proj.{name}"
            torch.testing.assert_close(
                state[f"method.{encoder}.{key}"], initial[key], rtol=0, atol=0
            )
        qkv = "model.blocks.0.attn.qkv.weight"
        assert not torch.equal(state[f"method.{encoder}.{qkv}"], initial[qkv])


@pytest.mark.parametrize(("overrides", "channels_last"), [([], True), (TINY_VIT, False)])
def test_channels_last_auto_is_off_for_a_vit(tmp_path, overrides, channels_last):
    from siamkit.methods import create_method
    from siamkit.train.loop import PretrainModule

    if overrides:
        pytest.importorskip("timm")
    cfg = small_config(tmp_path, *overrides)
    method = create_method(create_backbone(cfg.backbone), cfg.method)
    assert PretrainModule(cfg, method, steps_per_epoch=1).channels_last is channels_last


def test_the_random_init_knn_is_read_once_per_memo_for_the_same_weights(monkeypatch, splits):
    """An experiment's cells share their random init: with one RandomInitKNN its kNN is read
    once, keyed by the weights (a copy hits, a changed weight misses) and the data; a fresh
    memo reads it again."""
    from types import SimpleNamespace

    from siamkit.train import pretraining

    reads: list[nn.Module] = []

    def fake_knn(backbone: nn.Module, *args: object, **kwargs: object) -> float:
        reads.append(backbone)
        return float(len(reads))

    monkeypatch.setattr(pretraining, "knn_top1", fake_knn)
    memo = pretraining.RandomInitKNN()
    cfg = small_config(Path("unused"))
    monitor = SimpleNamespace(channels_last=False)
    torch.manual_seed(0)
    trained, initial = create_backbone(cfg.backbone), create_backbone(cfg.backbone)
    same = copy.deepcopy(initial)
    # Each read returns its rank: (trained, random init); the random init is read first.
    assert pretraining.final_knn(trained, initial, splits, cfg, monitor, memo) == (2.0, 1.0)
    assert pretraining.final_knn(trained, same, splits, cfg, monitor, memo) == (3.0, 1.0)
    assert reads == [initial, trained, trained]
    with torch.no_grad():
        next(same.parameters()).add_(1.0)
    assert pretraining.final_knn(trained, same, splits, cfg, monitor, memo) == (5.0, 4.0)
    other_k = small_config(Path("unused"), "train.knn_k=5")
    assert pretraining.final_knn(trained, initial, splits, other_k, monitor, memo) == (7.0, 6.0)
    fresh = pretraining.RandomInitKNN()
    assert pretraining.final_knn(trained, initial, splits, cfg, monitor, fresh) == (9.0, 8.0)
