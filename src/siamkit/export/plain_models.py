"""Plain models from files, outside a siamkit checkpoint: what ``siamkit embed`` reads.

- A siamkit ``.safetensors`` export (:func:`load_exported`): the architecture, and the
  evaluation size and normalisation of the run it came from, are in its metadata.
- A torchvision or timm model name with a local weights file (a state dict, with or without the
  classifier, which embedding does not use): the model is built with its classifier removed
  (``fc = nn.Identity()``, timm's ``num_classes=0``) and the weights load strictly.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from siamkit.checkpoints import load_file as load_torch_file
from siamkit.config import TIMM_PREFIX, AugmentConfig
from siamkit.encoders import Encoder, SmallCNN, torchvision_resnet
from siamkit.encoders.timm_models import import_timm
from siamkit.errors import CheckpointError, ConfigError

#: ``TIMM_PREFIX`` (``timm/``) names a timm backbone's ``arch["name"]`` and is ``--model``'s
#: prefix for timm; this one is torchvision's.
TORCHVISION_PREFIX = "torchvision/"


def is_timm(arch: dict[str, Any]) -> bool:
    """Whether a backbone's ``arch`` record names a timm model."""
    return str(arch.get("name", "")).startswith(TIMM_PREFIX)


def _read_export(
    path: str | Path,
) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, str]]:
    """The weights, architecture and metadata of a siamkit ``.safetensors`` export."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        arch = json.loads(meta["siamkit_arch"])
        return load_file(str(path)), arch, meta
    except Exception as err:  # safetensors raises its own SafetensorError on foreign files
        raise CheckpointError(
            f"{path} is not a siamkit export ({type(err).__name__}: {err}); export one with "
            "`siamkit export --checkpoint RUN --output FILE.safetensors`"
        ) from None


def _exported_model(
    state: dict[str, torch.Tensor], arch: dict[str, Any], path: str | Path
) -> nn.Module:
    """The plain model of ``arch`` with ``state`` loaded strictly (see :func:`load_exported`)."""
    model: nn.Module
    if arch["name"] == "small_cnn":
        model = SmallCNN(width=arch["width"], norm=arch.get("norm", "batch"))
    elif is_timm(arch):
        name = arch["name"][len(TIMM_PREFIX) :]
        model = import_timm().create_model(name, **{**arch.get("kwargs", {}), "num_classes": 0})
    else:
        # ``norm`` is recorded only for GroupNorm + WS backbones (load those into the model
        # built here, or into torchvision_resnet(..., norm="group_ws"); a BN model lacks WS).
        model = torchvision_resnet(
            arch["name"], arch["width"], arch["cifar_stem"], arch.get("norm", "batch")
        )
        fc, model.fc = model.fc, nn.Identity()  # the export has no classifier
        load_strict(model, state, path)
        model.fc = fc
        return model
    load_strict(model, state, path)
    return model


def load_exported(path: str | Path) -> nn.Module:
    """Build the plain model a ``.safetensors`` export belongs to and load its weights.

    Returns:
        A ``torchvision.models.ResNet`` (its ``fc`` left at random init: replace it with
        ``nn.Identity()`` for the backbone's features), a siamkit SmallCNN, or a timm model
        (created with the options it was trained with, ``num_classes=0``).

    Raises:
        CheckpointError: Not a siamkit export, or weights that do not fit its architecture.
    """
    state, arch, _ = _read_export(path)
    return _exported_model(state, arch, path)


def load_strict(model: nn.Module, state: dict[str, Any], path: str | Path) -> None:
    """``model.load_state_dict(state, strict=True)``, a mismatch a CheckpointError naming it."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(
            f"{str(path)!r} is not a state dict (a mapping of names to tensors); pass the "
            "weights file `siamkit export --format torchvision|timm` writes"
        )
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # tensors of another shape
        first = str(err).splitlines()[1].strip() if "\n" in str(err) else str(err)
        raise CheckpointError(f"{str(path)!r} does not fit the model: {first}") from None
    if missing or unexpected:
        raise CheckpointError(
            f"{str(path)!r} does not fit the model (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}); pass the model the weights were saved from"
        )


class PlainEncoder(Encoder):
    """A plain model whose forward gives features (classifier removed) as a siamkit encoder.

    Args:
        model: ``(B, 3, H, W)`` -> ``(B, num_features)``.
        num_features: Width of its output.
    """

    def __init__(self, model: nn.Module, num_features: int) -> None:
        super().__init__()
        self.model = model
        self.num_features = num_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> ``(B, num_features)``."""
        return self.model(x)


def _check_name(library: str, name: str, names: list[str]) -> None:
    """A ConfigError, with the closest names, unless ``library`` has a model ``name``."""
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown {library} model {name!r}{hint}")


def _without(state: Any, classifiers: tuple[str, ...]) -> Any:
    """``state`` less the weights of the ``classifiers`` submodules (embedding uses none)."""
    if not isinstance(state, dict):
        return state  # load_strict says what it is instead
    return {
        k: v for k, v in state.items() if not any(str(k).startswith(c + ".") for c in classifiers)
    }


def _torchvision_model(name: str, weights: str | Path) -> Encoder:
    """``torchvision.models.<name>()`` with ``fc = nn.Identity()`` and ``weights`` loaded."""
    import torchvision

    _check_name("torchvision", name, torchvision.models.list_models(module=torchvision.models))
    model = torchvision.models.get_model(name)
    if not isinstance(getattr(model, "fc", None), nn.Linear):
        raise ConfigError(
            f"torchvision/{name} has no `fc` classifier to drop; siamkit embeds torchvision "
            "models whose classifier is `fc` (ResNets, ResNeXts, RegNets, ...); use "
            f"timm/{name} where timm has it, or an ONNX export"
        )
    num_features = int(model.fc.in_features)
    model.fc = nn.Identity()
    fix = "pass a state dict saved with torch.save(model.state_dict(), path)"
    state = load_torch_file(Path(weights), "weights file", fix)
    load_strict(model, _without(state, ("fc",)), weights)
    return PlainEncoder(model, num_features)


def _timm_model(name: str, weights: str | Path) -> tuple[Encoder, AugmentConfig]:
    """Timm's ``name`` (``num_classes=0``) with ``weights`` and its pretrained_cfg's input."""
    timm = import_timm()
    _check_name("timm", name, timm.list_models())
    model = timm.create_model(name, num_classes=0)
    try:  # timm's reader: .pth/.pt with weights_only=True, or .safetensors
        state = timm.models.load_state_dict(str(weights))
    except Exception as err:
        raise CheckpointError(
            f"weights file {str(weights)!r} cannot be read ({type(err).__name__}: {err}); "
            "pass a state dict (.pth/.pt or .safetensors)"
        ) from None
    heads = model.pretrained_cfg.get("classifier") or ()
    load_strict(
        model, _without(state, (heads,) if isinstance(heads, str) else tuple(heads)), weights
    )
    data = timm.data.resolve_model_data_config(model)
    augment = AugmentConfig(
        size=int(data["input_size"][-1]), mean=tuple(data["mean"]), std=tuple(data["std"])
    )
    return PlainEncoder(model, int(model.num_features)), augment


def embedding_model(path: str | Path, model: str | None = None) -> tuple[Encoder, AugmentConfig]:
    """An encoder and its evaluation input from a siamkit export, or a named model's weights.

    Args:
        path: A siamkit ``.safetensors`` export, or (with ``model``) a state dict of ``model``
            with or without its classifier.
        model: ``torchvision/<name>`` or ``timm/<name>``, or ``None`` for a siamkit export.

    Returns:
        The encoder (``forward_features``) in eval mode on the CPU, and an AugmentConfig whose
        evaluation size and normalisation are the recorded ones (an export of a run); timm's
        ``pretrained_cfg`` input size, mean and std (timm); else 224 px and ImageNet's mean and
        std (torchvision's ImageNet recipe).
    """
    augment = AugmentConfig()
    if model is None:
        state, arch, meta = _read_export(path)
        plain = _exported_model(state, arch, path)
        if isinstance(plain, Encoder):  # siamkit's SmallCNN
            encoder: Encoder = plain
        else:
            if not is_timm(arch):
                plain.fc = nn.Identity()  # a torchvision ResNet: features, not classes
            encoder = PlainEncoder(plain, int(arch["num_features"]))
        if "siamkit_eval" in meta:  # exported from a run: its evaluation input
            pre = json.loads(meta["siamkit_eval"])
            augment = AugmentConfig(
                size=pre["size"], mean=tuple(pre["mean"]), std=tuple(pre["std"])
            )
    elif model.startswith(TORCHVISION_PREFIX):
        encoder = _torchvision_model(model[len(TORCHVISION_PREFIX) :], path)
    elif model.startswith(TIMM_PREFIX):
        encoder, augment = _timm_model(model[len(TIMM_PREFIX) :], path)
    else:
        raise ConfigError(
            f"model {model!r} names no library; use torchvision/<name> (e.g. "
            "torchvision/resnet50) or timm/<name> (e.g. timm/resnet50)"
        )
    return encoder.eval(), augment


def with_preprocessing(
    augment: AugmentConfig,
    image_size: int | None = None,
    mean: tuple[float, float, float] | None = None,
    std: tuple[float, float, float] | None = None,
) -> AugmentConfig:
    """``augment`` with its evaluation side and normalisation replaced where given."""
    changes: dict[str, Any] = {"eval_size": image_size, "mean": mean, "std": std}
    changes = {k: tuple(v) if isinstance(v, list) else v for k, v in changes.items()}
    return dataclasses.replace(augment, **{k: v for k, v in changes.items() if v is not None})
