"""Does channels-last pay off for a backbone? NCHW vs NHWC training steps, same run, as a ratio.

``train.channels_last: auto`` turns channels-last on for convolutional backbones only
(:func:`siamkit.runtime.use_channels_last`). This measures the backbone's forward and backward at
the precision ``train.precision: auto`` picks here, with inputs and weights in either memory
format, for a ResNet-18 (CIFAR stem, as configs/simsiam/cifar10.yaml) and the ViT-S/4 of
configs/moco_v3/cifar10_vit.yaml, on 32-px images.

Shared 2-core machines are noisy (other jobs take cores for seconds at a time), so the two
formats alternate step by step and each reports its fastest step: a burst of noise then hurts
neither side more than the other.

    .venv/bin/python benchmarks/channels_last.py                 # batch 64, 10 steps each
    .venv/bin/python benchmarks/channels_last.py --depth 12      # the recipe's full ViT-S depth
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from siamkit.config import BackboneConfig
from siamkit.encoders import create_backbone
from siamkit.runtime import machine_summary, resolve_precision, use_channels_last


def _step_seconds(model: nn.Module, x: torch.Tensor, bf16: bool) -> float:
    """Wall time of one forward+backward pass."""
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        h = model(x)
    h.float().square().mean().backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def compare(cfg: BackboneConfig, batch: int, steps: int, bf16: bool) -> None:
    """Print the fastest NCHW and NHWC steps of ``cfg``'s backbone and what ``auto`` picks."""
    torch.manual_seed(0)
    nchw = create_backbone(cfg)
    nhwc = create_backbone(cfg).to(memory_format=torch.channels_last)
    nhwc.load_state_dict(nchw.state_dict())
    x = torch.randn(batch, 3, 32, 32)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    _step_seconds(nchw, x, bf16), _step_seconds(nhwc, x_cl, bf16)  # warm-up
    times: dict[str, list[float]] = {"NCHW": [], "NHWC": []}
    for _ in range(steps):
        times["NCHW"].append(_step_seconds(nchw, x, bf16))
        times["NHWC"].append(_step_seconds(nhwc, x_cl, bf16))
    a, b = min(times["NCHW"]), min(times["NHWC"])
    auto = "on" if use_channels_last("auto", nchw) else "off"
    print(
        f"{cfg.describe()}: NCHW {a * 1e3:.0f} ms, NHWC {b * 1e3:.0f} ms per step of {batch} "
        f"(fastest of {steps}) -> NHWC is {a / b:.2f}x; auto: {auto}"
    )


def main() -> None:
    """Run the comparison for both backbones."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--depth", type=int, default=4, help="ViT blocks (12: the whole ViT-S)")
    args = parser.parse_args()
    bf16 = resolve_precision("auto", "cpu") == "bf16-mixed"
    print(f"{machine_summary()}; {'bf16 autocast' if bf16 else 'fp32'}")
    resnet = BackboneConfig(name="resnet18", cifar_stem=True)
    vit = BackboneConfig(
        name="timm/vit_small_patch16_224",
        timm_kwargs={"img_size": 32, "patch_size": 4, "num_heads": 12, "depth": args.depth},
    )
    for cfg in (resnet, vit):
        compare(cfg, args.batch, args.steps, bf16)


if __name__ == "__main__":
    main()
