"""Exporting a trained backbone as safetensors, and loading it back."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from siamkit.encoders import ResNetEncoder, SmallCNN, torchvision_resnet
from siamkit.errors import CheckpointError
from siamkit.safe_io import atomic_save_with


def backbone_state_dict(backbone: nn.Module) -> dict[str, torch.Tensor]:
    """Weights of ``backbone`` under the key names of its plain model.

    That is torchvision's names for ResNets, without the classifier.
    """
    if isinstance(backbone, ResNetEncoder):
        state = backbone.torchvision_state_dict()
    else:
        state = backbone.state_dict()
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def export_backbone(backbone: nn.Module, path: str | Path) -> Path:
    """Write ``backbone``'s weights to a ``.safetensors`` file with its architecture as metadata.

    A ResNet loads into ``torchvision_resnet(**arch)`` (for width 1 without the CIFAR stem, into
    ``torchvision.models.resnet18()`` etc.) with ``strict=False`` (only ``fc`` is missing).
    """
    arch = dict(getattr(backbone, "arch", {}))
    arch["num_features"] = int(backbone.num_features)  # type: ignore[arg-type]
    state, meta = backbone_state_dict(backbone), {"siamkit_arch": json.dumps(arch)}
    return atomic_save_with(lambda tmp: save_file(state, tmp, metadata=meta), path, "export")


def load_exported(path: str | Path) -> nn.Module:
    """Build the plain model an exported file belongs to and load its weights.

    Returns:
        A ``torchvision.models.ResNet`` (its ``fc`` left at random init) or a siamkit SmallCNN.
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            arch = json.loads((f.metadata() or {})["siamkit_arch"])
        state = load_file(str(path))
    except Exception as err:  # safetensors raises its own SafetensorError on foreign files
        raise CheckpointError(
            f"{path} is not a siamkit export ({type(err).__name__}: {err}); export one with "
            "`siamkit export --checkpoint RUN --output FILE.safetensors`"
        ) from None
    model: nn.Module
    if arch["name"] == "small_cnn":
        model = SmallCNN(width=arch["width"], norm=arch.get("norm", "batch"))
        model.load_state_dict(state)
        return model
    # ``norm`` is recorded only for GroupNorm + WS backbones (load those into the model built
    # here, or into torchvision_resnet(..., norm="group_ws"); a BN torchvision model lacks WS).
    model = torchvision_resnet(
        arch["name"], arch["width"], arch["cifar_stem"], arch.get("norm", "batch")
    )
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("fc.") for k in missing):
        raise CheckpointError(
            f"{path}: weights do not fit {arch} ({missing[:3]}, {unexpected[:3]})"
        )
    return model
