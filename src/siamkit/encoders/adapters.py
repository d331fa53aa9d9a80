"""Models built elsewhere (timm, torchvision, your own) behind the encoder contract.

``pretrain(cfg, backbone=module)`` takes any ``nn.Module`` with an int ``num_features`` and a
``forward_features(x) -> (B, num_features)``; :func:`as_encoder` gives those to a timm or
torchvision model (or any model whose output is its features).
"""

from __future__ import annotations

import torch
from torch import nn

from siamkit.config import CUSTOM_PREFIX
from siamkit.encoders.base import Encoder
from siamkit.errors import ConfigError

#: Where torchvision and timm models keep their classifier (a Linear, or a Sequential ending in
#: one): ResNet ``fc``; EfficientNet, MobileNet, ConvNeXt, VGG ``classifier``; ViT ``heads``;
#: Swin ``head``.
_CLASSIFIERS = ("fc", "classifier", "heads", "head")


class ModuleEncoder(Encoder):
    """A model whose pooled features are its output (or, timm-style, its pre-logits).

    Attributes:
        model: The wrapped model (state-dict keys ``model.<its own keys>``).
        num_features: Width of the features.
        timm_like: Features are ``model.forward_head(model.forward_features(x), pre_logits=True)``
            (timm's pooled representation before the classifier), else ``model(x)``.
    """

    def __init__(self, model: nn.Module, num_features: int, timm_like: bool = False) -> None:
        super().__init__()
        self.model = model
        self.num_features = int(num_features)
        self.timm_like = timm_like

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> ``(B, num_features)``."""
        if self.timm_like:
            # A timm model (checked by as_encoder), whose methods nn.Module's type does not know.
            tokens = self.model.forward_features(x)  # type: ignore[operator]
            return self.model.forward_head(tokens, pre_logits=True)  # type: ignore[operator]
        return self.model(x)


def _drop_classifier(model: nn.Module) -> int | None:
    """Replace the model's final Linear classifier by an identity; its input width, or None."""
    for attr in _CLASSIFIERS:
        head = getattr(model, attr, None)
        if isinstance(head, nn.Linear):
            setattr(model, attr, nn.Identity())
            return int(head.in_features)
        if isinstance(head, nn.Sequential) and len(head) and isinstance(head[-1], nn.Linear):
            width = int(head[-1].in_features)
            head[-1] = nn.Identity()
            return width
    return None


def as_encoder(model: nn.Module, num_features: int | None = None) -> Encoder:
    """``model`` behind the encoder contract (``num_features``, ``forward_features``).

    - an :class:`Encoder` is returned as it is;
    - with ``num_features``: ``model(x)`` is taken to be the ``(B, num_features)`` features;
    - a timm model (``forward_head``): its pooled pre-logits, whatever its ``num_classes``;
    - a torchvision-style model: its final Linear classifier (``fc``, ``classifier``, ``heads``
      or ``head``) is replaced, in place, by an identity, and ``model(x)`` is the features.

    Raises:
        ConfigError: None of these applies; pass ``num_features``.
    """
    if isinstance(model, Encoder):
        return model
    if num_features is not None:
        return ModuleEncoder(model, num_features)
    if callable(getattr(model, "forward_head", None)) and hasattr(model, "num_features"):
        width = getattr(model, "head_hidden_size", None) or model.num_features
        # width is an int attribute of a timm model, typed by nn.Module's __getattr__ as a union.
        return ModuleEncoder(model, int(width), timm_like=True)  # type: ignore[arg-type]
    width = _drop_classifier(model)
    if width is None:
        raise ConfigError(
            f"as_encoder cannot tell where {type(model).__name__}'s features end: it has no "
            f"forward_head (timm) and no Linear classifier in {', '.join(_CLASSIFIERS)}; make "
            "model(x) return (B, D) features and pass as_encoder(model, num_features=D)"
        )
    return ModuleEncoder(model, width)


def custom_backbone_name(module: nn.Module) -> str:
    """``custom/<module>.<class>``: what a run records for a backbone passed as a module.

    For a :class:`ModuleEncoder`, the class of the model it wraps.
    """
    inner = module.model if isinstance(module, ModuleEncoder) else module
    cls = type(inner)
    return f"{CUSTOM_PREFIX}{cls.__module__}.{cls.__qualname__}"
