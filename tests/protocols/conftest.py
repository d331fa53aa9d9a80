"""Fixtures shared by the fine-tuning and distillation tests."""

from __future__ import annotations

import pytest
import torch

from siamkit.data.datasets import Splits, load_digits


@pytest.fixture(scope="module")
def splits() -> Splits:
    """Digits at 16 px, the first 600 training images (and all 360 test images)."""
    full = load_digits(16)
    return Splits(full.train.subset(torch.arange(600)), full.test)
