"""Weighted k-nearest-neighbour classification on frozen features.

The monitor of InstDisc (Wu et al., 2018) that SimSiam also reports: cosine similarities to a
labelled feature bank, the k nearest vote with weight ``exp(sim / T)``. :func:`knn_top1` streams
the bank batch by batch and keeps a running top-k, so memory holds the queries' features and
``k`` neighbours each, whatever the size of the bank (ImageNet's 1.28 M images included).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F

from siamkit.config import AugmentConfig
from siamkit.data.loader import ImageData
from siamkit.encoders import Encoder
from siamkit.eval.features import extract_features, iter_features


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
        out.append(_votes(sim, bank_labels[idx], num_classes, temperature))
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


def _votes(
    sim: torch.Tensor, labels: torch.Tensor, num_classes: int, temperature: float
) -> torch.Tensor:
    """``(Q, C)`` scores from the ``(Q, k)`` similarities and labels of the neighbours."""
    votes = torch.zeros(sim.shape[0], num_classes, device=sim.device)
    return votes.scatter_add_(1, labels, (sim / temperature).exp())


def knn_predict_streaming(
    queries: torch.Tensor,
    bank: Iterable[tuple[torch.Tensor, torch.Tensor]],
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
) -> torch.Tensor:
    """:func:`knn_predict` over a bank that arrives in batches.

    Args:
        queries: ``(Q, D)`` features to classify.
        bank: ``(features (B, D), labels (B,))`` batches of the labelled bank.
        num_classes: Number of classes C.
        k: Neighbours (capped at the bank size).
        temperature: T in ``exp(sim / T)``.

    Returns:
        ``(Q, C)`` vote scores, the same as :func:`knn_predict` on the whole bank (up to the
        order of equal similarities).
    """
    q = F.normalize(queries.float(), dim=1)
    best = torch.empty(q.shape[0], 0)
    best_labels = torch.empty(q.shape[0], 0, dtype=torch.int64)
    for feats, labels in bank:
        sim = q @ F.normalize(feats.float(), dim=1).T  # (Q, B)
        sim = torch.cat([best, sim], dim=1)
        lab = torch.cat([best_labels, labels[None, :].expand(q.shape[0], -1)], dim=1)
        best, pick = sim.topk(min(k, sim.shape[1]), dim=1)  # running (Q, k)
        best_labels = lab.gather(1, pick)
    return _votes(best, best_labels, num_classes, temperature)


def knn_top1(
    backbone: Encoder,
    bank: ImageData,
    queries: ImageData,
    augment: AugmentConfig,
    k: int = 200,
    temperature: float = 0.1,
    **extract: Any,
) -> float:
    """Weighted kNN top-1 (%) of ``backbone``'s centre-view features, bank streamed.

    Args:
        backbone: The encoder.
        bank: Labelled training images (any storage).
        queries: Labelled held-out images.
        augment: The evaluation size and normalisation.
        k: Neighbours.
        temperature: Vote temperature.
        **extract: Options of :func:`~siamkit.eval.features.iter_features` (device, bf16,
            channels_last, head, strict).
    """
    assert bank.labels is not None and queries.labels is not None
    q = extract_features(backbone, queries, augment, **extract)
    num_classes = int(max(bank.labels.max(), queries.labels.max())) + 1
    stream = ((b.values, b.labels) for b in iter_features(backbone, bank, augment, **extract))
    scores = knn_predict_streaming(q, stream, num_classes, k, temperature)
    return float((scores.argmax(dim=1) == queries.labels).float().mean() * 100)
