"""SwAV's online codes and swapped prediction loss (Caron et al., arXiv:2006.09882).

Scores are the dot products of l2-normalised embeddings with l2-normalised prototypes,
``scores[b, k] = z_b . c_k`` (cosines in [-1, 1]; computed by
:class:`~siamkit.heads.prototypes.Prototypes`). Two pure functions:

- :func:`sinkhorn` turns the scores of one crop into soft codes ``Q`` that partition the (global)
  batch equally among the prototypes [Sec. 3.1, "Computing codes online"; Appendix A.1,
  Algorithm 1];
- :func:`swapped_prediction` is the loss: the codes of one crop are predicted from the scores of
  every other crop of the same image [Sec. 3.1, Eq. 1-3; Sec. 3.2, multi-crop].

Distributed: Sinkhorn's row and total sums are summed over processes, so the codes are those of
one process holding the whole batch; the loss is then a mean over this process's rows and needs
no gather (the codes carry no gradient), so DDP's gradient averaging equals one process on the
whole batch (``tests/losses/test_swapped_prediction.py`` checks both).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from siamkit import distributed


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3) -> torch.Tensor:
    """Soft codes by the Sinkhorn-Knopp algorithm on ``exp(scores / epsilon)``.

    The codes solve the entropy-regularised transport problem
    ``max_Q Tr(Q^T C^T Z) + epsilon H(Q)`` over the transportation polytope
    ``{Q >= 0 : Q 1_B = 1/K 1_K, Q^T 1_K = 1/B 1_B}`` (each prototype gets an equal share of the
    batch), whose solution is ``Q* = Diag(u) exp(C^T Z / epsilon) Diag(v)`` [Sec. 3.1].
    ``u`` and ``v`` are found by alternately rescaling rows and columns, 3 iterations in the
    paper; the result is rescaled so that each sample's code sums to 1 [Appendix A.1, Alg. 1].
    The paper keeps the continuous (soft) codes: rounding them to one-hot codes trains worse
    [Sec. 3.1].

    Under DDP the prototypes' (row) sums run over the global batch: two processes return exactly
    the rows that one process would return for the concatenated batch. ``scores`` should be
    cosines (|s| <= 1), so that ``exp(s / epsilon) <= e^20`` stays well inside float32.

    Args:
        scores: ``(B, K)`` scores of this process's ``B`` samples against ``K`` prototypes.
        epsilon: Entropic regularisation, 0.05 [Appendix A.1].
        iterations: Sinkhorn iterations, 3 [Sec. 3.1, Appendix A.1].

    Returns:
        ``(B, K)`` float32 codes without gradient; each row sums to 1 and each column sums to
        about ``B_global / K`` over the global batch (exactly, as ``iterations`` grows).
    """
    q = torch.exp(scores.detach().float() / epsilon).t()  # (K, B): the paper's layout
    num_prototypes = q.shape[0]
    batch = q.shape[1] * distributed.world_size()  # B of the global batch
    q /= distributed.all_reduce_sum(q.sum())  # total mass 1
    for _ in range(iterations):
        # Rows: every prototype receives mass 1/K of the global batch (Q 1_B = 1/K 1_K).
        q /= distributed.all_reduce_sum(q.sum(dim=1, keepdim=True))
        q /= num_prototypes
        # Columns: every sample carries mass 1/B (Q^T 1_K = 1/B 1_B); a local sum.
        q /= q.sum(dim=0, keepdim=True)
        q /= batch
    # Final rescale: each sample's code is a distribution over the prototypes [Alg. 1].
    return (q / q.sum(dim=0, keepdim=True)).t()


def swapped_prediction(
    scores: list[torch.Tensor], codes: list[torch.Tensor], temperature: float = 0.1
) -> torch.Tensor:
    """SwAV's swapped prediction loss over multi-crop views.

    The code ``q_i`` of crop ``i`` is predicted from every other crop ``v`` of the same image by
    the cross-entropy ``l(z_v, q_i) = -sum_k q_i^(k) log p_v^(k)`` with
    ``p_v = softmax(z_v^T C / tau)`` [Eq. 2]; for two crops the loss is
    ``L = l(z_t, q_s) + l(z_s, q_t)`` [Eq. 1], and with multi-crop the codes come only from the
    full-resolution crops and every other crop predicts them [Sec. 3.2].

    Normalisation: the multi-crop loss of Sec. 3.2 is written as a sum over the
    ``len(codes) * (V - 1)`` (code, predictor) pairs. This function averages them, as
    Algorithm 1 does for two crops (``loss = -0.5 * mean(q_t log p_s + q_s log p_t)``,
    Appendix A.1) and as the authors' code does for multi-crop, so that the loss scale (and the
    published learning rates) do not depend on the number of crops. Each cross-entropy is summed
    over prototypes and averaged over the batch (the ``1/N sum_n`` of Eq. 3).

    Args:
        scores: ``V >= 2`` tensors ``(B, K)``, the scores ``z_v^T C`` of every crop, the crops
            that give codes first.
        codes: ``len(codes) <= V`` tensors ``(B, K)``: ``codes[i]`` is the code of crop ``i``
            (e.g. :func:`sinkhorn` of ``scores[i]``); they should carry no gradient.
        temperature: ``tau`` of the softmax, 0.1 [Appendix A.1].

    Returns:
        Scalar float32 loss, the mean over this process's rows.
    """
    if len(scores) < 2 or not 1 <= len(codes) <= len(scores):
        raise ValueError(
            f"need at least 2 crops' scores and 1 to {len(scores)} codes, got {len(scores)} "
            f"scores and {len(codes)} codes"
        )
    log_p = [F.log_softmax(s.float() / temperature, dim=1) for s in scores]  # each (B, K)
    loss = scores[0].new_zeros((), dtype=torch.float32)
    for i, q in enumerate(codes):
        # Every crop but i predicts q_i: l(z_v, q_i) averaged over the V - 1 predictors.
        predictors = [v for v in range(len(scores)) if v != i]
        cross_entropies = [-(q.float() * log_p[v]).sum(dim=1).mean() for v in predictors]
        loss = loss + sum(cross_entropies) / len(predictors)
    return loss / len(codes)
