"""The one training loop, for every method, on PyTorch Lightning.

Per step: (1) uint8 images arrive on the device; (2) the view recipe makes ``num_views`` batched
views; (3-5) the method encodes them, extracts representations, compares them and returns its
loss; (6) the optimiser steps; (7) the method updates its per-step state (EMA, queues).
Methods supply the step; the loop owns precision, memory format, schedule, logging, checkpoints,
resume and the monitors.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.strategies import DDPStrategy

from siamkit.config import RunConfig, TrainConfig, to_dict
from siamkit.data.augment import BatchViews
from siamkit.data.datasets import Batch, ImageSet, Splits, as_batch, batch_dataset, load_splits
from siamkit.encoders import create_backbone
from siamkit.errors import ConfigError, DataError, TrainingDivergedError
from siamkit.eval.features import extract_features
from siamkit.eval.online_probe import OnlineLinearProbe
from siamkit.methods import METHODS, create_method
from siamkit.train.callbacks import CollapseMonitor, KNNMonitor, Throughput
from siamkit.train.checkpoint import CONFIG_KEY, read_checkpoint
from siamkit.train.cpu_conv import cpu_has_amx, patch_conv_helps, use_patch_grad_convs
from siamkit.train.schedules import build_optimizer


def fast_bf16_available(device_type: str) -> bool:
    """Whether bf16 autocast is faster than fp32 here (AMX/AVX512-BF16 CPUs, Ampere+ GPUs)."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    cpu = torch.backends.cpu
    capability = cpu.get_cpu_capability() if hasattr(cpu, "get_cpu_capability") else ""
    amx = cpu_has_amx()
    avx512_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
    return bool(amx or avx512_bf16) and capability != "DEFAULT"


def resolve_precision(cfg: RunConfig, device_type: str) -> str:
    """The Lightning precision string for ``train.precision``."""
    if cfg.train.precision != "auto":
        return cfg.train.precision
    return "bf16-mixed" if fast_bf16_available(device_type) else "32-true"


class PretrainModule(L.LightningModule):
    """Wraps any registered method for the Lightning trainer.

    Args:
        cfg: The run config.
        steps_per_epoch: Optimiser steps per epoch (for the schedule).
        num_classes: Classes of the online linear probe (``train.online_probe``).
    """

    def __init__(self, cfg: RunConfig, steps_per_epoch: int, num_classes: int = 0) -> None:
        super().__init__()
        self.cfg = cfg
        self.method = create_method(create_backbone(cfg.backbone), cfg.method)
        # One batched view recipe per view (the method derives them from the run's recipe).
        self.views = [BatchViews(recipe) for recipe in self.method.view_recipes(cfg.augment)]
        # Same convolutions, faster weight gradient for small maps on AMX CPUs (see cpu_conv).
        if patch_conv_helps(cfg.train.patch_conv):
            use_patch_grad_convs(self.method)
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = steps_per_epoch * cfg.train.epochs
        self.channels_last = cfg.train.channels_last != "off"
        if self.channels_last:
            self.method.to(memory_format=torch.channels_last)
        if cfg.train.compile:
            self.method.backbone.compile()
        # Outside the method and its optimiser: the probe only reads detached features.
        self.probe: OnlineLinearProbe | None = None
        if cfg.train.online_probe:
            width = int(self.method.backbone.num_features)  # type: ignore[arg-type]
            self.probe = OnlineLinearProbe(width, num_classes, cfg.train.online_probe_lr)

    def training_step(self, batch: Batch, idx: int) -> dict[str, Any]:
        images, labels, indices = batch  # (B, 3, H, W) uint8; (B,) labels (-1: none), positions
        # 1. Views, in fp32 whatever the autocast.
        with torch.autocast(images.device.type, enabled=False):
            views = [make_view(images) for make_view in self.views]
        if self.channels_last:
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        # 2-5. Encode, project/predict, compare, loss: the method's step.
        out: dict[str, Any] = self.method.training_step(views, indices)
        loss = out["loss"]
        if not torch.isfinite(loss.detach()):
            raise TrainingDivergedError(
                f"the loss became {loss.item()} at epoch {self.current_epoch + 1}, step "
                f"{self.global_step}; training stopped"
            )
        self.log("train/loss", loss, prog_bar=True)
        if self.probe is not None:
            self._update_probe(views[0], labels)
        return out

    def _update_probe(self, view: torch.Tensor, labels: torch.Tensor) -> None:
        """One step of the online probe on backbone features of ``view`` (eval mode, no grad)."""
        backbone = self.method.backbone
        backbone.eval()  # running statistics, as at evaluation; BN buffers stay untouched
        with torch.no_grad():
            h = backbone.forward_features(view)  # type: ignore[operator]
        backbone.train()
        stats = self.probe.update(h, labels)  # type: ignore[union-attr]
        if stats:
            self.log("train/online_probe_loss", stats["loss"], on_step=False, on_epoch=True)
            self.log("train/online_probe_top1", stats["top1"], on_step=False, on_epoch=True)

    def on_train_start(self) -> None:
        if self.trainer.world_size > 1 and self.trainer.is_global_zero:
            # Say which BatchNorm the run really has (Lightning converts it for sync_batchnorm).
            n_sync = sum(isinstance(m, torch.nn.SyncBatchNorm) for m in self.method.modules())
            mode = "synchronised across processes" if n_sync else "per process"
            print(f"siamkit: BatchNorm {mode} ({n_sync} SyncBatchNorm layers)", file=sys.stderr)

    def on_train_epoch_start(self) -> None:
        self.method.on_epoch_start(self.current_epoch)

    def on_train_batch_end(self, outputs: Any, batch: Any, idx: int) -> None:
        # 7. Per-step state of the method (EMA targets, queues), with progress in [0, 1].
        self.method.on_step_end(self.global_step / max(1, self.total_steps))

    def configure_optimizers(self) -> Any:
        warmup = round(self.cfg.optim.warmup_epochs * self.steps_per_epoch)
        optimizer, scheduler = build_optimizer(
            self.method.param_groups(),
            self.cfg.optim,
            self.total_steps,
            warmup,
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CONFIG_KEY] = to_dict(self.cfg)


@dataclass
class PretrainResult:
    """What a pretraining run produced.

    Attributes:
        output_dir: The run folder.
        checkpoint: Path of the last checkpoint.
        epochs: Epochs completed.
        knn_top1: Final kNN top-1 (%) on the held-out split (``None`` without labels).
        random_init_knn_top1: The same for the backbone at its random initialisation.
        collapse_std: Final collapse metric (about 1 healthy, 0 collapsed).
        collapse_threshold: Below this the run is reported as collapsing.
        images_per_sec: Training throughput of the last epoch.
        knn_history: ``(epoch, top-1)`` of the monitor.
        online_probe_top1: Held-out top-1 (%) of the online linear probe, if it was on.
    """

    output_dir: str
    checkpoint: str | None
    epochs: int
    knn_top1: float | None = None
    random_init_knn_top1: float | None = None
    collapse_std: float | None = None
    collapse_threshold: float = TrainConfig.collapse_threshold
    images_per_sec: float | None = None
    minutes: float = 0.0
    knn_history: list[tuple[int, float]] = field(default_factory=list)
    online_probe_top1: float | None = None


def _monitor_splits(splits: Splits, cfg: RunConfig) -> tuple[ImageSet, ImageSet] | None:
    """Bank and queries of the kNN monitor (subsampled with a fixed seed if configured)."""
    train, test = splits.train, splits.test
    if train.labels is None or test is None or test.labels is None:
        return None
    g = torch.Generator().manual_seed(0)

    def sub(s: ImageSet, n: int) -> ImageSet:
        return s if n <= 0 or n >= len(s) else s.subset(torch.randperm(len(s), generator=g)[:n])

    return sub(train, cfg.train.knn_bank_size), sub(test, cfg.train.knn_query_size)


def pretrain(
    cfg: RunConfig,
    resume: str | None = None,
    splits: Splits | None = None,
    overwrite: bool = False,
) -> PretrainResult:
    """Pretrain ``cfg.method`` on ``cfg.data``, then evaluate by kNN against random init.

    Args:
        cfg: A validated run config.
        resume: A checkpoint (or run folder) to resume from.
        splits: Already loaded data (default: load ``cfg.data``).
        overwrite: Delete the checkpoints of an earlier run in ``train.output_dir`` first;
            without it (and without ``resume``) such a folder is an error, so nothing is lost.

    Returns:
        Figures of the run; ``results.json`` in the run folder holds the same.

    Raises:
        DataError: Data problems (missing, empty, fewer images than one batch).
        CheckpointError: ``resume`` cannot be read or belongs to another model.
        TrainingDivergedError: The loss became NaN/inf (the last good checkpoint is kept).
    """
    start = time.perf_counter()
    on_gpu = cfg.train.accelerator in ("gpu", "cuda") or (
        cfg.train.accelerator == "auto" and torch.cuda.is_available()
    )
    if cfg.train.sync_batchnorm and not on_gpu:
        raise ConfigError(
            "train.sync_batchnorm needs GPUs (PyTorch's SyncBatchNorm has no CPU kernel); on "
            "CPU processes leave it off (BatchNorm per process), or use moco_v2's bn: shuffle"
        )
    resume_path = read_checkpoint(resume, expect=cfg).path if resume else None
    splits = splits or load_splits(cfg.data)
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    out_dir = Path(cfg.train.output_dir)
    ckpt_dir = out_dir / "checkpoints"
    old = sorted(ckpt_dir.glob("*.ckpt")) if ckpt_dir.is_dir() else []
    if old and not resume:
        if not overwrite:
            raise ConfigError(
                f"run folder {str(out_dir)!r} already holds checkpoints of an earlier run; "
                f"continue it with --resume {out_dir}, choose another --output, or pass "
                "--overwrite to replace it"
            )
        for f in old:
            f.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(_yaml(to_dict(cfg)))

    accelerator = cfg.train.accelerator
    device_type = (
        "cuda"
        if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
        else "cpu"
    )
    precision = resolve_precision(cfg, device_type)
    collapse = CollapseMonitor(cfg.train.collapse_threshold)
    throughput = Throughput()
    checkpoints = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="epoch{epoch:03d}",
        auto_insert_metric_name=False,
        every_n_epochs=1,
        save_last=True,
        save_top_k=2,  # the two newest epochs, so one good file survives an interrupted write
        monitor="step",
        mode="max",
    )
    callbacks: list[L.Callback] = [collapse, throughput, checkpoints]
    monitor_data = _monitor_splits(splits, cfg)
    knn: KNNMonitor | None = None
    if monitor_data and cfg.train.knn_every:
        knn = KNNMonitor(
            *monitor_data,
            cfg.augment,
            cfg.train.knn_k,
            cfg.train.knn_temperature,
            cfg.train.knn_every,
            bf16=precision == "bf16-mixed",
            channels_last=cfg.train.channels_last != "off",
        )
        callbacks.insert(0, knn)
    if cfg.train.progress_bar:
        callbacks.append(TQDMProgressBar(refresh_rate=1))

    strategy: str | DDPStrategy = cfg.train.strategy
    if strategy == "ddp":
        strategy = DDPStrategy(
            # SwAV's prototypes get no gradient while frozen
            find_unused_parameters=getattr(
                METHODS[cfg.method.name].build, "skips_parameters", False
            ),
            # Per-step state (queues, per-image targets) is updated identically on every
            # process from gathered tensors; broadcasting it from rank 0 each step would only
            # cost time (10 GB a step for SimSiam's moving-average table on ImageNet).
            broadcast_buffers=False,
            timeout=timedelta(minutes=30),
        )
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=cfg.train.devices if cfg.train.devices == "auto" else int(cfg.train.devices),
        strategy=strategy,
        precision=precision,  # type: ignore[arg-type]
        max_epochs=cfg.train.epochs,
        max_time=timedelta(minutes=cfg.train.max_minutes) if cfg.train.max_minutes else None,
        sync_batchnorm=cfg.train.sync_batchnorm,
        callbacks=callbacks,
        logger=[
            CSVLogger(str(out_dir), name="", version=""),
            TensorBoardLogger(str(out_dir), name="tensorboard", version=""),
        ],
        log_every_n_steps=cfg.train.log_every_n_steps,
        enable_progress_bar=cfg.train.progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic=False,
    )
    world = trainer.world_size
    per_device = cfg.optim.batch_size // world
    steps_per_epoch = len(splits.train) // (per_device * world)
    if per_device < 2:
        raise DataError(
            f"batch size {cfg.optim.batch_size} over {world} processes leaves {per_device} image "
            "per process; BatchNorm needs at least 2: raise --batch-size"
        )
    if steps_per_epoch < 1:
        raise DataError(
            f"only {len(splits.train)} training images, fewer than one batch of "
            f"{cfg.optim.batch_size}; lower --batch-size or add images"
        )
    num_classes = 0
    if cfg.train.online_probe:
        if splits.train.labels is None:
            raise DataError(
                "train.online_probe needs labelled training images (root/<class>/* or a "
                "labelled dataset); turn it off for unlabelled data"
            )
        num_classes = int(splits.train.labels.max()) + 1
    module = PretrainModule(cfg, steps_per_epoch, num_classes)
    module.method.setup(len(splits.train))
    random_init = copy.deepcopy(module.method.backbone).cpu()  # kNN baseline at random init
    loader = torch.utils.data.DataLoader(
        batch_dataset(splits.train),
        batch_size=per_device,
        shuffle=True,
        drop_last=True,
        num_workers=0,  # the data are already decoded tensors in memory
        collate_fn=as_batch,  # type: ignore[arg-type]
    )
    if trainer.is_global_zero:
        n_params = sum(p.numel() for p in module.parameters())
        print(
            f"siamkit: {cfg.method.name} | {cfg.backbone.name} (width {cfg.backbone.width}"
            f"{', CIFAR stem' if cfg.backbone.cifar_stem else ''}) {n_params / 1e6:.1f}M params"
            f" | {len(splits.train)} images, batch {cfg.optim.batch_size}, lr {cfg.optim.lr:g}"
            f" | {cfg.train.epochs} epochs | {precision} on {device_type} x{world}"
            f" | run folder {out_dir}",
            file=sys.stderr,
        )
    try:
        trainer.fit(module, train_dataloaders=loader, ckpt_path=resume_path)
    except TrainingDivergedError as err:
        last = ckpt_dir / "last.ckpt"
        hint = (
            f"the last good checkpoint is {last}; resume with `siamkit pretrain ... --resume "
            f"{last}` and a lower learning rate (--set optim.base_lr=...)"
            if last.is_file()
            else "no epoch had finished, so there is no checkpoint; lower the learning rate "
            "(--set optim.base_lr=...) and start again"
        )
        raise TrainingDivergedError(f"{err}; {hint}") from None

    result = PretrainResult(
        output_dir=str(out_dir),
        checkpoint=str(ckpt_dir / "last.ckpt") if (ckpt_dir / "last.ckpt").is_file() else None,
        epochs=trainer.current_epoch,
        collapse_std=collapse.last,
        collapse_threshold=cfg.train.collapse_threshold,
        images_per_sec=throughput.last,
        knn_history=knn.history if knn else [],
    )
    if knn is not None and trainer.is_global_zero:
        # Final figures on the whole held-out split, against the same encoder at random init.
        final = KNNMonitor(
            splits.train,
            splits.test,  # type: ignore[arg-type]
            cfg.augment,
            cfg.train.knn_k,
            cfg.train.knn_temperature,
            bf16=knn.bf16,
            channels_last=knn.channels_last,
        )
        result.knn_top1 = final.evaluate(module.method.backbone)
        result.random_init_knn_top1 = final.evaluate(random_init.to(module.device))
    test = splits.test
    if module.probe is not None and trainer.is_global_zero and test and test.labels is not None:
        h = extract_features(module.method.backbone, test.images, cfg.augment)
        result.online_probe_top1 = module.probe.cpu().accuracy(h, test.labels)
    result.minutes = (time.perf_counter() - start) / 60
    if trainer.is_global_zero:
        (out_dir / "results.json").write_text(json.dumps(result.__dict__, indent=2) + "\n")
    return result


def _yaml(tree: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(tree, sort_keys=False)


def format_result(result: PretrainResult) -> str:
    """Human summary of a run, as the CLI prints it."""
    lines = [f"epochs: {result.epochs}   time: {result.minutes:.1f} min"]
    if result.images_per_sec:
        lines[0] += f"   throughput: {result.images_per_sec:.0f} images/s"
    if result.collapse_std is not None:
        state = "collapsing" if result.collapse_std < result.collapse_threshold else "healthy"
        lines.append(f"collapse metric (std x sqrt(d)): {result.collapse_std:.3f} ({state})")
    if result.knn_top1 is not None and result.random_init_knn_top1 is not None:
        lines.append(
            f"kNN top-1: {result.knn_top1:.2f}% trained | {result.random_init_knn_top1:.2f}% "
            f"random init | {result.knn_top1 - result.random_init_knn_top1:+.2f} points"
        )
    if result.online_probe_top1 is not None:
        lines.append(f"online linear probe top-1: {result.online_probe_top1:.2f}% (held-out)")
    if result.checkpoint:
        lines.append(f"checkpoint: {result.checkpoint}")
    return "\n".join(lines)
