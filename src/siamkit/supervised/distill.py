"""SimCLRv2's distillation: a fine-tuned teacher labels the unlabelled images for a student.

"we use the fine-tuned network as a teacher to impute labels for training a student network"
[arXiv:2006.10029, Sec. 2]: the teacher (a :class:`~siamkit.supervised.finetune.Classifier`, e.g.
from ``siamkit eval finetune``) is fixed, in eval mode and without gradients; on every training
image (labelled or not) the student minimises the cross-entropy to the teacher's softened
prediction (:func:`siamkit.losses.distillation.soft_target_cross_entropy`, Eq. 2), computed on the
same augmented view the student sees. With labels it can add the labelled cross-entropy (Eq. 3)::

    L = -(1 - alpha) sum_{(x_i, y_i) in D_L} log P_S(y_i | x_i)
        - alpha sum_{x_i in D} sum_y P_T(y | x_i; tau) log P_S(y | x_i; tau)

Training runs on the engine of pretraining (:mod:`siamkit.supervised.sgd`): any devices,
DDP, logs, checkpoints and ``--resume``. The student has the teacher's backbone
(self-distillation) or a smaller one (big-to-small), in both cases without projection-head
layers ("the student has the same model architecture as the teacher (excluding projection
head)" [Sec. 3]), and starts from random weights.
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
from lightning.pytorch.utilities.combined_loader import CombinedLoader

from siamkit.config import BackboneConfig, DataConfig
from siamkit.data.datasets import Splits, load_splits
from siamkit.data.device_decode import to_device
from siamkit.data.loader import Batch, ImageData
from siamkit.data.splits import labels_hash
from siamkit.encoders import create_backbone
from siamkit.errors import ConfigError, DataError
from siamkit.losses.distillation import soft_target_cross_entropy
from siamkit.strict import to_dict as config_to_dict
from siamkit.supervised.classifier import (
    CLASSIFIER_FILE,
    Classifier,
    ClassifierInfo,
    Trunk,
    count_parameters,
    load_classifier,
    topk_accuracy,
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
    train_data,
)
from siamkit.train.engine import TrainData


@dataclass
class DistillConfig(SGDConfig):
    """The distillation recipe.

    SimCLRv2 distils on ImageNet with "the same learning rate schedule, weight decay, batch size
    as pretraining" (LARS) for 400 epochs, with "only random crop and horizontal flips"
    [arXiv:2006.10029, Sec. 3]. The student here starts from random weights, so the defaults are
    the usual supervised recipe for SGD from scratch, lr ``0.1 x batch / 256`` and weight decay
    1e-4 (Goyal et al., arXiv:1706.02677, Sec. 2.1 and 5.1), with Nesterov momentum and a cosine
    decay, for a number of epochs that suits a CPU (the CLI can raise it).

    The SGD, view and machine settings are :class:`SGDConfig`'s; here ``epochs`` (30) counts
    passes over the unlabelled training images and ``seed`` also seeds the student's
    initialisation.

    Attributes:
        temperature: tau of Eq. 2, applied to teacher and student. SimCLRv2 finds "the effect of
            temperatures between 0.1 and 1 is very small" [Sec. 3]; 1 is Hinton et al.'s plain
            softmax.
        alpha: Weight of the distillation term in Eq. 3; ``1 - alpha`` weighs the labelled
            cross-entropy on the teacher's labelled subset. 1 (distillation only) is the paper's
            default: "For distillation, we only use unlabeled examples, unless otherwise
            specified" [Sec. 3].
    """

    section: ClassVar[str] = "distill"
    lr_per_256: ClassVar[float] = 0.1  # Goyal et al.'s linear scaling rule [arXiv:1706.02677]

    epochs: int = 30  # never None: no rule derives it
    weight_decay: float = 1e-4
    temperature: float = 1.0
    alpha: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.temperature > 0:
            raise ConfigError(
                f"distill.temperature must be positive, got {self.temperature} "
                "(SimCLRv2 uses values between 0.1 and 1)"
            )
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(
                f"distill.alpha must be in [0, 1] (the weight of the distillation loss; 1 - "
                f"alpha weighs the labelled cross-entropy), got {self.alpha}"
            )


@dataclass
class DistillResult:
    """Figures of a distillation run (accuracies in %).

    Attributes:
        teacher_top1: The teacher's test top-1.
        teacher_top5: The teacher's test top-5.
        student_top1: The student's test top-1.
        student_top5: The student's test top-5.
        agreement: Test images on which student and teacher predict the same class.
        student_params: Parameters of the student.
        teacher_params: Parameters of the teacher.
        student_backbone: The student's backbone config, as a dict.
        epochs: Passes over the training images.
        temperature: tau.
        alpha: Weight of the distillation term.
        num_images: Training images distilled on.
        seconds: Wall-clock time.
        losses: Mean loss per epoch.
        teacher: The teacher checkpoint.
        classifier_path: The written student checkpoint, if any.
    """

    teacher_top1: float
    teacher_top5: float
    student_top1: float
    student_top5: float
    agreement: float
    student_params: int
    teacher_params: int
    student_backbone: dict[str, Any]
    epochs: int
    temperature: float
    alpha: float
    num_images: int
    seconds: float
    losses: list[float] = field(default_factory=list)
    teacher: str | None = None
    classifier_path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"protocol": "distill", **dataclasses.asdict(self)}


def distill(
    teacher: str | Path,
    data: DataConfig | None = None,
    cfg: DistillConfig | None = None,
    student_backbone: BackboneConfig | None = None,
    output: str | Path | None = None,
    splits: Splits | None = None,
    resume: str | Path | None = None,
    overwrite: bool = False,
) -> DistillResult:
    """Distil a fine-tuned teacher into a student on the training images.

    Steps: 1. load the teacher (fixed: eval mode, no gradients); 2. build a randomly initialised
    student (the teacher's backbone, or ``student_backbone``, and a linear layer); 3. on every
    step, one crop+flip view of a batch of training images goes through teacher and student and
    the student minimises Eq. 3, on the engine of pretraining; 4. evaluate both on the held-out
    split; 5. write the student's ``classifier.pt`` (readable by
    :func:`~siamkit.supervised.classifier.load_classifier`) and ``results.json`` to ``output``.

    Args:
        teacher: A classifier checkpoint (``classifier.pt`` or its folder).
        data: The data. ``None``: the teacher's. Its training labels are not used unless
            ``cfg.alpha < 1`` (then only those of the teacher's labelled subset).
        cfg: The recipe (default :class:`DistillConfig`).
        student_backbone: The student's backbone. ``None``: the teacher's (self-distillation).
        output: Folder for the student checkpoint, results, logs and checkpoints.
        splits: Already loaded data (default: load ``data``).
        resume: A checkpoint of an interrupted distillation (or its output folder).
        overwrite: Replace the checkpoints of an earlier run in ``output``.

    Returns:
        The figures (NaN on processes other than rank 0 of a multi-process run).

    Raises:
        CheckpointError: ``teacher`` is not a classifier checkpoint.
        DataError: No labelled held-out split, or (``alpha < 1``) data other than the teacher's.
    """
    start = time.perf_counter()
    cfg = cfg or DistillConfig()
    inputs = {"--data": data.path if data else None, "--teacher": teacher}
    where = RunOutput.check(output, resume, overwrite, inputs)
    # 1. The teacher, fixed, and the data it was trained on (unless other data is given).
    teacher_model, info = load_classifier(teacher)
    teacher_model.requires_grad_(False).eval()
    data = data or info.data
    splits = splits or load_splits(data)
    test = labelled_test(splits, "distillation's evaluation")
    labelled = _labelled_subset(splits, info) if cfg.alpha < 1.0 else None
    # 2. The student, from random weights.
    student_cfg = student_backbone or info.backbone
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        student = Classifier(Trunk(create_backbone(student_cfg)), info.num_classes)
    if cfg.channels_last:
        student.to(memory_format=torch.channels_last)
        teacher_model.to(memory_format=torch.channels_last)
    # 3. Train the student on the teacher's soft targets (and the labels, alpha < 1).
    config = {"distill": cfg, "teacher": str(teacher), "data": data, "student": student_cfg}
    job = _job(student, teacher_model, info, splits.train, labelled, cfg, config)
    module, trainer = train_classifier(job, cfg, where)
    result = DistillResult(
        teacher_top1=float("nan"),
        teacher_top5=float("nan"),
        student_top1=float("nan"),
        student_top5=float("nan"),
        agreement=float("nan"),
        student_params=count_parameters(student),
        teacher_params=count_parameters(teacher_model),
        student_backbone=config_to_dict(student_cfg),
        epochs=cfg.epochs,
        temperature=cfg.temperature,
        alpha=cfg.alpha,
        num_images=len(splits.train),
        seconds=0.0,
        losses=module.losses,
        teacher=info.path,
    )
    if trainer.is_global_zero:  # one process reports and writes
        read = logits_reader(trainer, info.augment, cfg)
        _evaluate(result, read, teacher_model, student, test)
        if where.folder is not None:
            result.seconds = time.perf_counter() - start
            _write(where.folder, result, student, student_cfg, info, data, cfg)
    result.seconds = time.perf_counter() - start
    return result


def _job(
    student: Classifier,
    teacher: Classifier,
    info: ClassifierInfo,
    images: ImageData,
    labelled: ImageData | None,
    cfg: DistillConfig,
    config: dict[str, Any],
) -> ClassifierJob:
    """Eq. 3 on one crop + flip view of every training image.

    No labels are used unless ``labelled`` (the teacher's labelled subset, for ``alpha < 1``)
    is given.
    """
    views = crop_flip_views(info.augment, cfg.crop_scale)

    def loss(view: Callable[[Batch], torch.Tensor], batch: Any) -> torch.Tensor:
        unlabelled = batch["all"] if isinstance(batch, dict) else batch
        x = view(unlabelled)
        with torch.no_grad():  # the teacher is fixed [Sec. 2]
            teacher_logits = teacher.to(x.device)(x)
        distil = soft_target_cross_entropy(student(x), teacher_logits, cfg.temperature)  # Eq. 2
        if not isinstance(batch, dict):
            return distil
        # Eq. 3: a batch of the labelled subset adds its cross-entropy with weight 1 - alpha.
        lab = batch["labelled"]
        ce = F.cross_entropy(student(view(lab)).float(), lab.labels)
        return cfg.alpha * distil + (1.0 - cfg.alpha) * ce

    loader = train_data(images, views, cfg.batch_size, cfg.seed, cfg)
    if labelled is not None:
        loader = _WithLabelled(
            loader, train_data(labelled, views, cfg.batch_size, cfg.seed + 1, cfg)
        )
    return ClassifierJob(student, loss, views, loader, len(images), "distillation", config)


def _evaluate(
    result: DistillResult,
    read: Callable[[Classifier, ImageData], torch.Tensor],
    teacher: Classifier,
    student: Classifier,
    test: ImageData,
) -> None:
    """Teacher's and student's top-1/top-5 on ``test`` and their agreement, into ``result``."""
    assert test.labels is not None  # labelled_test checked it
    t_logits = read(teacher.to(next(student.parameters()).device), test)
    s_logits = read(student, test)
    result.teacher_top1 = topk_accuracy(t_logits, test.labels, 1)
    result.teacher_top5 = topk_accuracy(t_logits, test.labels, 5)
    result.student_top1 = topk_accuracy(s_logits, test.labels, 1)
    result.student_top5 = topk_accuracy(s_logits, test.labels, 5)
    result.agreement = float((s_logits.argmax(1) == t_logits.argmax(1)).float().mean() * 100)


def _write(
    out: Path,
    result: DistillResult,
    student: Classifier,
    student_cfg: BackboneConfig,
    info: ClassifierInfo,
    data: DataConfig,
    cfg: DistillConfig,
) -> None:
    """The student, recorded like a fine-tuned classifier, and the results in ``out``."""
    result.classifier_path = str(out / CLASSIFIER_FILE)
    student_info = ClassifierInfo(
        backbone=student_cfg,
        augment=info.augment,
        data=data,
        num_classes=info.num_classes,
        source=info.path,
        kind="distill",
        label_indices=info.label_indices,
        labels_hash=info.labels_hash,
        config=config_to_dict(cfg),
        results=result.to_dict(),
    )
    save_run(out, student, student_info, result.to_dict())


class _WithLabelled(TrainData):
    """Batches of every training image paired with batches of the labelled subset (Eq.

    3), the shorter stream cycled: ``{"all": Batch, "labelled": Batch}``.
    """

    def __init__(self, base: TrainData, labelled: TrainData) -> None:
        super().__init__(base.data, base.specs, base.batch_size, base.seed, base.pin_memory)
        self.labelled = labelled

    def transfer_batch_to_device(self, batch: Any, device: torch.device, idx: int) -> Any:
        """Both batches to the device."""
        return {k: to_device(v, device) for k, v in batch.items()}

    def train_dataloader(self) -> Any:
        """The two loaders, combined."""
        self.labelled.trainer = self.trainer
        loaders = {"all": super().train_dataloader(), "labelled": self.labelled.train_dataloader()}
        return CombinedLoader(loaders, mode="max_size_cycle")


def _labelled_subset(splits: Splits, info: ClassifierInfo) -> ImageData:
    """The teacher's labelled subset of the training images, checked against this data."""
    labels = splits.train.labels
    if labels is None or info.label_indices is None:
        raise DataError(
            "distillation with alpha < 1 needs the teacher's labelled subset and the training "
            "labels; use alpha 1 (distillation only, the paper's default) or labelled data"
        )
    if info.labels_hash != labels_hash(labels):
        raise DataError(
            f"the teacher was fine-tuned on other data (labels {info.labels_hash}) than this "
            f"training split (labels {labels_hash(labels)}); distil on the teacher's data or "
            "use alpha 1"
        )
    return splits.train.subset(info.label_indices)


__all__ = ["DistillConfig", "DistillResult", "distill"]
