"""A faster CPU weight gradient for the small-feature-map convolutions of a ResNet.

On CPUs with AMX (bf16), oneDNN's weight gradient of a 3x3 convolution with a small
output map and many channels (ResNet layer4 on CIFAR: 512 channels on 4x4) runs 3-4x slower than
the forward pass, although both are one GEMM of the same size. Computing it as that GEMM
explicitly (patches of the input, in channels-last order, times the output gradient) is 3-4x
faster there and gives the same gradient up to bf16 rounding; on larger maps oneDNN is faster.
``benchmarks/conv_weight_grad.py`` measures both per layer shape.

Nothing here changes what is computed: :class:`PatchGradConv2d` is an ``nn.Conv2d`` (same
parameters and state-dict keys) whose forward and input gradient are the stock ones, and
``tests/train/test_cpu_conv.py`` checks outputs and gradients against ``nn.Conv2d``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

#: Use the explicit GEMM when the output map has at most this many positions. Measured on the
#: 2-core AMX CPU (bf16, batch 256, ``benchmarks/conv_weight_grad.py``): 4x4 maps are 3.5-4.8x
#: faster as a GEMM, 8x8 maps 1.1-1.6x faster, 16x16 maps 2.3-2.5x slower.
MAX_GEMM_POSITIONS = 64


def _geometry(conv: nn.Conv2d) -> tuple[int, int, int, int, int, int]:
    """``(kh, kw, stride_h, stride_w, pad_h, pad_w)`` of a convolution with numeric padding."""
    (kh, kw), (sh, sw), padding = conv.kernel_size, conv.stride, conv.padding
    ph, pw = (int(p) for p in padding)
    return int(kh), int(kw), int(sh), int(sw), ph, pw


def _patches(x: torch.Tensor, conv: nn.Conv2d, out_hw: tuple[int, int]) -> torch.Tensor:
    """Input patches as a matrix: ``(B, C, H, W)`` -> ``(B * H_out * W_out, kh * kw * C)``."""
    kh, kw, sh, sw, ph, pw = _geometry(conv)
    ho, wo = out_hw
    xp = F.pad(x, (pw, pw, ph, ph))
    # unfold over H then W: (B, C, H_out, W_out, kh, kw); keep only the windows actually used
    windows = xp.unfold(2, kh, sh).unfold(3, kw, sw)[:, :, :ho, :wo]
    # channels last inside each row so a channels-last input is read contiguously
    return windows.permute(0, 2, 3, 4, 5, 1).reshape(-1, kh * kw * x.shape[1])


class _PatchGradConv(torch.autograd.Function):
    """conv2d whose weight gradient is ``grad_out^T @ patches`` (groups=1, dilation=1)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
        y = F.conv2d(x, weight, None, conv.stride, conv.padding)
        ctx.save_for_backward(x, weight)
        ctx.conv = conv
        return y

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:
        x, weight = ctx.saved_tensors
        conv: nn.Conv2d = ctx.conv
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad_out, x, weight, None, list(conv.stride), list(conv.padding),
                [1, 1], False, [0, 0], 1, [True, False, False],
            )[0]  # fmt: skip
        grad_w = None
        if ctx.needs_input_grad[1]:
            b, c_out, ho, wo = grad_out.shape
            g = grad_out.permute(0, 2, 3, 1).reshape(b * ho * wo, c_out)  # (B*Ho*Wo, C_out)
            gw = g.t() @ _patches(x, conv, (ho, wo))  # (C_out, kh*kw*C_in)
            kh, kw = _geometry(conv)[:2]
            grad_w = gw.view(c_out, kh, kw, x.shape[1]).permute(0, 3, 1, 2).to(weight.dtype)
        return grad_x, grad_w, None


class PatchGradConv2d(nn.Conv2d):
    """``nn.Conv2d`` with the explicit-GEMM weight gradient on CPU for small output maps.

    Falls back to ``nn.Conv2d.forward`` off the CPU, for grouped, dilated or biased
    convolutions, and for output maps larger than :data:`MAX_GEMM_POSITIONS`.
    """

    def _eligible(self, x: torch.Tensor) -> bool:
        if x.device.type != "cpu" or not torch.is_grad_enabled() or not self.weight.requires_grad:
            return False
        if self.groups != 1 or self.dilation != (1, 1) or self.bias is not None:
            return False
        if self.padding_mode != "zeros" or isinstance(self.padding, str):
            return False
        kh, kw, sh, sw, ph, pw = _geometry(self)
        ho = (x.shape[-2] + 2 * ph - kh) // sh + 1
        wo = (x.shape[-1] + 2 * pw - kw) // sw + 1
        return ho * wo <= MAX_GEMM_POSITIONS

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution, with the patch-GEMM weight gradient where it is eligible."""
        if not self._eligible(x):
            return super().forward(x)
        weight = self.weight
        if torch.is_autocast_enabled("cpu"):
            # what autocast does for conv2d: run it in the autocast dtype
            dtype = torch.get_autocast_dtype("cpu")
            x, weight = x.to(dtype), weight.to(dtype)
        with torch.autocast("cpu", enabled=False):
            out: torch.Tensor = _PatchGradConv.apply(x, weight, self)
            return out


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles (torch's own check; ``False`` where torch lacks it)."""
    return bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


def patch_conv_helps(mode: str) -> bool:
    """Whether ``train.patch_conv`` (``auto``, ``on``, ``off``) asks for the patch GEMM here.

    ``auto`` turns it on for CPUs with AMX tiles only: there oneDNN's bf16 weight gradient of
    small maps is the slow case this module works around. On an AVX-512 BF16 CPU without AMX
    oneDNN's is faster: there the patch GEMM slows the ResNet-18 CIFAR step and is slower for
    all but one layer (``benchmarks/throughput.py --levers``, ``benchmarks/conv_weight_grad.py``;
    docs/results.md#training-step-throughput).
    """
    if mode != "auto":
        return mode == "on"
    return cpu_has_amx()


def use_patch_grad_convs(module: nn.Module) -> int:
    """Turn every plain ``nn.Conv2d`` in ``module`` into a :class:`PatchGradConv2d`, in place.

    Parameters, buffers and state-dict keys are unchanged (the class is swapped, not the
    module). Returns the number of convolutions converted.
    """
    n = 0
    for m in module.modules():
        if type(m) is nn.Conv2d:
            m.__class__ = PatchGradConv2d
            n += 1
    return n
