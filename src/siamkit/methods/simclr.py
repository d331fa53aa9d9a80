"""SimCLR (Chen et al., arXiv:2002.05709) and SimCLRv2's deeper head (arXiv:2006.10029).

"A Simple Framework for Contrastive Learning of Visual Representations".

Two views of each image go through one encoder f (the backbone, h = f(x)) and a projection head
g (z = g(h)); NT-Xent makes the two views of an image each other's positive and the other 2N-2
views of the batch its negatives [Sec. 2.1, Eq. 1, Alg. 1]. No stop-gradient: both views get
gradient. After pretraining g is thrown away and h is the representation [Sec. 2.1, 4.2]; only
``backbone`` is exported. SimCLRv2 fine-tunes from the first layer of a 3-layer g instead
[arXiv:2006.10029, Sec. 2]: :meth:`SimCLR.head_first_layer`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from siamkit.config import MethodConfig
from siamkit.encoders import Encoder
from siamkit.errors import ConfigError
from siamkit.heads import projection_mlp
from siamkit.losses import nt_xent
from siamkit.methods.base import Method, require_at_least_one


@dataclass
class SimCLRConfig(MethodConfig):
    """SimCLR's projection head and loss.

    Attributes:
        proj_layers: Depth of g: 2 for SimCLR, ``g(h) = W2 relu(W1 h)`` [arXiv:2002.05709,
            Sec. 2.1]; 3 for SimCLRv2 [arXiv:2006.10029, Sec. 2]. The paper's head ablation
            [arXiv:2002.05709, Sec. 4.2, Fig. 8] also trains with a linear head (1: ``g(h) = W h``,
            followed by BN under ``head_bn``) and with none (0: NT-Xent on h itself).
        proj_hidden_dim: Hidden width of g, 2048: the width of ResNet-50's h, which the
            released code uses for every hidden layer of the head.
        proj_dim: Output width of g, 128 [arXiv:2002.05709, Sec. 2.3, "Default setting"].
        temperature: NT-Xent's tau. 0.1 for ImageNet at batch 4096 (the paper's default
            hyperparameters, as given with the released code; Sec. 5.1 and Table 5 show small
            tau suits large batches); 0.5 for CIFAR-10 [Appendix B.9], set by the CIFAR recipes.
        head_bn: BatchNorm after every fc of g, the output one included, as in the released
            code (its head layers are fc + BN); the paper's Eq. 2 does not mention BN.
    """

    name: str = "simclr"
    proj_layers: int = 2
    proj_hidden_dim: int = 2048
    proj_dim: int = 128
    temperature: float = 0.1
    head_bn: bool = True

    def __post_init__(self) -> None:
        require_at_least_one(self, "proj_dim", "proj_hidden_dim")
        if self.proj_layers < 0:
            raise ConfigError(
                f"method.proj_layers must be 0 (no head), 1 (linear) or more, got "
                f"{self.proj_layers}"
            )
        if self.temperature <= 0:
            raise ConfigError(f"method.temperature must be positive, got {self.temperature}")


class SimCLR(Method):
    """The SimCLR method: backbone f, projection head g, NT-Xent over the (global) batch.

    Args:
        backbone: An :class:`~siamkit.encoders.Encoder`.
        cfg: Head and loss settings.
    """

    config_class = SimCLRConfig

    def __init__(self, backbone: Encoder, cfg: SimCLRConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        # No head (proj_layers 0): the loss compares h itself, z = h [Fig. 8, "None"].
        self.projector: nn.Module = (
            nn.Identity()
            if cfg.proj_layers == 0
            else projection_mlp(
                backbone.num_features,
                cfg.proj_hidden_dim,
                cfg.proj_dim,
                cfg.proj_layers,
                hidden_bn=cfg.head_bn,
                output_bn=cfg.head_bn,
            )
        )

    def training_step(
        self, views: list[torch.Tensor], indices: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Loss of one batch.

        Args:
            views: Two tensors ``(B, 3, H, W)``, the same images augmented twice.
            indices: Unused (no per-image state).

        Returns:
            ``loss`` (scalar) and ``embedding`` (``(B, proj_dim)``, detached z of the first view).
        """
        # h = f(x), z = g(h) for both views; both branches get gradient (no stop-grad).
        z_a, z_b = (self.encode(v) for v in views)
        loss = nt_xent(z_a, z_b, self.cfg.temperature)  # Eq. 1, averaged over all 2N views
        return {"loss": loss, "embedding": z_a.detach()}

    def head_first_layer(self) -> nn.Sequential:
        """The backbone followed by g's first layer (fc, BN, ReLU): SimCLRv2's fine-tuning start.

        "we fine-tune from a middle layer of the projection head (the 1st layer) instead of the
        input layer" [arXiv:2006.10029, Sec. 2]. The returned module shares its weights with
        this method (no copy): ``(B, 3, H, W)`` -> ``(B, proj_hidden_dim)``. With a 1-layer
        head there is no hidden layer and this raises.
        """
        if self.cfg.proj_layers < 2:
            raise ValueError("a 1-layer projection head has no hidden layer to fine-tune from")
        layers = list(self.projector.children())
        end = next(i for i, m in enumerate(layers) if isinstance(m, nn.ReLU)) + 1
        return nn.Sequential(self.backbone, *layers[:end])
