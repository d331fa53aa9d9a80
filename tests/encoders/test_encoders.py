"""Contract tests over every registered backbone, and torchvision compatibility of the ResNets."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from siamkit.config import BackboneConfig
from siamkit.encoders import (
    BACKBONES,
    Encoder,
    ResNetEncoder,
    SmallCNN,
    create_backbone,
    torchvision_resnet,
)
from siamkit.errors import ConfigError

# Narrow enough to run in milliseconds on a CPU; resnet50's bottlenecks are 4x wider.
_SMALL_WIDTH = {"resnet50": 0.125}


def _small(name: str, cifar_stem: bool) -> nn.Module:
    return BACKBONES[name](width=_SMALL_WIDTH.get(name, 0.25), cifar_stem=cifar_stem)


@pytest.mark.parametrize("cifar_stem", [False, True], ids=["imagenet_stem", "cifar_stem"])
@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_backbone_follows_the_encoder_contract(name: str, cifar_stem: bool) -> None:
    """``num_features`` is an int and ``forward_features`` gives ``(B, num_features)``."""
    torch.manual_seed(0)
    encoder = _small(name, cifar_stem)
    assert isinstance(encoder, Encoder)
    assert type(encoder.num_features) is int and encoder.num_features > 0
    x = torch.randn(2, 3, 32, 32)
    features = encoder.forward_features(x)
    assert features.shape == (2, encoder.num_features)
    assert torch.isfinite(features).all()
    # Gradients reach the first layer (nothing is detached inside the backbone).
    features.square().sum().backward()
    first = next(p for p in encoder.parameters() if p.dim() == 4)
    assert first.grad is not None and first.grad.abs().sum() > 0
    encoder.eval()
    with torch.no_grad():
        torch.testing.assert_close(encoder(x), encoder.forward_features(x))


def test_encoder_base_dispatches_forward_to_the_subclass_and_adds_no_state() -> None:
    """``Encoder`` is an ``nn.Module`` whose ``forward`` is the subclass's ``forward_features``."""

    class Mean(Encoder):
        num_features = 3

        def forward_features(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=(2, 3))

    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(Mean()(x), x.mean(dim=(2, 3)))
    assert isinstance(Mean(), nn.Module) and not Mean().state_dict()
    with pytest.raises(NotImplementedError):
        Encoder()(x)


def test_state_dict_keys_are_those_of_the_layers_alone() -> None:
    """The base class adds no keys, so checkpoints and exports keep loading."""
    cnn = SmallCNN(width=0.25)
    assert list(cnn.state_dict()) == [f"features.{k}" for k in cnn.features.state_dict()]
    resnet = ResNetEncoder("resnet18", width=0.25, cifar_stem=True)
    reference = torchvision_resnet("resnet18", width=0.25, cifar_stem=True).state_dict()
    assert list(resnet.state_dict()) == [f"model.{k}" for k in reference if not k.startswith("fc.")]


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_create_backbone_builds_every_registered_name(name: str) -> None:
    """The config path reaches every registry entry with the requested width."""
    width = _SMALL_WIDTH.get(name, 0.25)
    narrow = create_backbone(BackboneConfig(name=name, width=width, cifar_stem=True))
    assert narrow.num_features == _small(name, cifar_stem=True).num_features


def test_create_backbone_rejects_unknown_names_listing_valid_ones() -> None:
    """An unknown name is a ConfigError that lists the registry."""
    with pytest.raises(ConfigError, match="resnet18") as err:
        create_backbone(BackboneConfig(name="resnet19"))
    assert all(name in str(err.value) for name in BACKBONES)


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_torchvision_resnet18_is_torchvisions_resnet18() -> None:
    """Same state-dict keys and shapes (buffers included) as ``torchvision.models.resnet18()``."""
    ours = torchvision_resnet("resnet18")
    assert type(ours) is torchvision.models.ResNet
    assert _shapes(ours) == _shapes(torchvision.models.resnet18())
    assert isinstance(ours.maxpool, nn.MaxPool2d)
    assert (ours.conv1.kernel_size, ours.conv1.stride) == ((7, 7), (2, 2))


def _layer4_size(model: nn.Module, size: int) -> tuple[int, ...]:
    """Spatial size of ``model.layer4``'s output for ``size`` x ``size`` input."""
    shapes: list[torch.Size] = []

    def record(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
        shapes.append(output.shape)

    handle = model.layer4.register_forward_hook(record)
    with torch.no_grad():
        model.eval()(torch.randn(1, 3, size, size))
    handle.remove()
    return tuple(shapes[0][-2:])


def test_cifar_stem_is_one_3x3_stride_1_conv_without_max_pool() -> None:
    """CIFAR stem: conv1 3x3/1 (padding 1), no max-pool; 32x32 input keeps 4x4 at layer4."""
    model = torchvision_resnet("resnet18", width=0.25, cifar_stem=True)
    assert model.conv1.kernel_size == (3, 3)
    assert model.conv1.stride == (1, 1)
    assert model.conv1.padding == (1, 1)
    assert model.conv1.bias is None
    assert isinstance(model.maxpool, nn.Identity)
    assert _layer4_size(model, 32) == (4, 4)
    assert _layer4_size(torchvision_resnet("resnet18", width=0.25), 32) == (1, 1)


@pytest.mark.parametrize(("name", "expansion"), [("resnet18", 1), ("resnet50", 4)])
def test_width_half_halves_every_stage(name: str, expansion: int) -> None:
    """Width 0.5: 32, 64, 128, 256 planes; torchvision's key names kept."""
    half = torchvision_resnet(name, width=0.5)
    assert half.conv1.out_channels == 32 and half.bn1.num_features == 32
    for i, planes in enumerate([32, 64, 128, 256]):
        stage = getattr(half, f"layer{i + 1}")
        assert stage[0].conv1.out_channels == planes
        assert stage[-1].bn2.num_features == planes
        out_channels = stage[-1].conv3.out_channels if expansion == 4 else planes
        assert out_channels == planes * expansion
    assert half.fc.in_features == 256 * expansion
    assert ResNetEncoder(name, width=0.5).num_features == 256 * expansion
    narrow_keys = set(torchvision_resnet(name, width=0.125).state_dict())
    assert set(half.state_dict()) == narrow_keys  # names do not depend on the width


def test_resnet_encoder_exposes_torchvision_weights_without_classifier() -> None:
    """``torchvision_state_dict`` is the wrapped model's state minus ``fc``."""
    encoder = ResNetEncoder("resnet18", width=0.25, cifar_stem=True)
    state = encoder.torchvision_state_dict()
    assert not any(k.startswith("fc.") for k in state)
    reference = torchvision_resnet("resnet18", width=0.25, cifar_stem=True).state_dict()
    assert set(state) == {k for k in reference if not k.startswith("fc.")}
    assert encoder.num_features == 128
    assert encoder.arch == {"name": "resnet18", "width": 0.25, "cifar_stem": True}


def test_small_cnn_width_scales_channels_and_ignores_the_stem_flag() -> None:
    """SmallCNN: 32, 64, 128, 128 channels times width; always a 3x3/1 stem."""
    assert SmallCNN().num_features == 128
    assert SmallCNN(width=0.5).num_features == 64
    a, b = SmallCNN(width=0.5, cifar_stem=False), SmallCNN(width=0.5, cifar_stem=True)
    assert _shapes(a) == _shapes(b)
    assert a.features[0].stride == (1, 1)


def test_unknown_resnet_name_is_rejected() -> None:
    """torchvision_resnet only knows the ResNets in its table."""
    with pytest.raises(ValueError, match="resnet101"):
        torchvision_resnet("resnet101")


# --------------------------------------------------------------------------------------------
# GroupNorm + Weight Standardisation (arXiv:2010.10241, Sec. 3)
# --------------------------------------------------------------------------------------------
def test_num_groups_is_32_or_the_largest_divisor_leaving_two_channels_per_group() -> None:
    from siamkit.normalization import num_groups

    expected = {4096: 32, 256: 32, 64: 32, 32: 16, 16: 8, 48: 24, 6: 3, 3: 1, 2: 1, 1: 1}
    for channels, groups in expected.items():
        assert num_groups(channels) == groups, channels
        assert channels % num_groups(channels) == 0


@pytest.mark.parametrize(("name", "width"), [("resnet18", 0.25), ("resnet50", 0.125)])
def test_group_ws_resnet_has_group_norm_ws_convs_and_batch_norm_key_names(
    name: str, width: float
) -> None:
    """No BatchNorm; every conv standardises its weight; same conv keys as the BN model, and
    each GroupNorm has the weight/bias keys of the BN it replaces (no running statistics)."""
    from siamkit.normalization import WSConv2d

    torch.manual_seed(0)
    encoder = create_backbone(
        BackboneConfig(name=name, width=width, cifar_stem=True, norm="group_ws")
    )
    assert isinstance(encoder, ResNetEncoder) and encoder.arch["norm"] == "group_ws"
    modules = list(encoder.modules())
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in modules)
    norms = [m for m in modules if isinstance(m, nn.GroupNorm)]
    assert norms and all(m.num_channels % m.num_groups == 0 for m in norms)
    convs = [m for m in modules if isinstance(m, nn.Conv2d)]
    assert convs and all(type(m) is WSConv2d for m in convs)

    x = torch.randn(2, 3, 32, 32)
    features = encoder.forward_features(x)
    assert features.shape == (2, encoder.num_features) and torch.isfinite(features).all()

    ws = encoder.torchvision_state_dict()
    bn = ResNetEncoder(name, width=width, cifar_stem=True).torchvision_state_dict()
    conv_keys = {k for k in bn if bn[k].dim() == 4}
    assert conv_keys == {k for k in ws if ws[k].dim() == 4}
    assert set(ws) <= set(bn)
    assert all(
        k.split(".")[-1] in ("running_mean", "running_var", "num_batches_tracked")
        for k in set(bn) - set(ws)
    )
    assert all(ws[k].shape == bn[k].shape for k in ws)


def test_ws_conv_standardises_each_output_channel_in_forward() -> None:
    """The weight the convolution uses has mean 0 and std 1 per output channel; the stored
    parameter is left as it is."""
    from siamkit.normalization import WSConv2d, standardize_weight

    torch.manual_seed(0)
    conv = WSConv2d(4, 6, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.mul_(5.0).add_(0.3)  # far from standardised
    used: list[torch.Tensor] = []
    real_conv2d = torch.nn.functional.conv2d

    def spy(x, weight, *args, **kwargs):
        used.append(weight.detach())
        return real_conv2d(x, weight, *args, **kwargs)

    x = torch.randn(2, 4, 8, 8)
    try:
        torch.nn.functional.conv2d = spy
        out = conv(x)
    finally:
        torch.nn.functional.conv2d = real_conv2d
    (w,) = used
    flat = w.flatten(1)
    torch.testing.assert_close(flat.mean(dim=1), torch.zeros(6), atol=1e-6, rtol=0)
    torch.testing.assert_close(flat.std(dim=1, correction=0), torch.ones(6), atol=1e-4, rtol=0)
    torch.testing.assert_close(out, real_conv2d(x, standardize_weight(conv.weight), padding=1))
    assert flat.sub(conv.weight.detach().flatten(1)).abs().max() > 1  # parameter untouched
    # the gradient reaches the stored weight through the standardisation
    out.square().sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0


def test_group_ws_small_cnn_and_unsupported_backbones() -> None:
    from siamkit.encoders import BACKBONES

    cnn = create_backbone(BackboneConfig(name="small_cnn", width=0.5, norm="group_ws"))
    assert any(isinstance(m, nn.GroupNorm) for m in cnn.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in cnn.modules())
    assert cnn.forward_features(torch.randn(2, 3, 16, 16)).shape == (2, cnn.num_features)
    bn_keys = set(SmallCNN(width=0.5).state_dict())
    assert set(cnn.state_dict()) <= bn_keys

    BACKBONES["_no_norm_option"] = lambda width, cifar_stem: SmallCNN(width)
    try:
        with pytest.raises(ConfigError, match="norm"):
            create_backbone(BackboneConfig(name="_no_norm_option", norm="group_ws"))
        assert create_backbone(BackboneConfig(name="_no_norm_option", width=0.25))
    finally:
        del BACKBONES["_no_norm_option"]


def test_group_ws_features_do_not_depend_on_the_rest_of_the_batch() -> None:
    torch.manual_seed(0)
    encoder = ResNetEncoder("resnet18", width=0.25, cifar_stem=True, norm="group_ws").train()
    x = torch.randn(4, 3, 16, 16)
    torch.testing.assert_close(encoder(x[:1]), encoder(x)[:1], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["resnet18", "small_cnn"])
def test_norm_none_has_no_normalisation_layer_and_no_batch_dependence(name: str) -> None:
    torch.manual_seed(0)
    encoder = create_backbone(BackboneConfig(name=name, width=0.25, cifar_stem=True, norm="none"))
    norms = (nn.BatchNorm2d, nn.GroupNorm)
    assert not any(isinstance(m, norms) for m in encoder.modules())
    x = torch.randn(4, 3, 16, 16)
    out = encoder.train().forward_features(x)
    assert out.shape == (4, encoder.num_features)
    torch.testing.assert_close(encoder.forward_features(x[:1]), out[:1], atol=1e-5, rtol=1e-4)
