"""The one training loop, for every method, on PyTorch Lightning.

Per step: (1) a batch arrives on the device: whole uint8 images (memory storage) or uint8 view
crops cut by DataLoader workers (stream, shards); (2) the view recipe finishes ``num_views``
batched views; (3-5) the method encodes them, extracts representations, compares them and
returns its loss; (6) the optimiser steps; (7) the method updates its per-step state (EMA,
queues). Methods supply the step; the loop owns precision, memory format, schedule, logging,
checkpoints, resume and the monitors.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import nn

from siamkit import runtime
from siamkit.checkpoints import CONFIG_KEY, read_checkpoint
from siamkit.config import BackboneConfig, RunConfig
from siamkit.data.datasets import Splits, load_splits
from siamkit.data.loader import Batch, ImageData
from siamkit.data.splits import labels_hash
from siamkit.data.views import Views
from siamkit.encoders import check_encoder, create_backbone, custom_backbone_name
from siamkit.errors import DataError, TrainingDivergedError, TrainingInterrupted
from siamkit.eval.features import extract_features
from siamkit.eval.knn import knn_top1
from siamkit.eval.online_probe import OnlineLinearProbe
from siamkit.methods import METHODS, Method, create_method
from siamkit.safe_io import atomic_write_text
from siamkit.strict import flat_dict, to_dict
from siamkit.train.callbacks import CollapseMonitor, KNNMonitor, Throughput, mi_monitor
from siamkit.train.cpu_conv import patch_conv_helps, use_patch_grad_convs
from siamkit.train.engine import (
    EngineSettings,
    TrainData,
    build_trainer,
    check_run_output,
    prepare_run_folder,
)
from siamkit.train.results import PretrainResult
from siamkit.train.resume import LAST, RunLock, resume_changes
from siamkit.train.schedules import StepSchedule, build_optimizer
from siamkit.train.step_checks import StepChecks


class PretrainModule(L.LightningModule):
    """Wraps a method for the Lightning trainer.

    Args:
        cfg: The run config.
        method: The method, built once by the caller (its backbone included).
        steps_per_epoch: Optimiser steps per epoch (an estimate; the loader's real length is
            taken once training starts).
        num_classes: Classes of the online linear probe (``train.online_probe``).
        data: The training images (to name unreadable files in messages).
    """

    def __init__(
        self,
        cfg: RunConfig,
        method: Method,
        steps_per_epoch: int,
        num_classes: int = 0,
        data: ImageData | None = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.method = method
        self.data = data
        # One batched view recipe per view (the method derives them from the run's recipe).
        self.views = Views(method.view_recipes(cfg.augment))
        # Same convolutions, faster weight gradient for small maps on AMX CPUs (see cpu_conv).
        if patch_conv_helps(cfg.train.patch_conv):
            use_patch_grad_convs(self.method)
        warmup = round(cfg.optim.warmup_epochs * steps_per_epoch)
        self.schedule = StepSchedule(self.total_steps_for(steps_per_epoch), warmup)
        self.channels_last = runtime.use_channels_last(cfg.train.channels_last, method.backbone)
        if self.channels_last:
            self.method.to(memory_format=torch.channels_last)
        if cfg.train.compile:
            self.method.backbone.compile()
        # Outside the method and its optimiser: the probe only reads detached features.
        self.probe: OnlineLinearProbe | None = None
        if cfg.train.online_probe:
            width = int(self.method.backbone.num_features)
            self.probe = OnlineLinearProbe(width, num_classes, cfg.train.online_probe_lr)
        describe = data.describe if data is not None else None
        self.checks = StepChecks(cfg.data.strict, steps_per_epoch, describe)
        #: Settings changed on resume (from :func:`~siamkit.train.resume.resume_changes`).
        self.resumed_with: list[str] = []

    def total_steps_for(self, steps_per_epoch: int) -> int:
        """Optimiser steps of the run for ``steps_per_epoch`` (``train.max_steps`` caps it)."""
        total = steps_per_epoch * self.cfg.train.epochs
        return min(total, self.cfg.train.max_steps) if self.cfg.train.max_steps else total

    def training_step(self, batch: Batch, idx: int) -> dict[str, Any]:
        """Views, the method's step and its loss, checked (on every process) for NaN/inf."""
        self.checks.note_batch(batch)  # a problem is raised after the loss, on every process
        # 1. Views, in fp32 whatever the autocast: (B, 3, S_v, S_v) per view.
        with torch.autocast(batch.labels.device.type, enabled=False):
            views = self.views(batch.images)
        if self.channels_last:
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        # 2-5. Encode, project/predict, compare, loss: the method's step.
        out: dict[str, Any] = self.method.training_step(views, batch.indices)
        loss = out["loss"]
        self.checks.stop_if_any(loss, self.current_epoch + 1, self.global_step)
        self.log("train/loss", loss, prog_bar=True)
        for key, value in out.items():  # a method's own scalars, e.g. MINE's bound "mi"
            if key != "loss" and isinstance(value, torch.Tensor) and value.ndim == 0:
                self.log(f"train/{key}", value)
        if self.probe is not None:
            self._update_probe(views[0], batch.labels)
        return out

    def _update_probe(self, view: torch.Tensor, labels: torch.Tensor) -> None:
        """One step of the online probe on backbone features of ``view`` (eval mode, no grad)."""
        backbone = self.method.backbone
        backbone.eval()  # running statistics, as at evaluation; BN buffers stay untouched
        with torch.no_grad():
            h = backbone.forward_features(view)
        backbone.train()
        stats = self.probe.update(h, labels)  # type: ignore[union-attr]
        if stats:
            self.log("train/online_probe_loss", stats["loss"], on_step=False, on_epoch=True)
            self.log("train/online_probe_top1", stats["top1"], on_step=False, on_epoch=True)

    def on_train_start(self) -> None:
        """Take the loader's real length for the schedule; say which BatchNorm runs."""
        # The loader's real length (litdata's per-rank split may drop a few batches).
        batches = self.trainer.num_training_batches
        if isinstance(batches, int) and batches > 0:
            self.schedule.total_steps = self.total_steps_for(batches)
            self.schedule.warmup_steps = round(self.cfg.optim.warmup_epochs * batches)
        if self.resumed_with:
            self._apply_optimiser_settings()
        if self.trainer.world_size > 1 and self.trainer.is_global_zero:
            # Say which BatchNorm the run really has (Lightning converts it for sync_batchnorm).
            n_sync = sum(isinstance(m, torch.nn.SyncBatchNorm) for m in self.method.modules())
            mode = "synchronised across processes" if n_sync else "per process"
            print(f"siamkit: BatchNorm {mode} ({n_sync} SyncBatchNorm layers)", file=sys.stderr)

    def _apply_optimiser_settings(self) -> None:
        """A resumed run trains on with this config's learning rate and weight decay.

        The optimiser and schedule come back from the checkpoint with the saved run's values;
        here the schedule's base learning rate and every group's weight decay are set from
        ``optim``, and the next step's rate follows the schedule from the saved step on.
        """
        optimizer = self.optimizers(use_pl_optimizer=False)
        scheduler = self.lr_schedulers()
        assert isinstance(optimizer, torch.optim.Optimizer) and scheduler is not None
        lr, decay = self.cfg.optim.lr, self.cfg.optim.weight_decay
        scheduler.base_lrs = [lr] * len(optimizer.param_groups)  # type: ignore[union-attr]
        lambdas = scheduler.lr_lambdas  # type: ignore[union-attr]
        step = scheduler.last_epoch  # type: ignore[union-attr]
        for group, factor in zip(optimizer.param_groups, lambdas, strict=True):
            group["initial_lr"] = lr
            group["lr"] = lr * factor(step)
            group["weight_decay"] = decay

    def on_train_epoch_start(self) -> None:
        """The method's per-epoch state."""
        self.method.on_epoch_start(self.current_epoch)

    def on_train_epoch_end(self) -> None:
        """Warn about the epoch's unreadable images."""
        if self.checks.unreadable and self.trainer.is_global_zero:
            warnings.warn(
                f"{self.checks.unreadable} unreadable image(s) were skipped in epoch "
                f"{self.current_epoch + 1} (another image of the batch stood in); use --strict "
                "to make this an error",
                stacklevel=1,
            )
        self.checks.unreadable = 0

    def on_train_batch_end(self, outputs: Any, batch: Any, idx: int) -> None:
        """Step 7: the method's per-step state."""
        # 7. Per-step state of the method (EMA targets, queues), with progress in [0, 1].
        self.method.on_step_end(self.global_step / max(1, self.schedule.total_steps))

    def configure_optimizers(self) -> Any:
        """The method's optimiser with the per-step schedule."""
        optimizer, scheduler = build_optimizer(
            self.method.param_groups(), self.cfg.optim, self.schedule
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the run config, so that the checkpoint can be read on its own."""
        checkpoint[CONFIG_KEY] = to_dict(self.cfg)


def pretrain(
    cfg: RunConfig,
    resume: str | None = None,
    splits: Splits | None = None,
    overwrite: bool = False,
    backbone: nn.Module | None = None,
) -> PretrainResult:
    """Pretrain ``cfg.method`` on ``cfg.data``, then evaluate by kNN against random init.

    Args:
        cfg: A validated run config.
        resume: A checkpoint (or run folder) to resume from.
        splits: Already loaded data (default: load ``cfg.data``).
        overwrite: Delete the checkpoints of an earlier run in ``train.output_dir`` first;
            without it (and without ``resume``) such a folder is an error, so nothing is lost.
        backbone: Train this module instead of building ``cfg.backbone``: any ``nn.Module``
            with an int ``num_features`` and ``forward_features(x) -> (B, num_features)``
            (:func:`siamkit.encoders.as_encoder` adapts timm and torchvision models). It is
            trained in place; the run records it as ``backbone.name: custom/<module>.<class>``,
            so reading the checkpoint back (``load_method``, ``resume``) needs a module of the
            same class again. The "random init" kNN baseline is the module as it was passed.

    Returns:
        Figures of the run; ``results.json`` in the run folder holds the same.

    Raises:
        ConfigError: Settings this machine cannot run (a GPU where there is none, SyncBatchNorm
            on CPU processes), or a backbone that breaks the encoder contract.
        DataError: Data problems (missing, empty, fewer images than one batch).
        CheckpointError: ``resume`` cannot be read or belongs to another model.
        TrainingDivergedError: The loss became NaN/inf (the last good checkpoint is kept).
    """
    start = time.perf_counter()
    # 1. The machine, the backbone module and the checkpoint to resume: everything is checked
    #    before anything in the run folder is touched (--overwrite removes nothing when a flag
    #    is wrong).
    given, recipe_backbone = None, cfg.backbone
    if backbone is not None:
        sizes = (cfg.augment.size, cfg.augment.effective_eval_size)
        given = check_encoder(backbone, sizes)
        custom = BackboneConfig(name=custom_backbone_name(backbone))
        cfg = dataclasses.replace(cfg, backbone=custom)
    train = cfg.train
    skips = getattr(METHODS[cfg.method.name].build, "skips_parameters", False)
    settings = EngineSettings.of_pretraining(train, skips, hparams=flat_dict(cfg))
    settings.check()
    check_run_output(Path(train.output_dir), cfg.data)
    checkpoint = read_checkpoint(resume, expect=cfg) if resume else None
    changes = resume_changes(checkpoint.config, cfg) if checkpoint else []
    settings.resume_step = checkpoint.global_step if checkpoint else None

    # 2. The data, in the storage data.storage picks.
    processes = runtime.local_processes(train.accelerator, train.devices)
    splits = splits or load_splits(cfg.data, processes)

    # 3. The method, built once; a copy of its backbone is the random-init baseline.
    L.seed_everything(train.seed, workers=True, verbose=False)
    method = create_method(create_backbone(cfg.backbone) if given is None else given, cfg.method)
    # Every view size and the evaluation size reach the backbone (a ViT's img_size is fixed).
    view_sizes = [r.size for r in method.view_recipes(cfg.augment)]
    check_encoder(method.backbone, (*view_sizes, cfg.augment.effective_eval_size))
    method.setup(len(splits.train))
    random_init = copy.deepcopy(method.backbone)
    channels_last = runtime.use_channels_last(train.channels_last, method.backbone)

    # 4. The trainer and its monitors.
    out_dir = Path(train.output_dir)
    precision = settings.lightning_precision
    knn = _knn_monitor(cfg, precision, splits, channels_last)
    collapse, throughput = CollapseMonitor(train.collapse_threshold), Throughput()
    mi = mi_monitor(cfg, splits)
    monitors: list[L.Callback] = [m for m in (knn, mi, collapse, throughput) if m is not None]
    trainer = build_trainer(settings, monitors)
    world = trainer.world_size
    per_device = _per_process_batch(cfg, world, len(splits.train))
    num_classes = _probe_classes(cfg, splits)

    # 5. The module and this process's loader.
    module = PretrainModule(
        cfg, method, len(splits.train) // (per_device * world), num_classes, splits.train
    )
    module.resumed_with = changes
    on_gpu = settings.device_type == "cuda"
    data = TrainData(splits.train, module.views.specs, per_device, train.seed, on_gpu)

    # 6. The run folder: locked, then prepared (rank 0; the other ranks write nothing).
    lock = RunLock(out_dir)
    if trainer.is_global_zero:
        lock.acquire()
        try:
            prepare_run_folder(out_dir, resume, overwrite)
        except BaseException:
            lock.release()  # a folder this run may not use stays free for the one that may
            raise
        atomic_write_text(out_dir / "config.yaml", _yaml(to_dict(cfg)), "run config")
        n_params = sum(p.numel() for p in module.parameters())
        print(
            f"siamkit: {cfg.method.name} | {cfg.backbone.describe()} {n_params / 1e6:.1f}M params"
            f" | {len(splits.train)} images, batch {cfg.optim.batch_size}, lr {cfg.optim.lr:g}"
            f" | {train.epochs} epochs | {precision} on {settings.device_type} x{world}"
            f" | run folder {out_dir}\nsiamkit: data {splits.note}",
            file=sys.stderr,
        )
        if given is not None and recipe_backbone not in (BackboneConfig(), cfg.backbone):
            print(
                f"siamkit: the backbone module passed stands in for the config's "
                f"{recipe_backbone.describe()}",
                file=sys.stderr,
            )
        for change in changes:
            print(f"siamkit: resumed with {change}", file=sys.stderr)

    # 7. Train.
    try:
        trainer.fit(module, datamodule=data, ckpt_path=checkpoint.path if checkpoint else None)
    except TrainingDivergedError as err:
        raise TrainingDivergedError(f"{err}; {_diverged_hint(out_dir)}") from None
    except SIGTERMException:
        raise TrainingInterrupted(
            f"stopped at step {trainer.global_step} (SIGTERM or Ctrl-C); the run is saved in "
            f"{out_dir / 'checkpoints' / LAST}: continue it with --resume {out_dir}"
        ) from None
    finally:
        lock.release()

    # 8. Final figures on the whole held-out split, against the same encoder at random init.
    last = out_dir / "checkpoints" / "last.ckpt"
    result = PretrainResult(
        output_dir=str(out_dir),
        checkpoint=str(last) if last.is_file() else None,
        epochs=trainer.current_epoch,
        collapse_std=collapse.last,
        collapse_threshold=train.collapse_threshold,
        images_per_sec=throughput.last,
        data_wait=throughput.data_wait,
        knn_history=knn.history if knn else [],
        mi_history=mi.history if mi else [],
        storage=splits.note,
    )
    if trainer.is_global_zero:
        if knn is not None:
            result.knn_top1, result.random_init_knn_top1 = final_knn(
                method.backbone, random_init.to(module.device), splits, cfg, knn
            )
        test = splits.test
        if module.probe is not None and test is not None and test.labels is not None:
            h = extract_features(method.backbone, test, cfg.augment)
            result.online_probe_top1 = module.probe.cpu().accuracy(h, test.labels)
        result.minutes = (time.perf_counter() - start) / 60
        text = json.dumps(result.__dict__, indent=2) + "\n"
        atomic_write_text(out_dir / "results.json", text, "results")
    result.minutes = (time.perf_counter() - start) / 60
    return result


# The random-init figure of one set of weights on one dataset, read once a process: an
# experiment's cells share their architecture and seed, hence their random init, and this read
# (the whole split in float32) costs as much as the trained one.
_RANDOM_INIT_KNN: dict[tuple[str, ...], float] = {}


def weights_digest(module: nn.Module) -> str:
    """SHA-1 of a module's state (names, dtypes and bytes): equal digests, equal weights."""
    digest = hashlib.sha1()
    for name, tensor in module.state_dict().items():
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{flat.dtype}:".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def final_knn(
    trained: torch.nn.Module,
    random_init: torch.nn.Module,
    splits: Splits,
    cfg: RunConfig,
    monitor: KNNMonitor,
) -> tuple[float, float]:
    """The kNN top-1 (%) of the trained and the random-init backbone.

    On the whole held-out split, with every training image in the bank (streamed, so any size
    fits), in float32 whatever the run's precision: features early in training, and at random
    init, where eval-mode BatchNorm still holds its initial statistics, share one large common
    direction and differ by less than bf16 resolves. On the SimSiam CIFAR-10 CPU recipe
    (2026-12-02, AMD EPYC with AVX-512 BF16) the random-init figure was 14.13% in bf16 against
    30.83% in float32 (the 30-epoch network: 56.87% against 56.90%). The per-epoch monitor keeps
    the run's precision: it draws the curve, not the figure. The random-init figure is read once
    a process for the same weights, data and evaluation settings.
    """
    train, test = splits.train, splits.test
    assert test is not None
    aug = cfg.augment

    def read(backbone: nn.Module) -> float:
        return knn_top1(
            backbone,
            train,
            test,
            aug,
            cfg.train.knn_k,
            cfg.train.knn_temperature,
            bf16=False,
            channels_last=monitor.channels_last,
        )

    key = (
        weights_digest(random_init),
        repr(sorted(flat_dict(cfg.data).items())),
        repr((aug.effective_eval_size, aug.mean, aug.std)),
        repr((len(train), len(test), cfg.train.knn_k, cfg.train.knn_temperature)),
        *(labels_hash(y) if y is not None else "" for y in (train.labels, test.labels)),
    )
    if key not in _RANDOM_INIT_KNN:
        _RANDOM_INIT_KNN[key] = read(random_init)
    return read(trained), _RANDOM_INIT_KNN[key]


def _knn_monitor(
    cfg: RunConfig, precision: str, splits: Splits, channels_last: bool
) -> KNNMonitor | None:
    """The per-epoch kNN monitor on (subsampled, fixed-seed) bank and queries, if labelled."""
    train, test = splits.train, splits.test
    if not cfg.train.knn_every or train.labels is None or test is None or test.labels is None:
        return None
    g = torch.Generator().manual_seed(0)

    def sub(s: ImageData, n: int) -> ImageData:
        return s if n <= 0 or n >= len(s) else s.subset(torch.randperm(len(s), generator=g)[:n])

    return KNNMonitor(
        sub(train, cfg.train.knn_bank_size),
        sub(test, cfg.train.knn_query_size),
        cfg.augment,
        cfg.train.knn_k,
        cfg.train.knn_temperature,
        cfg.train.knn_every,
        bf16=precision == "bf16-mixed",
        channels_last=channels_last,
    )


def _per_process_batch(cfg: RunConfig, world: int, num_images: int) -> int:
    """``optim.batch_size`` split over ``world`` processes, checked against the data."""
    per_device = cfg.optim.batch_size // world
    if per_device < 2:
        raise DataError(
            f"batch size {cfg.optim.batch_size} over {world} processes leaves {per_device} image "
            "per process; BatchNorm needs at least 2: raise --batch-size"
        )
    if num_images // (per_device * world) < 1:
        raise DataError(
            f"only {num_images} training images, fewer than one batch of "
            f"{cfg.optim.batch_size}; lower --batch-size or add images"
        )
    return per_device


def _probe_classes(cfg: RunConfig, splits: Splits) -> int:
    """Classes of the online probe (0 when it is off)."""
    if not cfg.train.online_probe:
        return 0
    if splits.train.labels is None:
        raise DataError(
            "train.online_probe needs labelled training images (root/<class>/* or a "
            "labelled dataset); turn it off for unlabelled data"
        )
    return int(splits.train.labels.max()) + 1


def _diverged_hint(out_dir: Path) -> str:
    last = out_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        return (
            f"the last good checkpoint is {last}; resume with `siamkit pretrain ... --resume "
            f"{last}` and a lower learning rate (--set optim.base_lr=...)"
        )
    return (
        "no epoch had finished, so there is no checkpoint; lower the learning rate "
        "(--set optim.base_lr=...) and start again"
    )


def _yaml(tree: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(tree, sort_keys=False)
