"""Typed, strict run configuration.

A run is described by one :class:`RunConfig`, a tree of dataclasses (the schema). YAML recipes
(the shipped ones in ``siamkit/configs/``) map onto it key for key (:mod:`siamkit.recipes` loads
them): an unknown key is an error that lists the valid ones, a value of the wrong type is an error
that names the expected type, and each section's ``__post_init__`` rejects impossible values
(:mod:`siamkit.strict` maps plain trees onto it). This module imports nothing of siamkit but its
errors: a method's own config dataclass is chosen by the recipe loader, from the method registry.

Defaults are the SimSiam paper's ImageNet recipe (Chen & He, arXiv:2011.10566, Sec. 4.1 and
Appendix A) unless a docstring says otherwise; the CIFAR settings come from its Appendix D and are
set by the CIFAR recipes. The one exception is the data source: ``data.dataset`` defaults to the
bundled digits, the only source that needs no path, so that ``RunConfig()`` is valid anywhere. The
defaults document the paper, they are not a run to start: a run comes from a recipe
(``siamkit pretrain`` alone runs ``simsiam/digits``; the ImageNet recipe is ``simsiam/imagenet``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from siamkit.config.inputs import (
    CUSTOM_PREFIX,
    TIMM_PREFIX,
    AugmentConfig,
    BackboneConfig,
    DataConfig,
)
from siamkit.errors import ConfigError

#: The loggers a run can write to (``train.loggers``): Lightning's CSV and TensorBoard loggers,
#: and Weights & Biases and MLflow (optional extras ``siamkit[wandb]``, ``siamkit[mlflow]``).
LoggerName = Literal["csv", "tensorboard", "wandb", "mlflow"]
LOGGER_NAMES: tuple[str, ...] = get_args(LoggerName)


@dataclass
class OptimConfig:
    """Optimiser and schedule.

    SimSiam (arXiv:2011.10566, Sec. 4.1): SGD with momentum 0.9, lr = base_lr x batch/256 with
    base_lr 0.05, weight decay 1e-4, cosine decay, batch 512; the predictor's lr is not decayed
    (Sec. 4.1, Table 1). CIFAR (Appendix D): base_lr 0.03, weight decay 5e-4.

    Attributes:
        batch_size: Images per optimiser step over all processes (each gives ``num_views`` views).
        base_lr: Learning rate for a batch of 256; scaled linearly with the batch.
        momentum: SGD momentum.
        weight_decay: L2 weight decay on all parameters.
        warmup_epochs: Linear warm-up from 0 before the cosine decay (0 in the paper for batch
            512; it uses 10 for its largest batches).
        optimizer: ``sgd`` (SimSiam, MoCo v2, SwAV's small-batch runs); ``lars`` (SGD with
            layer-wise trust ratios [You et al., arXiv:1708.03888], as used by SimCLR, BYOL,
            Barlow Twins and VICReg for large batches; biases and norm parameters are excluded
            from the adaptation and the weight decay, following SimCLR, arXiv:2002.05709,
            Appendix B.1); ``adamw`` (MoCo v3, arXiv:2104.02057, Sec. 4; ``momentum`` is its
            beta1).
        lars_eta: LARS trust coefficient (0.001 in SimCLR's and BYOL's code).
    """

    batch_size: int = 512
    base_lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.0
    optimizer: Literal["sgd", "lars", "adamw"] = "sgd"
    lars_eta: float = 0.001

    def __post_init__(self) -> None:
        if self.lars_eta <= 0:
            raise ConfigError(f"optim.lars_eta must be positive, got {self.lars_eta}")
        if self.batch_size < 1:
            raise ConfigError(f"optim.batch_size must be at least 1, got {self.batch_size}")
        if self.base_lr <= 0:
            raise ConfigError(
                f"optim.base_lr must be positive, got {self.base_lr} (SimSiam uses 0.05)"
            )
        if self.weight_decay < 0:
            raise ConfigError(f"optim.weight_decay must be >= 0, got {self.weight_decay}")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"optim.momentum must be in [0, 1), got {self.momentum}")
        if self.warmup_epochs < 0:
            raise ConfigError(f"optim.warmup_epochs must be >= 0, got {self.warmup_epochs}")

    @property
    def lr(self) -> float:
        """The linearly scaled learning rate, ``base_lr x batch_size / 256`` (Goyal et al.)."""
        return self.base_lr * self.batch_size / 256


@dataclass
class TrainConfig:
    """The one training loop (Lightning) and its monitors.

    Attributes:
        epochs: Passes over the training images (100 for the ImageNet recipe).
        max_minutes: Optional wall-clock budget; training stops when it is spent.
        max_steps: Optional cap on optimiser steps (a short check of a recipe, a benchmark);
            the schedule ends at it.
        checkpoint_every_steps: Also checkpoint every this many optimiser steps, inside epochs
            (the loader's position included, so a resumed run continues at the next batch);
            ``None``: at epoch ends only.
        output_dir: Run folder: checkpoints, CSV and TensorBoard logs, results.json.
        seed: Seed for weights, data order and augmentation.
        precision: ``auto`` (bf16 autocast where the hardware has fast bf16, else fp32),
            ``bf16-mixed`` or ``32-true``. Losses are computed in fp32 either way.
        channels_last: ``auto`` (on for convolutional backbones; off for ViTs and other
            models whose one convolution is a patch embedding), ``on``, ``off``.
        compile: Wrap the backbone in ``torch.compile``.
        patch_conv: The explicit-GEMM weight gradient of small-map convolutions on CPU
            (:mod:`siamkit.train.cpu_conv`): ``auto`` (on CPUs with AMX, where it measured 1.26x
            on the ResNet-18 step; off elsewhere: on an AVX-512 BF16 CPU without AMX oneDNN's own
            was faster, 102.7 against 95.7 images/s), ``on``, ``off``. Same gradients either way.
        accelerator: Lightning accelerator (``auto``, ``cpu``, ``gpu``).
        devices: Lightning devices (``auto`` or a count).
        num_nodes: Machines of a multi-node run (Lightning's ``num_nodes``; the cluster's launcher,
            e.g. SLURM or torchrun, starts the processes).
        strategy: Lightning strategy (``auto``, ``ddp``, ``ddp_spawn`` ...).
        sync_batchnorm: Synchronise BatchNorm statistics across processes.
        knn_k: Neighbours of the weighted kNN monitor (200, as in InstDisc/the SimSiam code).
        knn_temperature: Temperature of the kNN weights exp(sim / T) (0.1).
        knn_every: Run the kNN monitor every this many epochs (0 turns it off).
        knn_bank_size: Training images in the monitor's feature bank (0: all).
        knn_query_size: Held-out images the monitor classifies (0: all).
        online_probe: Train a linear classifier on detached backbone features of the first view
            during pretraining (needs labels; costs one extra no-grad forward of one view a
            step); its top-1 on the training batches is logged each epoch, its held-out top-1
            is reported at the end.
        online_probe_lr: The online probe's constant SGD learning rate (0.1, the offline
            probe's default on standardised features).
        mi_every: Estimate the mutual information of the backbone features of two augmented
            views (MINE, arXiv:1801.04062) every this many epochs and at the last (0: off);
            logged as ``val/mi_two_view`` in nats and plotted by the report. Costs two
            feature passes over ``mi_images`` images and a statistics network's training.
        mi_images: Training images (a fixed random subset) the estimate uses.
        collapse_threshold: Warn when std(l2-normalised output) x sqrt(d) falls below this
            (healthy runs here sit at 0.7-1.0; without stop-gradient it falls below 0.2).
        log_every_n_steps: Logging interval.
        progress_bar: Show the progress bar.
        loggers: Where the metrics, the learning rates and the run's config go: ``csv``
            (``metrics.csv`` in the run folder), ``tensorboard`` (``tensorboard/``), ``wandb``
            (Weights & Biases, files in ``wandb/``), ``mlflow`` (MLflow). The last two are
            optional extras. The defaults of this and the next keys are tooling choices, not a
            paper's: the two loggers that need no account and no extra package.
        log_project: The W&B project and the MLflow experiment of the run.
        log_run_name: The run's name in W&B and MLflow; ``None``: the run folder's name.
        wandb_offline: Log W&B offline (``wandb sync`` uploads later); otherwise W&B's own
            mode, ``WANDB_MODE`` or online.
        mlflow_tracking_uri: The MLflow tracking store; ``None``: ``MLFLOW_TRACKING_URI``, else
            a file store in the run folder, ``file:<run folder>/mlruns``.
    """

    epochs: int = 100
    max_minutes: float | None = None
    max_steps: int | None = None
    checkpoint_every_steps: int | None = None
    output_dir: str = "runs/simsiam"
    seed: int = 0
    precision: Literal["auto", "bf16-mixed", "32-true"] = "auto"
    channels_last: Literal["auto", "on", "off"] = "auto"
    compile: bool = False
    patch_conv: Literal["auto", "on", "off"] = "auto"
    accelerator: str = "auto"
    devices: str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    sync_batchnorm: bool = False
    knn_k: int = 200
    knn_temperature: float = 0.1
    knn_every: int = 1
    knn_bank_size: int = 0
    knn_query_size: int = 0
    online_probe: bool = False
    online_probe_lr: float = 0.1
    mi_every: int = 0
    mi_images: int = 2048
    collapse_threshold: float = 0.3
    log_every_n_steps: int = 10
    progress_bar: bool = True
    loggers: list[LoggerName] = field(default_factory=lambda: ["csv", "tensorboard"])
    log_project: str = "siamkit"
    log_run_name: str | None = None
    wandb_offline: bool = False
    mlflow_tracking_uri: str | None = None

    def __post_init__(self) -> None:
        check_loggers(self.loggers, "train.loggers")
        if not self.output_dir.strip():
            raise ConfigError(
                "train.output_dir must not be empty; pass --output with a run folder "
                "(default: the recipe's, e.g. runs/simsiam-digits)"
            )
        if self.epochs < 1:
            raise ConfigError(f"train.epochs must be at least 1, got {self.epochs}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ConfigError(f"train.max_minutes must be positive, got {self.max_minutes}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"train.max_steps must be at least 1, got {self.max_steps}")
        every = self.checkpoint_every_steps
        if every is not None and every < 1:
            raise ConfigError(f"train.checkpoint_every_steps must be at least 1, got {every}")
        if self.num_nodes < 1:
            raise ConfigError(f"train.num_nodes must be at least 1, got {self.num_nodes}")
        if self.knn_k < 1 or self.knn_temperature <= 0:
            raise ConfigError("train.knn_k must be >= 1 and train.knn_temperature > 0")
        if self.knn_every < 0:
            raise ConfigError("train.knn_every must be >= 0 (0 turns the kNN monitor off)")
        if self.mi_every < 0:
            raise ConfigError("train.mi_every must be >= 0 (0 turns the MI estimate off)")
        if self.mi_images < 10:
            raise ConfigError(f"train.mi_images must be at least 10, got {self.mi_images}")
        if not self.online_probe_lr > 0:
            raise ConfigError(f"train.online_probe_lr must be positive, got {self.online_probe_lr}")


@dataclass
class MethodConfig:
    """Base of every method's config; the subclass is chosen by ``method.name``."""

    name: str = ""


@dataclass
class RunConfig:
    """Everything one pretraining run needs; see each section's docstring."""

    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    # A bare MethodConfig names a method and stands for its defaults (the registry, above this
    # module, turns it into that method's own config: siamkit.recipes).
    method: MethodConfig = field(default_factory=lambda: MethodConfig(name="simsiam"))
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        check_finite(self)
        # Every backbone and head here uses BatchNorm, whose batch statistics need two samples.
        if self.optim.batch_size < 2:
            raise ConfigError(
                f"optim.batch_size {self.optim.batch_size} cannot train: BatchNorm needs at least "
                "2 images per batch to compute statistics; use --batch-size 32 or more "
                "(SimSiam uses 512, and works down to 64, Table 2)"
            )


def check_finite(config: Any, where: str = "") -> None:
    """Refuse a NaN or infinite float anywhere in a config tree (every float setting is finite).

    :func:`siamkit.strict.from_dict` refuses them as it reads a mapping; this covers a tree
    built in Python.

    Raises:
        ConfigError: Naming the dotted key of the first non-finite value.
    """
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        for f in dataclasses.fields(config):
            check_finite(getattr(config, f.name), f"{where}.{f.name}" if where else f.name)
    elif isinstance(config, dict):
        for key, value in config.items():
            check_finite(value, f"{where}.{key}")
    elif isinstance(config, (list, tuple)):
        for i, value in enumerate(config):
            check_finite(value, f"{where}[{i}]")
    elif isinstance(config, float) and not math.isfinite(config):
        raise ConfigError(f"{where} must be a finite number, got {config}")


def check_loggers(names: Sequence[str], where: str) -> None:
    """Refuse logger names siamkit does not know, and a logger named twice.

    Raises:
        ConfigError: The message names the valid loggers.
    """
    for name in names:
        if name not in LOGGER_NAMES:
            raise ConfigError(
                f"{where}: unknown logger {name!r}; valid loggers: {', '.join(LOGGER_NAMES)}"
            )
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"{where} names {', '.join(twice)} twice; name each logger once")


__all__ = [
    "CUSTOM_PREFIX",
    "LOGGER_NAMES",
    "TIMM_PREFIX",
    "AugmentConfig",
    "BackboneConfig",
    "DataConfig",
    "LoggerName",
    "MethodConfig",
    "OptimConfig",
    "RunConfig",
    "TrainConfig",
    "check_finite",
    "check_loggers",
]
