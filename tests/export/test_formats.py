"""Exporting backbones (safetensors, torchvision, timm, ONNX) and loading each file in its own
ecosystem: strict loads, equal features, ONNX Runtime against PyTorch."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import timm
import torch
import torchvision
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from siamkit.config import AugmentConfig
from siamkit.encoders import Encoder, ResNetEncoder, SmallCNN
from siamkit.errors import CheckpointError, ConfigError
from siamkit.export.formats import (
    export_backbone,
    export_checkpoint,
    load_exported,
    resolve_format,
    timm_model,
)
from tests.checkpoint_fixtures import randomise_batch_norm, write_checkpoint


def _features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(x)


def test_resnet18_export_loads_into_plain_torchvision_resnet18(tmp_path: Path) -> None:
    """Width 1, ImageNet stem: the file loads into ``torchvision.models.resnet18()`` with only
    ``fc`` missing, and gives the encoder's features."""
    torch.manual_seed(0)
    encoder = ResNetEncoder("resnet18")
    randomise_batch_norm(encoder)
    path = export_backbone(encoder, tmp_path / "out" / "backbone.safetensors")
    assert path.is_file()
    with safe_open(str(path), "pt") as f:
        arch = json.loads(f.metadata()["siamkit_arch"])
    assert arch == {"name": "resnet18", "width": 1.0, "cifar_stem": False, "num_features": 512}

    plain = torchvision.models.resnet18()
    missing, unexpected = plain.load_state_dict(load_file(str(path)), strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"]
    assert unexpected == []
    plain.fc = nn.Identity()
    x = torch.randn(2, 3, 64, 64)
    expected = _features(encoder, x)
    assert expected.shape == (2, 512)
    torch.testing.assert_close(_features(plain, x), expected, atol=1e-5, rtol=1e-5)


def test_load_exported_cifar_stem_half_width_resnet(tmp_path: Path) -> None:
    """A width-0.5 CIFAR-stem ResNet comes back as a torchvision ResNet of that shape."""
    torch.manual_seed(1)
    encoder = ResNetEncoder("resnet18", width=0.5, cifar_stem=True)
    randomise_batch_norm(encoder, seed=1)
    path = export_backbone(encoder, tmp_path / "r18.safetensors")
    model = load_exported(path)
    assert isinstance(model, torchvision.models.ResNet)
    assert model.conv1.kernel_size == (3, 3) and isinstance(model.maxpool, nn.Identity)
    model.fc = nn.Identity()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(_features(model, x), _features(encoder, x), atol=1e-5, rtol=1e-5)


def test_load_exported_small_cnn(tmp_path: Path) -> None:
    """A SmallCNN export comes back as a SmallCNN of the same width and features."""
    torch.manual_seed(2)
    encoder = SmallCNN(width=0.5)
    randomise_batch_norm(encoder, seed=2)
    model = load_exported(export_backbone(encoder, tmp_path / "cnn.safetensors"))
    assert isinstance(model, SmallCNN) and model.num_features == 64
    x = torch.randn(3, 3, 16, 16)
    torch.testing.assert_close(_features(model, x), _features(encoder, x), atol=1e-6, rtol=1e-6)


def test_load_exported_rejects_a_safetensors_file_without_siamkit_metadata(
    tmp_path: Path,
) -> None:
    """A valid safetensors file that siamkit did not write is a CheckpointError."""
    path = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(2, 2)}, str(path))
    with pytest.raises(CheckpointError, match="not a siamkit export"):
        load_exported(path)


def test_load_exported_rejects_a_missing_file(tmp_path: Path) -> None:
    """A path that does not exist is a CheckpointError naming it."""
    path = tmp_path / "missing.safetensors"
    with pytest.raises(CheckpointError, match=r"missing\.safetensors"):
        load_exported(path)


def _random_bytes(path: Path) -> None:
    path.write_bytes(torch.randint(0, 256, (300,), dtype=torch.uint8).numpy().tobytes())


def _torch_checkpoint(path: Path) -> None:
    torch.save({"state_dict": {"weight": torch.zeros(2)}}, path)


@pytest.mark.parametrize("write", [_random_bytes, _torch_checkpoint], ids=["bytes", "torch_save"])
def test_load_exported_rejects_a_file_that_is_not_safetensors(tmp_path: Path, write) -> None:
    """Random bytes, or a torch.save checkpoint, is a CheckpointError."""
    path = tmp_path / "model.ckpt"
    write(path)
    with pytest.raises(CheckpointError, match="not a siamkit export"):
        load_exported(path)


@pytest.mark.parametrize("name", ["resnet18", "small_cnn"])
def test_group_ws_backbone_export_round_trip(tmp_path: Path, name: str) -> None:
    """GroupNorm + WS backbones export under the same key names and come back with WS."""
    from siamkit.config import BackboneConfig
    from siamkit.encoders import create_backbone

    torch.manual_seed(3)
    encoder = create_backbone(
        BackboneConfig(name=name, width=0.25, cifar_stem=True, norm="group_ws")
    )
    path = export_backbone(encoder, tmp_path / "gn.safetensors")
    with safe_open(str(path), "pt") as f:
        assert json.loads(f.metadata()["siamkit_arch"])["norm"] == "group_ws"
    model = load_exported(path)
    if name != "small_cnn":
        model.fc = nn.Identity()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(_features(model, x), _features(encoder, x), atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------------
# Formats: each file loads in its own ecosystem
# --------------------------------------------------------------------------------------------
class TimmStandIn(Encoder):
    """A timm backbone as siamkit holds one: ``timm.create_model(..., num_classes=0)`` as
    ``model``, with ``num_features`` and ``arch = {"name": "timm/<model>", "kwargs": ...}``."""

    def __init__(self, name: str = "test_vit", **kwargs) -> None:
        super().__init__()
        kwargs = {**kwargs, "num_classes": 0}
        self.model = timm.create_model(name, **kwargs)
        self.num_features = int(self.model.num_features)
        self.arch = {"name": f"timm/{name}", "kwargs": kwargs}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


@pytest.fixture(scope="module")
def resnet18() -> ResNetEncoder:
    """A width-1 ResNet-18 (torchvision's shape) with non-trivial BatchNorm statistics."""
    torch.manual_seed(4)
    encoder = ResNetEncoder("resnet18")
    randomise_batch_norm(encoder, seed=4)
    return encoder.eval()


@pytest.fixture(scope="module")
def timm_vit() -> TimmStandIn:
    """timm's 0.3M-parameter test ViT at 32 px (a create_model option the export must keep)."""
    torch.manual_seed(5)
    return TimmStandIn("test_vit", img_size=32).eval()


def _torch_state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _assert_same_weights(model: nn.Module, path: Path) -> None:
    """``model`` holds every tensor of the file, and nothing else."""
    state, exported = model.state_dict(), _torch_state(path)
    assert state.keys() == exported.keys()
    for key, value in exported.items():
        assert torch.equal(state[key], value), key


def test_torchvision_format_strictly_loads_into_torchvision_resnet18(
    resnet18: ResNetEncoder, tmp_path: Path
) -> None:
    """The .pth loads with strict=True into resnet18() with fc = Identity; same features."""
    path = export_backbone(resnet18, tmp_path / "r18.pth", "torchvision")
    plain = torchvision.models.resnet18()
    plain.fc = nn.Identity()
    result = plain.load_state_dict(_torch_state(path), strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    x = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(_features(plain, x), _features(resnet18, x), atol=1e-5, rtol=1e-5)


def test_timm_format_loads_with_create_model_pretrained_file(
    resnet18: ResNetEncoder, tmp_path: Path
) -> None:
    """timm's create_model(pretrained=True, pretrained_cfg_overlay=dict(file=...)) takes every
    tensor of the file (timm loads non-strictly when num_classes changes, so the test checks
    the weights themselves and a strict load too); same features."""
    path = export_backbone(resnet18, tmp_path / "r18.pt", "timm")
    model = timm.create_model(
        "resnet18", pretrained=True, pretrained_cfg_overlay={"file": str(path)}, num_classes=0
    )
    _assert_same_weights(model, path)
    assert model.load_state_dict(_torch_state(path), strict=True).missing_keys == []
    x = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(_features(model, x), _features(resnet18, x), atol=1e-5, rtol=1e-5)


def test_timm_backbone_exports_to_timm_and_safetensors(
    timm_vit: TimmStandIn, tmp_path: Path
) -> None:
    """A timm backbone's weights go out under timm's names with its create_model options:
    timm loads the .pth, load_exported the .safetensors, both with the backbone's features."""
    pth = export_backbone(timm_vit, tmp_path / "vit.pth", "timm")
    assert timm_model(timm_vit) == ("test_vit", {"img_size": 32})
    model = timm.create_model(
        "test_vit",
        pretrained=True,
        pretrained_cfg_overlay={"file": str(pth)},
        num_classes=0,
        img_size=32,
    )
    _assert_same_weights(model, pth)
    back = load_exported(export_backbone(timm_vit, tmp_path / "vit.safetensors"))
    x = torch.randn(2, 3, 32, 32)
    expected = _features(timm_vit, x)
    assert expected.shape == (2, 64)
    torch.testing.assert_close(_features(model, x), expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(_features(back, x), expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(
    ("build", "shape"),
    [
        (lambda: ResNetEncoder("resnet18", width=0.5), "resnet18 at width 0.5"),
        (lambda: ResNetEncoder("resnet18", cifar_stem=True), "resnet18 with the CIFAR stem"),
        (lambda: ResNetEncoder("resnet18", width=0.25, norm="group_ws"), "norm group_ws"),
        (lambda: SmallCNN(width=0.25), "small_cnn"),
    ],
    ids=["width", "cifar_stem", "group_ws", "small_cnn"],
)
@pytest.mark.parametrize("format", ["torchvision", "timm"])
def test_shapes_without_a_torchvision_or_timm_model_are_refused(
    build, shape: str, format: str, tmp_path: Path
) -> None:
    """A clear ConfigError naming the shape and pointing to safetensors/onnx; no file."""
    with pytest.raises(ConfigError, match=f"{shape}.*--format safetensors.*--format onnx"):
        export_backbone(build(), tmp_path / "m.pth", format)
    assert list(tmp_path.iterdir()) == []


def test_a_timm_backbone_has_no_torchvision_export(timm_vit: TimmStandIn, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="timm/test_vit has no torchvision model"):
        export_backbone(timm_vit, tmp_path / "m.pth", "torchvision")


@pytest.mark.parametrize(
    ("name", "format", "expected"),
    [
        ("a.safetensors", None, "safetensors"),
        ("a.onnx", None, "onnx"),
        ("a.ONNX", "onnx", "onnx"),
        ("a.pth", "torchvision", "torchvision"),
        ("a.pt", "timm", "timm"),
    ],
)
def test_resolve_format(name: str, format: str | None, expected: str) -> None:
    assert resolve_format(name, format) == expected


@pytest.mark.parametrize(
    ("name", "format", "message"),
    [
        ("a.pth", None, r"torchvision or timm; say which with --format torchvision\|timm"),
        ("a.bin", None, "cannot tell the export format"),
        ("a", None, "cannot tell the export format"),
        ("a.pth", "onnx", r"onnx export is a \.onnx file.*a\.onnx"),
        ("a.onnx", "torchvision", r"torchvision export is a \.pth or \.pt file"),
        ("a.pth", "safetensors", r"\.safetensors file"),
        ("a.pth", "keras", "unknown export format 'keras'"),
    ],
)
def test_an_extension_that_does_not_match_the_format_is_refused(
    name: str, format: str | None, message: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=message):
        export_backbone(SmallCNN(width=0.25), tmp_path / name, format)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------
# ONNX
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("build", "side"),
    [
        (lambda: SmallCNN(width=0.5), 16),
        (lambda: ResNetEncoder("resnet18", width=0.25, cifar_stem=True, norm="group_ws"), 32),
        (lambda: TimmStandIn("test_vit", img_size=32), 32),
    ],
    ids=["small_cnn", "resnet18_group_ws", "timm_vit"],
)
def test_onnx_runs_in_onnxruntime_with_pytorch_features(build, side: int, tmp_path: Path) -> None:
    """A valid graph (onnx.checker), normalised (N, 3, S, S) -> (N, D) for any N, within 1e-4
    of PyTorch; the evaluation input is in the metadata; one file, no temporaries.

    Conv-BN-ReLU (small CNN), the ResNet graph with GroupNorm and weight standardisation, and a
    timm ViT; each export takes seconds (torch.export), so the cases are few."""
    torch.manual_seed(6)
    encoder = build()
    randomise_batch_norm(encoder, seed=6)
    augment = AugmentConfig(size=8, eval_size=side, mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.4))
    path = export_backbone(encoder, tmp_path / "m.onnx", augment=augment)
    assert encoder.training  # the export put it in eval mode and back
    assert sorted(tmp_path.iterdir()) == [path]
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: json.loads(p.value) for p in model.metadata_props if p.key.startswith("siamkit")}
    assert meta["siamkit_eval"] == {"size": side, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.3, 0.4]}
    assert meta["siamkit_arch"]["num_features"] == encoder.num_features
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (images,), (features,) = session.get_inputs(), session.get_outputs()
    assert (images.name, features.name) == ("images", "features")
    assert images.shape[1:] == [3, side, side] and isinstance(images.shape[0], str)
    for n in (1, 3, 8):
        x = torch.randn(n, 3, side, side)
        out = session.run(None, {"images": x.numpy()})[0]
        assert out.shape == (n, encoder.num_features)
        assert np.abs(out - _features(encoder, x).numpy()).max() < 1e-4


def test_onnx_without_a_recipe_takes_224_pixels(tmp_path: Path) -> None:
    path = export_backbone(SmallCNN(width=0.25), tmp_path / "m.onnx")
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims[1:]] == [3, 224, 224]


def test_onnx_without_onnxscript_is_a_config_error(monkeypatch, tmp_path: Path) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real(name)
    )
    with pytest.raises(ConfigError, match=r"needs onnxscript.*siamkit\[onnx\]"):
        export_backbone(SmallCNN(width=0.25), tmp_path / "m.onnx")


# --------------------------------------------------------------------------------------------
# From a checkpoint
# --------------------------------------------------------------------------------------------
def test_export_checkpoint_records_the_runs_evaluation_input(tmp_path: Path) -> None:
    """safetensors metadata and the ONNX input side are the run's evaluation view; the hint
    names the loading call."""
    overrides = [
        "backbone.name=small_cnn",
        "backbone.width=0.25",
        "augment.size=16",
        "augment.eval_size=24",
        "method.proj_dim=16",
        "method.proj_hidden_dim=16",
        "method.pred_hidden_dim=8",
    ]
    ckpt = write_checkpoint(overrides, tmp_path / "last.ckpt")
    mean, std = AugmentConfig().mean, AugmentConfig().std

    out = export_checkpoint(ckpt, tmp_path / "b.safetensors")
    assert out.format == "safetensors" and "load_exported" in out.load_hint
    with safe_open(str(out.path), "pt") as f:
        assert json.loads(f.metadata()["siamkit_eval"]) == {
            "size": 24,
            "mean": list(mean),
            "std": list(std),
        }
    onnx_out = export_checkpoint(ckpt, tmp_path / "b.onnx")
    dims = onnx.load(str(onnx_out.path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims[1:]] == [3, 24, 24]
    assert "(N, 3, 24, 24)" in onnx_out.load_hint
    with pytest.raises(ConfigError, match=r"small_cnn at width 0\.25 has no timm model"):
        export_checkpoint(ckpt, tmp_path / "b.pth", "timm")


def test_the_old_import_path_still_works_and_says_where_it_moved() -> None:
    """``siamkit.protocols.export`` (the README's import before the move) keeps working."""
    import importlib
    import sys

    sys.modules.pop("siamkit.protocols.export", None)
    with pytest.warns(DeprecationWarning, match="siamkit.export"):
        old = importlib.import_module("siamkit.protocols.export")
    from siamkit.export import export_checkpoint, load_exported

    assert old.export_checkpoint is export_checkpoint and old.load_exported is load_exported
