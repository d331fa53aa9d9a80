"""The classifier of the few-label protocols.

A trunk (backbone and kept head layers), a linear layer, and its checkpoint.

Fine-tuning (:mod:`siamkit.supervised.finetune`) trains one from a pretraining checkpoint or from
scratch; distillation (:mod:`siamkit.supervised.distill`) reads one as its teacher and writes its
student as one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from siamkit.checkpoints import load_file, siamkit_kind
from siamkit.config import AugmentConfig, BackboneConfig, DataConfig
from siamkit.data.loader import ImageData
from siamkit.encoders import Encoder, create_backbone
from siamkit.errors import CheckpointError, ConfigError
from siamkit.eval.features import extract_features
from siamkit.methods import Method, create_method
from siamkit.recipes import method_from_dict
from siamkit.safe_io import atomic_torch_save
from siamkit.strict import from_dict
from siamkit.strict import to_dict as config_to_dict

#: Key of a classifier checkpoint (a plain ``torch.save`` dict), distinct from a pretraining
#: checkpoint's ``siamkit_config``.
CLASSIFIER_KEY = "siamkit_classifier"
#: File of the classifier inside a fine-tuning or distillation output folder.
CLASSIFIER_FILE = "classifier.pt"


# --------------------------------------------------------------------------------------------
# Model: trunk (backbone + kept head layers) and a linear classifier
# --------------------------------------------------------------------------------------------
def head_layers(projector: nn.Module, num_layers: int) -> list[nn.Module]:
    """The first ``num_layers`` hidden layers of a projection head.

    Its modules up to and including its ``num_layers``-th ReLU (fc, BN or GroupNorm, ReLU each).

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

    def __init__(self, backbone: Encoder, head: list[nn.Module] | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Sequential(*(head or []))
        self.num_features = _output_width(list(self.head), backbone.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` images to ``(B, num_features)``."""
        return self.head(self.backbone.forward_features(x))


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
        """``(B, 3, H, W)`` images to ``(B, num_classes)`` logits."""
        return self.fc(self.trunk(x))


def trunk_from_method(method: Method, from_head_layers: int) -> Trunk:
    """The trunk of a pretrained method: its backbone and ``from_head_layers`` head layers.

    The trunk shares its modules with ``method`` (no copy).
    """
    layers = head_layers(method.projector, from_head_layers) if from_head_layers else []
    return Trunk(method.backbone, layers)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (all of them, trainable or not)."""
    return sum(p.numel() for p in model.parameters())


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
        text = self.backbone.describe()
        if self.from_head_layers:
            name = (self.method or {}).get("name", "?")
            text += f" + {self.from_head_layers} head layer(s) of {name}"
        return f"{text} -> {self.num_classes} classes"


def build_classifier(info: ClassifierInfo) -> Classifier:
    """A freshly initialised classifier of the architecture ``info`` describes."""
    backbone = create_backbone(info.backbone)
    if info.from_head_layers:
        method_cfg = method_from_dict(dict(info.method or {}))
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
    return atomic_torch_save({CLASSIFIER_KEY: payload}, p, "classifier checkpoint")


def _classifier_path(path: str | Path) -> Path:
    """The ``classifier.pt`` that ``path`` names (the file, or its output folder)."""
    p = Path(path)
    kind = None if (p / CLASSIFIER_FILE).is_file() or p.name == CLASSIFIER_FILE else siamkit_kind(p)
    if kind is not None:  # one of siamkit's own files, of another kind than a classifier
        raise CheckpointError(f"{kind}; a teacher is the output folder of `siamkit eval finetune`")
    if p.is_dir():
        p = p / CLASSIFIER_FILE
    if not p.is_file():
        raise CheckpointError(
            f"classifier checkpoint {str(p)!r} not found; run `siamkit eval finetune` first and "
            "pass its output folder (or its classifier.pt)"
        )
    return p


def _read_payload(p: Path) -> Any:
    """The record under :data:`CLASSIFIER_KEY` of the checkpoint file ``p``."""
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
    return raw[CLASSIFIER_KEY]


def _info_of(payload: Any, p: Path) -> ClassifierInfo:
    """The :class:`ClassifierInfo` a checkpoint's record describes (``p``: where it was read)."""
    try:
        return ClassifierInfo(
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


def _check_backbone(info: ClassifierInfo, expect_backbone: BackboneConfig, p: Path) -> None:
    """Refuse a classifier whose backbone is not the one the caller needs."""
    if expect_backbone != info.backbone:
        wanted = dataclasses.replace(info, backbone=expect_backbone).architecture()
        raise CheckpointError(
            f"classifier checkpoint {str(p)!r} holds a {info.architecture()}, but a {wanted} "
            "was asked for; pass the matching backbone or another checkpoint"
        )


def _load_weights(model: Classifier, payload: Any, info: ClassifierInfo, p: Path) -> None:
    """Load the record's weights into ``model``, refusing those of another architecture."""
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
    p = _classifier_path(path)
    payload = _read_payload(p)
    info = _info_of(payload, p)
    if expect_backbone is not None:
        _check_backbone(info, expect_backbone, p)
    model = build_classifier(info)
    _load_weights(model, payload, info, p)
    return model.eval(), info
