"""SwAV's prototypes (arXiv:2006.09882, Sec. 3.1): K unit vectors, scores ``z C^T``, no bias,
projected back onto the sphere by ``normalize_``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from siamkit.heads import Prototypes


def test_prototypes_are_k_unit_rows_without_bias():
    torch.manual_seed(0)
    c = Prototypes(dim=16, num_prototypes=10)
    assert tuple(c.weight.shape) == (10, 16)
    assert [n for n, _ in c.named_parameters()] == ["weight"]
    torch.testing.assert_close(c.weight.norm(dim=1), torch.ones(10))


def test_scores_are_dot_products_with_each_prototype():
    torch.manual_seed(0)
    c = Prototypes(dim=4, num_prototypes=3)
    z = torch.randn(5, 4)
    scores = c(z)
    assert scores.shape == (5, 3)
    expected = torch.stack([(z * c.weight[k]).sum(dim=1) for k in range(3)], dim=1)
    torch.testing.assert_close(scores, expected)
    # For unit embeddings the scores are cosines: exactly 1 for an embedding equal to c_k.
    torch.testing.assert_close(c(c.weight.detach()).diagonal(), torch.ones(3))


def test_normalize_projects_back_onto_the_sphere_in_place_without_gradient():
    torch.manual_seed(0)
    c = Prototypes(dim=8, num_prototypes=6)
    with torch.no_grad():  # as after an optimiser step
        c.weight.mul_(torch.rand(6, 1) * 3 + 0.1)
    direction = F.normalize(c.weight.detach(), dim=1)
    weight = c.weight
    c.normalize_()
    assert c.weight is weight  # the same parameter, so the optimiser keeps tracking it
    torch.testing.assert_close(c.weight.detach(), direction)
    assert c.weight.grad is None and c.weight.requires_grad
