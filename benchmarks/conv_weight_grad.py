"""Weight gradient of ResNet-18 (CIFAR) convolutions: oneDNN vs the explicit GEMM of cpu_conv.

For each layer shape, times in one process, interleaved and repeated, the stock
``aten.convolution_backward`` weight gradient and ``siamkit.train.cpu_conv``'s patch GEMM (bf16,
channels-last, batch 256) and prints the best time of each and their ratio. This is the measurement
behind ``cpu_conv.MAX_GEMM_POSITIONS``.

    .venv/bin/python benchmarks/conv_weight_grad.py [--batch-size 256] [--repeats 5]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

from siamkit.train.cpu_conv import _patches

# (C_in, C_out, input side, stride, kernel): every distinct conv of ResNet-18, CIFAR stem
SHAPES = [
    (64, 64, 32, 1, 3),
    (64, 128, 32, 2, 3),
    (128, 128, 16, 1, 3),
    (128, 256, 16, 2, 3),
    (256, 256, 8, 1, 3),
    (256, 512, 8, 2, 3),
    (512, 512, 4, 1, 3),
    (256, 512, 8, 2, 1),
]


def measure(
    cin: int, cout: int, side: int, stride: int, k: int, batch: int, repeats: int
) -> tuple[float, float, int]:
    """Best seconds of (oneDNN, GEMM) weight gradient for one shape, and output positions."""
    conv = nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)
    x = torch.randn(batch, cin, side, side, dtype=torch.bfloat16)
    x = x.contiguous(memory_format=torch.channels_last)
    w = conv.weight.detach().to(torch.bfloat16)
    y = F.conv2d(x, w, None, stride, k // 2)
    g = torch.randn_like(y)
    ho, wo = y.shape[-2:]

    def onednn() -> None:
        torch.ops.aten.convolution_backward(
            g, x, w, None, [stride] * 2, [k // 2] * 2, [1, 1], False, [0, 0], 1,
            [False, True, False],
        )  # fmt: skip

    def gemm() -> None:
        g.permute(0, 2, 3, 1).reshape(-1, cout).t() @ _patches(x, conv, (ho, wo))

    best = [float("inf"), float("inf")]
    for _ in range(repeats):  # interleaved, so machine noise hits both alike
        for i, fn in enumerate((onednn, gemm)):
            t = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t)
    return best[0], best[1], ho * wo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(
        f"{'shape (Cin, Cout, side, stride, k)':36s} {'out':>5s} {'oneDNN ms':>10s} {'GEMM ms':>8s}"
    )
    for shape in SHAPES:
        a, b, positions = measure(*shape, args.batch_size, args.repeats)
        print(f"{shape!s:36s} {positions:5d} {a * 1e3:10.1f} {b * 1e3:8.1f}  x{a / b:.2f}")


if __name__ == "__main__":
    main()
