"""Tests for exporting backbones to safetensors and loading them into plain models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from siamkit.encoders import ResNetEncoder, SmallCNN
from siamkit.errors import CheckpointError
from siamkit.protocols.export import export_backbone, load_exported


def _randomise_batch_norm(model: nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial statistics and affine parameters, so eval mode and the
    export's buffers matter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))


def _features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(x)


def test_resnet18_export_loads_into_plain_torchvision_resnet18(tmp_path: Path) -> None:
    """Width 1, ImageNet stem: the file loads into ``torchvision.models.resnet18()`` with only
    ``fc`` missing, and gives the encoder's features."""
    torch.manual_seed(0)
    encoder = ResNetEncoder("resnet18")
    _randomise_batch_norm(encoder)
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
    _randomise_batch_norm(encoder, seed=1)
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
    _randomise_batch_norm(encoder, seed=2)
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
