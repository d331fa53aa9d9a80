"""Reading checkpoints back: for ``--resume``, evaluation, export and embedding.

Above the methods (it rebuilds them) and below training and evaluation, which both read
checkpoints without importing each other.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from siamkit.config import CUSTOM_PREFIX, RunConfig
from siamkit.encoders import Encoder, check_encoder, create_backbone
from siamkit.errors import CheckpointError, ConfigError
from siamkit.methods import Method, create_method
from siamkit.recipes import config_from_dict
from siamkit.safe_io import safe_torch_load
from siamkit.strict import to_dict

#: Key under which a Lightning checkpoint stores the run config.
CONFIG_KEY = "siamkit_config"


@dataclass
class Checkpoint:
    """A readable siamkit checkpoint.

    Attributes:
        path: The file.
        config: The run config it was trained with.
        state_dict: The module's weights and buffers.
        epoch: Epochs completed (as Lightning counts them at the save).
        global_step: Optimiser steps completed.
    """

    path: str
    config: RunConfig
    state_dict: dict[str, torch.Tensor]
    epoch: int
    global_step: int = 0


def load_file(path: Path, what: str, fix: str) -> Any:
    """``torch.load`` of a file siamkit wrote, or a :class:`CheckpointError` saying what to do.

    Args:
        path: The file.
        what: What it should be, for the message ("checkpoint", "classifier checkpoint").
        fix: What the user can do when it cannot be read.
    """
    try:
        return safe_torch_load(path)
    except pickle.UnpicklingError as err:
        if "GLOBAL" in str(err):  # a class or function to call: refused, never run
            raise CheckpointError(
                f"{what} {str(path)!r} holds objects other than weights and settings, so it "
                f"was not loaded (siamkit loads checkpoints with weights_only=True); {fix}"
            ) from None
        raise CheckpointError(
            f"{what} {str(path)!r} cannot be read (not a checkpoint); {fix}"
        ) from None
    except Exception as err:  # truncated zip, foreign files, ...: all mean "unreadable"
        first = str(err).splitlines()[0] if str(err) else ""
        raise CheckpointError(
            f"{what} {str(path)!r} cannot be read ({type(err).__name__}: {first}); {fix}"
        ) from None


#: Files and folders siamkit writes, recognised where another kind is expected: (how to
#: recognise it, what it is, which command takes it). The names are those the writers use:
#: ``siamkit-shards.json`` (data/shards.py), ``experiment.json`` (experiments/runner.py),
#: ``classifier.pt`` (supervised/classifier.py); a test keeps them in step.
_FOLDER_KINDS = (
    ("siamkit-shards.json", "packed shards (written by `siamkit pack`)", "pass them as --data"),
    (
        "experiment.json",
        "an experiment folder (written by `siamkit experiment`)",
        "pass one of its cells' run folders (a folder inside it that holds checkpoints/)",
    ),
    (
        "classifier.pt",
        "a fine-tuning or distillation output (written by `siamkit eval finetune|distill`)",
        "`siamkit eval distill --teacher` takes it; evaluation, export and embedding take "
        "the pretraining run it started from",
    ),
)
_FILE_KINDS = {
    ".safetensors": (
        "a backbone export (written by `siamkit export`)",
        "`siamkit embed --checkpoint` takes it; evaluation and export take the run folder it "
        "came from",
    ),
    ".onnx": (
        "an ONNX export (written by `siamkit export`)",
        "load it with ONNX Runtime; siamkit's commands take the run folder it came from",
    ),
    ".npy": (
        "embeddings (written by `siamkit embed`)",
        "siamkit's commands take the run folder the embeddings came from",
    ),
}


def siamkit_kind(path: Path) -> str | None:
    """What file or folder of siamkit's own ``path`` is, and which command takes it.

    Returns:
        ``"X is <kind>; <command that takes it>"``, or ``None`` when it is none of the kinds
        recognised (a file or folder of another program, or a damaged checkpoint).
    """
    if path.is_dir():
        for marker, kind, fix in _FOLDER_KINDS:
            if (path / marker).is_file():
                return f"{str(path)!r} is {kind}; {fix}"
        return None
    if path.name == "classifier.pt":
        _, kind, fix = _FOLDER_KINDS[2]
        return f"{str(path)!r} is {kind}; {fix}"
    if path.suffix.lower() in _FILE_KINDS:
        kind, fix = _FILE_KINDS[path.suffix.lower()]
        return f"{str(path)!r} is {kind}; {fix}"
    return None


def _state_dict_kind(path: Path, raw: Any) -> str | None:
    """The message for a plain state dict (``export --format torchvision|timm``), else None."""
    if isinstance(raw, dict) and raw and all(isinstance(v, torch.Tensor) for v in raw.values()):
        return (
            f"{str(path)!r} is a plain state dict (such as `siamkit export --format "
            "torchvision|timm` writes), not a training checkpoint; `siamkit embed --model "
            "torchvision/NAME --weights FILE` takes it; evaluation and export take the run folder"
        )
    return None


def read_checkpoint(path: str | Path, expect: RunConfig | None = None) -> Checkpoint:
    """Read and check a checkpoint (a ``.ckpt`` file or a run folder).

    Args:
        path: The file, or a run folder (its ``checkpoints/last.ckpt`` is used).
        expect: When resuming: the config the checkpoint must match in backbone and method.

    Raises:
        CheckpointError: Missing, unreadable or truncated file; not a siamkit checkpoint; or a
            different architecture from ``expect``.
    """
    p = Path(path)
    kind = siamkit_kind(p)
    if kind is not None:  # one of siamkit's own files, of another kind than a checkpoint
        raise CheckpointError(f"{kind}; a checkpoint is a .ckpt file or a pretraining run folder")
    if p.is_dir():
        p = p / "checkpoints" / "last.ckpt"
    if not p.is_file():
        raise CheckpointError(
            f"checkpoint {str(p)!r} not found; pass a .ckpt file or a run folder with "
            "checkpoints/last.ckpt"
        )
    raw = load_file(
        p,
        "checkpoint",
        f"it may be truncated or corrupt: use an earlier one from {p.parent} or start again",
    )
    if not isinstance(raw, dict) or CONFIG_KEY not in raw or "state_dict" not in raw:
        raise CheckpointError(
            _state_dict_kind(p, raw)
            or f"{str(p)!r} is not a siamkit checkpoint (no run config inside); pass a .ckpt "
            "file of `siamkit pretrain` or its run folder"
        )
    try:
        config = config_from_dict(raw[CONFIG_KEY])
    except ConfigError as err:
        raise CheckpointError(f"checkpoint {str(p)!r} has an invalid config: {err}") from None
    if expect is not None:
        for section in ("backbone", "method"):
            mine, theirs = to_dict(expect)[section], to_dict(config)[section]
            if mine != theirs:
                diff = {k: (theirs.get(k), v) for k, v in mine.items() if theirs.get(k) != v}
                raise CheckpointError(
                    f"checkpoint {str(p)!r} was trained with a different {section} "
                    f"(checkpoint vs now: {diff}); resume with the config it was trained with"
                )
    epoch, step = int(raw.get("epoch", -1)) + 1, int(raw.get("global_step", 0))
    return Checkpoint(str(p), config, raw["state_dict"], epoch, step)


def load_method(path: str | Path, backbone: nn.Module | None = None) -> tuple[RunConfig, Method]:
    """The trained method (backbone and heads) of a checkpoint, in eval mode on the CPU.

    Args:
        path: A ``.ckpt`` file or a run folder.
        backbone: A module of the class the run trained, for a run given its backbone as a
            module (``pretrain(cfg, backbone=module)``; its config says ``custom/...``). The
            checkpoint's weights are loaded into it. ``None``: built from the stored config.

    Raises:
        CheckpointError: Unreadable, or a ``custom/`` backbone and no ``backbone`` module (or
            one whose weights do not match).
    """
    ckpt = read_checkpoint(path)
    method = create_method(_backbone_of(ckpt, backbone), ckpt.config.method)
    prefix = "method."
    state = {k[len(prefix) :]: v for k, v in ckpt.state_dict.items() if k.startswith(prefix)}
    # torch.compile'd backbones keep their keys (Module.compile), so no renaming is needed.
    what = "the backbone module passed" if backbone is not None else "its own config"
    try:
        missing, unexpected = method.load_state_dict(state, strict=False)
    except RuntimeError as err:  # same keys, other shapes
        shapes = [line.strip() for line in str(err).splitlines() if "size mismatch" in line]
        raise CheckpointError(
            f"checkpoint {ckpt.path!r} does not match {what} ({'; '.join(shapes[:2])})"
        ) from None
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {ckpt.path!r} does not match {what} "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return ckpt.config, method.eval()


def _backbone_of(ckpt: Checkpoint, backbone: nn.Module | None) -> Encoder:
    """The module to load the checkpoint's backbone into: ``backbone``, or built from config."""
    name = ckpt.config.backbone.name
    if backbone is not None:
        try:
            return check_encoder(backbone, (ckpt.config.augment.size,))
        except ConfigError as err:
            raise CheckpointError(f"cannot load {ckpt.path!r} into that backbone: {err}") from None
    if name.startswith(CUSTOM_PREFIX):
        raise CheckpointError(
            f"checkpoint {ckpt.path!r} was trained on a backbone module passed to pretrain "
            f"({name[len(CUSTOM_PREFIX) :]}), which no config rebuilds; pass a module of that "
            "class: load_method(path, backbone=module) or load_backbone(path, backbone=module)"
        )
    return create_backbone(ckpt.config.backbone)


def load_backbone(path: str | Path, backbone: nn.Module | None = None) -> tuple[RunConfig, Encoder]:
    """The trained backbone of a checkpoint, in eval mode on the CPU.

    ``backbone``: as for :func:`load_method` (needed for a run given its backbone as a module).
    """
    config, method = load_method(path, backbone)
    return config, method.backbone


__all__ = [
    "CONFIG_KEY",
    "Checkpoint",
    "load_backbone",
    "load_method",
    "read_checkpoint",
    "siamkit_kind",
]
