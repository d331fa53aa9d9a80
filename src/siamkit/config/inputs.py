"""The input half of a run's config: where the images come from, their views, the backbone.

Pipeline steps 1 (data, views) and 2 (encoder); :mod:`siamkit.config` re-exports every name, so
``from siamkit.config import DataConfig`` is the import to use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from siamkit.errors import ConfigError


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
            ``path`` may also name a manifest or shards written by ``siamkit pack``.
        path: Root folder for ``cifar10`` and ``folder``; a manifest (a ``.csv``, ``.jsonl`` or
            ``.parquet`` file, one row per image: its ``path``, absolute or relative to the
            manifest's folder, and optionally its ``label`` and its ``split``, ``train`` or
            ``test``; :mod:`siamkit.data.manifests`); or packed shards (a folder or an
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
        labels: How a folder's labels are read, as torchvision's ``ImageFolder`` reads class
            folders (the first-level folder of a split, images at any depth below it):
            ``auto`` takes a label file where one is given or found beside the images, else
            class folders where the data has ``train/`` or at least two first-level folders
            hold every image, else no labels; ``folders``, ``file`` or ``none`` insist on one.
        labels_file: A file of ``file name, class`` lines (tab, comma or space separated; a
            header allowed; further columns ignored) labelling the split whose images it
            names, e.g. a ``val/`` folder without class folders.
        require_labels: Make missing labels an error, where by default the evaluations that
            need them (the kNN monitor, the final kNN) are skipped with a warning.
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
    labels: Literal["auto", "folders", "file", "none"] = "auto"
    labels_file: str | None = None
    require_labels: bool = False

    def __post_init__(self) -> None:
        for key in ("path", "cache_dir", "labels_file"):
            value = getattr(self, key)
            if value is not None and not value.strip():
                raise ConfigError(
                    f"data.{key} must not be empty; name a folder (or leave the key out)"
                )
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


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be a probability in [0, 1], got {value}")
