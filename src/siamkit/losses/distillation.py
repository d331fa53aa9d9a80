"""Knowledge distillation to a teacher's softened predictions (SimCLRv2's third step).

SimCLRv2 trains a student on unlabelled images to match a fine-tuned teacher [arXiv:2006.10029,
Sec. 2, Eq. 2]::

    L_distill = - sum_i sum_y P_T(y | x_i; tau) log P_S(y | x_i; tau),
    P(y | x; tau) = exp(f(x)[y] / tau) / sum_y' exp(f(x)[y'] / tau)

with the teacher fixed. Here the sum over images is a mean over the batch (the learning rate
absorbs the constant). Unlike Hinton et al. (arXiv:1503.02531, Sec. 2) the loss is not multiplied
by ``tau ** 2``: Eq. 2 has no such factor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_target_cross_entropy(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Cross-entropy of the student's tempered softmax to the teacher's, averaged over the batch.

    ``mean_i [ - sum_y softmax(t_i / tau)[y] log softmax(s_i / tau)[y] ]`` [arXiv:2006.10029,
    Eq. 2]. It equals ``KL(P_T || P_S) + H(P_T)``, so for fixed teacher logits it is smallest,
    at ``H(P_T)``, when the student's logits equal the teacher's up to a constant per row.
    Computed in float32 whatever the input precision (bf16 autocast logits are upcast).

    The teacher logits are targets: call it with logits computed under ``torch.no_grad()`` (the
    teacher is fixed); any gradient they carry would flow into the teacher.

    Args:
        student_logits: ``(B, C)`` student logits.
        teacher_logits: ``(B, C)`` teacher logits.
        temperature: tau > 0, applied to both.

    Returns:
        Scalar loss.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student and teacher logits differ in shape: {tuple(student_logits.shape)} vs "
            f"{tuple(teacher_logits.shape)}"
        )
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    p_teacher = F.softmax(teacher_logits.float() / temperature, dim=1)  # (B, C)
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=1)  # (B, C)
    return -(p_teacher * log_p_student).sum(dim=1).mean()


__all__ = ["soft_target_cross_entropy"]
