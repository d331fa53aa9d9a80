"""torchvision ResNets behind the encoder contract, with the CIFAR stem and a width multiplier."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import nn
from torchvision.models import resnet as tv

from siamkit.encoders.base import Encoder
from siamkit.normalization import group_norm, weight_standardize_convs

#: ``norm`` -> the layer that follows each convolution (called with the channel count).
_NORM_LAYERS: dict[str, Callable[[int], nn.Module]] = {
    "batch": nn.BatchNorm2d,
    "group_ws": group_norm,
    "none": lambda channels: nn.Identity(),
}

# name -> (residual block, blocks per stage)
_ARCHS: dict[str, tuple[type[tv.BasicBlock] | type[tv.Bottleneck], list[int]]] = {
    "resnet18": (tv.BasicBlock, [2, 2, 2, 2]),
    "resnet34": (tv.BasicBlock, [3, 4, 6, 3]),
    "resnet50": (tv.Bottleneck, [3, 4, 6, 3]),
}


def torchvision_resnet(
    name: str, width: float = 1.0, cifar_stem: bool = False, norm: str = "batch"
) -> tv.ResNet:
    """A genuine ``torchvision.models.ResNet``, optionally narrowed and with the CIFAR stem.

    With ``width=1`` and ``cifar_stem=False`` this is exactly ``torchvision.models.<name>()``;
    exported siamkit backbones load into the model this function returns for the same arguments.

    Args:
        name: ``resnet18``, ``resnet34`` or ``resnet50``.
        width: Multiplier of every stage's channels (64, 128, 256, 512 at 1.0).
        cifar_stem: One 3x3 stride-1 convolution and no max-pool, for 32x32 inputs (He et al.,
            2016, Sec. 4.2; SimSiam Appendix D).
        norm: ``batch`` (torchvision's BatchNorm) or ``group_ws``: GroupNorm in place of every
            BN and weight-standardised convolutions, the batch-independent encoder of "BYOL works
            even without batch statistics" (arXiv:2010.10241, Sec. 3). The key names stay
            torchvision's: convolutions keep ``weight``, each GroupNorm has the ``weight`` and
            ``bias`` of the BN it replaces (and no running statistics). ``none``: no
            normalisation layer at all (an identity where each BN was).
    """
    if name not in _ARCHS:
        raise ValueError(f"unknown ResNet {name!r}; choose from {sorted(_ARCHS)}")
    if norm not in _NORM_LAYERS:
        raise ValueError(f"unknown norm {norm!r}; choose from {sorted(_NORM_LAYERS)}")
    norm_layer = _NORM_LAYERS[norm]
    block, layers = _ARCHS[name]
    model = tv.ResNet(block, layers, norm_layer=norm_layer)
    if width != 1.0:
        # Rebuild the stages with scaled widths through torchvision's own layer builder, so the
        # module names (and hence state-dict keys) stay torchvision's.
        planes = [max(1, round(64 * width * 2**i)) for i in range(4)]
        model.inplanes = planes[0]
        model.conv1 = nn.Conv2d(3, planes[0], 7, 2, 3, bias=False)
        model.bn1 = norm_layer(planes[0])
        for i, (p, n) in enumerate(zip(planes, layers, strict=True)):
            setattr(
                model, f"layer{i + 1}", model._make_layer(block, p, n, stride=1 if i == 0 else 2)
            )
        model.fc = nn.Linear(planes[3] * block.expansion, 1000)
    if cifar_stem:
        model.conv1 = nn.Conv2d(3, model.conv1.out_channels, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    if width != 1.0 or cifar_stem:
        _torchvision_init(model)
    if norm == "group_ws":
        weight_standardize_convs(model)  # after every replacement above, so none is missed
    return model


def _torchvision_init(model: nn.Module) -> None:
    """Re-apply torchvision's ResNet initialisation to replaced layers."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class ResNetEncoder(Encoder):
    """A torchvision ResNet without its classifier.

    ``self.model`` is a plain ``torchvision.models.ResNet`` whose ``fc`` is an identity, so its
    state dict (minus ``fc``) loads into :func:`torchvision_resnet` of the same arguments.
    """

    def __init__(
        self,
        name: str = "resnet18",
        width: float = 1.0,
        cifar_stem: bool = False,
        norm: str = "batch",
    ):
        super().__init__()
        self.arch: dict[str, Any] = {"name": name, "width": width, "cifar_stem": cifar_stem}
        if norm != "batch":  # recorded only when not the default, so BN exports are unchanged
            self.arch["norm"] = norm
        self.model = torchvision_resnet(name, width, cifar_stem, norm)
        self.num_features = int(self.model.fc.in_features)
        self.model.fc = nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> ``(B, num_features)`` pooled features."""
        return self.model(x)

    def torchvision_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights under torchvision's key names (without the classifier)."""
        return {k: v for k, v in self.model.state_dict().items() if not k.startswith("fc.")}


#: The registered ResNets (:data:`siamkit.registry.BACKBONES`): ``width``, ``cifar_stem`` and
#: ``norm`` as :class:`ResNetEncoder` takes them.
resnet18 = partial(ResNetEncoder, "resnet18")
resnet34 = partial(ResNetEncoder, "resnet34")
resnet50 = partial(ResNetEncoder, "resnet50")
