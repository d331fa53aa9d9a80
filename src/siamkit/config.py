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

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

from siamkit.errors import ConfigError

#: The loggers a run can write to (``train.loggers``): Lightning's CSV and TensorBoard loggers,
#: and Weights & Biases and MLflow (optional extras ``siamkit[wandb]``, ``siamkit[mlflow]``).
LoggerName = Literal["csv", "tensorboard", "wandb", "mlflow"]
LOGGER_NAMES: tuple[str, ...] = get_args(LoggerName)


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------
@dataclass
class DataConfig:
    """Where the images come from and how they are held (pipeline step 1, the data half).

    Attributes:
        dataset: ``digits`` (scikit-learn's bundled 8x8 digits, upsampled; works on any machine),
            ``cifar10`` (an image folder with ``train/`` and ``test/``, or torchvision's download
            when ``path`` is empty and ``download`` is set), or ``folder`` (any image folder,
            labelled ``root/<class>/*`` or flat, or ImageNet's ``train/`` + ``val/``).
            ``path`` may also name shards written by ``siamkit pack``.
        path: Root folder for ``cifar10`` and ``folder``, or packed shards (a folder or an
            object-store URL such as ``s3://bucket/imagenet``). A relative path is relative to
            the folder the run starts in, also in a recipe (not to the recipe's file).
        download: Let torchvision download CIFAR-10 into ``path`` (needs a network).
        storage: ``auto`` (shards for packed data; memory when the decoded folder fits
            ``memory_budget_gb`` and its images share one shape; stream otherwise), ``memory``
            (decode once into RAM; refused before decoding when it would not fit), ``stream``
            (decode per batch in DataLoader workers; memory bounded by the batch), or
            ``shards`` (litdata shards of ``siamkit pack``).
        num_workers: DataLoader worker processes per training process for ``stream`` and
            ``shards``. ``None``: the cores each process gets, less one, at most 16.
        decode: Where streamed and sharded JPEGs of training views are decoded: ``workers``
            (PIL in the DataLoader workers) or ``device`` (``torchvision.io.decode_jpeg`` on
            the training device in whole batches, nvJPEG on a GPU; the workers only read bytes
            and draw the crops). Other formats and evaluation views use the workers.
        memory_budget_gb: Largest decoded set ``auto`` and ``memory`` keep in RAM. ``None``: a
            quarter of the machine's memory.
        decode_size: Shorter side of the images kept in memory (their aspect ratio is kept).
            ``None``: the images' own side, at most 256 (a folder of 28x28 images stays
            28x28); 32 for digits and CIFAR-10's torchvision files. Streamed images are decoded
            whole (JPEGs at a reduced scale when every crop allows it).
        test_fraction: For a labelled folder without ``train/``/``test/``: the fraction held out
            (stratified, fixed seed) for the kNN monitor and evaluation.
        cache_dir: Where decoded arrays are cached (keyed by path, size and mtime of every file).
            ``None``: ``$SIAMKIT_CACHE`` or ``~/.cache/siamkit``.
        strict: Fail on the first unreadable image instead of skipping it with a counted warning.
        num_decode_workers: Processes decoding a folder into memory on the first run (the cache
            serves later).
    """

    dataset: Literal["digits", "cifar10", "folder"] = "digits"
    path: str | None = None
    download: bool = False
    storage: Literal["auto", "memory", "stream", "shards"] = "auto"
    num_workers: int | None = None
    decode: Literal["workers", "device"] = "workers"
    memory_budget_gb: float | None = None
    decode_size: int | None = None
    test_fraction: float = 0.2
    cache_dir: str | None = None
    strict: bool = False
    num_decode_workers: int = 2

    def __post_init__(self) -> None:
        if self.dataset in ("folder",) and not self.path:
            raise ConfigError(
                "data.path is required for dataset 'folder': pass --data PATH (a folder of images)"
            )
        if self.decode_size is not None and self.decode_size < 8:
            raise ConfigError(f"data.decode_size must be at least 8 pixels, got {self.decode_size}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ConfigError(f"data.test_fraction must be in (0, 1), got {self.test_fraction}")
        if self.num_decode_workers < 1:
            raise ConfigError("data.num_decode_workers must be at least 1")
        if self.num_workers is not None and self.num_workers < 0:
            raise ConfigError(f"data.num_workers must be >= 0, got {self.num_workers}")
        if self.memory_budget_gb is not None and self.memory_budget_gb <= 0:
            raise ConfigError(
                f"data.memory_budget_gb must be positive, got {self.memory_budget_gb}"
            )


@dataclass
class AugmentConfig:
    """The view recipe (pipeline step 1, the augmentation half).

    Defaults are SimSiam's (arXiv:2011.10566, Appendix A, following MoCo v2): RandomResizedCrop
    with scale (0.2, 1.0); colour jitter of brightness/contrast/saturation 0.4 and hue 0.1 applied
    with probability 0.8; grayscale with probability 0.2; Gaussian blur (sigma in [0.1, 2.0]) with
    probability 0.5 only for ImageNet-size views (the CIFAR recipe of Appendix D has no blur);
    horizontal flip with probability 0.5.

    Attributes:
        size: Side of the square output views (224 on ImageNet, 32 on CIFAR-10).
        eval_size: Side of the evaluation input (kNN, probes, embeddings); ``None``: ``size``.
            A network trained on random resized crops sees objects larger than in the whole
            image, so it is best tested at a larger side than it was trained at (Touvron et al.,
            "Fixing the train-test resolution discrepancy", arXiv:1906.06423, Sec. 3). The SimSiam,
            simsiam_ema, BYOL, SwAV and W-MSE CPU recipes train on 16-pixel crops of CIFAR-10
            and test on the whole 32-pixel image. The online probe (``train.online_probe``)
            trains on the first training view, at ``size``, and is tested at ``eval_size``.
        crop_scale: Range of the crop's area as a fraction of the image.
        crop_ratio: Range of the crop's aspect ratio (log-uniform), torchvision's default.
        jitter_prob: Probability of applying colour jitter to a view.
        brightness: Brightness factor drawn from [1 - b, 1 + b].
        contrast: Contrast factor drawn from [1 - c, 1 + c].
        saturation: Saturation factor drawn from [1 - s, 1 + s].
        hue: Hue shift drawn from [-h, h] (fraction of the colour wheel).
        grayscale_prob: Probability of converting a view to grayscale.
        blur_prob: Probability of Gaussian blur. ``None``: 0.5 for views of at least
            ``blur_min_size`` pixels, else 0 (the paper's rule: blur only for ImageNet-size input).
        blur_min_size: Smallest view size that gets blur under the ``None`` rule.
        blur_sigma: Range of the blur's standard deviation in pixels of a 224 view, scaled with
            ``size``.
        flip_prob: Probability of a horizontal flip.
        solarize_prob: Probability of solarisation, ``x -> 1 - x`` for intensities ``x >= 0.5``
            (128 of 255), after the blur; 0 in SimSiam, 0.2 on BYOL's second view
            (arXiv:2006.07733, Table 6).
        mean: Per-channel mean for normalisation (ImageNet's, as in the paper's code).
        std: Per-channel std for normalisation.
    """

    size: int = 224
    eval_size: int | None = None
    crop_scale: tuple[float, float] = (0.2, 1.0)
    crop_ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    jitter_prob: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    grayscale_prob: float = 0.2
    blur_prob: float | None = None
    blur_min_size: int = 96
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    flip_prob: float = 0.5
    solarize_prob: float = 0.0
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def __post_init__(self) -> None:
        lo, hi = self.crop_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ConfigError(
                f"augment.crop_scale must satisfy 0 < min <= max <= 1, got {self.crop_scale}; "
                "the paper uses (0.2, 1.0)"
            )
        if not 0.0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ConfigError(f"augment.crop_ratio must be 0 < min <= max, got {self.crop_ratio}")
        if self.size < 4:
            raise ConfigError(f"augment.size must be at least 4 pixels, got {self.size}")
        if self.eval_size is not None and self.eval_size < 4:
            raise ConfigError(f"augment.eval_size must be at least 4 pixels, got {self.eval_size}")
        for name in ("jitter_prob", "grayscale_prob", "flip_prob"):
            _check_probability(f"augment.{name}", getattr(self, name))
        if self.blur_prob is not None:
            _check_probability("augment.blur_prob", self.blur_prob)
        _check_probability("augment.solarize_prob", self.solarize_prob)
        for name in ("brightness", "contrast", "saturation"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"augment.{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0.0 <= self.hue <= 0.5:
            raise ConfigError(f"augment.hue must be in [0, 0.5], got {self.hue}")
        if not 0.0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            raise ConfigError(f"augment.blur_sigma must be 0 < min <= max, got {self.blur_sigma}")
        if any(s <= 0 for s in self.std):
            raise ConfigError(f"augment.std must be positive, got {self.std}")

    @property
    def effective_eval_size(self) -> int:
        """Side of the evaluation input: ``eval_size`` where set, else ``size``."""
        return self.eval_size or self.size

    @property
    def effective_blur_prob(self) -> float:
        """Blur probability after the ImageNet-size rule (see ``blur_prob``)."""
        if self.blur_prob is not None:
            return self.blur_prob
        return 0.5 if self.size >= self.blur_min_size else 0.0


#: ``backbone.name`` prefix of a timm model (``timm/vit_small_patch16_224``).
TIMM_PREFIX = "timm/"
#: ``backbone.name`` prefix recorded for a module passed to ``pretrain(cfg, backbone=module)``
#: (``custom/<module>.<class>``): no config can rebuild it, so loading needs the module again.
CUSTOM_PREFIX = "custom/"
#: A value of ``backbone.timm_kwargs``: a number, flag or name, or a list of them (``img_size``).
TimmOption = int | float | bool | str | list[int | float | bool | str]
#: timm options siamkit sets itself: random init (no download) and no classifier.
_RESERVED_TIMM_OPTIONS = (
    "pretrained",
    "num_classes",
    "pretrained_cfg",
    "pretrained_cfg_overlay",
    "checkpoint_path",
    "features_only",
)

#: What sizes a timm model instead of siamkit's own backbone options.
_TIMM_FIXES = {
    "width": "pick a smaller model or size it in backbone.timm_kwargs (e.g. {embed_dim: 192})",
    "cifar_stem": "for 32-px images set backbone.timm_kwargs (ViT: {img_size: 32, patch_size: 4})",
    "norm": "timm models choose their own norm layers (some take backbone.timm_kwargs.norm_layer)",
}


@dataclass
class BackboneConfig:
    """The encoder backbone (pipeline step 2).

    Attributes:
        name: A name in :data:`siamkit.encoders.BACKBONES` (``resnet18``, ``resnet34``,
            ``resnet50``, ``small_cnn``), or ``timm/<model>`` for any timm model
            (``timm/vit_small_patch16_224``, ``timm/resnet18``; needs ``pip install
            "siamkit[timm]"``). ``custom/<module>.<class>`` is what a run records for a module
            passed to ``pretrain(cfg, backbone=module)``.
        cifar_stem: Replace the 7x7/2 stem and max-pool by one 3x3/1 convolution, the CIFAR
            variant used by SimSiam's Appendix D (after He et al., 2016, Sec. 4.2). Not for timm
            models (their own options size them: ``timm_kwargs``).
        width: Multiplier of every stage's channel count (1.0 is the torchvision model); below 1
            for small CPU runs. Not for timm models.
        norm: ``batch`` (BatchNorm, the papers' default), ``group_ws`` (GroupNorm + Weight
            Standardisation, no batch statistics; "BYOL works even without batch statistics",
            arXiv:2010.10241, Sec. 3) or ``none`` (no normalisation layer at all, the ablation
            that paper starts from). ResNets and the small CNN offer all three; not timm models.
        timm_kwargs: Options passed to ``timm.create_model`` for a ``timm/`` backbone, e.g.
            ``{img_size: 32, patch_size: 4, drop_path_rate: 0.1}`` for a ViT on 32-px images, or
            ``{depth: 6, embed_dim: 192}``. The model starts at random initialisation and
            without its classifier (siamkit sets ``pretrained`` and ``num_classes``).
        freeze_patch_embed: Keep the patch projection at its random initialisation: MoCo v3's
            "random patch projection", which stabilises ViT training (arXiv:2104.02057, Sec.
            4.2). Only for timm models with a patch embedding (ViTs); off by default, as in
            timm and the paper's baseline.
    """

    name: str = "resnet50"
    cifar_stem: bool = False
    width: float = 1.0
    norm: Literal["batch", "group_ws", "none"] = "batch"
    timm_kwargs: dict[str, TimmOption] = field(default_factory=dict)
    freeze_patch_embed: bool = False

    def __post_init__(self) -> None:
        if self.width <= 0:
            raise ConfigError(f"backbone.width must be positive, got {self.width}")
        if self.is_timm:
            self._check_timm()
            return
        if self.timm_kwargs:
            raise ConfigError(
                f"backbone.timm_kwargs applies to timm backbones (backbone.name: timm/<model>), "
                f"not {self.name!r}; remove backbone.timm_kwargs"
            )
        if self.freeze_patch_embed:
            raise ConfigError(
                f"backbone.freeze_patch_embed applies to timm models with a patch embedding "
                f"(e.g. timm/vit_small_patch16_224); {self.name!r} has none: set it to false"
            )

    @property
    def is_timm(self) -> bool:
        """Whether ``name`` is ``timm/<model>``."""
        return self.name.startswith(TIMM_PREFIX)

    def _check_timm(self) -> None:
        """The siamkit-only options keep their defaults; timm_kwargs leaves siamkit's alone."""
        model = self.name[len(TIMM_PREFIX) :]
        if not model:
            raise ConfigError("backbone.name 'timm/' names no model; use e.g. timm/resnet18")
        unused = {"width": self.width != 1.0, "cifar_stem": self.cifar_stem}
        unused["norm"] = self.norm != "batch"
        for key in (k for k, is_set in unused.items() if is_set):
            raise ConfigError(
                f"backbone.{key} does not apply to timm models ({self.name}); remove it: "
                f"{_TIMM_FIXES[key]}"
            )
        for key in _RESERVED_TIMM_OPTIONS:
            if key in self.timm_kwargs:
                raise ConfigError(
                    f"backbone.timm_kwargs.{key} is set by siamkit (a timm backbone starts at "
                    "random initialisation, without its classifier); remove it"
                )

    def describe(self) -> str:
        """One line for logs, e.g. ``resnet18 (width 0.25, CIFAR stem)``."""
        if self.is_timm:
            options = [f"{k}={v}" for k, v in self.timm_kwargs.items()]
            options += ["frozen patch projection"] if self.freeze_patch_embed else []
            return f"{self.name} ({', '.join(options)})" if options else self.name
        if self.name.startswith(CUSTOM_PREFIX):
            return self.name
        stem = ", CIFAR stem" if self.cifar_stem else ""
        norm = ", GroupNorm+WS" if self.norm != "batch" else ""
        return f"{self.name} (width {self.width:g}{stem}{norm})"


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
        # Every backbone and head here uses BatchNorm, whose batch statistics need two samples.
        if self.optim.batch_size < 2:
            raise ConfigError(
                f"optim.batch_size {self.optim.batch_size} cannot train: BatchNorm needs at least "
                "2 images per batch to compute statistics; use --batch-size 32 or more "
                "(SimSiam uses 512, and works down to 64, Table 2)"
            )


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


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be a probability in [0, 1], got {value}")
