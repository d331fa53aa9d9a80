"""Exporting a trained backbone to other ecosystems (``siamkit export``).

=============  =================  =====================================================
format         file               loads with
=============  =================  =====================================================
safetensors    ``.safetensors``   :func:`load_exported` (the siamkit architecture and the
                                  evaluation size and normalisation are in the metadata)
torchvision    ``.pth`` / ``.pt`` ``m = torchvision.models.resnet18(); m.fc = nn.Identity();
                                  m.load_state_dict(torch.load(f), strict=True)``
timm           ``.pth`` / ``.pt`` ``timm.create_model(name, pretrained=True, num_classes=0,
                                  pretrained_cfg_overlay=dict(file=f))``
onnx           ``.onnx``          onnxruntime: normalised ``(N, 3, S, S)`` float32 images ->
                                  ``(N, num_features)``, any ``N``
=============  =================  =====================================================

The torchvision and timm files are plain state dicts (tensors only, ``torch.load`` with
``weights_only=True`` reads them) without the classifier: a backbone has none, so the model is
built with ``fc = nn.Identity()`` (torchvision) or ``num_classes=0`` (timm), and the strict load
then matches every key. Only backbones of the named library's own shape export to it: siamkit's
width-1 ResNets without the CIFAR stem (timm's ``resnet18/34/50`` have torchvision's layers and
key names) and timm backbones (``arch["name"] == "timm/<model>"``) for timm; any other shape is
a :class:`~siamkit.errors.ConfigError` that points to ``safetensors`` or ``onnx``.

Reading the files back (:func:`load_exported`, and the models ``siamkit embed`` builds from
them) is :mod:`siamkit.export.plain_models`.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors.torch import save_file

from siamkit.checkpoints import load_backbone
from siamkit.config import AugmentConfig
from siamkit.encoders import Encoder, ResNetEncoder
from siamkit.errors import ConfigError
from siamkit.export.plain_models import TIMM_PREFIX, is_timm, load_exported
from siamkit.safe_io import (
    atomic_save_with,
    atomic_torch_save,
    check_apart,
    check_new_file,
    check_writable,
)

#: format -> the output extensions it is written to (the first is the one suggested).
FORMATS: dict[str, tuple[str, ...]] = {
    "safetensors": (".safetensors",),
    "torchvision": (".pth", ".pt"),
    "timm": (".pth", ".pt"),
    "onnx": (".onnx",),
}
#: ONNX's protobuf limit; above it torch writes the weights to a second file, which the
#: temporary-file-and-rename write cannot carry.
_ONNX_MAX_BYTES = 2**31


class Exported(NamedTuple):
    """What :func:`export_checkpoint` wrote.

    Attributes:
        path: The file.
        format: One of :data:`FORMATS`.
        load_hint: One line of Python (or, for ONNX, the input it expects) that loads it.
    """

    path: Path
    format: str
    load_hint: str


def resolve_format(path: str | Path, format: str | None = None) -> str:
    """The export format of ``path``: ``format`` checked against the extension, or inferred.

    Without ``format``, ``.safetensors`` is ``safetensors`` and ``.onnx`` is ``onnx``; a
    ``.pth``/``.pt`` file may be either plain state dict, so it needs ``format``.

    Raises:
        ConfigError: An unknown format, an extension that does not match it, or one that
            names no format.
    """
    suffix = Path(path).suffix.lower()
    if format is None:
        matches = [f for f, exts in FORMATS.items() if suffix in exts]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise ConfigError(
                f"a {suffix} export is a plain state dict for {' or '.join(matches)}; say which "
                f"with --format {'|'.join(matches)}"
            )
        raise ConfigError(
            f"cannot tell the export format of {str(path)!r} from its extension; name it "
            ".safetensors, .onnx, or .pth/.pt with --format torchvision|timm"
        )
    if format not in FORMATS:
        raise ConfigError(f"unknown export format {format!r}; choose from {', '.join(FORMATS)}")
    if suffix not in FORMATS[format]:
        expected = " or ".join(FORMATS[format])
        raise ConfigError(
            f"a {format} export is a {expected} file, got {str(path)!r}; name it e.g. "
            f"{Path(path).with_suffix(FORMATS[format][0]).name}"
        )
    return format


def _arch(backbone: Encoder) -> dict[str, Any]:
    """The backbone's ``arch`` record (name and constructor options), with ``num_features``."""
    arch = dict(getattr(backbone, "arch", {}))
    arch["num_features"] = int(backbone.num_features)
    return arch


def _shape(arch: dict[str, Any]) -> str:
    """``resnet18 at width 0.5 with the CIFAR stem``: the backbone as the user configured it."""
    parts = [str(arch.get("name", "an unnamed backbone"))]
    if arch.get("width", 1.0) != 1.0:
        parts.append(f"at width {arch['width']}")
    if arch.get("cifar_stem") and arch.get("name") != "small_cnn":
        parts.append("with the CIFAR stem")
    if arch.get("norm", "batch") != "batch":
        parts.append(f"with norm {arch['norm']}")
    return " ".join(parts)


def torchvision_name(backbone: Encoder) -> str:
    """The ``torchvision.models`` constructor whose model strictly loads ``backbone``'s weights.

    Raises:
        ConfigError: ``backbone`` is not a width-1 BatchNorm ResNet with the ImageNet stem.
    """
    arch = _arch(backbone)
    if (
        isinstance(backbone, ResNetEncoder)
        and arch["width"] == 1.0
        and not arch["cifar_stem"]
        and arch.get("norm", "batch") == "batch"
    ):
        return str(arch["name"])
    raise ConfigError(
        f"backbone {_shape(arch)} has no torchvision model of its shape (torchvision has "
        "width-1 BatchNorm ResNets with the 7x7 stem); export it with --format safetensors "
        "(siamkit.export.formats.load_exported rebuilds it) or --format onnx"
    )


def timm_model(backbone: Encoder) -> tuple[str, dict[str, Any]]:
    """The ``timm.create_model`` name and options (beside ``num_classes=0``) of ``backbone``.

    A timm backbone (``arch["name"] == "timm/<model>"``) keeps its model and options; a
    torchvision-shaped siamkit ResNet is timm's model of the same name, which has the same layers
    and key names.

    Raises:
        ConfigError: Any other backbone.
    """
    arch = _arch(backbone)
    if is_timm(arch):
        kwargs = {k: v for k, v in arch.get("kwargs", {}).items() if k != "num_classes"}
        return str(arch["name"])[len(TIMM_PREFIX) :], kwargs
    try:
        return torchvision_name(backbone), {}
    except ConfigError:
        raise ConfigError(
            f"backbone {_shape(arch)} has no timm model of its shape (timm's resnet18/34/50 "
            "are torchvision's width-1 ResNets with the 7x7 stem); export it with --format "
            "safetensors or --format onnx"
        ) from None


def backbone_state_dict(backbone: Encoder) -> dict[str, torch.Tensor]:
    """Weights of ``backbone`` under the key names of its plain model, without a classifier.

    torchvision's names for siamkit ResNets, timm's for timm backbones (their ``model``).
    """
    if isinstance(backbone, ResNetEncoder):
        state = backbone.torchvision_state_dict()
    elif is_timm(_arch(backbone)):  # timm's own names: those of the model it wraps
        model = backbone.model  # TimmEncoder's, or a module of the same contract
        assert isinstance(model, torch.nn.Module), "a timm backbone keeps its timm model as .model"
        state = model.state_dict()
    else:
        state = backbone.state_dict()
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def _preprocessing(augment: AugmentConfig) -> dict[str, Any]:
    """The evaluation input a backbone expects: side, and normalisation of [0, 1] pixels."""
    return {
        "size": augment.effective_eval_size,
        "mean": list(augment.mean),
        "std": list(augment.std),
    }


def export_backbone(
    backbone: Encoder,
    path: str | Path,
    format: str | None = None,
    augment: AugmentConfig | None = None,
) -> Path:
    """Write ``backbone`` to ``path`` in ``format`` (see the module's table), atomically.

    Args:
        backbone: A siamkit encoder (``num_features``, ``arch``).
        path: The output file; its extension must match ``format``.
        format: ``safetensors``, ``torchvision``, ``timm`` or ``onnx``; ``None``: from the
            extension (:func:`resolve_format`).
        augment: The run's view recipe: its evaluation size and normalisation are recorded
            (safetensors, ONNX metadata) and fix the ONNX input side. ``None``: not recorded;
            ONNX then takes the defaults of :class:`AugmentConfig` (224 px, ImageNet mean/std).

    Returns:
        ``path``.

    Raises:
        ConfigError: A format the backbone has no model in, or a mismatched extension.
        OutputError, DiskFullError: The file cannot be written (an earlier file stays).
    """
    check_writable(Path(path), "export")
    format = resolve_format(path, format)
    if format == "onnx":
        return _write_onnx(backbone, Path(path), augment or AugmentConfig())
    if format == "torchvision":
        torchvision_name(backbone)
    elif format == "timm":
        timm_model(backbone)
    state = backbone_state_dict(backbone)
    if format != "safetensors":  # a plain state dict, for the strict load of its library
        return atomic_torch_save(state, path, "export")
    meta = {"siamkit_arch": json.dumps(_arch(backbone))}
    if augment is not None:
        meta["siamkit_eval"] = json.dumps(_preprocessing(augment))
    return atomic_save_with(lambda tmp: save_file(state, tmp, metadata=meta), path, "export")


def _write_onnx(backbone: Encoder, path: Path, augment: AugmentConfig) -> Path:
    """The backbone's forward as an ONNX graph: ``(N, 3, S, S)`` -> ``(N, num_features)``.

    torch's ``torch.export``-based exporter (``dynamo=True``, torch's default since 2.9; the
    TorchScript exporter warns that it is deprecated). Both export siamkit's backbones and
    common timm ones with ONNX Runtime features matching PyTorch's (docs/results.md#onnx-export);
    this one is the slower and needs onnxscript. The graph is built before anything is written,
    then saved as one file (weights inline), so the atomic rename carries all of it.
    """
    for module in ("onnx", "onnxscript"):
        if importlib.util.find_spec(module) is None:
            raise ConfigError(
                f"ONNX export needs {module}, which is not installed; pip install 'siamkit[onnx]'"
            )
    size = sum(t.numel() * t.element_size() for t in backbone.state_dict().values())
    if size >= _ONNX_MAX_BYTES:
        raise ConfigError(
            f"backbone {_shape(_arch(backbone))} holds {size / 2**30:.1f} GiB of weights, over "
            "ONNX's 2 GiB single-file limit; export it with --format safetensors"
        )
    side = augment.effective_eval_size
    weight = next(backbone.parameters())
    # Batch 2, not 1: torch.export specialises a size-1 dimension, which would fix the batch.
    example = torch.zeros(2, 3, side, side, dtype=weight.dtype, device=weight.device)
    was_training = backbone.training
    backbone.eval()  # BatchNorm's running statistics, as in evaluation
    try:
        program = torch.onnx.export(
            backbone,
            (example,),
            input_names=["images"],
            output_names=["features"],
            dynamo=True,
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            external_data=False,
            verbose=False,
        )
    finally:
        backbone.train(was_training)
    assert program is not None  # returned when no file name is given
    program.model.metadata_props.update(
        {
            "siamkit_arch": json.dumps(_arch(backbone)),
            "siamkit_eval": json.dumps(_preprocessing(augment)),
        }
    )
    return atomic_save_with(lambda tmp: program.save(tmp, external_data=False), path, "export")


def load_hint(backbone: Encoder, format: str, path: str | Path, augment: AugmentConfig) -> str:
    """One line that loads the file :func:`export_backbone` wrote in ``format``."""
    pre = _preprocessing(augment)
    side = pre["size"]
    # The input every format expects: the run's centre view, normalised (the ONNX graph and the
    # plain state dicts carry no preprocessing).
    x = f"x: float32 (N, 3, {side}, {side}), RGB in [0, 1] minus {pre['mean']}, over {pre['std']}"
    if format == "torchvision":
        return (
            f"m = torchvision.models.{torchvision_name(backbone)}(); m.fc = torch.nn.Identity(); "
            f"m.load_state_dict(torch.load({str(path)!r})); m.eval()(x) with {x}"
        )
    if format == "timm":
        name, kwargs = timm_model(backbone)
        options = "".join(f", {k}={v!r}" for k, v in kwargs.items())
        return (
            f"m = timm.create_model({name!r}, pretrained=True, num_classes=0, "
            f"pretrained_cfg_overlay=dict(file={str(path)!r}){options}); m.eval()(x) with {x}"
        )
    if format == "onnx":
        return f"onnxruntime.InferenceSession({str(path)!r}).run(None, {{'images': x}}) with {x}"
    return f"siamkit.export.formats.load_exported({str(path)!r})"


def export_checkpoint(
    checkpoint: str | Path,
    output: str | Path,
    format: str | None = None,
    overwrite: bool = False,
) -> Exported:
    """Export a run's backbone (``siamkit export``), with the run's evaluation input recorded.

    Args:
        checkpoint: A ``.ckpt`` file or a run folder.
        output: The output file (see :func:`export_backbone`).
        format: See :func:`export_backbone`.
        overwrite: Replace an existing ``output``.

    Raises:
        OutputError: ``output`` is the checkpoint itself (an export never replaces its input),
            exists (without ``overwrite``), or cannot be written.
    """
    if Path(checkpoint).is_file():  # a run folder cannot be a file's name
        check_apart(Path(output), "--output", {"--checkpoint": Path(checkpoint)})
    check_new_file(Path(output), "export", overwrite)
    cfg, backbone = load_backbone(checkpoint)
    path = export_backbone(backbone, output, format, cfg.augment)
    format = resolve_format(path, format)
    return Exported(path, format, load_hint(backbone, format, path, cfg.augment))


__all__ = [
    "FORMATS",
    "Exported",
    "backbone_state_dict",
    "export_backbone",
    "export_checkpoint",
    "load_exported",
    "load_hint",
    "resolve_format",
    "timm_model",
    "torchvision_name",
]
