"""Supervised training on the engine of pretraining, for fine-tuning and distillation.

A classifier is trained with plain (Nesterov) SGD and a per-step cosine decay on crop + flip
views, by the same Lightning trainer as pretraining (:mod:`siamkit.train.engine`): any
accelerator and number of devices, DDP, the loggers of ``--loggers``, checkpoints and ``--resume``.
The caller supplies the loss of a batch; the module supplies the views, the optimiser, the
schedule and the divergence check.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import lightning as L
import torch
from torch import nn

from siamkit.checkpoints import CONFIG_KEY, load_file, siamkit_kind
from siamkit.config import AugmentConfig, LoggerName
from siamkit.data.augment import crop_flip_recipe
from siamkit.data.datasets import Splits, require_labels
from siamkit.data.loader import Batch, ImageData
from siamkit.data.views import Views
from siamkit.errors import CheckpointError, ConfigError, DataError, TrainingDivergedError
from siamkit.safe_io import atomic_write_text, check_apart
from siamkit.strict import flat_dict
from siamkit.train.engine import (
    EngineSettings,
    RunFolder,
    TrainData,
    build_trainer,
    check_run_output,
    fit_in_folder,
    run_folder_of,
)
from siamkit.train.loggers import LogSettings
from siamkit.train.schedules import cosine_with_warmup

#: File of a fine-tuning or distillation run's results.
RESULTS_FILE = "results.json"


@dataclass
class Machine:
    """Where a fine-tuning or distillation run trains, as ``pretrain`` takes it.

    Attributes:
        accelerator: ``auto`` (a GPU when there is one), ``cpu`` or ``gpu``.
        devices: ``auto`` or a count.
        num_nodes: Machines.
        strategy: Lightning strategy (``ddp`` for several processes).
        checkpoint_every_steps: Also checkpoint inside epochs.
        progress_bar: Show the progress bar.
        loggers: As pretraining's ``train.loggers`` (a tooling default, no paper's): the
            project ``siamkit``, the output folder's name as the run name, W&B's mode from
            ``WANDB_MODE``, the MLflow store from ``MLFLOW_TRACKING_URI`` or ``<output>/mlruns``.
    """

    accelerator: str = "auto"
    devices: str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    checkpoint_every_steps: int | None = None
    progress_bar: bool = False
    loggers: list[LoggerName] = field(default_factory=lambda: ["csv", "tensorboard"])


@dataclass
class SGDRun:
    """One SGD run: plain (Nesterov) SGD with a per-step cosine decay to 0, no warm-up.

    Attributes:
        epochs: Passes over the training images.
        batch_size: Images per step, over all processes.
        lr: Peak learning rate.
        momentum: SGD momentum.
        nesterov: Nesterov momentum.
        weight_decay: L2 weight decay.
        precision: ``auto``, ``bf16-mixed`` or ``32-true`` (the loss in float32 either way).
        channels_last: Feed convolutions channels-last tensors.
        seed: Seed of the order and of the views.
    """

    epochs: int
    batch_size: int
    lr: float
    momentum: float
    nesterov: bool
    weight_decay: float
    precision: Literal["auto", "bf16-mixed", "32-true"] = "auto"
    channels_last: bool = False
    seed: int = 0


@dataclass
class SGDConfig(Machine):
    """The settings fine-tuning and distillation share: SGD on crop + flip views.

    A subclass names its config section (``section``, for messages) and its learning-rate rule
    (``lr_per_256``: the peak lr for a batch of 256, scaled linearly with the batch), and may
    change defaults by declaring a field again.

    Attributes:
        epochs: Passes over the training images (``None``: the subclass's rule).
        batch_size: Images per step (capped at the training set's size).
        lr: Peak learning rate. ``None``: ``lr_per_256 x batch_size / 256``.
        momentum: SGD momentum, 0.9.
        nesterov: Nesterov momentum.
        weight_decay: L2 weight decay.
        crop_scale: Area range of RandomResizedCrop, with a horizontal flip the only
            augmentation; (0.08, 1) is the Inception crop [arXiv:2002.05709, Appendix A].
        seed: Seed of the initialisation, the order and the views.
        precision: ``auto`` (bf16 autocast where it is fast, see
            :func:`siamkit.runtime.fast_bf16_available`), ``bf16-mixed`` or ``32-true``.
            The loss is computed in float32 either way.
        channels_last: Feed convolutions channels-last tensors (faster with bf16 on CPUs).
        eval_batch_size: Images per forward pass when evaluating.
    """

    section: ClassVar[str] = "sgd"
    lr_per_256: ClassVar[float] = 0.1

    epochs: int | None = None
    batch_size: int = 64
    lr: float | None = None
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 0.0
    crop_scale: tuple[float, float] = (0.08, 1.0)
    seed: int = 0
    precision: Literal["auto", "bf16-mixed", "32-true"] = "auto"
    channels_last: bool = False
    eval_batch_size: int = 512

    def __post_init__(self) -> None:
        section = self.section
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"{section}.epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 2:
            raise ConfigError(
                f"{section}.batch_size must be at least 2 (BatchNorm needs two images), "
                f"got {self.batch_size}"
            )
        if self.lr is not None and not self.lr > 0:
            raise ConfigError(f"{section}.lr must be positive, got {self.lr}")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"{section}.momentum must be in [0, 1), got {self.momentum}")
        if self.nesterov and self.momentum == 0:
            raise ConfigError(f"{section}.nesterov needs a momentum above 0; set nesterov false")
        if self.weight_decay < 0:
            raise ConfigError(f"{section}.weight_decay must be >= 0, got {self.weight_decay}")
        lo, hi = self.crop_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ConfigError(
                f"{section}.crop_scale must satisfy 0 < min <= max <= 1, got {self.crop_scale}"
            )
        if self.eval_batch_size < 1:
            raise ConfigError(f"{section}.eval_batch_size must be at least 1")

    @property
    def num_epochs(self) -> int:
        """``epochs``; a subclass whose ``epochs`` may be ``None`` derives its default here."""
        if self.epochs is None:
            raise ConfigError(f"{self.section}.epochs must be set")
        return self.epochs

    @property
    def peak_lr(self) -> float:
        """``lr``, or ``lr_per_256 x batch_size / 256`` (the linear scaling rule)."""
        return self.lr if self.lr is not None else self.lr_per_256 * self.batch_size / 256

    def sgd_run(self) -> SGDRun:
        """The optimisation these settings describe."""
        return SGDRun(
            epochs=self.num_epochs,
            batch_size=self.batch_size,
            lr=self.peak_lr,
            momentum=self.momentum,
            nesterov=self.nesterov,
            weight_decay=self.weight_decay,
            precision=self.precision,
            channels_last=self.channels_last,
            seed=self.seed,
        )


def crop_flip_views(augment: AugmentConfig, crop_scale: tuple[float, float]) -> Views:
    """RandomResizedCrop + horizontal flip at the evaluation size, nothing else.

    The fine-tuning and distillation augmentation (:func:`~siamkit.data.augment.crop_flip_recipe`).
    """
    return Views([crop_flip_recipe(augment, crop_scale)])


#: The loss of one batch: ``loss(view, batch)``, ``view(batch)`` giving its ``(B, 3, S, S)``
#: input (crop + flip, normalised, on the device).
LossFn = Callable[[Callable[[Batch], torch.Tensor], Any], torch.Tensor]


class SGDModule(L.LightningModule):
    """Trains ``model`` on ``loss_fn`` with :class:`SGDRun`'s optimiser and schedule.

    Args:
        model: The trainable network (kept in train mode: BatchNorm on batch statistics).
        loss_fn: The loss of a batch (see :data:`LossFn`).
        views: The training views.
        run: Optimiser settings.
        steps_per_epoch: Batches per epoch (an estimate; the loader's length is taken when
            training starts).
        what: The run's name for the divergence message.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        views: Views,
        run: SGDRun,
        steps_per_epoch: int,
        what: str,
    ) -> None:
        super().__init__()
        self.model, self.loss_fn, self.views, self.run, self.what = model, loss_fn, views, run, what
        self.total_steps = run.epochs * steps_per_epoch
        self.generator: torch.Generator | None = None
        self._generator_state: torch.Tensor | None = None  # from a checkpoint being resumed
        self.losses: list[float] = []
        self._epoch_losses: list[float] = []

    def view(self, batch: Batch) -> torch.Tensor:
        """The batch's crop + flip view, on its device."""
        assert self.generator is not None
        x = self.views(batch.images, self.generator)[0]
        return x.contiguous(memory_format=torch.channels_last) if self.run.channels_last else x

    def on_fit_start(self) -> None:
        """Train mode, and the view generator on the device, seeded once for the whole run.

        A loaded checkpoint comes in eval mode; BatchNorm must use batch statistics.
        """
        self.model.train()
        self.generator = torch.Generator(device=self.device).manual_seed(self.run.seed)
        if self._generator_state is not None:  # resumed: continue the views' random stream
            self.generator.set_state(self._generator_state)

    def on_train_start(self) -> None:
        """The loader's real length sets the schedule's."""
        batches = self.trainer.num_training_batches
        if isinstance(batches, int) and batches > 0:
            self.total_steps = self.run.epochs * batches

    def training_step(self, batch: Any, idx: int) -> torch.Tensor:
        """The caller's loss, checked for NaN/inf."""
        loss = self.loss_fn(self.view, batch)
        if not torch.isfinite(loss.detach()):
            raise TrainingDivergedError(
                f"{self.what} loss became {float(loss)} in epoch {self.current_epoch + 1}; lower "
                f"the learning rate (now {self.run.lr:g})"
            )
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        self._epoch_losses.append(float(loss.detach()))
        return loss

    def on_train_epoch_end(self) -> None:
        """The epoch's mean loss, kept for the results."""
        if self._epoch_losses:
            self.losses.append(sum(self._epoch_losses) / len(self._epoch_losses))
        self._epoch_losses = []

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the views' random stream and the loss history, for an exact resume."""
        if self.generator is not None:
            checkpoint["view_generator"] = self.generator.get_state()
        checkpoint["epoch_losses"] = list(self.losses)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Take back what :meth:`on_save_checkpoint` kept."""
        self._generator_state = checkpoint.get("view_generator")
        self.losses = list(checkpoint.get("epoch_losses", []))

    def configure_optimizers(self) -> Any:
        """SGD on the trainable parameters, cosine-decayed per step."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        opt = torch.optim.SGD(
            params,
            lr=self.run.lr,
            momentum=self.run.momentum,
            nesterov=self.run.nesterov,
            weight_decay=self.run.weight_decay,
        )
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: cosine_with_warmup(step, self.total_steps, 0)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def fit(
    module: SGDModule,
    data: L.LightningDataModule,
    machine: Machine,
    output: str | Path | None,
    resume: ResumePoint | None = None,
    overwrite: bool = False,
    config: dict[str, Any] | None = None,
) -> L.Trainer:
    """Train ``module`` on the engine of pretraining; logs and checkpoints in ``output``.

    The caller has checked ``output`` (:func:`check_output`) and ``resume``
    (:func:`check_resume`) before writing anything of its own. The folder is locked, prepared
    and fitted in as pretraining's (:func:`~siamkit.train.engine.fit_in_folder`): a stop by
    SIGTERM or Ctrl-C saves the run and says how to continue it.

    Args:
        module: The module to train.
        data: Its training data.
        machine: Accelerator, devices, strategy, loggers.
        output: Run folder (``None``: no logs, no checkpoints).
        resume: The checkpoint to continue from.
        overwrite: Replace an earlier run's checkpoints in ``output``.
        config: The run's settings by section (dataclasses or values), for the loggers.

    Returns:
        The trainer after ``fit`` (its ``is_global_zero`` says which process reports).
    """
    out = Path(output) if output is not None else None
    settings = EngineSettings(
        output_dir=out,
        epochs=module.run.epochs,
        accelerator=machine.accelerator,
        devices=machine.devices,
        num_nodes=machine.num_nodes,
        strategy=machine.strategy,
        precision=module.run.precision,
        checkpoint_every_steps=machine.checkpoint_every_steps,
        progress_bar=machine.progress_bar,
        logs=LogSettings(
            loggers=list(machine.loggers),
            hparams=flat_dict(config or {}),
            summary_metrics=("train/loss_epoch",),
        ),
    )
    settings.check()
    if resume is not None:  # metrics.csv keeps the rows before it; W&B and MLflow go on
        settings.resume_step = resume.step
    trainer = build_trainer(settings, [])
    folder = RunFolder(out, None if resume is None else resume.file, overwrite)
    ckpt_path = None if resume is None else str(resume.file)
    fit_in_folder(trainer, module, data, folder, ckpt_path)
    return trainer


@dataclass(frozen=True)
class ResumePoint:
    """A checked checkpoint of an interrupted fine-tuning or distillation run.

    Attributes:
        file: The checkpoint file (a run folder's ``checkpoints/last.ckpt``, or the file given).
        step: The global step it continues from.
    """

    file: Path
    step: int


def check_resume(resume: str | Path) -> ResumePoint:
    """Read and check ``--resume`` once, before anything is written.

    Raises:
        CheckpointError: Missing, unreadable, one of siamkit's other files, or a checkpoint
            of another kind of run (a pretraining checkpoint).
    """
    given = Path(resume)
    kind = siamkit_kind(given)
    if kind is not None and not (given / "checkpoints").is_dir():
        raise CheckpointError(f"--resume: {kind}")
    ckpt = given / "checkpoints" / "last.ckpt" if given.is_dir() else given
    if not ckpt.is_file():
        raise CheckpointError(
            f"--resume {str(resume)!r}: no checkpoint {str(ckpt)!r}; pass the --output folder "
            "of the interrupted run (or one of its checkpoints/*.ckpt)"
        )
    fix = "use an earlier checkpoint of the run, or start again without --resume"
    raw = load_file(ckpt, "checkpoint", fix)
    if not isinstance(raw, dict) or "global_step" not in raw or "state_dict" not in raw:
        raise CheckpointError(
            f"--resume {str(ckpt)!r} is not a checkpoint of a training run; {fix}"
        )
    if CONFIG_KEY in raw:  # a pretraining checkpoint
        raise CheckpointError(
            f"--resume {str(ckpt)!r} is a pretraining checkpoint; pass it as --checkpoint, and "
            "to --resume the output folder of an interrupted fine-tuning or distillation"
        )
    return ResumePoint(ckpt, int(raw["global_step"]))


def check_output(output: str | Path | None, inputs: dict[str, str | Path | None]) -> None:
    """Refuse an output folder that cannot be written or that is, holds or lies in an input.

    Checked first, before a model is loaded or a file (the label index) written.

    Args:
        output: The run's output folder (``None``: the run writes nothing).
        inputs: Each input's flag and path (a data folder, a checkpoint file or folder); ``None``
            and object-store URLs are left out. A checkpoint file in ``RUN/checkpoints/``
            stands for its run folder.

    Raises:
        OutputError: Naming the problem and the fix.
    """
    if output is None:
        return
    out = Path(output)
    check_run_output(out, None)
    folders: dict[str, Path] = {}
    for flag, given in inputs.items():
        if given is None or "://" in str(given):
            continue
        path = Path(given)
        # A checkpoint in RUN/checkpoints/ stands for its run; any other file is itself.
        run = run_folder_of(path) if path.is_file() else None
        folders[flag] = run or path
    check_apart(out, "--output", folders)


def train_data(
    images: ImageData, views: Views, batch_size: int, seed: int, machine: Machine
) -> TrainData:
    """The loader of ``images``.

    Shuffled, split across processes, at least one batch (every batch must hold two images or more
    for BatchNorm in train mode).
    """
    on_gpu = EngineSettings(None, 1, machine.accelerator).device_type == "cuda"
    return TrainData(images, views.specs, min(batch_size, len(images)), seed, on_gpu)


def steps_per_epoch(num_images: int, batch_size: int, machine: Machine) -> int:
    """Batches per epoch of one process (the estimate the schedule starts from)."""
    processes = int(machine.devices) if str(machine.devices).isdigit() else 1
    return max(1, num_images // (min(batch_size, num_images) * max(1, processes)))


def num_classes_of(splits: Splits) -> int:
    """Number of classes: the class names when known, else the largest label + 1."""
    if splits.train.classes:
        return len(splits.train.classes)
    labels = [
        s.labels for s in (splits.train, splits.test) if s is not None and s.labels is not None
    ]
    return int(max(int(y.max()) for y in labels)) + 1


def labelled_test(splits: Splits, what: str) -> ImageData:
    """The held-out split, which must exist and have labels."""
    if splits.test is None:
        raise DataError(
            f"{what} needs a labelled held-out split; use a labelled folder "
            "(root/<class>/* or train/ + test/) or a dataset with labels (cifar10, digits)"
        )
    require_labels(splits.test, what)
    return splits.test


def write_results(path: Path, results: dict[str, Any]) -> Path:
    """Write ``results`` as indented JSON (NaN figures of non-reporting processes as null)."""
    clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in results.items()}
    return atomic_write_text(path, json.dumps(clean, indent=2, default=str) + "\n", "results")
