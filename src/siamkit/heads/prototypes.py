"""SwAV's prototypes: K trainable vectors on the unit sphere (Caron et al., arXiv:2006.09882)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Prototypes(nn.Module):
    """A bias-free linear layer whose K rows are the prototypes ``c_k``; ``z -> z^T C``.

    "We then compute a code ... by mapping this feature to a set of K trainable prototype
    vectors {c_1, ..., c_K}", learned by back-propagation with the rest of the network, on the
    unit sphere like the embeddings [Sec. 3.1]. The authors' code implements them as a linear
    layer without bias and l2-normalises its weight before every forward, which the method does
    by calling :meth:`normalize_` at the start of each training step. For unit embeddings the
    scores are then cosines in [-1, 1], which Sinkhorn's ``exp(scores / 0.05)`` needs.

    K is 3000 on ImageNet [Appendix A.1]; the paper's ablation on the number of prototypes finds
    that it matters little as long as there are enough of them [Appendix].

    Args:
        dim: Width of the embeddings (128 in the paper).
        num_prototypes: K.
    """

    def __init__(self, dim: int, num_prototypes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_prototypes, dim))  # (K, D), rows c_k
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Linear's initialisation
        self.normalize_()

    @torch.no_grad()
    def normalize_(self) -> None:
        """Project every prototype back onto the unit sphere, ``c_k <- c_k / ||c_k||``."""
        self.weight.copy_(F.normalize(self.weight, dim=1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Scores ``z C``: ``(B, D)`` -> ``(B, K)``."""
        return F.linear(z, self.weight)
