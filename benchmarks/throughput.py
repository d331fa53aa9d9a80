"""Training throughput of SimSiam: siamkit end to end vs compute bound vs lightly's example.

Measured in one process on one machine, in source images per second (each image gives two views):

  (a) siamkit: the real training loop (Lightning ``Trainer.fit`` of ``PretrainModule``) from uint8
      images in memory, batched augmentation included;
  (b) compute bound: the same SimSiam model and precision (bf16 autocast + channels_last where
      siamkit would use them) stepping on ready-made float views; no augmentation, no loop;
  (c) lightly: the SimSiam example of the ``lightly`` documentation (its SimSiamTransform on PIL
      images, a DataLoader, an fp32 PyTorch loop), with the same backbone and batch size.

It prints (a)/(c) and (a)/(b). ``lightly`` is imported here only; siamkit never imports it.

Shared 2-core machines are noisy (the same step varies by +-30% from minute to minute), so each
figure is the median step time of a measurement, the three measurements run in interleaved rounds
and each reports its best round: a burst of noise then hurts no side more than the others.

    .venv/bin/python benchmarks/throughput.py                # ResNet-18 CIFAR variant, batch 256
    .venv/bin/python benchmarks/throughput.py --levers       # what each speed lever adds to (b)
    .venv/bin/python benchmarks/throughput.py --compile      # also (a) with torch.compile
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn

from siamkit.config import RunConfig
from siamkit.data.augment import BatchViews
from siamkit.data.datasets import ImageSet, load_splits
from siamkit.data.loader import make_loader
from siamkit.encoders import create_backbone
from siamkit.methods import create_method
from siamkit.recipes import load_config
from siamkit.runtime import resolve_precision
from siamkit.train.cpu_conv import PatchGradConv2d, patch_conv_helps, use_patch_grad_convs
from siamkit.train.loop import PretrainModule


def _module(cfg: RunConfig, steps: int) -> PretrainModule:
    method = create_method(create_backbone(cfg.backbone), cfg.method)
    return PretrainModule(cfg, method, steps_per_epoch=steps)


REPO = Path(__file__).resolve().parents[1]


def cifar_images(n: int) -> ImageSet:
    """The first ``n`` CIFAR-10 training images (shared folder, decoded once and cached), or
    random uint8 images when the folder is absent."""
    cfg = load_config(REPO / "configs/simsiam/cifar10.yaml")
    if Path(cfg.data.path or "").is_dir() or (REPO / str(cfg.data.path)).is_dir():
        path = (
            cfg.data.path if Path(cfg.data.path or "").is_dir() else str(REPO / str(cfg.data.path))
        )
        train = load_splits(dataclasses.replace(cfg.data, path=path, storage="memory")).train
        assert isinstance(train, ImageSet)
        return train.subset(torch.arange(min(n, len(train))))
    print("(CIFAR-10 folder not found: using random images)")
    return ImageSet(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8))


class _Timer(L.Callback):
    """Times training steps after ``warmup`` steps."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.times, self._t = warmup, [], 0.0

    def on_train_batch_start(self, *args: Any) -> None:
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step > self.warmup:
            self.times.append(time.perf_counter() - self._t)


def siamkit_end_to_end(cfg: RunConfig, images: ImageSet, steps: int, warmup: int) -> float:
    """(a): images/s of the real Lightning loop from uint8 images."""
    timer = _Timer(warmup)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        precision=resolve_precision(cfg.train.precision, "cpu"),  # type: ignore[arg-type]
        max_steps=steps + warmup,
        callbacks=[timer],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    module = _module(cfg, steps + warmup)
    loader = make_loader(images, module.views.specs, cfg.optim.batch_size, train=True)
    trainer.fit(module, loader)
    return cfg.optim.batch_size / statistics.median(timer.times)


def compute_bound(
    cfg: RunConfig,
    steps: int,
    warmup: int,
    flip_patch_conv: bool = False,
    channels_last: bool = True,
    bf16: bool = True,
) -> float:
    """(b): images/s of the same model and precision on ready-made views.

    The switches turn siamkit's speed levers off one at a time (``--levers``); the patch-GEMM
    weight gradient, which siamkit uses only where it helps (``train.patch_conv: auto``), is
    flipped to the other choice.
    """
    module = _module(cfg, steps + warmup)
    method = module.method
    if flip_patch_conv:
        patched = [m for m in method.modules() if isinstance(m, PatchGradConv2d)]
        for m in patched:
            m.__class__ = nn.Conv2d  # back to the stock weight gradient
        if not patched:
            use_patch_grad_convs(method)
    opt = torch.optim.SGD(method.parameters(), lr=0.01, momentum=0.9)
    b = cfg.optim.batch_size
    images = torch.randint(0, 256, (b, 3, 32, 32), dtype=torch.uint8)
    views = [BatchViews(cfg.augment)(images) for _ in range(2)]
    if module.channels_last and channels_last:
        views = [v.contiguous(memory_format=torch.channels_last) for v in views]
    else:
        method.to(memory_format=torch.contiguous_format)
    bf16 = bf16 and resolve_precision(cfg.train.precision, "cpu") == "bf16-mixed"
    times = []
    for i in range(steps + warmup):
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = method.training_step(views)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return b / statistics.median(times)


def lightly_example(
    cfg: RunConfig, images: ImageSet, steps: int, warmup: int, workers: int
) -> float:
    """(c): the lightly documentation's SimSiam example, same backbone and batch."""
    import numpy as np
    from lightly.loss import NegativeCosineSimilarity
    from lightly.models.modules import SimSiamPredictionHead, SimSiamProjectionHead
    from lightly.transforms import SimSiamTransform
    from PIL import Image

    from siamkit.encoders import torchvision_resnet

    class SimSiam(nn.Module):  # as in lightly's example
        def __init__(self, backbone: nn.Module) -> None:
            super().__init__()
            self.backbone = backbone
            self.projection_head = SimSiamProjectionHead(512, 512, 128)
            self.prediction_head = SimSiamPredictionHead(128, 64, 128)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            f = self.backbone(x).flatten(start_dim=1)
            z = self.projection_head(f)
            p = self.prediction_head(z)
            z = z.detach()
            return z, p

    # The example's `nn.Sequential(*list(resnet.children())[:-1])`, on the same CIFAR ResNet-18.
    resnet = torchvision_resnet(cfg.backbone.name, cfg.backbone.width, cfg.backbone.cifar_stem)
    model = SimSiam(nn.Sequential(*list(resnet.children())[:-1]))
    width = resnet.fc.in_features
    model.projection_head = SimSiamProjectionHead(width, 512, 128)

    class PILDataset(torch.utils.data.Dataset):  # CIFAR10-style: uint8 arrays -> PIL per item
        def __init__(self, arrays: np.ndarray, transform: Any) -> None:
            self.arrays, self.transform = arrays, transform

        def __len__(self) -> int:
            return len(self.arrays)

        def __getitem__(self, i: int) -> tuple[Any, int]:
            return self.transform(Image.fromarray(self.arrays[i])), 0

    transform = SimSiamTransform(input_size=32)
    arrays = images.images.permute(0, 2, 3, 1).contiguous().numpy()
    dataloader = torch.utils.data.DataLoader(
        PILDataset(arrays, transform),
        batch_size=cfg.optim.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
    )
    criterion = NegativeCosineSimilarity()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.06)
    times, t = [], time.perf_counter()
    for i, batch in enumerate(dataloader):
        x0, x1 = batch[0]
        z0, p0 = model(x0)
        z1, p1 = model(x1)
        loss = 0.5 * (criterion(z0, p1) + criterion(z1, p0))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        now = time.perf_counter()
        if i >= warmup:
            times.append(now - t)  # includes waiting for the loader, as a user would see
        t = now
        if len(times) == steps:
            break
    return cfg.optim.batch_size / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(REPO / "configs/simsiam/cifar10.yaml"))
    parser.add_argument("--width", type=float, default=1.0, help="backbone width multiplier")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--lightly-workers", type=int, default=8, help="lightly docs use 8")
    parser.add_argument("--compile", action="store_true", help="also measure (a) compiled")
    parser.add_argument("--levers", action="store_true", help="(b) with each lever turned off")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; best is kept")
    parser.add_argument("--skip-lightly", action="store_true")
    args = parser.parse_args()

    torch.manual_seed(0)
    cfg = load_config(
        args.config,
        [f"backbone.width={args.width}", f"optim.batch_size={args.batch_size}"],
    )
    n = args.batch_size * (args.steps + args.warmup + 1)
    images = cifar_images(n)
    print(
        f"SimSiam, {cfg.backbone.name} width {cfg.backbone.width}"
        f"{' CIFAR stem' if cfg.backbone.cifar_stem else ''}, batch {args.batch_size}, "
        f"{torch.get_num_threads()} threads, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"precision {resolve_precision(cfg.train.precision, 'cpu')}, {args.rounds} rounds"
    )
    best: dict[str, float] = {}
    patch_on = patch_conv_helps(cfg.train.patch_conv)
    patch_flipped = f"patch-GEMM conv weight gradient {'off' if patch_on else 'on'}"
    print(f"(siamkit's patch-GEMM conv weight gradient is {'on' if patch_on else 'off'} here)")

    def record(key: str, value: float, label: str) -> None:
        best[key] = max(best.get(key, 0.0), value)
        print(f"  {label:40s} {value:8.1f} images/s", flush=True)

    for r in range(args.rounds):
        print(f"round {r + 1} of {args.rounds}")
        record("a", siamkit_end_to_end(cfg, images, args.steps, args.warmup), "(a) siamkit")
        record("b", compute_bound(cfg, args.steps, args.warmup), "(b) compute bound")
        if not args.skip_lightly:
            c = lightly_example(cfg, images, args.steps, args.warmup, args.lightly_workers)
            record("c", c, "(c) lightly example")
        if args.levers:
            for key, off in (
                ("b-patch", {"flip_patch_conv": True}),
                ("b-cl", {"channels_last": False}),
                ("b-bf16", {"bf16": False, "channels_last": False}),
            ):
                value = compute_bound(cfg, args.steps, args.warmup, **off)
                label = patch_flipped if key == "b-patch" else f"without {', '.join(off)}"
                record(key, value, f"(b) {label}")
        if args.compile:
            ccfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, compile=True))
            record(
                "ac", siamkit_end_to_end(ccfg, images, args.steps, args.warmup + 2), "(a') compiled"
            )

    print(f"(a) siamkit end to end from uint8:      {best['a']:8.1f} images/s")
    print(f"(b) compute bound, ready-made tensors:  {best['b']:8.1f} images/s")
    for key, label in (
        ("b-patch", f"(b) {patch_flipped}"),
        ("b-cl", "(b) without channels_last"),
        ("b-bf16", "(b) fp32, no channels_last"),
        ("ac", "(a') siamkit with torch.compile"),
    ):
        if key in best:
            print(f"{label + ':':40s}{best[key]:8.1f} images/s")
    if "c" in best:
        print(f"(c) lightly documentation example:      {best['c']:8.1f} images/s")
        print(f"(a)/(c) = {best['a'] / best['c']:.2f}")
    print(f"(a)/(b) = {best['a'] / best['b']:.2f}")


if __name__ == "__main__":
    main()
