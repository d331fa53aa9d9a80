"""Fine-tuning with few labels: SimCLR's semi-supervised protocol and SimCLRv2's variant.

A pretrained checkpoint of any method is fine-tuned end to end, with a new linear classifier, on a
class-balanced subset (e.g. 1% or 10%) of the training labels (:mod:`siamkit.eval.splits`), and
evaluated on the held-out split. SimCLR fine-tunes from the backbone output h [arXiv:2002.05709,
Sec. 6 and Appendix B.5]; SimCLRv2 keeps the projection head's first layer and fine-tunes "from a
middle layer of the projection head (the 1st layer) instead of the input layer"
[arXiv:2006.10029, Sec. 2] (``from_head_layers=1``). A from-scratch supervised baseline on the
same labelled images uses the same recipe (``checkpoint=None``).

The result is a :class:`Classifier` checkpoint that :func:`load_classifier` reads back, e.g. as
the teacher of :func:`siamkit.eval.distill.distill`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from siamkit import runtime
from siamkit.config import AugmentConfig, BackboneConfig, DataConfig, MethodConfig, from_dict
from siamkit.config import to_dict as config_to_dict
from siamkit.data.augment import crop_flip_recipe
from siamkit.data.datasets import Splits, load_splits, require_labels
from siamkit.data.device_decode import to_device
from siamkit.data.loader import Batch, ImageData, ResumableLoader, make_loader
from siamkit.data.views import Views
from siamkit.encoders import create_backbone
from siamkit.errors import CheckpointError, ConfigError, DataError, TrainingDivergedError
from siamkit.eval.features import extract_features
from siamkit.eval.splits import (
    check_fraction,
    dataset_name,
    labels_hash,
    subset_indices,
    subset_meta,
    write_index_file,
)

#: Key of a classifier checkpoint (a plain ``torch.save`` dict), distinct from a pretraining
#: checkpoint's ``siamkit_config``.
CLASSIFIER_KEY = "siamkit_classifier"
#: File names inside a fine-tuning or distillation output folder.
CLASSIFIER_FILE = "classifier.pt"
RESULTS_FILE = "results.json"
INDEX_FILE = "label_indices.txt"


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------
@dataclass
class FinetuneConfig:
    """The fine-tuning recipe, SimCLR's [arXiv:2002.05709, Appendix B.5] scaled to small runs.

    SimCLR fine-tunes "using the Nesterov momentum optimizer with a batch size of 4096, momentum
    of 0.9, and a learning rate of 0.8 (following LearningRate = 0.05 x BatchSize/256) without
    warmup. Only random cropping (with random left-to-right flipping and resizing ...) is used
    for preprocessing. We do not use any regularization (including weight decay). For 1% labeled
    data we fine-tune for 60 epochs, and for 10% labeled data we fine-tune for 30 epochs."
    The same rule is kept here with a cosine decay of the lr (as every schedule in siamkit) and a
    batch of 64, which gives a 1% CIFAR-10 subset (500 images) several steps per epoch on a CPU.

    Attributes:
        epochs: Passes over the labelled subset. ``None``: 60 for label fractions up to 1%, 30
            above (Appendix B.5).
        batch_size: Labelled images per step (capped at the subset's size).
        lr: Peak learning rate. ``None``: ``0.05 x batch_size / 256`` (Appendix B.5).
        momentum: SGD momentum, 0.9.
        nesterov: Nesterov momentum (Appendix B.5).
        weight_decay: 0: "We do not use any regularization (including weight decay)".
        label_smoothing: Label smoothing of the cross-entropy (0: none).
        crop_scale: Area range of RandomResizedCrop; with a horizontal flip the only
            augmentation. (0.08, 1) is the Inception crop SimCLR uses [Appendix A].
        label_fraction: Share of each class's training labels, in (0, 1]; 0.01 and 0.1 are
            SimCLR's semi-supervised settings [Sec. 6].
        seed: Seed of the subset, the classifier's initialisation, the order and the views.
        from_head_layers: Hidden layers of the pretrained projection head kept below the
            classifier: 0 fine-tunes from the backbone output h (SimCLR); 1 from the head's first
            layer, fc(+BN)+ReLU (SimCLRv2's default for 1%/10% labels [arXiv:2006.10029,
            Sec. 3]); k keeps the head up to its k-th ReLU.
        precision: ``auto`` (bf16 autocast where it is fast, see
            :func:`siamkit.train.loop.fast_bf16_available`), ``bf16-mixed`` or ``32-true``.
            The loss is computed in float32 either way.
        channels_last: Feed convolutions channels-last tensors (faster with bf16 on CPUs).
        device: ``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda``.
        eval_batch_size: Images per forward pass when evaluating.
    """

    epochs: int | None = None
    batch_size: int = 64
    lr: float | None = None
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    crop_scale: tuple[float, float] = (0.08, 1.0)
    label_fraction: float = 0.01
    seed: int = 0
    from_head_layers: int = 0
    precision: Literal["auto", "bf16-mixed", "32-true"] = "auto"
    channels_last: bool = False
    device: str = "auto"
    eval_batch_size: int = 512

    def __post_init__(self) -> None:
        check_fraction(self.label_fraction)
        check_sgd(self, "finetune")
        if self.from_head_layers < 0:
            raise ConfigError(
                f"finetune.from_head_layers must be >= 0 (0: from the backbone output, 1: from "
                f"the projection head's first layer, as SimCLRv2), got {self.from_head_layers}"
            )
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(
                f"finetune.label_smoothing must be in [0, 1), got {self.label_smoothing}"
            )

    @property
    def num_epochs(self) -> int:
        """``epochs``, or SimCLR's 60 (up to 1% labels) / 30 (more) [Appendix B.5]."""
        if self.epochs is not None:
            return self.epochs
        return 60 if self.label_fraction <= 0.01 else 30

    @property
    def peak_lr(self) -> float:
        """``lr``, or ``0.05 x batch_size / 256`` [arXiv:2002.05709, Appendix B.5]."""
        return self.lr if self.lr is not None else 0.05 * self.batch_size / 256


def check_sgd(cfg: Any, section: str) -> None:
    """Checks shared by the fine-tuning and distillation configs (SGD, crop, precision)."""
    if cfg.epochs is not None and cfg.epochs < 1:
        raise ConfigError(f"{section}.epochs must be at least 1, got {cfg.epochs}")
    if cfg.batch_size < 2:
        raise ConfigError(
            f"{section}.batch_size must be at least 2 (BatchNorm needs two images), "
            f"got {cfg.batch_size}"
        )
    if cfg.lr is not None and not cfg.lr > 0:
        raise ConfigError(f"{section}.lr must be positive, got {cfg.lr}")
    if not 0.0 <= cfg.momentum < 1.0:
        raise ConfigError(f"{section}.momentum must be in [0, 1), got {cfg.momentum}")
    if cfg.nesterov and cfg.momentum == 0:
        raise ConfigError(f"{section}.nesterov needs a momentum above 0; set nesterov false")
    if cfg.weight_decay < 0:
        raise ConfigError(f"{section}.weight_decay must be >= 0, got {cfg.weight_decay}")
    lo, hi = cfg.crop_scale
    if not 0.0 < lo <= hi <= 1.0:
        raise ConfigError(
            f"{section}.crop_scale must satisfy 0 < min <= max <= 1, got {cfg.crop_scale}"
        )
    if cfg.device not in ("auto", "cpu", "cuda") and not str(cfg.device).startswith("cuda:"):
        raise ConfigError(f"{section}.device must be auto, cpu or cuda, got {cfg.device!r}")
    if cfg.eval_batch_size < 1:
        raise ConfigError(f"{section}.eval_batch_size must be at least 1")


# --------------------------------------------------------------------------------------------
# Model: trunk (backbone + kept head layers) and a linear classifier
# --------------------------------------------------------------------------------------------
def head_layers(projector: nn.Module, num_layers: int) -> list[nn.Module]:
    """The first ``num_layers`` hidden layers of a projection head: its modules up to and
    including its ``num_layers``-th ReLU (fc, BN or GroupNorm, ReLU each).

    Generic over every method's head (all are ``nn.Sequential`` MLPs,
    :func:`siamkit.heads.mlp`). For ``num_layers=1`` this is what
    :meth:`siamkit.methods.simclr.SimCLR.head_first_layer` keeps.

    Raises:
        ConfigError: The head has fewer hidden layers, or is not a sequence of layers.
    """
    if num_layers == 0:
        return []
    if not isinstance(projector, nn.Sequential):
        raise ConfigError(
            f"from_head_layers={num_layers} needs a projection head made of a sequence of "
            f"layers, but this method's is a {type(projector).__name__}; use from_head_layers 0"
        )
    layers = list(projector)
    relus = [i for i, m in enumerate(layers) if isinstance(m, nn.ReLU)]
    if len(relus) < num_layers:
        raise ConfigError(
            f"from_head_layers={num_layers}, but the projection head has {len(relus)} hidden "
            f"layer(s) (fc + ReLU) before its output; use from_head_layers "
            f"{'0' if not relus else f'0 to {len(relus)}'}, or pretrain with a deeper head "
            "(SimCLRv2 uses 3 layers: method.proj_layers=3)"
        )
    return layers[: relus[num_layers - 1] + 1]


def _output_width(layers: list[nn.Module], default: int) -> int:
    """Width after ``layers``: the ``out_features`` of the last Linear among them."""
    for m in reversed(layers):
        if isinstance(m, nn.Linear):
            return int(m.out_features)
    return default


class Trunk(nn.Module):
    """A backbone followed by kept projection-head layers: ``(B, 3, H, W)`` -> ``(B, D)``.

    Attributes:
        backbone: An encoder (``forward_features``).
        head: The kept head layers (empty: the trunk is the backbone).
        num_features: ``D``, the backbone's width or the last kept layer's.
    """

    def __init__(self, backbone: nn.Module, head: list[nn.Module] | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Sequential(*(head or []))
        self.num_features = _output_width(list(self.head), int(backbone.num_features))  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone.forward_features(x))  # type: ignore[operator]


class Classifier(nn.Module):
    """A trunk and a linear layer: ``(B, 3, H, W)`` -> ``(B, num_classes)`` logits.

    The linear layer starts from N(0, 0.01^2) weights and zero bias, as in the linear probe.
    """

    def __init__(self, trunk: Trunk, num_classes: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.num_features = trunk.num_features
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes)
        with torch.no_grad():
            self.fc.weight.normal_(0.0, 0.01)
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.trunk(x))


def trunk_from_method(method: nn.Module, from_head_layers: int) -> Trunk:
    """The trunk of a pretrained method: its backbone and ``from_head_layers`` head layers.

    The trunk shares its modules with ``method`` (no copy).
    """
    projector = getattr(method, "projector", None) if from_head_layers else None
    if from_head_layers and projector is None:
        raise ConfigError(
            f"{type(method).__name__} has no projection head to keep; use from_head_layers 0"
        )
    layers = head_layers(projector, from_head_layers) if projector is not None else []
    return Trunk(method.backbone, layers)  # type: ignore[arg-type]


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (all of them, trainable or not)."""
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------------------------
# Devices, precision, views
# --------------------------------------------------------------------------------------------
def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but no CUDA GPU is available; use cpu")
    return torch.device(name)


def use_bf16(precision: str, device: torch.device) -> bool:
    """Whether to run under bf16 autocast for ``precision`` on ``device``."""
    if precision == "auto":
        return runtime.fast_bf16_available(device.type)
    return precision == "bf16-mixed"


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on ``device`` when ``bf16``, else nothing."""
    if bf16:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def crop_flip_views(augment: AugmentConfig, crop_scale: tuple[float, float]) -> Views:
    """RandomResizedCrop + horizontal flip at the evaluation size, nothing else: the
    fine-tuning and distillation augmentation (:func:`~siamkit.data.augment.crop_flip_recipe`)."""
    return Views([crop_flip_recipe(augment, crop_scale)])


def predict_logits(
    model: Classifier,
    images: ImageData,
    augment: AugmentConfig,
    batch_size: int = 512,
    device: torch.device | str | None = None,
    bf16: bool = False,
    channels_last: bool = False,
) -> torch.Tensor:
    """Logits of centre views (:func:`~siamkit.data.augment.eval_views`), eval mode.

    The frozen-feature pass of evaluation (:func:`~siamkit.eval.features.extract_features`) with
    the classifier's kept head layers and linear layer as its head.

    Args:
        model: A classifier, ``(B, 3, S, S)`` -> ``(B, C)``.
        images: Any storage.
        augment: View size and normalisation.
        batch_size: Images per forward pass.
        device: Where to compute (default: the model's device).
        bf16: Run under bf16 autocast.
        channels_last: Feed channels-last tensors.

    Returns:
        ``(N, C)`` float32 on the CPU.
    """
    return extract_features(
        model.trunk.backbone,
        images,
        augment,
        batch_size=batch_size,
        device=device,
        bf16=bf16,
        channels_last=channels_last,
        head=nn.Sequential(model.trunk.head, model.fc),
    )


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int = 1) -> float:
    """Share (%) of rows of ``(N, C)`` logits whose ``k`` largest include the ``(N,)`` label."""
    k = min(k, logits.shape[1])
    hit = (logits.topk(k, dim=1).indices == labels[:, None]).any(dim=1)
    return float(hit.float().mean() * 100)


# --------------------------------------------------------------------------------------------
# The loop shared by fine-tuning and distillation
# --------------------------------------------------------------------------------------------
@dataclass
class SGDRun:
    """Settings of :func:`train_sgd`: plain (Nesterov) SGD with a per-step cosine decay."""

    epochs: int
    batch_size: int
    lr: float
    momentum: float
    nesterov: bool
    weight_decay: float


def sgd_loader(data: ImageData, views: Views, batch_size: int, seed: int) -> ResumableLoader:
    """Shuffled batches of ``data`` for :func:`train_sgd`: incomplete batches dropped, but at
    least one batch (BatchNorm in train mode needs every batch to hold two images or more)."""
    return make_loader(data, views.specs, min(batch_size, len(data)), train=True, seed=seed)


def train_sgd(
    model: nn.Module,
    loader: ResumableLoader,
    step: Callable[[Batch], torch.Tensor],
    run: SGDRun,
    bf16: bool,
    device: torch.device,
    what: str,
) -> list[float]:
    """Optimise ``model`` with SGD over ``run.epochs`` passes of ``loader``.

    Args:
        model: The trainable module (kept in train mode, so BatchNorm uses batch statistics).
        loader: Batches of the training images (:func:`sgd_loader`).
        step: A CPU batch -> scalar float32 loss (the caller augments and forwards).
        run: Optimiser settings.
        bf16: Call ``step`` under bf16 autocast.
        device: The model's device.
        what: Name of the run for the divergence message.

    Returns:
        Mean loss of every epoch.

    Raises:
        TrainingDivergedError: The loss became NaN or infinite.
    """
    from siamkit.train.schedules import cosine_with_warmup  # late: train imports eval

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(
        params,
        lr=run.lr,
        momentum=run.momentum,
        nesterov=run.nesterov,
        weight_decay=run.weight_decay,
    )
    total = run.epochs * len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_with_warmup(s, total, 0))
    model.train()
    history = []
    for epoch in range(run.epochs):
        loader.epoch_sampler.set_epoch(epoch)
        losses = []
        for batch in loader:
            with autocast(device, bf16):
                loss = step(batch)
            if not torch.isfinite(loss):
                raise TrainingDivergedError(
                    f"{what} loss became {float(loss)} in epoch {epoch + 1}; lower the learning "
                    f"rate (now {run.lr:g})"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        history.append(sum(losses) / len(losses))
    return history


# --------------------------------------------------------------------------------------------
# Classifier checkpoints
# --------------------------------------------------------------------------------------------
@dataclass
class ClassifierInfo:
    """What a classifier checkpoint records besides its weights.

    Attributes:
        backbone: The backbone's config.
        augment: View size and normalisation (the evaluation input).
        data: The data it was trained on.
        num_classes: Output width.
        from_head_layers: Projection-head layers in its trunk.
        method: The pretraining method's config (to rebuild the kept head layers), or ``None``.
        source: The pretraining checkpoint (fine-tuning) or the teacher (distillation); ``None``
            for a from-scratch baseline.
        kind: ``finetune``, ``scratch`` or ``distill``.
        label_indices: The labelled subset of the training split it used, ``(M,)``.
        labels_hash: Hash of the training labels the subset refers to.
        config: The fine-tuning or distillation config, as a dict.
        results: The run's results, as a dict.
        path: Where it was read from.
    """

    backbone: BackboneConfig
    augment: AugmentConfig
    data: DataConfig
    num_classes: int
    from_head_layers: int = 0
    method: dict[str, Any] | None = None
    source: str | None = None
    kind: str = "finetune"
    label_indices: torch.Tensor | None = None
    labels_hash: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    path: str | None = None

    def architecture(self) -> str:
        """E.g. ``small_cnn (width 0.25) + 1 head layer of simclr -> 10 classes``."""
        b = self.backbone
        text = f"{b.name} (width {b.width:g}{', cifar stem' if b.cifar_stem else ''})"
        if self.from_head_layers:
            name = (self.method or {}).get("name", "?")
            text += f" + {self.from_head_layers} head layer(s) of {name}"
        return f"{text} -> {self.num_classes} classes"


def build_classifier(info: ClassifierInfo) -> Classifier:
    """A freshly initialised classifier of the architecture ``info`` describes."""
    backbone = create_backbone(info.backbone)
    if info.from_head_layers:
        from siamkit.methods import create_method

        method_cfg = from_dict(MethodConfig, dict(info.method or {}), "method")
        trunk = trunk_from_method(create_method(backbone, method_cfg), info.from_head_layers)
    else:
        trunk = Trunk(backbone)
    return Classifier(trunk, info.num_classes)


def save_classifier(path: str | Path, model: Classifier, info: ClassifierInfo) -> Path:
    """``torch.save`` the classifier's weights and ``info`` under :data:`CLASSIFIER_KEY`."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "version": 1,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "backbone": config_to_dict(info.backbone),
        "augment": config_to_dict(info.augment),
        "data": config_to_dict(info.data),
        "num_classes": info.num_classes,
        "num_features": model.num_features,
        "from_head_layers": info.from_head_layers,
        "method": info.method,
        "source": info.source,
        "kind": info.kind,
        "label_indices": info.label_indices,
        "labels_hash": info.labels_hash,
        "config": info.config,
        "results": info.results,
    }
    tmp = p.with_name(p.name + ".tmp")
    torch.save({CLASSIFIER_KEY: payload}, tmp)
    tmp.replace(p)
    return p


def load_classifier(
    path: str | Path, expect_backbone: BackboneConfig | None = None
) -> tuple[Classifier, ClassifierInfo]:
    """Read a classifier checkpoint written by :func:`finetune` or by distillation.

    Args:
        path: The ``classifier.pt`` file, or the output folder holding it.
        expect_backbone: When given, the backbone the caller needs; another one is an error.

    Returns:
        The classifier in eval mode on the CPU, and what its checkpoint records.

    Raises:
        CheckpointError: Missing or unreadable file; not a classifier checkpoint (e.g. a
            pretraining checkpoint); another architecture than expected or than its weights.
    """
    p = Path(path)
    if p.is_dir():
        p = p / CLASSIFIER_FILE
    if not p.is_file():
        raise CheckpointError(
            f"classifier checkpoint {str(p)!r} not found; run `siamkit eval finetune` first and "
            "pass its output folder (or its classifier.pt)"
        )
    from siamkit.train.checkpoint import load_file  # late: train imports eval

    raw = load_file(
        p, "classifier checkpoint", "it may be truncated: run `siamkit eval finetune` again"
    )
    if not isinstance(raw, dict) or CLASSIFIER_KEY not in raw:
        hint = (
            " (it is a pretraining checkpoint, which has no classifier)"
            if isinstance(raw, dict) and "siamkit_config" in raw
            else ""
        )
        raise CheckpointError(
            f"{str(p)!r} is not a classifier checkpoint{hint}; run `siamkit eval finetune "
            f"--checkpoint {p}` first and pass its output folder"
        )
    payload = raw[CLASSIFIER_KEY]
    try:
        info = ClassifierInfo(
            backbone=from_dict(BackboneConfig, payload["backbone"], "backbone"),
            augment=from_dict(AugmentConfig, payload["augment"], "augment"),
            data=from_dict(DataConfig, payload["data"], "data"),
            num_classes=int(payload["num_classes"]),
            from_head_layers=int(payload["from_head_layers"]),
            method=payload.get("method"),
            source=payload.get("source"),
            kind=str(payload.get("kind", "finetune")),
            label_indices=payload.get("label_indices"),
            labels_hash=payload.get("labels_hash"),
            config=dict(payload.get("config") or {}),
            results=dict(payload.get("results") or {}),
            path=str(p),
        )
    except (KeyError, TypeError, ValueError, ConfigError) as err:
        raise CheckpointError(
            f"classifier checkpoint {str(p)!r} has an invalid record ({err}); run "
            "`siamkit eval finetune` again"
        ) from None
    if expect_backbone is not None and expect_backbone != info.backbone:
        wanted = dataclasses.replace(info, backbone=expect_backbone).architecture()
        raise CheckpointError(
            f"classifier checkpoint {str(p)!r} holds a {info.architecture()}, but a {wanted} "
            "was asked for; pass the matching backbone or another checkpoint"
        )
    model = build_classifier(info)
    try:
        missing, unexpected = model.load_state_dict(payload["state_dict"], strict=False)
        problem = f"missing {missing[:3]}, unexpected {unexpected[:3]}"
    except RuntimeError as err:  # shape mismatches
        missing, unexpected, problem = ["?"], [], str(err).splitlines()[1].strip()
    if missing or unexpected:
        raise CheckpointError(
            f"classifier checkpoint {str(p)!r} records a {info.architecture()}, but its weights "
            f"belong to another architecture ({problem}); run `siamkit eval finetune` again"
        )
    return model.eval(), info


# --------------------------------------------------------------------------------------------
# Fine-tuning
# --------------------------------------------------------------------------------------------
@dataclass
class FinetuneResult:
    """Figures of a fine-tuning run (accuracies in %).

    Attributes:
        top1: Test top-1.
        top5: Test top-5.
        train_top1: Top-1 on the labelled training subset (centre view).
        num_labelled: Labelled training images used.
        num_classes: Classes.
        label_fraction: Share of each class's labels.
        from_head_layers: Projection-head layers kept.
        source: The pretraining checkpoint; ``None`` for the scratch baseline.
        epochs: Passes over the labelled subset.
        lr: Peak learning rate.
        num_params: Parameters of the classifier.
        seconds: Wall-clock time.
        losses: Mean loss per epoch.
        classifier_path: The written classifier checkpoint, if any.
        index_file: The index file of the labelled subset, if any.
    """

    top1: float
    top5: float
    train_top1: float
    num_labelled: int
    num_classes: int
    label_fraction: float
    from_head_layers: int
    source: str | None
    epochs: int
    lr: float
    num_params: int
    seconds: float
    losses: list[float] = field(default_factory=list)
    classifier_path: str | None = None
    index_file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"protocol": "finetune", **dataclasses.asdict(self)}


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


def finetune(
    data: DataConfig | None = None,
    cfg: FinetuneConfig | None = None,
    checkpoint: str | Path | None = None,
    index_file: str | Path | None = None,
    backbone: BackboneConfig | None = None,
    augment: AugmentConfig | None = None,
    output: str | Path | None = None,
    splits: Splits | None = None,
) -> FinetuneResult:
    """Fine-tune a pretrained checkpoint (or train from scratch) on a labelled subset.

    Steps: 1. build the classifier (the checkpoint's backbone and ``cfg.from_head_layers`` head
    layers, or a fresh ``backbone``, plus a new linear layer); 2. draw or read the class-balanced
    subset of the training labels; 3. train the whole network with SGD on crop+flip views
    (BatchNorm in train mode); 4. evaluate top-1/top-5 on the held-out split; 5. write
    ``classifier.pt``, ``results.json`` and ``label_indices.txt`` to ``output``.

    Args:
        data: The labelled data. ``None``: the checkpoint's own data.
        cfg: The recipe (default :class:`FinetuneConfig`).
        checkpoint: A pretraining checkpoint (file or run folder) of any method; ``None`` trains
            a supervised baseline from random initialisation with the same recipe.
        index_file: Index file of the labelled subset, reused when it exists (it must match the
            data, fraction and seed), else written. ``None``: drawn from the fraction and seed.
        backbone: The baseline's backbone (required without ``checkpoint``).
        augment: View size, aspect ratios, flip and normalisation. ``None``: the checkpoint's;
            for the baseline, views at the images' own size with ImageNet normalisation.
        output: Folder for the classifier checkpoint and results.
        splits: Already loaded data (default: load ``data``).

    Raises:
        ConfigError: Impossible settings (e.g. head layers without a checkpoint).
        DataError: No labels, no labelled held-out split, or an index file for other data.
        CheckpointError: An unreadable pretraining checkpoint.
    """
    start = time.perf_counter()
    cfg = cfg or FinetuneConfig()
    device = resolve_device(cfg.device)
    # 1. The trunk: pretrained (plus kept head layers) or fresh.
    method_dict: dict[str, Any] | None = None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        if checkpoint is not None:
            from siamkit.train.checkpoint import load_method  # late: train imports eval

            run_cfg, method = load_method(checkpoint)
            trunk = trunk_from_method(method, cfg.from_head_layers)
            backbone_cfg = run_cfg.backbone
            augment = augment or run_cfg.augment
            data = data or run_cfg.data
            if cfg.from_head_layers:
                method_dict = config_to_dict(run_cfg.method)
        else:
            if backbone is None or data is None:
                raise ConfigError(
                    "a from-scratch baseline needs a backbone config and data (the same as the "
                    "pretrained model's, for a fair comparison); or pass a pretraining checkpoint"
                )
            if cfg.from_head_layers:
                raise ConfigError(
                    "from_head_layers needs a pretrained projection head, and a from-scratch "
                    "baseline has none; use from_head_layers 0 with --scratch"
                )
            backbone_cfg = backbone
            trunk = Trunk(create_backbone(backbone))
        # 2. The data and the labelled subset.
        splits = splits or load_splits(data)
        y_train = require_labels(splits.train, "fine-tuning")
        test = labelled_test(splits, "fine-tuning")
        assert test.labels is not None
        if augment is None:
            augment = AugmentConfig(size=_image_side(splits.train))
        name = dataset_name(data)
        indices = subset_indices(y_train, cfg.label_fraction, cfg.seed, index_file, name)
        num_classes = num_classes_of(splits)
        model = Classifier(trunk, num_classes)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    bf16 = use_bf16(cfg.precision, device)

    # 3. Train on crop + flip views of the labelled images.
    labelled = splits.train.subset(indices)
    labels = y_train[indices]
    views = crop_flip_views(augment, cfg.crop_scale)
    view_gen = torch.Generator(device=device).manual_seed(cfg.seed)

    def step(batch: Batch) -> torch.Tensor:
        x = views(to_device(batch, device).images, view_gen)[0]
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        logits = model(x).float()  # the loss in float32
        return F.cross_entropy(logits, batch.labels.to(device), label_smoothing=cfg.label_smoothing)

    run = SGDRun(
        cfg.num_epochs, cfg.batch_size, cfg.peak_lr, cfg.momentum, cfg.nesterov, cfg.weight_decay
    )
    loader = sgd_loader(labelled, views, run.batch_size, cfg.seed)
    losses = train_sgd(model, loader, step, run, bf16, device, "fine-tuning")

    # 4. Evaluate.
    logits_of = functools.partial(
        predict_logits,
        augment=augment,
        batch_size=cfg.eval_batch_size,
        bf16=bf16,
        channels_last=cfg.channels_last,
    )
    test_logits = logits_of(model, test)
    train_logits = logits_of(model, labelled)
    result = FinetuneResult(
        top1=topk_accuracy(test_logits, test.labels, 1),
        top5=topk_accuracy(test_logits, test.labels, 5),
        train_top1=topk_accuracy(train_logits, labels, 1),
        num_labelled=len(indices),
        num_classes=num_classes,
        label_fraction=cfg.label_fraction,
        from_head_layers=cfg.from_head_layers,
        source=None if checkpoint is None else str(checkpoint),
        epochs=run.epochs,
        lr=run.lr,
        num_params=count_parameters(model),
        seconds=0.0,
        losses=losses,
        index_file=None if index_file is None else str(index_file),
    )

    # 5. Write the classifier, the subset and the results.
    if output is not None:
        out = Path(output)
        meta = subset_meta(y_train, cfg.label_fraction, cfg.seed, name)
        write_index_file(out / INDEX_FILE, indices, meta)
        result.classifier_path = str(out / CLASSIFIER_FILE)
        result.seconds = time.perf_counter() - start
        info = ClassifierInfo(
            backbone=backbone_cfg,
            augment=augment,
            data=data,
            num_classes=num_classes,
            from_head_layers=cfg.from_head_layers,
            method=method_dict,
            source=result.source,
            kind="scratch" if checkpoint is None else "finetune",
            label_indices=indices,
            labels_hash=labels_hash(y_train),
            config=config_to_dict(cfg),
            results=result.to_dict(),
        )
        save_classifier(out / CLASSIFIER_FILE, model.cpu(), info)
        write_results(out / RESULTS_FILE, result.to_dict())
    result.seconds = time.perf_counter() - start
    return result


def _image_side(data: ImageData) -> int:
    """The side of a memory set's images (the default view size of a scratch baseline)."""
    images = getattr(data, "images", None)
    if images is None:
        raise ConfigError(
            "a from-scratch baseline on streamed images needs the view size: pass augment"
        )
    return int(images.shape[-1])


def write_results(path: Path, results: dict[str, Any]) -> Path:
    """Write ``results`` as indented JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return path


__all__ = [
    "CLASSIFIER_KEY",
    "Classifier",
    "ClassifierInfo",
    "FinetuneConfig",
    "FinetuneResult",
    "Trunk",
    "build_classifier",
    "crop_flip_views",
    "finetune",
    "head_layers",
    "load_classifier",
    "predict_logits",
    "save_classifier",
    "sgd_loader",
    "topk_accuracy",
    "train_sgd",
    "trunk_from_method",
]
