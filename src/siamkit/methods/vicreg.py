"""VICReg: Variance-Invariance-Covariance Regularization (Bardes, Ponce & LeCun, arXiv:2105.04906).

Two views go through one encoder (backbone + expander) to Z, Z'; three terms, each on the (global)
batch, keep the embeddings invariant to the views, spread out and decorrelated:

    l(Z, Z') = lambda s(Z, Z') + mu [v(Z) + v(Z')] + nu [c(Z) + c(Z')]                 (Eq. 6)
    v(Z) = 1/d sum_j max(0, gamma - sqrt(Var(z^j) + eps))                             (Eq. 1)
    c(Z) = 1/d sum_{i != j} Cov(Z)_ij^2,   s(Z, Z') = mean ||z_i - z'_i||^2             (Eq. 4-5)

The authors' code (facebookresearch/vicreg, main_vicreg.py), with which the published
coefficients were tuned, averages the two variance terms, ``[v(Z) + v(Z')] / 2``, where Eq. 6 sums
them; the average is the default (``method.variance_reduction``), the printed sum the option.

No stop-gradient, no predictor, no momentum encoder. A coefficient of 0 switches its term off
(the term ablations, Sec. 4.3); the three terms are returned for logging.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from siamkit.config import AugmentConfig, MethodConfig
from siamkit.data.augment import asymmetric_view_recipes, check_view_probabilities
from siamkit.encoders import Encoder
from siamkit.errors import ConfigError
from siamkit.heads import projection_mlp
from siamkit.losses import vicreg
from siamkit.losses.information import VarianceReduction
from siamkit.methods.base import Method, require_at_least_one


@dataclass
class VICRegConfig(MethodConfig):
    """VICReg's expander, loss coefficients and view recipe.

    Attributes:
        proj_hidden_dim: Hidden width of the expander, 8192 on ImageNet [Sec. 4.1: "3
            fully-connected layers of size 8192", BN + ReLU after the first two]; 2048 in
            solo-learn's CIFAR recipe.
        proj_dim: Output width of the expander (the embedding d), 8192 [Sec. 4.1].
        proj_layers: Linear layers of the expander, 3 [Sec. 4.1]. The output layer has no BN
            and no bias (every term is invariant to a shift common to the batch).
        sim_coeff: lambda, weight of the invariance term, 25 [Sec. 4.1]; 0 switches it off.
        std_coeff: mu, weight of the variance term, 25 [Sec. 4.1]; 0 switches it off.
        cov_coeff: nu, weight of the covariance term, 1 [Sec. 4.1]; 0 switches it off.
        gamma: Target standard deviation of each dimension, 1 [Sec. 3.1, 4.1].
        eps: Added to the variance before the square root, 1e-4 [Sec. 3.1].
        variance_reduction: How the two branches' variance terms are combined. ``"mean"``
            (default), ``mu [v(Z) + v(Z')] / 2``, is what the authors' code computes
            (facebookresearch/vicreg, main_vicreg.py: ``std_loss = torch.mean(F.relu(1 - std_x))
            / 2 + torch.mean(F.relu(1 - std_y)) / 2``); the published ``lambda = mu = 25``,
            ``nu = 1`` were tuned with it and the paper's numbers come from it. ``"sum"``,
            ``mu [v(Z) + v(Z')]``, is Eq. 6 of arXiv:2105.04906 as printed; with the same ``mu``
            it weights the variance term twice as much (it is also solo-learn's
            ``variance_loss``, which the CIFAR-10 recipe follows).
        blur_probs: Gaussian-blur probability of view 1 and 2, (1.0, 0.1) [Appendix, as Barlow
            Twins and BYOL].
        solarize_probs: Solarisation probability of view 1 and 2, (0.0, 0.2) [Appendix].
    """

    name: str = "vicreg"
    proj_hidden_dim: int = 8192
    proj_dim: int = 8192
    proj_layers: int = 3
    sim_coeff: float = 25.0
    std_coeff: float = 25.0
    cov_coeff: float = 1.0
    gamma: float = 1.0
    eps: float = 1e-4
    variance_reduction: VarianceReduction = "mean"
    blur_probs: tuple[float, float] = (1.0, 0.1)
    solarize_probs: tuple[float, float] = (0.0, 0.2)

    def __post_init__(self) -> None:
        require_at_least_one(self, "proj_hidden_dim", "proj_dim", "proj_layers")
        coeffs = (self.sim_coeff, self.std_coeff, self.cov_coeff)
        if min(coeffs) < 0 or max(coeffs) == 0:
            raise ConfigError(
                "method.sim_coeff, std_coeff and cov_coeff must be >= 0 and not all 0 "
                f"(paper: 25, 25, 1), got {coeffs}"
            )
        if self.gamma <= 0 or self.eps <= 0:
            raise ConfigError(
                f"method.gamma and method.eps must be positive (paper: 1 and 1e-4), "
                f"got {self.gamma} and {self.eps}"
            )
        if self.variance_reduction not in ("mean", "sum"):
            raise ConfigError(
                f"method.variance_reduction must be 'mean' (the authors' code) or 'sum' "
                f"(Eq. 6 as printed), got {self.variance_reduction!r}"
            )
        check_view_probabilities(self.blur_probs, self.solarize_probs)


class VICReg(Method):
    """The VICReg method: encoder f = expander(backbone(x)), three-term loss on its outputs.

    The paper's expander is the head every method calls ``projector``: it is stored as
    ``expander`` (so checkpoints keep their ``expander.*`` keys) and :attr:`projector` returns
    it, which is all :meth:`Method.encode` needs.

    Args:
        backbone: An :class:`~siamkit.encoders.Encoder`.
        cfg: Expander, coefficients and view recipe.
    """

    config_class = VICRegConfig

    def __init__(self, backbone: Encoder, cfg: VICRegConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        self.expander = projection_mlp(
            backbone.num_features,
            cfg.proj_hidden_dim,
            cfg.proj_dim,
            cfg.proj_layers,
            hidden_bn=True,
            output_bn=False,
            output_bias=False,  # every term is invariant to a shift common to the batch
        )

    def view_recipes(self, base: AugmentConfig) -> list[AugmentConfig]:
        """Two asymmetric views: blur (1.0, 0.1), solarisation (0.0, 0.2) [Appendix]."""
        return asymmetric_view_recipes(base, self.cfg.blur_probs, self.cfg.solarize_probs)

    @property
    # The contract declares projector an attribute; VICReg's is its expander under that name,
    # so a property (a second registration would duplicate the expander's state-dict keys).
    def projector(self) -> nn.Module:  # type: ignore[override]
        """The expander under the name of the method contract.

        It is g in evaluation, and in :meth:`Method.encode`: ``(B, 3, H, W)`` -> ``(B, proj_dim)``.
        """
        return self.expander

    def training_step(
        self, views: list[torch.Tensor], indices: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Loss of one batch.

        Args:
            views: Two tensors ``(B, 3, H, W)``, the same images augmented.
            indices: Unused (no per-image state).

        Returns:
            ``loss`` (scalar), ``embedding`` (``(B, proj_dim)``, detached Z) and the three
            unweighted terms ``invariance``, ``variance``, ``covariance`` (detached, for logging).
        """
        z_a, z_b = self.encode(views[0]), self.encode(views[1])  # (B, proj_dim) each
        # Both branches carry gradient: no stop-gradient anywhere [Sec. 3].
        cfg = self.cfg
        loss, t = vicreg(
            z_a,
            z_b,
            cfg.sim_coeff,
            cfg.std_coeff,
            cfg.cov_coeff,
            cfg.gamma,
            cfg.eps,
            variance_reduction=cfg.variance_reduction,
            return_terms=True,
        )
        return {
            "loss": loss,
            "embedding": z_a.detach(),
            "invariance": t.invariance.detach(),
            "variance": t.variance.detach(),
            "covariance": t.covariance.detach(),
        }
