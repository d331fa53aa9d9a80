"""Online linear probe: a classifier trained during pretraining on detached backbone features.

It answers "is the representation getting more linearly separable?" every epoch without a
separate evaluation run, as SimCLR's code does with a linear head on stop-gradient features
(arXiv:2002.05709; solo-learn and lightly monitor the same way). The probe has its own SGD
optimiser and its own backward pass on ``h.detach()``, so it cannot change the encoder's
gradients (tested in tests/eval/test_online_probe.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from siamkit import distributed


class OnlineLinearProbe(nn.Module):
    """BatchNorm (no affine: per-feature standardisation, as in the offline probe) and a Linear.

    Args:
        num_features: Width of the backbone output h.
        num_classes: Number of classes.
        lr: SGD learning rate (constant; 0.1, the offline probe's default).
        momentum: SGD momentum.
    """

    def __init__(
        self, num_features: int, num_classes: int, lr: float = 0.1, momentum: float = 0.9
    ) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(num_features, affine=False)
        self.fc = nn.Linear(num_features, num_classes)
        # Not a submodule and not in the state dict: the probe restarts its momentum on resume.
        self.optimizer = torch.optim.SGD(self.parameters(), lr=lr, momentum=momentum)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` of features ``(B, num_features)``."""
        return self.fc(self.norm(h.float()))

    def update(self, h: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """One SGD step of the probe on a batch; returns its loss and top-1 (%) on the batch.

        Args:
            h: ``(B, num_features)`` backbone features of the step's first view.
            labels: ``(B,)`` int labels, -1 for unlabelled images (ignored).

        Returns:
            ``{"loss", "top1"}`` scalars, or ``{}`` when the batch has no labelled image.
        """
        h = h.detach()  # stop-gradient: nothing flows back into the encoder
        known = labels >= 0
        usable = int(known.sum()) >= 2  # BatchNorm needs two rows
        world = distributed.world_size()
        if not usable and world == 1:
            return {}
        params = list(self.parameters())
        grads: list[torch.Tensor] = [torch.zeros_like(p) for p in params]
        if usable:
            with torch.enable_grad(), torch.autocast(h.device.type, enabled=False):
                logits = self(h[known])
                loss = F.cross_entropy(logits, labels[known])
                grads = list(torch.autograd.grad(loss, params))
        # Under DDP every process sees its own rows: average the gradients so that the probes
        # of all processes stay identical (identity without a process group). A process
        # without labelled rows contributes zeros but still joins the all-reduce.
        for p, g in zip(params, grads, strict=True):
            p.grad = distributed.all_reduce_sum(g) / world
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if not usable:
            return {}
        top1 = (logits.argmax(1) == labels[known]).float().mean() * 100
        return {"loss": loss.detach(), "top1": top1.detach()}

    @torch.no_grad()
    def accuracy(self, h: torch.Tensor, labels: torch.Tensor) -> float:
        """Top-1 (%) on held-out features ``(N, num_features)``, in eval mode."""
        was_training = self.training
        self.eval()
        top1 = float((self(h).argmax(1) == labels).float().mean() * 100)
        self.train(was_training)
        return top1
