"""Pretraining: one run of a method on the training loop, from config to figures.

:func:`pretrain` names the steps of a run (check, data, method, trainer, run folder, fit,
figures); :class:`~siamkit.train.loop.PretrainModule` is the step each batch takes.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn

from siamkit import runtime
from siamkit.checkpoints import Checkpoint, read_checkpoint
from siamkit.config import BackboneConfig, RunConfig
from siamkit.data.datasets import Splits, load_splits
from siamkit.data.loader import ImageData
from siamkit.data.splits import labels_hash
from siamkit.encoders import Encoder, check_encoder, create_backbone, custom_backbone_name
from siamkit.errors import DataError
from siamkit.eval.features import extract_features
from siamkit.eval.knn import knn_top1
from siamkit.methods import METHODS, Method, create_method
from siamkit.safe_io import atomic_write_text
from siamkit.strict import flat_dict, to_dict
from siamkit.train.callbacks import CollapseMonitor, KNNMonitor, MIMonitor, Throughput, mi_monitor
from siamkit.train.engine import (
    EngineSettings,
    RunFolder,
    TrainData,
    build_trainer,
    check_run_output,
    fit_in_folder,
)
from siamkit.train.loop import PretrainModule
from siamkit.train.pretrain_result import PretrainResult
from siamkit.train.resume import resume_changes


def pretrain(
    cfg: RunConfig,
    resume: str | None = None,
    splits: Splits | None = None,
    overwrite: bool = False,
    backbone: nn.Module | None = None,
    random_init_knn: RandomInitKNN | None = None,
) -> PretrainResult:
    """Pretrain ``cfg.method`` on ``cfg.data``, then evaluate by kNN against random init.

    Steps: 1. check the machine, the backbone module and the checkpoint to resume, before
    anything is written; 2. load the data; 3. build the method (a copy of its backbone is the
    random-init baseline); 4. assemble the trainer, its monitors, the module and this process's
    loader; 5-6. lock, prepare and announce the run folder, and train
    (:func:`~siamkit.train.engine.fit_in_folder`, as every run that trains); 7. read the final
    figures and write ``results.json`` (rank 0).

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
        random_init_knn: Random-init kNN figures already read (shared by the cells of an
            experiment, whose random init is the same); ``None``: read the figure afresh.

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
    plan = _plan(cfg, resume, backbone)  # 1.
    cfg, train = plan.cfg, plan.cfg.train
    processes = runtime.local_processes(train.accelerator, train.devices)
    splits = splits or load_splits(cfg.data, processes)  # 2.
    method, random_init, channels_last = _build_method(cfg, plan.given, splits)  # 3.
    run = _assemble(plan, method, splits, channels_last)  # 4.
    folder = RunFolder(run.out_dir, resume, overwrite)
    fit_in_folder(  # 5-6. (rank 0 prepares the folder; the other ranks write nothing)
        run.trainer,
        run.module,
        run.data,
        folder,
        ckpt_path=plan.checkpoint.path if plan.checkpoint else None,
        announce=lambda: _announce(run, plan, splits),
        diverged_hint=lambda: _diverged_hint(run.out_dir),
    )
    result = _result(run, splits)  # 7.
    if run.trainer.is_global_zero:
        baselines = random_init_knn or RandomInitKNN()
        _final_figures(result, run, random_init.to(run.module.device), splits, baselines)
        result.minutes = (time.perf_counter() - start) / 60
        text = json.dumps(result.__dict__, indent=2) + "\n"
        atomic_write_text(run.out_dir / "results.json", text, "results")
    result.minutes = (time.perf_counter() - start) / 60
    return result


@dataclass
class _Plan:
    """What step 1 checked: the config to run, the engine's settings, what to resume."""

    cfg: RunConfig  # with ``backbone.name: custom/...`` when a module was passed
    settings: EngineSettings
    given: Encoder | None  # the backbone module passed, checked against the contract
    recipe_backbone: BackboneConfig  # the config's backbone before a passed module replaced it
    checkpoint: Checkpoint | None
    changes: list[str]  # settings changed on resume


@dataclass
class _Assembled:
    """Step 4's parts: the trainer, its monitors, the module and this process's loader."""

    trainer: L.Trainer
    module: PretrainModule
    data: TrainData
    knn: KNNMonitor | None
    mi: MIMonitor | None
    collapse: CollapseMonitor
    throughput: Throughput
    out_dir: Path


def _plan(cfg: RunConfig, resume: str | None, backbone: nn.Module | None) -> _Plan:
    """Step 1: the machine, the backbone module and the checkpoint to resume, checked.

    All before anything in the run folder is touched: --overwrite removes nothing when a flag
    is wrong.
    """
    given, recipe_backbone = None, cfg.backbone
    if backbone is not None:
        sizes = (cfg.augment.size, cfg.augment.effective_eval_size)
        given = check_encoder(backbone, sizes)
        custom = BackboneConfig(name=custom_backbone_name(backbone))
        cfg = dataclasses.replace(cfg, backbone=custom)
    skips = METHODS[cfg.method.name].method_class.skips_parameters
    settings = EngineSettings.of_pretraining(cfg.train, skips, hparams=flat_dict(cfg))
    settings.check()
    check_run_output(Path(cfg.train.output_dir), cfg.data)
    checkpoint = read_checkpoint(resume, expect=cfg) if resume else None
    changes = resume_changes(checkpoint.config, cfg) if checkpoint else []
    settings.resume_step = checkpoint.global_step if checkpoint else None
    return _Plan(cfg, settings, given, recipe_backbone, checkpoint, changes)


def _build_method(
    cfg: RunConfig, given: Encoder | None, splits: Splits
) -> tuple[Method, Encoder, bool]:
    """Step 3: the method, built once from the run's seed, and its backbone at random init.

    Returns:
        The method, a copy of its backbone as built (the random-init baseline), and whether
        convolutions get channels-last tensors.
    """
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    method = create_method(create_backbone(cfg.backbone) if given is None else given, cfg.method)
    # Every view size and the evaluation size reach the backbone (a ViT's img_size is fixed).
    view_sizes = [r.size for r in method.view_recipes(cfg.augment)]
    check_encoder(method.backbone, (*view_sizes, cfg.augment.effective_eval_size))
    method.setup(len(splits.train))
    random_init = copy.deepcopy(method.backbone)
    channels_last = runtime.use_channels_last(cfg.train.channels_last, method.backbone)
    return method, random_init, channels_last


def _assemble(plan: _Plan, method: Method, splits: Splits, channels_last: bool) -> _Assembled:
    """Step 4: the trainer and its monitors, then the module and this process's loader."""
    cfg, train, settings = plan.cfg, plan.cfg.train, plan.settings
    knn = _knn_monitor(cfg, settings.lightning_precision, splits, channels_last)
    collapse, throughput = CollapseMonitor(train.collapse_threshold), Throughput()
    mi = mi_monitor(cfg, splits)
    monitors: list[L.Callback] = [m for m in (knn, mi, collapse, throughput) if m is not None]
    trainer = build_trainer(settings, monitors)
    world = trainer.world_size
    per_device = _per_process_batch(cfg, world, len(splits.train))
    num_classes = _probe_classes(cfg, splits)
    module = PretrainModule(
        cfg, method, len(splits.train) // (per_device * world), num_classes, splits.train
    )
    module.resumed_with = plan.changes
    on_gpu = settings.device_type == "cuda"
    data = TrainData(splits.train, module.views.specs, per_device, train.seed, on_gpu)
    out_dir = Path(train.output_dir)
    return _Assembled(trainer, module, data, knn, mi, collapse, throughput, out_dir)


def _announce(run: _Assembled, plan: _Plan, splits: Splits) -> None:
    """Step 5 (rank 0, the folder ready): write the config and say what runs."""
    cfg, train, out_dir = plan.cfg, plan.cfg.train, run.out_dir
    atomic_write_text(out_dir / "config.yaml", _yaml(to_dict(cfg)), "run config")
    n_params = sum(p.numel() for p in run.module.parameters())
    print(
        f"siamkit: {cfg.method.name} | {cfg.backbone.describe()} {n_params / 1e6:.1f}M params"
        f" | {len(splits.train)} images, batch {cfg.optim.batch_size}, lr {cfg.optim.lr:g}"
        f" | {train.epochs} epochs | {plan.settings.lightning_precision} on "
        f"{plan.settings.device_type} x{run.trainer.world_size} | run folder {out_dir}\n"
        f"siamkit: data {splits.note}",
        file=sys.stderr,
    )
    if plan.given is not None and plan.recipe_backbone not in (BackboneConfig(), cfg.backbone):
        print(
            f"siamkit: the backbone module passed stands in for the config's "
            f"{plan.recipe_backbone.describe()}",
            file=sys.stderr,
        )
    for change in plan.changes:
        print(f"siamkit: resumed with {change}", file=sys.stderr)


def _result(run: _Assembled, splits: Splits) -> PretrainResult:
    """Step 7's figures that every process has: the monitors' and the trainer's."""
    last = run.out_dir / "checkpoints" / "last.ckpt"
    train = run.module.cfg.train
    return PretrainResult(
        output_dir=str(run.out_dir),
        checkpoint=str(last) if last.is_file() else None,
        epochs=run.trainer.current_epoch,
        collapse_std=run.collapse.last,
        collapse_threshold=train.collapse_threshold,
        images_per_sec=run.throughput.last,
        data_wait=run.throughput.data_wait,
        knn_history=run.knn.history if run.knn else [],
        mi_history=run.mi.history if run.mi else [],
        storage=splits.note,
    )


def _final_figures(
    result: PretrainResult,
    run: _Assembled,
    random_init: Encoder,
    splits: Splits,
    baselines: RandomInitKNN,
) -> None:
    """Step 7 (rank 0): the final kNN against random init and the online probe's accuracy.

    Both on the whole held-out split.
    """
    method, cfg = run.module.method, run.module.cfg
    if run.knn is not None:
        result.knn_top1, result.random_init_knn_top1 = final_knn(
            method.backbone, random_init, splits, cfg, run.knn, baselines
        )
    test, probe = splits.test, run.module.probe
    if probe is not None and test is not None and test.labels is not None:
        h = extract_features(method.backbone, test, cfg.augment)
        result.online_probe_top1 = probe.cpu().accuracy(h, test.labels)


class RandomInitKNN:
    """The random-init kNN figures read so far, each keyed by what it depends on.

    One object passed to several :func:`pretrain` calls reads the figure of one set of initial
    weights on one dataset once: an experiment's cells share their architecture and seed, hence
    their random init, and the read (the whole held-out split in float32) costs as much as the
    trained network's.
    """

    def __init__(self) -> None:
        self._figures: dict[tuple[str, ...], float] = {}

    def read(self, key: tuple[str, ...], compute: Callable[[], float]) -> float:
        """The figure stored under ``key``, computed by ``compute()`` the first time."""
        if key not in self._figures:
            self._figures[key] = compute()
        return self._figures[key]


def weights_digest(module: nn.Module) -> str:
    """SHA-1 of a module's state (names, dtypes and bytes): equal digests, equal weights."""
    digest = hashlib.sha1()
    for name, tensor in module.state_dict().items():
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{flat.dtype}:".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def final_knn(
    trained: Encoder,
    random_init: Encoder,
    splits: Splits,
    cfg: RunConfig,
    monitor: KNNMonitor,
    baselines: RandomInitKNN,
) -> tuple[float, float]:
    """The kNN top-1 (%) of the trained and the random-init backbone.

    On the whole held-out split, with every training image in the bank (streamed, so any size
    fits), in float32 whatever the run's precision: features early in training, and at random
    init, where eval-mode BatchNorm still holds its initial statistics, share one large common
    direction and differ by less than bf16 resolves: read in bf16, the random-init figure of
    the SimSiam CIFAR-10 CPU recipe falls far below its float32 one, while a trained network's
    barely moves (docs/results.md#knn-precision). The per-epoch monitor keeps
    the run's precision: it draws the curve, not the figure. The random-init figure is read once
    per ``baselines`` for the same weights, data and evaluation settings.
    """
    train, test = splits.train, splits.test
    assert test is not None
    aug = cfg.augment

    def read(backbone: Encoder) -> float:
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
    baseline = baselines.read(key, lambda: read(random_init))
    return read(trained), baseline


def _knn_monitor(
    cfg: RunConfig, precision: str, splits: Splits, channels_last: bool
) -> KNNMonitor | None:
    """The per-epoch kNN monitor on (subsampled, fixed-seed) bank and queries, if labelled."""
    train, test = splits.train, splits.test
    if not cfg.train.knn_every:
        return None
    if train.labels is None or test is None or test.labels is None:
        which = (
            "the training images have no labels"
            if train.labels is None
            else (
                "the data has no held-out split"
                if test is None
                else "the held-out images have no labels"
            )
        )
        warnings.warn(
            f"{which}, so the kNN evaluation (per epoch and final) "
            "is skipped; label them (class folders, data.labels_file=PATH), or set "
            "data.require_labels=true to make this an error (train.knn_every=0 silences it)",
            stacklevel=3,
        )
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
