"""Fixtures shared by the fine-tuning and distillation tests."""

from __future__ import annotations

import pytest
import torch

from siamkit.data.datasets import Splits, load_digits


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread: the CPU is shared with other jobs, and a busy core makes more spin."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def splits() -> Splits:
    """Digits at 16 px, the first 600 training images (and all 360 test images)."""
    full = load_digits(16)
    return Splits(full.train.subset(torch.arange(600)), full.test)
