"""Run a function in N CPU processes joined by a gloo process group, and collect what each returns.

Used by the tests that check a gathering loss under DDP against one process on the whole batch:

    results = run_ddp(my_module_level_fn, 2, arg1, arg2)   # [rank 0's result, rank 1's result]

``fn(*args)`` runs after ``init_process_group``; it must be a module-level function (it is
pickled) and return tensors or plain Python objects.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world: int, port: int, out: str, fn: Callable[..., Any], args: Any) -> None:
    # A spawned process starts its own children by spawn too; DataLoader workers of a real run
    # (Lightning's launcher starts fresh processes) fork, in a fraction of a second.
    multiprocessing.set_start_method("fork", force=True)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.save(fn(*args), Path(out) / f"{rank}.pt")
    finally:
        dist.destroy_process_group()


def run_ddp(fn: Callable[..., Any], world: int = 2, *args: Any) -> list[Any]:
    """``[fn(*args) on rank r for r in range(world)]``, run under a gloo process group."""
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(_worker, args=(world, _free_port(), out, fn, args), nprocs=world, join=True)
        return [torch.load(Path(out) / f"{r}.pt", weights_only=False) for r in range(world)]
