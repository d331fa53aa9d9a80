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
