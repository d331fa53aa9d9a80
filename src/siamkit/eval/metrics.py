"""Representation metrics."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def output_std(z: torch.Tensor) -> float:
    """Collapse metric: per-channel std of the l2-normalised output, averaged, times sqrt(d).

    SimSiam (arXiv:2011.10566, Sec. 4.1, Fig. 2) tracks ``std(z / ||z||)``; for outputs spread
    like a d-dimensional isotropic Gaussian it is ``1 / sqrt(d)``, and 0 when every output is
    the same vector. Multiplying by ``sqrt(d)`` makes it about 1 when healthy, 0 when collapsed.

    Args:
        z: ``(B, d)`` outputs, B >= 2.
    """
    z = F.normalize(z.float(), dim=1)
    return float(z.std(dim=0).mean() * math.sqrt(z.shape[1]))
