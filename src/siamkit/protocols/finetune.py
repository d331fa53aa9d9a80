"""Fine-tuning with few labels: SimCLR's semi-supervised protocol and SimCLRv2's variant.

A pretrained checkpoint of any method is fine-tuned end to end, with a new linear classifier, on a
class-balanced subset (e.g. 1% or 10%) of the training labels (:mod:`siamkit.data.splits`), and
evaluated on the held-out split. SimCLR fine-tunes from the backbone output h [arXiv:2002.05709,
Sec. 6 and Appendix B.5]; SimCLRv2 keeps the projection head's first layer and fine-tunes "from a
middle layer of the projection head (the 1st layer) instead of the input layer"
[arXiv:2006.10029, Sec. 2] (``from_head_layers=1``). A from-scratch supervised baseline on the
same labelled images uses the same recipe (``checkpoint=None``).

Training runs on the engine of pretraining (:mod:`siamkit.protocols.supervised`): any devices,
DDP, logs, checkpoints and ``--resume``. The result is a :class:`~siamkit.protocols.classifier.
Classifier` checkpoint that :func:`~siamkit.protocols.classifier.load_classifier` reads back,
e.g. as the teacher of :func:`siamkit.protocols.distill.distill`.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

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
from siamkit.protocols.classifier import (
    CLASSIFIER_FILE,
    Classifier,
    ClassifierInfo,
    Trunk,
    count_parameters,
    predict_logits,
    save_classifier,
    topk_accuracy,
    trunk_from_method,
)
from siamkit.protocols.supervised import (
    RESULTS_FILE,
    Machine,
    SGDModule,
    SGDRun,
    check_output,
    check_resume,
    check_sgd,
    crop_flip_views,
    fit,
    labelled_test,
    num_classes_of,
    steps_per_epoch,
    train_data,
    write_results,
)
from siamkit.strict import to_dict as config_to_dict

#: File of the labelled subset inside a fine-tuning output folder.
INDEX_FILE = "label_indices.txt"


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------
@dataclass
class FinetuneConfig(Machine):
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
            :func:`siamkit.runtime.fast_bf16_available`), ``bf16-mixed`` or ``32-true``.
            The loss is computed in float32 either way.
        channels_last: Feed convolutions channels-last tensors (faster with bf16 on CPUs).
        eval_batch_size: Images per forward pass when evaluating.

    The machine's settings (accelerator, devices, strategy, ...) are :class:`Machine`'s.
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
    check_output(output, {"--data": data.path if data else None, "--checkpoint": checkpoint})
    # A bad --resume is an error before anything is written; the checkpoint is read once.
    resume_point = None if resume is None else check_resume(resume)
    # 1. The trunk: pretrained (plus kept head layers) or fresh.
    method_dict: dict[str, Any] | None = None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        if checkpoint is not None:
            run_cfg, method = load_method(checkpoint)
            trunk = trunk_from_method(method, cfg.from_head_layers)
            # Every layer trains, a patch projection frozen in pretraining too: MoCo v3
            # [arXiv:2104.02057] fine-tunes its ViTs end to end with DeiT's recipe.
            trunk.requires_grad_(True)
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
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)

    # 3. Train on crop + flip views of the labelled images.
    labelled = splits.train.subset(indices)
    labels = y_train[indices]
    views = crop_flip_views(augment, cfg.crop_scale)

    def cross_entropy(view: Callable[[Batch], torch.Tensor], batch: Batch) -> torch.Tensor:
        logits = model(view(batch)).float()  # the loss in float32
        return F.cross_entropy(logits, batch.labels, label_smoothing=cfg.label_smoothing)

    run = SGDRun(
        cfg.num_epochs,
        cfg.batch_size,
        cfg.peak_lr,
        cfg.momentum,
        cfg.nesterov,
        cfg.weight_decay,
        cfg.precision,
        cfg.channels_last,
        cfg.seed,
    )
    module = SGDModule(
        model,
        cross_entropy,
        views,
        run,
        steps_per_epoch(len(labelled), run.batch_size, cfg),
        "fine-tuning",
    )
    loader = train_data(labelled, views, run.batch_size, cfg.seed, cfg)
    source = None if checkpoint is None else str(checkpoint)
    config = {
        "finetune": cfg,
        "checkpoint": source,
        "data": data,
        "backbone": backbone_cfg,
        "augment": augment,
    }
    trainer = fit(module, loader, cfg, output, resume_point, overwrite, config)

    # 4. Evaluate (one process reports).
    result = FinetuneResult(
        top1=float("nan"),
        top5=float("nan"),
        train_top1=float("nan"),
        num_labelled=len(indices),
        num_classes=num_classes,
        label_fraction=cfg.label_fraction,
        from_head_layers=cfg.from_head_layers,
        source=source,
        epochs=run.epochs,
        lr=run.lr,
        num_params=count_parameters(model),
        seconds=0.0,
        losses=module.losses,
        index_file=None if index_file is None else str(index_file),
    )
    if not trainer.is_global_zero:
        return result
    logits_of = functools.partial(
        predict_logits,
        augment=augment,
        batch_size=cfg.eval_batch_size,
        bf16=trainer.precision == "bf16-mixed",
        channels_last=cfg.channels_last,
    )
    test_logits = logits_of(model, test)
    train_logits = logits_of(model, labelled)
    result.top1 = topk_accuracy(test_logits, test.labels, 1)
    result.top5 = topk_accuracy(test_logits, test.labels, 5)
    result.train_top1 = topk_accuracy(train_logits, labels, 1)

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
