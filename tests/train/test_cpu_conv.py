"""PatchGradConv2d computes what nn.Conv2d computes: outputs, input and weight gradients."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from siamkit.encoders import torchvision_resnet
from siamkit.train.cpu_conv import PatchGradConv2d, patch_conv_helps, use_patch_grad_convs


def _pair(cin, cout, k, stride, pad):
    torch.manual_seed(0)
    ref = nn.Conv2d(cin, cout, k, stride, pad, bias=False)
    fast = copy.deepcopy(ref)
    assert use_patch_grad_convs(fast) == 1 and type(fast) is PatchGradConv2d
    return ref, fast


def _run(conv, x, autocast):
    x = x.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        y = conv(x)
    (y.float() * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
    return y.detach().float(), x.grad, conv.weight.grad


@pytest.mark.parametrize(
    ("cin", "cout", "k", "stride", "pad", "hw"),
    [(8, 16, 3, 1, 1, 4), (8, 16, 3, 2, 1, 8), (8, 16, 1, 2, 0, 8), (4, 6, 3, 1, 0, 6)],
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_outputs_and_gradients_equal_conv2d_in_fp32(cin, cout, k, stride, pad, hw, channels_last):
    ref, fast = _pair(cin, cout, k, stride, pad)
    x = torch.randn(5, cin, hw, hw)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    assert fast._eligible(x)  # these maps are small enough for the GEMM path
    for a, b in zip(_run(ref, x, False), _run(fast, x, False), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


def test_under_bf16_autocast_gradients_match_to_bf16_precision():
    ref, fast = _pair(32, 64, 3, 1, 1)
    x = torch.randn(16, 32, 4, 4).contiguous(memory_format=torch.channels_last)
    (ya, gxa, gwa), (yb, gxb, gwb) = _run(ref, x, True), _run(fast, x, True)
    torch.testing.assert_close(yb, ya)  # the forward is the stock convolution
    torch.testing.assert_close(gxb, gxa)  # so is the input gradient
    assert gwb.dtype == torch.float32  # the fp32 master weight gets an fp32 gradient
    rel = (gwb - gwa).norm() / gwa.norm()
    assert rel < 1e-2, rel  # bf16 rounding of two GEMMs that sum in a different order


def test_large_maps_and_no_grad_use_the_stock_path():
    _, fast = _pair(3, 4, 3, 1, 1)
    assert not fast._eligible(torch.randn(2, 3, 16, 16))  # 256 output positions > 64
    with torch.no_grad():
        assert not fast._eligible(torch.randn(2, 3, 4, 4))


def test_resnet_conversion_keeps_state_dict_and_gradients():
    torch.manual_seed(0)
    ref = torchvision_resnet("resnet18", 0.125, cifar_stem=True)
    fast = copy.deepcopy(ref)
    assert use_patch_grad_convs(fast) == 20  # every conv of ResNet-18 (incl. 3 downsamples)
    assert list(fast.state_dict()) == list(ref.state_dict())
    x = torch.randn(4, 3, 32, 32)
    for m in (ref, fast):
        m(x).square().mean().backward()
    for (name, a), b in zip(ref.named_parameters(), fast.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("amx", [True, False])
def test_patch_conv_auto_follows_amx_and_on_off_are_obeyed(monkeypatch, amx):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert patch_conv_helps("auto") is amx
    assert patch_conv_helps("on") is True and patch_conv_helps("off") is False


@pytest.mark.parametrize(("mode", "patched"), [("on", True), ("off", False)])
def test_training_module_uses_the_patch_gemm_as_configured(mode, patched):
    from siamkit.encoders import create_backbone
    from siamkit.methods import create_method
    from siamkit.recipes import load_config
    from siamkit.train.loop import PretrainModule

    cfg = load_config(None, values={"train.patch_conv": mode, "backbone.name": "small_cnn"})
    method = create_method(create_backbone(cfg.backbone), cfg.method)
    module = PretrainModule(cfg, method, steps_per_epoch=1)
    kinds = {type(m) for m in module.method.modules() if isinstance(m, nn.Conv2d)}
    assert kinds == ({PatchGradConv2d} if patched else {nn.Conv2d})


@pytest.mark.parametrize("pre_norm", [False, True], ids=["biased_proj", "unbiased_proj"])
def test_a_vits_patch_embedding_is_unchanged_by_the_conversion(pre_norm):
    """A ViT's one convolution: skipped when biased; when not, the GEMM gives the same grads."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    options = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}
    ref = timm.create_model("vit_tiny_patch16_224", num_classes=0, pre_norm=pre_norm, **options)
    fast = copy.deepcopy(ref)
    assert use_patch_grad_convs(fast) == 1
    x = torch.randn(4, 3, 32, 32)
    assert fast.patch_embed.proj._eligible(x) is pre_norm  # 4x4 patches: a small map
    outs = [m(x) for m in (ref, fast)]
    torch.testing.assert_close(outs[1], outs[0])
    for out in outs:
        out.square().mean().backward()
    for (name, a), b in zip(ref.named_parameters(), fast.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6, msg=name)
