"""Any timm model behind the encoder contract (``backbone.name: timm/<model>``).

timm is an optional dependency (``pip install "siamkit[timm]"``): it is imported only when a timm
backbone is built, so ``import siamkit`` never needs it.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import torch
from torch import nn

from siamkit.encoders.base import Encoder
from siamkit.errors import ConfigError


def import_timm() -> ModuleType:
    """The ``timm`` module, or a :class:`ConfigError` saying how to install it."""
    try:
        import timm
    except ImportError:
        raise ConfigError(
            'timm is not installed; pip install "siamkit[timm]" (timm backbones and models need it)'
        ) from None
    return timm


class TimmEncoder(Encoder):
    """A ``timm.create_model(model_name, num_classes=0, **kwargs)`` at random initialisation.

    With ``num_classes=0`` timm replaces the classifier by an identity, so the model's own
    forward is its pooled pre-logits representation: a ViT's class token (or its ``global_pool``
    choice) after the final norm, a ResNet's global average pool.

    Attributes:
        model: The timm model; its state dict is timm's own (``model.`` prefixed here), so an
            exported backbone loads into ``timm.create_model(model_name, **kwargs)``.
        num_features: Width of the pooled features.
        arch: ``{"name": "timm/<model_name>", "kwargs": {...}}``, enough to rebuild the model.

    Args:
        model_name: A timm model name (``vit_small_patch16_224``, ``resnet18``, ...).
        **kwargs: Options of that model (``img_size``, ``patch_size``, ``drop_path_rate`` ...).

    Raises:
        ConfigError: timm is not installed, the name is unknown, or an option is refused.
    """

    def __init__(self, model_name: str, **kwargs: Any) -> None:
        super().__init__()
        timm = import_timm()
        if not timm.is_model(model_name):
            close = timm.list_models(f"*{model_name.split('_')[0]}*")[:8]
            hint = f" (close: {', '.join(close)})" if close else ""
            raise ConfigError(
                f"timm has no model {model_name!r}{hint}; timm.list_models('*vit*') lists them"
            )
        try:
            self.model = timm.create_model(model_name, pretrained=False, num_classes=0, **kwargs)
        except (TypeError, ValueError, AssertionError) as err:
            raise ConfigError(
                f"timm model {model_name!r} refused backbone.timm_kwargs {kwargs}: "
                f"{type(err).__name__}: {err}; fix or remove that option"
            ) from None
        # The pooled output's width: timm's head_hidden_size where the head has a hidden layer
        # of its own (MobileNetV3's conv_head), else num_features.
        self.num_features = int(getattr(self.model, "head_hidden_size", self.model.num_features))
        self.arch: dict[str, Any] = {"name": f"timm/{model_name}", "kwargs": dict(kwargs)}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> ``(B, num_features)``, pooled the model's own way."""
        return self.model(x)


def patch_projection(model: nn.Module) -> nn.Module:
    """The patch projection of a ViT-style model (``patch_embed.proj``), wherever it sits.

    Raises:
        ConfigError: The model has no patch embedding.
    """
    for name, module in model.named_modules():
        proj = getattr(module, "proj", None)
        if name.split(".")[-1] == "patch_embed" and isinstance(proj, nn.Module):
            return proj
    raise ConfigError(
        f"backbone.freeze_patch_embed: {type(model).__name__} has no patch embedding "
        "(patch_embed.proj); it applies to ViT-style models: set it to false"
    )


def freeze_patch_embed(model: nn.Module) -> list[nn.Parameter]:
    """Freeze the patch projection at its current (random) weights; returns its parameters.

    MoCo v3's "random patch projection" (arXiv:2104.02057, Sec. 4.2): the projection from
    patches to tokens is not trained, which removes the gradient spikes of the first layer that
    make self-supervised ViT training unstable. Frozen parameters have ``requires_grad=False``,
    so the methods' ``param_groups`` leave them out of the optimiser (no weight decay either).
    As the released code (``--stop-grad-conv1``), only ``proj``'s weight and bias are frozen.
    """
    params = list(patch_projection(model).parameters())
    for p in params:
        p.requires_grad_(False)
    return params
