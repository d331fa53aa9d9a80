"""Models built elsewhere behind the encoder contract: as_encoder, check_encoder, custom names."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from siamkit.encoders import (
    Encoder,
    ModuleEncoder,
    SmallCNN,
    as_encoder,
    check_encoder,
    custom_backbone_name,
)
from siamkit.errors import ConfigError


class Pooled(nn.Module):
    """A user's backbone that meets the contract without subclassing Encoder."""

    def __init__(self, width: int = 6) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.num_features = width

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x)).mean(dim=(2, 3))


def test_torchvision_resnet_loses_its_classifier_and_gives_pooled_features():
    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    reference = torchvision.models.resnet18()
    reference.load_state_dict(model.state_dict())
    encoder = as_encoder(model)
    assert isinstance(encoder, ModuleEncoder) and encoder.num_features == 512
    assert isinstance(model.fc, nn.Identity)  # replaced in place
    x = torch.randn(2, 3, 32, 32)
    reference.fc = nn.Identity()
    encoder.eval()
    reference.eval()
    with torch.no_grad():
        torch.testing.assert_close(encoder.forward_features(x), reference(x))
    assert check_encoder(encoder) is encoder


def test_torchvision_classifier_in_a_sequential_is_found():
    model = torchvision.models.mobilenet_v3_small()  # classifier = Sequential(..., Linear)
    encoder = as_encoder(model)
    assert encoder.num_features == 1024
    assert encoder.forward_features(torch.randn(2, 3, 32, 32)).shape == (2, 1024)


def test_timm_model_with_its_classifier_gives_its_pre_logits():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    options = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}
    model = timm.create_model("vit_tiny_patch16_224", num_classes=10, **options).eval()
    x = torch.randn(2, 3, 32, 32)
    with pytest.raises(ConfigError, match=r"gives \(2, 17, 32\).*as_encoder"):
        check_encoder(model)  # timm's forward_features is per token, not pooled
    encoder = as_encoder(model)
    with torch.no_grad():
        expected = model.forward_head(model.forward_features(x), pre_logits=True)
        torch.testing.assert_close(encoder.forward_features(x), expected)
    assert encoder.num_features == 32


def test_encoders_and_explicit_widths_pass_through():
    cnn = SmallCNN(width=0.25)
    assert as_encoder(cnn) is cnn
    trunk = nn.Sequential(nn.Conv2d(3, 5, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    encoder = as_encoder(trunk, num_features=5)
    assert encoder.forward_features(torch.randn(2, 3, 8, 8)).shape == (2, 5)
    with pytest.raises(ConfigError, match=r"num_features=D"):
        as_encoder(nn.Sequential(nn.Conv2d(3, 5, 3), nn.Flatten()))


def test_a_plain_module_meeting_the_contract_need_not_subclass_encoder():
    module = Pooled()
    assert not isinstance(module, Encoder)
    assert check_encoder(module, (16, 32)) is module


def test_the_probe_leaves_training_mode_and_batchnorm_statistics_alone():
    module = Pooled().train()
    module.bn.eval()  # a frozen BN stays in eval mode
    before = module.bn.running_mean.clone()
    check_encoder(module)
    assert module.training and not module.bn.training
    torch.testing.assert_close(module.bn.running_mean, before)


class _NoWidth(nn.Module):
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class _NoForwardFeatures(nn.Module):
    num_features = 3


class _WrongShape(Pooled):
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)  # (B, C, H, W): not pooled


class _FixedSize(Pooled):
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[-1] == 32, f"Input width ({x.shape[-1]}) doesn't match model (32)"
        return super().forward_features(x)


@pytest.mark.parametrize(
    ("module", "sizes", "message"),
    [
        (torch.zeros(3), (32,), "must be a torch nn.Module"),
        (_NoWidth(), (32,), r"_NoWidth has no int num_features.*as_encoder"),
        (_NoForwardFeatures(), (32,), r"_NoForwardFeatures has no forward_features\(x\)"),
        (_WrongShape(), (32,), r"gives \(2, 6, 32, 32\) .*not \(2, num_features=6\)"),
        (_FixedSize(), (32, 16), r"failed on a \(2, 3, 16, 16\) batch.*take 16-px images"),
    ],
)
def test_check_encoder_names_what_is_missing_and_the_fix(module, sizes, message):
    with pytest.raises(ConfigError, match=message):
        check_encoder(module, sizes)


def test_custom_name_is_the_class_of_the_model():
    assert custom_backbone_name(Pooled()) == f"custom/{__name__}.Pooled"
    wrapped = as_encoder(torchvision.models.resnet18())
    assert custom_backbone_name(wrapped) == "custom/torchvision.models.resnet.ResNet"
