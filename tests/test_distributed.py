"""siamkit.distributed: identity in one process; gather with the right gradient in two."""

from __future__ import annotations

import torch

from siamkit import distributed
from tests.ddp import run_ddp


def test_single_process_functions_are_identities():
    x = torch.randn(4, 3, requires_grad=True)
    assert distributed.gather(x) is x
    assert distributed.gather_no_grad(x) is x
    assert distributed.world_size() == 1 and distributed.rank() == 0
    assert distributed.local_rows(4) == slice(0, 4)


def _gather_and_backward(full: torch.Tensor, weights: torch.Tensor) -> dict[str, torch.Tensor]:
    r, w = distributed.rank(), distributed.world_size()
    n = full.shape[0] // w
    local = full[r * n : (r + 1) * n].clone().requires_grad_(True)
    g = distributed.gather(local)
    # a loss that is the mean over this process's rows of something that involves every row
    rows = distributed.local_rows(n)
    loss = ((g[rows] @ g.t()) * weights[rows]).sum(1).mean()
    loss.backward()
    return {"gathered": g.detach(), "loss": loss.detach(), "grad": local.grad}


def test_gather_gives_global_batch_and_ddp_averaged_gradient_equals_one_process():
    torch.manual_seed(0)
    full = torch.randn(8, 3)
    weights = torch.randn(8, 8)
    out = run_ddp(_gather_and_backward, 2, full, weights)
    one = full.clone().requires_grad_(True)
    loss = ((one @ one.t()) * weights).sum(1).mean()
    loss.backward()
    for r, res in enumerate(out):
        torch.testing.assert_close(res["gathered"], full)
        # DDP averages gradients over processes: (1/W) * sum over ranks of each rank's gradient;
        # the gather's backward already summed the other rank's contribution into this slice.
        torch.testing.assert_close(res["grad"] / 2, one.grad[r * 4 : (r + 1) * 4])
    torch.testing.assert_close((out[0]["loss"] + out[1]["loss"]) / 2, loss.detach())
