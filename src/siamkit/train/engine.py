"""The Trainer setup every training run shares: pretraining, fine-tuning and distillation.

One place decides the accelerator, precision, strategy, loggers (``train.loggers``: CSV and
TensorBoard in the run folder by default, W&B and MLflow as extras; :mod:`siamkit.train.loggers`),
checkpoints (epoch ends, optionally every N steps, ``last.ckpt`` the newest) and the
progress display (a bar on a terminal, lines in a log file: :mod:`siamkit.train.progress`), so a
fine-tuning run takes ``--devices 4 --strategy ddp`` and ``--resume`` like a pretraining run
does.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities.exceptions import SIGTERMException

from siamkit import runtime
from siamkit.config import DataConfig, TrainConfig
from siamkit.data.decode import ViewSpec
from siamkit.data.device_decode import to_device
from siamkit.data.loader import ImageData, make_loader
from siamkit.errors import ConfigError, OutputError, TrainingDivergedError, TrainingInterrupted
from siamkit.safe_io import check_apart, check_folder_writable, real_path
from siamkit.train.loggers import LearningRates, LogSettings, RunInfo, build_loggers
from siamkit.train.progress import progress_callback
from siamkit.train.resume import LAST, Interruption, RandomState, RunLock, SafeCheckpointIO

#: The metrics TensorBoard's HParams tab shows beside a pretraining run's config.
PRETRAINING_SUMMARY = ("train/loss", "val/knn_top1", "train/collapse_std")


@dataclass
class EngineSettings:
    """How a run uses the machine and what it writes.

    Attributes:
        output_dir: Run folder (logs, ``checkpoints/``); ``None``: no logs, no checkpoints.
        epochs: Passes over the training data.
        accelerator: ``auto``, ``cpu`` or ``gpu``.
        devices: ``auto`` or a count.
        num_nodes: Machines.
        strategy: Lightning strategy (``auto``, ``ddp``, ...).
        precision: ``auto`` (bf16 where it is fast), ``bf16-mixed`` or ``32-true``.
        max_steps: Cap on optimiser steps.
        max_minutes: Wall-clock budget.
        checkpoint_every_steps: Also checkpoint inside epochs.
        sync_batchnorm: Synchronise BatchNorm across processes (GPUs only).
        find_unused_parameters: DDP looks for parameters without gradient (SwAV's frozen
            prototypes).
        log_every_n_steps: Logging interval.
        progress_bar: Show the progress: a bar on a terminal, one line per epoch (and at most one
            every 30 s within an epoch) when standard output is not a terminal.
        resume_step: Global step of the checkpoint being resumed (``metrics.csv`` keeps the
            rows before it, W&B and MLflow go on in the same runs); ``None`` for a fresh run.
        logs: The loggers, their settings and the config they record.
    """

    output_dir: Path | None
    epochs: int
    accelerator: str = "auto"
    devices: str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "auto"
    max_steps: int | None = None
    max_minutes: float | None = None
    checkpoint_every_steps: int | None = None
    sync_batchnorm: bool = False
    find_unused_parameters: bool = False
    log_every_n_steps: int = 10
    progress_bar: bool = True
    resume_step: int | None = None
    logs: LogSettings = field(default_factory=LogSettings)

    @classmethod
    def of_pretraining(
        cls, train: TrainConfig, find_unused_parameters: bool, hparams: dict[str, Any]
    ) -> EngineSettings:
        """The settings of a pretraining run's ``train`` section.

        Args:
            train: The section.
            find_unused_parameters: The method leaves parameters without gradient.
            hparams: The whole run config, flattened, for the loggers.
        """
        return cls(
            output_dir=Path(train.output_dir),
            epochs=train.epochs,
            accelerator=train.accelerator,
            devices=train.devices,
            num_nodes=train.num_nodes,
            strategy=train.strategy,
            precision=train.precision,
            max_steps=train.max_steps,
            max_minutes=train.max_minutes,
            checkpoint_every_steps=train.checkpoint_every_steps,
            sync_batchnorm=train.sync_batchnorm,
            find_unused_parameters=find_unused_parameters,
            log_every_n_steps=train.log_every_n_steps,
            progress_bar=train.progress_bar,
            logs=LogSettings(
                loggers=list(train.loggers),
                project=train.log_project,
                run_name=train.log_run_name,
                wandb_offline=train.wandb_offline,
                mlflow_tracking_uri=train.mlflow_tracking_uri,
                hparams=hparams,
                summary_metrics=PRETRAINING_SUMMARY,
            ),
        )

    @property
    def device_type(self) -> str:
        """``cuda`` or ``cpu``."""
        return runtime.device_type(self.accelerator)

    @property
    def lightning_precision(self) -> str:
        """The precision string handed to Lightning."""
        return runtime.resolve_precision(self.precision, self.device_type)

    def check(self) -> None:
        """Refuse settings this machine cannot run, before anything is written.

        Raises:
            ConfigError: A GPU where there is none; SyncBatchNorm on CPU processes; devices,
                nodes or strategy that Lightning does not know; a logger that is unknown or
                whose package is not installed.
        """
        runtime.check_accelerator(self.accelerator)
        runtime.check_devices(self.devices, self.accelerator)
        if self.num_nodes < 1:
            raise ConfigError(f"--num-nodes must be at least 1, got {self.num_nodes}")
        runtime.check_strategy(self.strategy)
        if self.sync_batchnorm and self.device_type != "cuda":
            raise ConfigError(
                "train.sync_batchnorm needs GPUs (PyTorch's SyncBatchNorm has no CPU kernel); "
                "on CPU processes leave it off (BatchNorm per process), or use moco_v2's bn: "
                "shuffle"
            )
        if self.output_dir is not None:  # without a run folder nothing is logged
            self.logs.check()


def checkpoint_callbacks(settings: EngineSettings) -> list[ModelCheckpoint]:
    """Checkpoints at epoch ends and, if asked, every ``checkpoint_every_steps`` steps.

    The two newest of each are kept, and ``last.ckpt`` is the newest state.
    """
    assert settings.output_dir is not None
    folder = settings.output_dir / "checkpoints"
    callbacks = [
        ModelCheckpoint(
            dirpath=folder,
            filename="epoch{epoch:03d}",
            auto_insert_metric_name=False,
            every_n_epochs=1,
            save_last=True,
            save_top_k=2,  # the two newest epochs: an older one is removed after a new one is whole
            monitor="step",
            mode="max",
            enable_version_counter=False,  # a moved or copied run folder goes on in last.ckpt
        )
    ]
    if settings.checkpoint_every_steps:
        callbacks.append(
            ModelCheckpoint(
                dirpath=folder,
                filename="step{step:07d}",
                auto_insert_metric_name=False,
                every_n_train_steps=settings.checkpoint_every_steps,
                save_last=True,  # last.ckpt is always the newest state
                save_top_k=2,
                monitor="step",
                mode="max",
                enable_version_counter=False,
            )
        )
    return callbacks


def build_trainer(settings: EngineSettings, callbacks: list[L.Callback]) -> L.Trainer:
    """The Lightning trainer for ``settings``, with ``callbacks`` and the checkpoint callbacks.

    Args:
        settings: What the run asks for.
        callbacks: The run's own callbacks (monitors), called before the checkpoints.
    """
    settings.check()
    strategy: str | DDPStrategy = settings.strategy
    if strategy == "ddp":
        strategy = DDPStrategy(
            find_unused_parameters=settings.find_unused_parameters,
            # Per-step state (queues, per-image targets) is updated identically on every
            # process from gathered tensors; broadcasting it from rank 0 each step would only
            # cost time (10 GB a step for SimSiam's moving-average table on ImageNet).
            broadcast_buffers=False,
            timeout=timedelta(minutes=30),
        )
    out = settings.output_dir
    # RandomState before the run's callbacks: restored first on resume, saved with every
    # checkpoint; Interruption saves the run when SIGTERM or Ctrl-C stops it.
    all_callbacks: list[L.Callback] = [RandomState(), *callbacks]
    loggers: list[Any] = []
    if out is not None:
        all_callbacks += checkpoint_callbacks(settings)
        all_callbacks.append(Interruption(out / "checkpoints"))
        loggers = build_loggers(settings.logs, out, settings.resume_step)
        if loggers:
            resuming = settings.resume_step is not None
            all_callbacks += [RunInfo(settings.logs.hparams, out, resuming), LearningRates()]
    if settings.progress_bar:
        # A bar on a terminal; one line per epoch (or per 30 s) when the output is a log file.
        all_callbacks.append(progress_callback())
    return L.Trainer(
        accelerator=settings.accelerator,
        devices=_lightning_devices(settings.devices),
        num_nodes=settings.num_nodes,
        strategy=strategy,
        # Lightning types precision as a Literal of its spellings; resolve_precision returns one.
        precision=settings.lightning_precision,  # type: ignore[arg-type]
        max_epochs=settings.epochs,
        max_steps=settings.max_steps or -1,
        max_time=timedelta(minutes=settings.max_minutes) if settings.max_minutes else None,
        sync_batchnorm=settings.sync_batchnorm,
        callbacks=all_callbacks,
        logger=loggers or False,
        plugins=[SafeCheckpointIO()],
        enable_checkpointing=out is not None,
        log_every_n_steps=settings.log_every_n_steps,
        enable_progress_bar=settings.progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic=False,
        use_distributed_sampler=False,  # every loader splits its own epochs between ranks
    )


def _lightning_devices(devices: str) -> int | str:
    """What Lightning's ``devices`` takes: ``auto``, a count, or a string of GPU indices."""
    text = str(devices).strip()
    return text if text == "auto" or "," in text else int(text)


class TrainData(L.LightningDataModule):
    """The training loader, built inside ``fit`` when every process knows its rank.

    Args:
        data: The training images (any storage).
        specs: The views workers cut.
        batch_size: Images per batch of one process.
        seed: Seed of the order and of the crops.
        pin_memory: Pin batches (training on a GPU).
    """

    def __init__(
        self, data: ImageData, specs: list[ViewSpec], batch_size: int, seed: int, pin_memory: bool
    ) -> None:
        super().__init__()
        self.data, self.specs, self.batch_size = data, specs, batch_size
        self.seed, self.pin_memory = seed, pin_memory

    def transfer_batch_to_device(self, batch: Any, device: torch.device, idx: int) -> Any:
        """Move a batch; encoded JPEGs (``data.decode: device``) are decoded on the device."""
        return to_device(batch, device)

    def train_dataloader(self) -> Any:
        """This process's loader: litdata's own for whole shards, else the epoch sampler's."""
        loader = self.data.streaming_loader(self.specs, self.batch_size, self.seed, self.pin_memory)
        if loader is not None:
            return loader
        assert self.trainer is not None
        return make_loader(
            self.data,
            self.specs,
            self.batch_size,
            train=True,
            seed=self.seed,
            rank=self.trainer.global_rank,
            world=self.trainer.world_size,
            pin_memory=self.pin_memory,
        )


#: What a pretraining, fine-tuning or distillation run writes in its folder besides
#: ``checkpoints/``: the files ``--overwrite`` replaces along with the checkpoints.
RUN_FILES = (
    "metrics.csv",
    "results.json",
    "config.yaml",
    "hparams.yaml",
    "loggers.json",
    "classifier.pt",  # fine-tuning and distillation
    "label_indices.txt",
)
#: Folders a run writes besides ``checkpoints/``, replaced along with it.
RUN_FOLDERS = ("tensorboard", "mlruns", "wandb", "report")


def prepare_run_folder(out_dir: Path, resume: str | Path | None, overwrite: bool) -> None:
    """Make ``out_dir``, refusing to write over another run's checkpoints there.

    A folder that holds checkpoints is used only to continue them (``resume`` is one of its
    checkpoints, or the folder itself) or, with ``overwrite``, to replace them: then its
    checkpoints and run files (:data:`RUN_FILES`, :data:`RUN_FOLDERS`) are removed first, so the
    new run's history is not mixed with the old one's.

    Args:
        out_dir: The run folder.
        resume: The checkpoint (or run folder) being resumed, or ``None``.
        overwrite: Replace another run found in ``out_dir``.

    Raises:
        OutputError: ``out_dir`` holds another run's checkpoints and ``overwrite`` is not set
            (whether it can be written at all, :func:`check_run_output` checks first).
    """
    ckpt_dir = out_dir / "checkpoints"
    old = sorted(ckpt_dir.glob("*.ckpt")) if ckpt_dir.is_dir() else []
    if old and not _continues(out_dir, resume):
        if not overwrite:
            if resume is None:
                raise OutputError(
                    f"run folder {str(out_dir)!r} already holds checkpoints of an earlier run; "
                    f"continue it with --resume {out_dir}, choose another --output, or pass "
                    "--overwrite to replace it"
                )
            raise OutputError(
                f"run folder {str(out_dir)!r} holds the checkpoints of another run than "
                f"{str(resume)!r}, which resuming there would replace; continue {str(resume)!r} "
                f"in its own folder (leave out --output) or in a new one, or pass --overwrite to "
                f"replace the run in {str(out_dir)!r}"
            )
        for f in old:
            f.unlink()
        for name in RUN_FILES:
            (out_dir / name).unlink(missing_ok=True)
        for name in RUN_FOLDERS:
            shutil.rmtree(out_dir / name, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)


@dataclass(frozen=True)
class RunFolder:
    """Where a run trains and how it may use the folder.

    Attributes:
        path: The run folder (``None``: the run writes nothing, no logs, no checkpoints).
        resume: The checkpoint (or run folder) the run continues, or ``None``.
        overwrite: Replace another run's checkpoints found in ``path``.
    """

    path: Path | None
    resume: str | Path | None = None
    overwrite: bool = False


def fit_in_folder(
    trainer: L.Trainer,
    module: L.LightningModule,
    data: L.LightningDataModule,
    folder: RunFolder,
    ckpt_path: str | None = None,
    announce: Callable[[], None] | None = None,
    diverged_hint: Callable[[], str] | None = None,
) -> None:
    """The fit of every run that trains (pretraining, fine-tuning, distillation).

    On rank 0 the folder is locked (one run at a time writes there), prepared
    (:func:`prepare_run_folder`) and announced (``announce``: the caller writes its config and
    says what runs); then every rank fits. The lock is released however the fit ends.

    Args:
        trainer: The trainer (:func:`build_trainer`).
        module: What it trains.
        data: Its training data.
        folder: The run folder and how it may be used.
        ckpt_path: The checkpoint file to continue from, or ``None``.
        announce: Called once on rank 0 when the folder is ready.
        diverged_hint: What to do after a NaN/inf loss, added to the message (``None``: the
            module's own message stands).

    Raises:
        TrainingDivergedError: The loss became NaN/inf.
        TrainingInterrupted: SIGTERM or Ctrl-C stopped the fit (the run is saved in the folder).
        OutputError: The folder is in use, or holds another run and ``overwrite`` is not set.
    """
    lock = RunLock(folder.path) if folder.path is not None else None
    if trainer.is_global_zero and lock is not None and folder.path is not None:
        lock.acquire()
        try:
            prepare_run_folder(folder.path, folder.resume, folder.overwrite)
        except BaseException:
            lock.release()  # a folder this run may not use stays free for the one that may
            raise
    try:
        if trainer.is_global_zero and announce is not None:
            announce()
        trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    except TrainingDivergedError as err:
        if diverged_hint is None:
            raise
        raise TrainingDivergedError(f"{err}; {diverged_hint()}") from None
    except SIGTERMException:
        saved = (
            f"the run is saved in {folder.path / 'checkpoints' / LAST}: continue it with "
            f"--resume {folder.path}"
            if folder.path is not None
            else "nothing was saved (no output folder)"
        )
        raise TrainingInterrupted(
            f"stopped at step {trainer.global_step} (SIGTERM or Ctrl-C); {saved}"
        ) from None
    finally:
        if lock is not None:
            lock.release()


def check_run_output(out_dir: Path, data: DataConfig | None) -> None:
    """Refuse a run folder that cannot be written or that is (or holds, or lies in) the data.

    Checked before anything is loaded, so a bad ``--output`` costs nothing and changes nothing.

    Raises:
        OutputError: Naming the problem and the fix.
    """
    check_folder_writable(out_dir, "run folder")
    if data is not None and data.path and data.dataset != "digits" and "://" not in data.path:
        check_apart(out_dir, "--output", {"--data": Path(data.path)})


def _continues(out_dir: Path, resume: str | Path | None) -> bool:
    """Whether resuming ``resume`` continues the run of ``out_dir`` (its checkpoint or itself)."""
    folder = None if resume is None else run_folder_of(resume)
    return folder is not None and real_path(folder) == real_path(out_dir)


def run_folder_of(resume: str | Path) -> Path | None:
    """The run folder a checkpoint belongs to.

    Returns:
        The folder itself, or ``RUN`` of ``RUN/checkpoints/x.ckpt``; ``None`` for a checkpoint
        file kept elsewhere.
    """
    source = Path(resume)
    if source.is_dir():
        return source
    return source.parent.parent if source.parent.name == "checkpoints" else None
