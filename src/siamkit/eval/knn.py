"""Weighted k-nearest-neighbour classification on frozen features.

The monitor of InstDisc (Wu et al., 2018) that SimSiam also reports: cosine similarities to a
labelled feature bank, the k nearest vote with weight ``exp(sim / T)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def knn_predict(
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    queries: torch.Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk: int = 1024,
) -> torch.Tensor:
    """Class scores of ``queries`` by weighted kNN over ``bank``.

    Args:
        bank: ``(N, D)`` features of labelled images.
        bank_labels: ``(N,)`` int labels.
        queries: ``(Q, D)`` features to classify.
        num_classes: Number of classes C.
        k: Neighbours (capped at N).
        temperature: T in ``exp(sim / T)``.
        chunk: Queries per block (bounds memory at ``chunk x N``).

    Returns:
        ``(Q, C)`` vote scores; ``argmax`` is the prediction.
    """
    bank = F.normalize(bank.float(), dim=1)
    k = min(k, bank.shape[0])
    out = []
    for q in F.normalize(queries.float(), dim=1).split(chunk):
        sim, idx = (q @ bank.T).topk(k, dim=1)  # (q, k)
        weights = (sim / temperature).exp()
        votes = torch.zeros(q.shape[0], num_classes, device=q.device)
        out.append(votes.scatter_add_(1, bank_labels[idx], weights))
    return torch.cat(out)


def knn_accuracy(
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    queries: torch.Tensor,
    query_labels: torch.Tensor,
    k: int = 200,
    temperature: float = 0.1,
) -> float:
    """Top-1 accuracy (in %) of :func:`knn_predict`."""
    num_classes = int(max(bank_labels.max(), query_labels.max())) + 1
    scores = knn_predict(bank, bank_labels, queries, num_classes, k, temperature)
    return float((scores.argmax(dim=1) == query_labels).float().mean() * 100)
