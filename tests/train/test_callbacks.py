"""The collapse monitor: per-epoch mean of std(z/||z||) x sqrt(d), logged, with one warning."""

from __future__ import annotations

import types
import warnings

import pytest
import torch

from siamkit.train.callbacks import CollapseMonitor


class _Module:
    def __init__(self) -> None:
        self.logged: dict[str, float] = {}

    def log(self, key: str, value: float, **_: object) -> None:
        self.logged[key] = value


def _epoch(monitor: CollapseMonitor, embeddings: list[torch.Tensor]) -> _Module:
    trainer, module = types.SimpleNamespace(is_global_zero=True), _Module()
    for z in embeddings:
        monitor.on_train_batch_end(trainer, module, {"embedding": z}, None, 0)  # type: ignore[arg-type]
    monitor.on_train_epoch_end(trainer, module)  # type: ignore[arg-type]
    return module


def test_healthy_output_is_about_one_and_does_not_warn():
    torch.manual_seed(0)
    monitor = CollapseMonitor(threshold=0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module = _epoch(monitor, [torch.randn(256, 512) for _ in range(3)])
    assert module.logged["train/collapse_std"] == pytest.approx(1.0, abs=0.05)


def test_constant_output_warns_once_and_logs_about_zero():
    monitor = CollapseMonitor(threshold=0.3)
    constant = torch.ones(64, 32) + 1e-4 * torch.randn(64, 32)
    with pytest.warns(UserWarning, match="the output has collapsed"):
        module = _epoch(monitor, [constant])
    assert module.logged["train/collapse_std"] < 0.01
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second collapsed epoch does not warn again
        _epoch(monitor, [constant])


def test_throughput_counts_the_waits_for_data_between_steps(monkeypatch: pytest.MonkeyPatch):
    """Three 1-s steps with 3-s waits between them (the wait for the epoch's first batch,
    loader start-up, is not counted)."""
    from siamkit.train import callbacks

    clock = iter([0.0, 1.0, 4.0, 5.0, 8.0, 9.0])  # start/end of 3 steps, 3 s apart
    monkeypatch.setattr(callbacks.time, "perf_counter", lambda: next(clock))
    monitor = callbacks.Throughput()
    trainer, module = types.SimpleNamespace(world_size=2), _Module()
    batch = types.SimpleNamespace(indices=torch.arange(4))
    monitor.on_train_epoch_start(trainer, module)  # type: ignore[arg-type]
    for _ in range(3):
        monitor.on_train_batch_start(trainer)  # type: ignore[arg-type]
        monitor.on_train_batch_end(trainer, module, None, batch, 0)  # type: ignore[arg-type]
    monitor.on_train_epoch_end(trainer, module)  # type: ignore[arg-type]
    # 3 batches x 4 images x 2 processes = 24 images over 3 s of steps + 6 s of waits.
    assert module.logged["train/images_per_sec"] == pytest.approx(24 / 9)
    assert module.logged["train/data_wait"] == pytest.approx(6 / 9)
