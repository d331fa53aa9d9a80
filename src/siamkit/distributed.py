"""The few collective operations losses need, written so one code path serves 1 and N processes.

Without an initialised process group every function is the identity (or a no-op), so a loss that
gathers runs unchanged in a single-process test. Under DDP, :func:`gather` returns the global
batch and keeps the gradient: its backward sums the gradients of every process's copy into the
slice that belongs to this process. DDP then averages parameter gradients over processes, so a
loss that is the *mean over this process's rows* gives exactly the gradient of the same loss on
the whole batch in one process (``tests/test_distributed.py`` checks this for every gathering
loss).
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """Whether a process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` over processes along dim 0, with gradient: ``(B, ...)`` -> ``(W*B, ...)``.

    Rows are ordered by rank, so this process's rows are ``rank()*B : (rank()+1)*B``.
    """
    if not is_distributed():
        return x
    from torch.distributed.nn.functional import all_gather  # differentiable all-gather

    return torch.cat(all_gather(x.contiguous()), dim=0)


@torch.no_grad()
def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """:func:`gather` for tensors that need no gradient (queue keys, targets)."""
    if not is_distributed():
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of ``x`` over processes, in place, without gradient (statistics such as Sinkhorn's)."""
    if is_distributed():
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def local_rows(n_local: int) -> slice:
    """The rows of a gathered ``(W*n_local, ...)`` tensor that belong to this process."""
    start = rank() * n_local
    return slice(start, start + n_local)
