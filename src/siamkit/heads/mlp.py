"""MLP heads: the projection MLP (part of the encoder f) and the prediction MLP h."""

from __future__ import annotations

import itertools
from typing import Literal

from torch import nn

from siamkit.normalization import WSLinear, group_norm


def mlp(
    dims: list[int],
    hidden_bn: bool = True,
    output_bn: bool = False,
    output_bn_affine: bool = True,
    norm: Literal["batch", "group_ws"] = "batch",
    output_bias: bool = True,
) -> nn.Sequential:
    """Linear layers ``dims[0] -> dims[1] -> ... -> dims[-1]`` with BN and ReLU between them.

    Every hidden layer is Linear -> (BN) -> ReLU; the output layer is Linear -> (BN), no ReLU.
    A Linear followed by BN has no bias, since BN's shift makes it redundant.

    Args:
        dims: Input width, hidden widths, output width (at least two entries).
        hidden_bn: BatchNorm after each hidden Linear.
        output_bn: BatchNorm after the output Linear.
        output_bn_affine: Learnable scale/shift of that output BN.
        norm: What the ``*_bn`` flags insert: ``batch`` (BatchNorm1d) or ``group_ws``
            (GroupNorm, and Weight Standardisation of the Linear before it): the batch-independent
            pair that "BYOL works even without batch statistics" puts in place of every BN
            (arXiv:2010.10241, Sec. 3); Linear layers without a norm after them stay plain.
        output_bias: Bias of the output Linear when it has no norm. An MLP whose output feeds a
            Linear -> BatchNorm (BYOL's projector into its predictor) needs none: BN removes a
            shift common to the batch, so that bias would get no gradient.
    """
    if len(dims) < 2:
        raise ValueError(f"an MLP needs an input and an output width, got {dims}")
    layers: list[nn.Module] = []
    n_layers = len(dims) - 1
    for i, (d_in, d_out) in enumerate(itertools.pairwise(dims)):
        last = i == n_layers - 1
        bn = output_bn if last else hidden_bn
        affine = output_bn_affine if last else True
        if bn and norm == "group_ws":
            layers += [WSLinear(d_in, d_out, bias=False), group_norm(d_out, affine=affine)]
        else:
            layers.append(nn.Linear(d_in, d_out, bias=not bn and (output_bias or not last)))
            if bn:
                layers.append(nn.BatchNorm1d(d_out, affine=affine))
        if not last:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def projection_mlp(
    in_dim: int,
    hidden_dim: int,
    out_dim: int,
    num_layers: int,
    hidden_bn: bool,
    output_bn: bool,
    output_bn_affine: bool = True,
    *,
    norm: Literal["batch", "group_ws"] = "batch",
    output_bias: bool = True,
) -> nn.Sequential:
    """The projection MLP g of every method: ``num_layers`` fc layers built by :func:`mlp`.

    Widths ``in_dim -> hidden_dim -> ... -> hidden_dim -> out_dim``; the modules, their names and
    their initialisation are those of ``mlp`` on these widths.

    SimSiam's: "The projection MLP (in f) has BN applied to each fully-connected (fc) layer,
    including its output fc. Its output fc has no ReLU. The hidden fc is 2048-d. This MLP has 3
    layers." [SimSiam, arXiv:2011.10566, Sec. 4.1]; 2 layers on CIFAR [Appendix D]. The output BN
    is a standard (affine) BN as the paper's text says. The authors' released code drops its
    affine; without a learnable scale the output is standardised per channel and cannot become
    constant, so the collapse of std(z / ||z||) that the paper shows without stop-gradient
    (Fig. 2) could not appear; with the affine it does (docs/results.md).
    ``output_bn_affine=False`` gives the released code's head.

    The other methods' heads are other flags: Barlow Twins, VICReg and W-MSE have no norm and no
    bias on the output (``output_bn=False, output_bias=False``), MoCo v3 an affine-free output BN
    (``output_bn_affine=False``), BYOL's ``group_ws`` heads ``norm="group_ws"``.

    Args:
        in_dim: Input width (the backbone's ``num_features``).
        hidden_dim: Width of every hidden layer.
        out_dim: Output width.
        num_layers: Linear layers, at least 1 (1: a single ``in_dim -> out_dim`` fc).
        hidden_bn: Norm after each hidden Linear.
        output_bn: Norm after the output Linear.
        output_bn_affine: Learnable scale/shift of that output norm.
        norm: ``batch`` or ``group_ws``, as in :func:`mlp`.
        output_bias: Bias of the output Linear when it has no norm, as in :func:`mlp`.

    Raises:
        ValueError: If ``num_layers`` is below 1 (the configs reject it first).
    """
    if num_layers < 1:
        raise ValueError(f"a projection MLP needs at least one layer, got num_layers={num_layers}")
    dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
    return mlp(
        dims,
        hidden_bn=hidden_bn,
        output_bn=output_bn,
        output_bn_affine=output_bn_affine,
        norm=norm,
        output_bias=output_bias,
    )


def prediction_mlp(dim: int, hidden_dim: int, hidden_bn: bool, output_bn: bool) -> nn.Sequential:
    """SimSiam's prediction MLP h: a 2-layer bottleneck ``dim -> hidden_dim -> dim``.

    "The prediction MLP (h) has BN applied to its hidden fc layers. Its output fc does not have BN
    or ReLU. This MLP has 2 layers. The dimension of h's input and output is 2048, and h's hidden
    layer's dimension is 512, making h a bottleneck structure" [SimSiam, Sec. 4.1].
    """
    return mlp([dim, hidden_dim, dim], hidden_bn=hidden_bn, output_bn=output_bn)
