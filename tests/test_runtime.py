"""Memory-format rules of siamkit.runtime: channels-last where convolutions profit from it."""

from __future__ import annotations

import pytest
from torch import nn

from siamkit.config import BackboneConfig
from siamkit.encoders import create_backbone
from siamkit.runtime import is_patchify, use_channels_last


def test_patchify_is_a_non_overlapping_conv_with_patches_above_one_pixel():
    assert is_patchify(nn.Conv2d(3, 8, 16, stride=16))
    assert is_patchify(nn.Conv2d(3, 8, (4, 4), stride=(4, 4)))
    assert not is_patchify(nn.Conv2d(3, 8, 3, stride=1, padding=1))
    assert not is_patchify(nn.Conv2d(3, 8, 1, stride=1))  # a pointwise conv is a conv
    assert not is_patchify(nn.Conv2d(3, 8, 1, stride=2))  # a ResNet downsample
    assert not is_patchify(nn.Conv2d(3, 8, 7, stride=2))  # a ResNet stem


@pytest.mark.parametrize(
    ("cfg", "auto"),
    [
        (BackboneConfig(name="small_cnn", width=0.25), True),
        (BackboneConfig(name="resnet18", width=0.125), True),
        (
            BackboneConfig(
                name="timm/vit_tiny_patch16_224",
                timm_kwargs={
                    "img_size": 32,
                    "patch_size": 8,
                    "embed_dim": 32,
                    "depth": 1,
                    "num_heads": 2,
                },
            ),
            False,
        ),
        (BackboneConfig(name="timm/resnet18", timm_kwargs={"channels": [8, 8, 8, 8]}), True),
    ],
    ids=["small_cnn", "resnet18", "timm_vit", "timm_resnet18"],
)
def test_auto_is_on_for_convolutional_backbones_only(cfg, auto):
    if cfg.is_timm:
        pytest.importorskip("timm")
    backbone = create_backbone(cfg)
    assert use_channels_last("auto", backbone) is auto
    assert use_channels_last("on", backbone) is True
    assert use_channels_last("off", backbone) is False


def test_a_patchify_stem_with_depthwise_convs_after_it_is_convolutional():
    convnext_like = nn.Sequential(
        nn.Conv2d(3, 8, 4, stride=4), nn.Conv2d(8, 8, 7, padding=3, groups=8)
    )
    assert use_channels_last("auto", convnext_like) is True
    assert (
        use_channels_last("auto", nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), nn.Linear(8, 8)))
        is False
    )
