"""Helpers shared by the method tests: small methods, random views, gradient comparisons.

Plain functions rather than fixtures, imported as ``from tests.methods.conftest import ...``:
the tests call them with arguments (seeds, options), which fixtures do not take.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeVar

import torch
from torch import nn

from siamkit.config import AugmentConfig, BackboneConfig
from siamkit.data.augment import BatchViews
from siamkit.encoders import Encoder, create_backbone
from siamkit.methods import Method

#: Images per batch and side of the random views.
BATCH, SIZE = 8, 16

M = TypeVar("M", bound=nn.Module)


def small_backbone(norm: str = "batch") -> Encoder:
    """The quarter-width small CNN (32 features) every method test runs on."""
    return create_backbone(BackboneConfig(name="small_cnn", width=0.25, norm=norm))


def build(
    method: type[M],
    config: type,
    small: dict[str, Any],
    seed: int = 0,
    backbone_norm: str = "batch",
    **options: Any,
) -> M:
    """``method(small_backbone(), config(**small, **options))`` built after seeding torch.

    Two builds with the same ``seed`` and options have identical weights (a model and its
    reference). ``options`` override the test file's ``small`` widths.
    """
    torch.manual_seed(seed)
    return method(small_backbone(backbone_norm), config(**{**small, **options}))


def random_views(
    n: int = 2, seed: int = 100, batch: int = BATCH, size: int = SIZE
) -> list[torch.Tensor]:
    """``n`` standard-normal tensors ``(batch, 3, size, size)`` from their own generator."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 3, size, size, generator=g) for _ in range(n)]


def augmented_views(
    method: Method, seed: int = 100, size: int = 32, batch: int = BATCH
) -> list[torch.Tensor]:
    """Views of ``batch`` random uint8 images, one per recipe of ``method.view_recipes``.

    Made by the batched augmentation from the recipe ``AugmentConfig(size=size)``, as in
    training (multi-crop and asymmetric views included).
    """
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=g)
    return [
        BatchViews(r)(images, generator=g) for r in method.view_recipes(AugmentConfig(size=size))
    ]


def grads(module: nn.Module) -> dict[str, torch.Tensor | None]:
    """A copy of every parameter's ``.grad`` (``None`` where it got none), by name."""
    return {n: None if q.grad is None else q.grad.clone() for n, q in module.named_parameters()}


def assert_same_grads(
    mine: dict[str, torch.Tensor | None],
    theirs: dict[str, torch.Tensor | None],
    rtol: float = 1e-4,
    atol: float = 1e-6,
) -> None:
    """The gradients of :func:`grads` agree; the reference has at least one non-zero entry.

    A parameter the reference leaves without gradient must get none (or an all-zero one).
    """
    assert mine.keys() == theirs.keys()
    n_nonzero = 0
    for name, g in theirs.items():
        if g is None:
            assert mine[name] is None or not mine[name].any(), name
            continue
        assert mine[name] is not None, f"{name} got no gradient"
        torch.testing.assert_close(mine[name], g, rtol=rtol, atol=atol, msg=name)
        n_nonzero += int(g.abs().sum() > 0)
    assert n_nonzero > 0


def assert_every_grad_close(
    mine: dict[str, torch.Tensor | None],
    theirs: dict[str, torch.Tensor | None],
    rtol: float = 1e-4,
    rel_atol: float = 1e-5,
) -> None:
    """Every parameter got a gradient in both, and they agree.

    float32 noise on entries near 0: the absolute tolerance is ``rel_atol`` times the largest
    entry of the reference's gradient of that parameter.
    """
    assert mine.keys() == theirs.keys()
    for name, g in theirs.items():
        m = mine[name]
        assert g is not None and m is not None, f"{name} got no gradient"
        atol = rel_atol * float(g.abs().max())
        torch.testing.assert_close(m, g, rtol=rtol, atol=atol, msg=name)


def param_pairs(
    online: list[nn.Module], target: list[nn.Module]
) -> Iterator[tuple[nn.Parameter, nn.Parameter]]:
    """(online, target) parameter pairs of matching modules, in order (for EMA checks)."""
    for o, t in zip(online, target, strict=True):
        yield from zip(o.parameters(), t.parameters(), strict=True)
