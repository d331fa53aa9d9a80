"""The one encoder contract every backbone follows (pipeline step 2)."""

from __future__ import annotations

import itertools
import typing

import torch
from torch import nn

from siamkit.errors import ConfigError


class Encoder(nn.Module):
    """A backbone: images in, one feature vector per image out.

    A base class rather than a structural protocol so that ``method.backbone.forward_features``
    and ``num_features`` are typed wherever a backbone is held. It adds no parameters, buffers or
    submodules, so a backbone's state-dict keys are those of its own layers.

    Attributes:
        num_features: Width of ``forward_features``'s output (the representation ``h`` that
            downstream tasks use, before any projection head).
    """

    num_features: int

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` images to ``(B, num_features)`` features."""
        raise NotImplementedError(f"{type(self).__name__} does not define forward_features")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The same as :meth:`forward_features`, so that ``encoder(x)`` gives the features."""
        # Dispatches at call time: ``forward = forward_features`` would bind this base's stub,
        # not a subclass's override.
        return self.forward_features(x)


def check_encoder(module: object, sizes: tuple[int, ...] = (32,)) -> Encoder:
    """``module`` if it meets the encoder contract, else a :class:`ConfigError` naming the fix.

    The contract: an ``nn.Module`` with an int ``num_features`` and a ``forward_features`` that
    turns a ``(B, 3, S, S)`` batch into ``(B, num_features)``. It need not subclass
    :class:`Encoder`. Each side in ``sizes`` is probed with two random images, in eval mode
    and without gradient (BatchNorm statistics and the training mode are left as they were).

    Args:
        module: The candidate backbone.
        sizes: Image sides it must take (the run's view and evaluation sizes).

    Returns:
        ``module``, typed as an :class:`Encoder`.
    """
    name = type(module).__name__
    wrap = "or wrap the model with siamkit.encoders.as_encoder(model) (timm and torchvision)"
    if not isinstance(module, nn.Module):
        raise ConfigError(f"backbone must be a torch nn.Module, got {name}")
    width = getattr(module, "num_features", None)
    if not isinstance(width, int) or isinstance(width, bool) or width < 1:
        raise ConfigError(
            f"backbone {name} has no int num_features (got {width!r}): set self.num_features "
            f"to the width of its features, {wrap}"
        )
    if not callable(getattr(module, "forward_features", None)):
        raise ConfigError(
            f"backbone {name} has no forward_features(x) giving (B, num_features) features: "
            f"define it, {wrap}"
        )
    reference = next(itertools.chain(module.parameters(), module.buffers()), None)
    device = reference.device if reference is not None else torch.device("cpu")
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    generator = torch.Generator().manual_seed(0)  # the global RNG stays where the run seeded it
    try:
        for size in sorted(set(sizes)):
            x = torch.randn(2, 3, size, size, generator=generator).to(device)
            try:
                with torch.no_grad():
                    # module is any object here: the probe is what checks the contract.
                    h = module.forward_features(x)  # type: ignore[operator]
            except Exception as err:
                first = str(err).splitlines()[0] if str(err) else ""
                raise ConfigError(
                    f"backbone {name}.forward_features failed on a (2, 3, {size}, {size}) batch "
                    f"({type(err).__name__}: {first}); make it take {size}-px images (e.g. a "
                    "ViT's img_size)"
                ) from None
            shape = tuple(h.shape) if isinstance(h, torch.Tensor) else type(h).__name__
            if shape != (2, width):
                raise ConfigError(
                    f"backbone {name}.forward_features gives {shape} for a (2, 3, {size}, {size})"
                    f" batch, not (2, num_features={width}): return pooled features, {wrap}"
                )
    finally:
        for m, mode in modes:  # each submodule's own mode (a frozen BN may stay in eval)
            m.train(mode)
    return typing.cast(Encoder, module)  # checked above; need not subclass Encoder
