"""Fine-tuning with few labels: SimCLR's semi-supervised protocol and SimCLRv2's variant.

A pretrained checkpoint of any method is fine-tuned end to end, with a new linear classifier, on a
class-balanced subset (e.g. 1% or 10%) of the training labels (:mod:`siamkit.data.splits`), and
evaluated on the held-out split. SimCLR fine-tunes from the backbone output h [arXiv:2002.05709,
Sec. 6 and Appendix B.5]; SimCLRv2 keeps the projection head's first layer and fine-tunes "from a
middle layer of the projection head (the 1st layer) instead of the input layer"
[arXiv:2006.10029, Sec. 2] (``from_head_layers=1``). A from-scratch supervised baseline on the
same labelled images uses the same recipe (``checkpoint=None``).

Training runs on the engine of pretraining (:mod:`siamkit.supervised.sgd`): any devices,
DDP, logs, checkpoints and ``--resume``. The result is a :class:`~siamkit.supervised.classifier.
Classifier` checkpoint that :func:`~siamkit.supervised.classifier.load_classifier` reads back,
e.g. as the teacher of :func:`siamkit.supervised.distill.distill`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from siamkit.checkpoints import load_method
from siamkit.config import AugmentConfig, BackboneConfig, DataConfig
from siamkit.data.datasets import Splits, load_splits, require_labels
from siamkit.data.loader import Batch, ImageData
from siamkit.data.splits import (
    check_fraction,
    dataset_name,
    labels_hash,
    subset_indices,
    subset_meta,
    write_index_file,
)
from siamkit.encoders import create_backbone
from siamkit.errors import ConfigError
from siamkit.strict import to_dict as config_to_dict
from siamkit.supervised.classifier import (
    CLASSIFIER_FILE,
    Classifier,
    ClassifierInfo,
    Trunk,
    count_parameters,
    topk_accuracy,
    trunk_from_method,
)
from siamkit.supervised.run import (
    ClassifierJob,
    RunOutput,
    logits_reader,
    save_run,
    train_classifier,
)
from siamkit.supervised.sgd import (
    SGDConfig,
    crop_flip_views,
    labelled_test,
    num_classes_of,
    train_data,
)

#: File of the labelled subset inside a fine-tuning output folder.
INDEX_FILE = "label_indices.txt"


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------
@dataclass
class FinetuneConfig(SGDConfig):
    """The fine-tuning recipe, SimCLR's [arXiv:2002.05709, Appendix B.5] scaled to small runs.

    SimCLR fine-tunes "using the Nesterov momentum optimizer with a batch size of 4096, momentum
    of 0.9, and a learning rate of 0.8 (following LearningRate = 0.05 x BatchSize/256) without
    warmup. Only random cropping (with random left-to-right flipping and resizing ...) is used
    for preprocessing. We do not use any regularization (including weight decay). For 1% labeled
    data we fine-tune for 60 epochs, and for 10% labeled data we fine-tune for 30 epochs."
    The same rule is kept here with a cosine decay of the lr (as every schedule in siamkit) and a
    batch of 64, which gives a 1% CIFAR-10 subset (500 images) several steps per epoch on a CPU.
    The SGD, view and machine settings are :class:`SGDConfig`'s: ``epochs`` ``None`` means 60
    for label fractions up to 1% and 30 above, ``lr`` ``None`` means ``0.05 x batch_size / 256``,
    and ``weight_decay`` is 0 ("We do not use any regularization").

    Attributes:
        label_smoothing: Label smoothing of the cross-entropy (0: none).
        label_fraction: Share of each class's training labels, in (0, 1]; 0.01 and 0.1 are
            SimCLR's semi-supervised settings [Sec. 6].
        from_head_layers: Hidden layers of the pretrained projection head kept below the
            classifier: 0 fine-tunes from the backbone output h (SimCLR); 1 from the head's first
            layer, fc(+BN)+ReLU (SimCLRv2's default for 1%/10% labels [arXiv:2006.10029,
            Sec. 3]); k keeps the head up to its k-th ReLU.
    """

    section: ClassVar[str] = "finetune"
    lr_per_256: ClassVar[float] = 0.05  # [arXiv:2002.05709, Appendix B.5]

    label_smoothing: float = 0.0
    label_fraction: float = 0.01
    from_head_layers: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fraction(self.label_fraction)
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


def finetune(
    data: DataConfig | None = None,
    cfg: FinetuneConfig | None = None,
    checkpoint: str | Path | None = None,
    index_file: str | Path | None = None,
    backbone: BackboneConfig | None = None,
    augment: AugmentConfig | None = None,
    output: str | Path | None = None,
    splits: Splits | None = None,
    resume: str | Path | None = None,
    overwrite: bool = False,
) -> FinetuneResult:
    """Fine-tune a pretrained checkpoint (or train from scratch) on a labelled subset.

    Steps: 1. build the classifier (the checkpoint's backbone and ``cfg.from_head_layers`` head
    layers, or a fresh ``backbone``, plus a new linear layer); 2. draw or read the class-balanced
    subset of the training labels; 3. train the whole network with SGD on crop+flip views
    (BatchNorm in train mode) on the engine of pretraining; 4. evaluate top-1/top-5 on the
    held-out split; 5. write ``classifier.pt``, ``results.json`` and ``label_indices.txt`` to
    ``output`` (with the run's logs and checkpoints).

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
        output: Folder for the classifier checkpoint, results, logs and checkpoints.
        splits: Already loaded data (default: load ``data``).
        resume: A checkpoint of an interrupted fine-tuning run (or its output folder).
        overwrite: Replace the checkpoints of an earlier run in ``output``.

    Returns:
        The figures (NaN on processes other than rank 0 of a multi-process run).

    Raises:
        ConfigError: Impossible settings (e.g. head layers without a checkpoint).
        DataError: No labels, no labelled held-out split, or an index file for other data.
        CheckpointError: An unreadable pretraining checkpoint.
    """
    start = time.perf_counter()
    cfg = cfg or FinetuneConfig()
    inputs = {"--data": data.path if data else None, "--checkpoint": checkpoint}
    where = RunOutput.check(output, resume, overwrite, inputs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        if checkpoint is not None:
            begin = _pretrained(checkpoint, cfg, data, augment)
        else:
            begin = _scratch(backbone, cfg, data, augment)
        splits = splits or load_splits(begin.data)
        subset = _labelled_subset(splits, begin, cfg, index_file)
        model = Classifier(begin.trunk, subset.num_classes)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    job = _job(model, subset, begin, cfg, checkpoint)
    module, trainer = train_classifier(job, cfg, where)
    result = FinetuneResult(
        top1=float("nan"),
        top5=float("nan"),
        train_top1=float("nan"),
        num_labelled=len(subset.indices),
        num_classes=subset.num_classes,
        label_fraction=cfg.label_fraction,
        from_head_layers=cfg.from_head_layers,
        source=None if checkpoint is None else str(checkpoint),
        epochs=cfg.num_epochs,
        lr=cfg.peak_lr,
        num_params=count_parameters(model),
        seconds=0.0,
        losses=module.losses,
        index_file=None if index_file is None else str(index_file),
    )
    if trainer.is_global_zero:  # one process reports and writes
        _evaluate(result, logits_reader(trainer, subset.augment, cfg), model, subset)
        if where.folder is not None:
            result.seconds = time.perf_counter() - start
            _write(where.folder, result, model, begin, subset, cfg, job.config)
    result.seconds = time.perf_counter() - start
    return result


@dataclass
class _Start:
    """Where fine-tuning starts: the trunk and what it came with."""

    trunk: Trunk
    backbone: BackboneConfig
    data: DataConfig
    augment: AugmentConfig | None
    method: dict[str, Any] | None = None  # the pretraining method (to rebuild kept head layers)


@dataclass
class _Subset:
    """The labelled training subset and the held-out split, as fine-tuning uses them."""

    images: ImageData
    labels: torch.Tensor  # (M,) labels of ``images``
    indices: torch.Tensor  # (M,) their positions in the training split
    all_labels: torch.Tensor  # (N,) every training label (the subset's record refers to them)
    test: ImageData
    num_classes: int
    augment: AugmentConfig
    dataset: str


def _pretrained(
    checkpoint: str | Path,
    cfg: FinetuneConfig,
    data: DataConfig | None,
    augment: AugmentConfig | None,
) -> _Start:
    """The pretrained backbone and ``cfg.from_head_layers`` head layers, all trainable."""
    run_cfg, method = load_method(checkpoint)
    trunk = trunk_from_method(method, cfg.from_head_layers)
    # Every layer trains, a patch projection frozen in pretraining too: MoCo v3
    # [arXiv:2104.02057] fine-tunes its ViTs end to end with DeiT's recipe.
    trunk.requires_grad_(True)
    kept_head = config_to_dict(run_cfg.method) if cfg.from_head_layers else None
    return _Start(
        trunk, run_cfg.backbone, data or run_cfg.data, augment or run_cfg.augment, kept_head
    )


def _scratch(
    backbone: BackboneConfig | None,
    cfg: FinetuneConfig,
    data: DataConfig | None,
    augment: AugmentConfig | None,
) -> _Start:
    """A randomly initialised backbone: the supervised baseline."""
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
    return _Start(Trunk(create_backbone(backbone)), backbone, data, augment)


def _labelled_subset(
    splits: Splits, begin: _Start, cfg: FinetuneConfig, index_file: str | Path | None
) -> _Subset:
    """The class-balanced subset of ``cfg.label_fraction`` of the labels (or ``index_file``'s)."""
    y_train = require_labels(splits.train, "fine-tuning")
    test = labelled_test(splits, "fine-tuning")
    augment = begin.augment or AugmentConfig(size=_image_side(splits.train))
    name = dataset_name(begin.data)
    indices = subset_indices(y_train, cfg.label_fraction, cfg.seed, index_file, name)
    return _Subset(
        images=splits.train.subset(indices),
        labels=y_train[indices],
        indices=indices,
        all_labels=y_train,
        test=test,
        num_classes=num_classes_of(splits),
        augment=augment,
        dataset=name,
    )


def _job(
    model: Classifier,
    subset: _Subset,
    begin: _Start,
    cfg: FinetuneConfig,
    checkpoint: str | Path | None,
) -> ClassifierJob:
    """Cross-entropy on crop + flip views of the labelled images."""
    views = crop_flip_views(subset.augment, cfg.crop_scale)

    def cross_entropy(view: Callable[[Batch], torch.Tensor], batch: Batch) -> torch.Tensor:
        logits = model(view(batch)).float()  # the loss in float32
        return F.cross_entropy(logits, batch.labels, label_smoothing=cfg.label_smoothing)

    config = {
        "finetune": cfg,
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "data": begin.data,
        "backbone": begin.backbone,
        "augment": subset.augment,
    }
    loader = train_data(subset.images, views, cfg.batch_size, cfg.seed, cfg)
    return ClassifierJob(
        model, cross_entropy, views, loader, len(subset.images), "fine-tuning", config
    )


def _evaluate(
    result: FinetuneResult,
    read: Callable[[Classifier, ImageData], torch.Tensor],
    model: Classifier,
    subset: _Subset,
) -> None:
    """Test top-1/top-5 and the labelled subset's top-1, into ``result``."""
    assert subset.test.labels is not None  # labelled_test checked it
    test_logits = read(model, subset.test)
    result.top1 = topk_accuracy(test_logits, subset.test.labels, 1)
    result.top5 = topk_accuracy(test_logits, subset.test.labels, 5)
    result.train_top1 = topk_accuracy(read(model, subset.images), subset.labels, 1)


def _write(
    out: Path,
    result: FinetuneResult,
    model: Classifier,
    begin: _Start,
    subset: _Subset,
    cfg: FinetuneConfig,
    config: dict[str, Any],
) -> None:
    """The labelled subset's index file, the classifier and the results in ``out``."""
    meta = subset_meta(subset.all_labels, cfg.label_fraction, cfg.seed, subset.dataset)
    write_index_file(out / INDEX_FILE, subset.indices, meta)
    result.classifier_path = str(out / CLASSIFIER_FILE)
    info = ClassifierInfo(
        backbone=begin.backbone,
        augment=subset.augment,
        data=begin.data,
        num_classes=subset.num_classes,
        from_head_layers=cfg.from_head_layers,
        method=begin.method,
        source=result.source,
        kind="scratch" if result.source is None else "finetune",
        label_indices=subset.indices,
        labels_hash=labels_hash(subset.all_labels),
        config=config_to_dict(cfg),
        results=result.to_dict(),
    )
    save_run(out, model, info, result.to_dict())


def _image_side(data: ImageData) -> int:
    """The side of a memory set's images (the default view size of a scratch baseline)."""
    if data.image_side is None:
        raise ConfigError(
            "a from-scratch baseline on streamed images needs the view size: pass augment"
        )
    return data.image_side
