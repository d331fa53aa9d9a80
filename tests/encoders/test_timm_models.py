"""timm backbones: the encoder contract, timm's own weights, the frozen patch projection, errors."""

from __future__ import annotations

import sys

import pytest
import torch

from siamkit.config import BackboneConfig
from siamkit.encoders import Encoder, TimmEncoder, create_backbone, freeze_patch_embed
from siamkit.errors import ConfigError

timm = pytest.importorskip("timm")

#: A 2-block ViT of width 32 on 8-px patches of 32-px images: milliseconds on a CPU.
TINY_VIT = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}
NARROW_RESNET = {"channels": (8, 16, 32, 64), "stem_width": 8}


def _vit(**options) -> BackboneConfig:
    return BackboneConfig(name="timm/vit_tiny_patch16_224", timm_kwargs={**TINY_VIT}, **options)


@pytest.mark.parametrize(
    ("model", "options", "width"),
    [
        ("vit_tiny_patch16_224", TINY_VIT, 32),
        ("resnet18", NARROW_RESNET, 64),
        # the pooled output is wider than num_features: a hidden layer in the head
        ("mobilenetv3_small_050", {}, 1024),
    ],
)
def test_timm_encoder_follows_the_contract(model, options, width):
    torch.manual_seed(0)
    encoder = TimmEncoder(model, **options)
    assert isinstance(encoder, Encoder)
    assert encoder.num_features == width and type(encoder.num_features) is int
    assert encoder.arch == {"name": f"timm/{model}", "kwargs": options}
    x = torch.randn(2, 3, 32, 32)
    h = encoder.forward_features(x)
    assert h.shape == (2, width) and torch.isfinite(h).all()
    h.square().sum().backward()
    first = next(p for p in encoder.parameters() if p.dim() == 4)  # the stem / patch conv
    assert first.grad is not None and first.grad.abs().sum() > 0
    encoder.eval()
    with torch.no_grad():
        torch.testing.assert_close(encoder(x), encoder.forward_features(x))


def test_features_are_the_timm_models_own_pooled_pre_logits():
    """A ViT's class token after the final norm, as timm's forward_head(pre_logits=True)."""
    torch.manual_seed(0)
    encoder = TimmEncoder("vit_tiny_patch16_224", **TINY_VIT).eval()
    reference = timm.create_model("vit_tiny_patch16_224", num_classes=10, **TINY_VIT).eval()
    state = {k: v for k, v in encoder.model.state_dict().items()}
    missing, unexpected = reference.load_state_dict(state, strict=False)
    assert set(missing) == {"head.weight", "head.bias"} and not unexpected
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        tokens = reference.forward_features(x)  # (3, 1 + 16, 32): class token first
        expected = reference.forward_head(tokens, pre_logits=True)
        torch.testing.assert_close(encoder.forward_features(x), expected)
        torch.testing.assert_close(expected, tokens[:, 0])  # global_pool "token"


def test_state_dict_round_trip_into_a_fresh_encoder():
    torch.manual_seed(0)
    trained = create_backbone(_vit())
    torch.manual_seed(1)
    fresh = create_backbone(_vit())
    x = torch.randn(2, 3, 32, 32)
    trained.eval()
    fresh.eval()
    with torch.no_grad():
        assert not torch.allclose(fresh(x), trained(x))
        fresh.load_state_dict(trained.state_dict())
        torch.testing.assert_close(fresh(x), trained(x))
    # Keys are timm's own under ``model.``: an export loads into timm.create_model directly.
    assert all(k.startswith("model.") for k in trained.state_dict())
    assert "model.patch_embed.proj.weight" in trained.state_dict()


def test_options_reach_timm_and_lists_become_tuples():
    cfg = BackboneConfig(
        name="timm/vit_tiny_patch16_224", timm_kwargs={**TINY_VIT, "img_size": [32, 16]}
    )
    encoder = create_backbone(cfg)
    assert isinstance(encoder, TimmEncoder)
    assert encoder.model.patch_embed.img_size == (32, 16)
    assert encoder.forward_features(torch.randn(2, 3, 32, 16)).shape == (2, 32)
    assert len(encoder.model.blocks) == 2


def test_freeze_patch_embed_freezes_only_the_patch_projection():
    encoder = create_backbone(_vit(freeze_patch_embed=True))
    frozen = {n for n, p in encoder.named_parameters() if not p.requires_grad}
    assert frozen == {"model.patch_embed.proj.weight", "model.patch_embed.proj.bias"}
    # The frozen layer gets no gradient; the rest still learns.
    encoder.forward_features(torch.randn(2, 3, 32, 32)).sum().backward()
    assert encoder.model.patch_embed.proj.weight.grad is None
    assert encoder.model.blocks[0].attn.qkv.weight.grad is not None


def test_freeze_patch_embed_needs_a_patch_embedding():
    resnet = create_backbone(BackboneConfig(name="timm/resnet18", timm_kwargs=NARROW_RESNET))
    with pytest.raises(ConfigError, match=r"no patch embedding.*set it to false"):
        freeze_patch_embed(resnet)
    with pytest.raises(ConfigError, match="no patch embedding"):
        create_backbone(
            BackboneConfig(name="timm/resnet18", timm_kwargs=NARROW_RESNET, freeze_patch_embed=True)
        )


def test_unknown_model_and_refused_options_are_config_errors():
    with pytest.raises(ConfigError, match=r"timm has no model 'vit_tinyy'.*list_models"):
        create_backbone(BackboneConfig(name="timm/vit_tinyy"))
    with pytest.raises(ConfigError, match=r"refused backbone.timm_kwargs.*no_such_option"):
        create_backbone(BackboneConfig(name="timm/resnet18", timm_kwargs={"no_such_option": 1}))


def test_missing_timm_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` raises ImportError
    with pytest.raises(ConfigError, match=r'pip install "siamkit\[timm\]"'):
        create_backbone(BackboneConfig(name="timm/resnet18"))
