"""Helpers shared by the loss tests: random inputs, value-and-gradient comparisons.

Plain functions rather than fixtures, imported as ``from tests.losses.conftest import ...``
(also by ``tests/heads``, whose whitening is part of W-MSE's loss).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def random_pair(
    shape: tuple[int, int], seed: int, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two standard-normal leaves ``(p, z)`` of ``shape`` that require gradient."""
    g = torch.Generator().manual_seed(seed)
    p = torch.randn(*shape, generator=g, dtype=dtype).requires_grad_()
    z = torch.randn(*shape, generator=g, dtype=dtype).requires_grad_()
    return p, z


def shifted_randn(*shape: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A leaf ``N(0.5, 2^2)`` tensor that requires gradient: not centred, not unit scale."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=dtype) * 2 + 0.5).requires_grad_()


def value_and_grads(
    fn: Callable[..., torch.Tensor], *inputs: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """``(fn(*inputs), d fn / d inputs[0], ...)``, detached, in float64 for comparison.

    The value is a 0-d tensor (a loss of shape ``(1,)`` is reshaped); an input the loss does not
    use (a crop that only gives codes) gets a zero gradient.
    """
    loss = fn(*inputs)
    grads = torch.autograd.grad(loss, list(inputs), allow_unused=True)
    filled = [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs, strict=True)]
    return (loss.detach().double().reshape(()), *(g.double() for g in filled))


def assert_all_close(
    mine: Sequence[torch.Tensor],
    theirs: Sequence[torch.Tensor],
    rtol: float = 1e-4,
    atol: float = 1e-6,
) -> None:
    """Element-wise :func:`torch.testing.assert_close` of two :func:`value_and_grads` results."""
    assert len(mine) == len(theirs)
    for a, b in zip(mine, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)
