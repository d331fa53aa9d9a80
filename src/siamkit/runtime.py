"""Device, precision and machine rules, in one place for training and evaluation alike.

Nothing here imports the rest of siamkit: the training loop, the evaluation protocols and the
data loaders all ask this module which device to use, whether bf16 autocast pays off, how many
processes share the machine and how much memory it has.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from siamkit.errors import ConfigError


def device_type(accelerator: str = "auto") -> str:
    """``cuda`` or ``cpu`` for a Lightning-style accelerator name (``auto``, ``cpu``, ``gpu``)."""
    if accelerator in ("gpu", "cuda"):
        return "cuda"
    if accelerator == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cpu"


def check_accelerator(accelerator: str) -> None:
    """Raise a :class:`ConfigError` naming the fix when ``accelerator`` cannot run here."""
    if accelerator not in ("auto", "cpu", "gpu", "cuda"):
        raise ConfigError(f"accelerator must be auto, cpu or gpu, got {accelerator!r}")
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"--accelerator {accelerator} asked for, but this machine has no CUDA GPU that "
            "torch can use; use --accelerator cpu (or auto)"
        )


def check_devices(devices: str, accelerator: str = "auto") -> None:
    """Raise a :class:`ConfigError` unless ``devices`` is ``auto``, a count, or GPU indices.

    A list of indices (``0,1``) names GPUs, so it needs one; a count asks for that many
    processes (CPU or GPU), and more GPUs than the machine has is an error.
    """
    text = str(devices).strip()
    if text in ("auto", "-1"):
        return
    parts = [p.strip() for p in text.split(",")] if "," in text else [text]
    if not parts or not all(p.isdigit() for p in parts if p) or not any(parts):
        raise ConfigError(
            f"--devices {devices!r} is not understood; use auto, a count like 2, or GPU "
            "indices like 0,1"
        )
    kind = device_type(accelerator)
    if "," in text and kind != "cuda":
        raise ConfigError(
            f"--devices {devices} names GPU indices, but the run is on the CPU; use a count of "
            "processes (e.g. --devices 2) or --accelerator gpu on a machine with GPUs"
        )
    if "," not in text and int(text) < 1:
        raise ConfigError(f"--devices must be at least 1, got {devices}")
    if kind == "cuda":
        wanted = max(int(p) for p in parts if p) + 1 if "," in text else int(text)
        have = torch.cuda.device_count()
        if wanted > have:
            raise ConfigError(f"--devices {devices} asks for more GPUs than the {have} here")


def check_strategy(strategy: str) -> None:
    """Raise a :class:`ConfigError` listing the choices unless Lightning knows ``strategy``."""
    from lightning.pytorch.strategies import StrategyRegistry

    known = ["auto", *sorted(StrategyRegistry.available_strategies())]
    if strategy not in known:
        common = "auto, ddp, ddp_spawn, fsdp, deepspeed"
        raise ConfigError(
            f"--strategy {strategy!r} is not a Lightning strategy; use one of {common}"
        )


def resolve_device(accelerator: str = "auto", devices: str = "auto") -> torch.device:
    """The one device of a single-process evaluation.

    Args:
        accelerator: ``auto`` (a GPU when there is one), ``cpu`` or ``gpu``.
        devices: ``auto``, a count (the first GPU is used) or a comma list of GPU indices (the
            first is used).

    Raises:
        ConfigError: A GPU was asked for and there is none, or ``devices`` is not understood.
    """
    check_accelerator(accelerator)
    kind = device_type(accelerator)
    if kind == "cpu":
        return torch.device("cpu")
    first = 0
    text = str(devices).strip()
    if text not in ("auto", "-1", ""):
        parts = [p for p in text.split(",") if p.strip()]
        try:
            indices = [int(p) for p in parts]
        except ValueError:
            raise ConfigError(
                f"--devices must be auto, a count or GPU indices like 0,1, got {devices!r}"
            ) from None
        first = indices[0] if "," in text else 0
    if first >= torch.cuda.device_count():
        raise ConfigError(
            f"GPU {first} asked for, but this machine has {torch.cuda.device_count()} GPU(s)"
        )
    return torch.device("cuda", first)


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles (torch's own check; ``False`` where torch lacks it)."""
    return bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


def fast_bf16_available(kind: str) -> bool:
    """Whether bf16 autocast is faster than fp32 on ``kind`` (``cuda`` or ``cpu``).

    GPUs: those with bf16 support (Ampere and newer). CPUs: AMX or AVX-512 BF16; on an AVX2-only
    CPU bf16 is emulated and gives nothing.
    """
    if kind == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    cpu = torch.backends.cpu
    capability = cpu.get_cpu_capability() if hasattr(cpu, "get_cpu_capability") else ""
    avx512_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
    return bool(cpu_has_amx() or avx512_bf16) and capability != "DEFAULT"


def resolve_precision(precision: str, kind: str) -> str:
    """The Lightning precision string for ``train.precision`` (``auto`` decided by hardware)."""
    if precision != "auto":
        return precision
    return "bf16-mixed" if fast_bf16_available(kind) else "32-true"


def is_patchify(conv: nn.Conv2d) -> bool:
    """Whether ``conv`` cuts non-overlapping patches (kernel = stride > 1: a ViT's embedding)."""
    kernel, stride = tuple(conv.kernel_size), tuple(conv.stride)
    return kernel == stride and max(kernel) > 1


def use_channels_last(mode: str, backbone: nn.Module) -> bool:
    """Whether ``train.channels_last`` (``auto``, ``on``, ``off``) feeds ``backbone`` NHWC.

    ``auto``: on for convolutional backbones, those with a convolution other than a patch
    embedding (ResNets, ConvNeXt, the small CNN), where oneDNN and cuDNN run channels-last
    convolutions faster; off for ViTs and other patch-and-attention models, whose one
    convolution cuts patches once and whose blocks are matrix products over tokens that the
    memory format of the input does not reach.
    """
    if mode != "auto":
        return mode == "on"
    return any(isinstance(m, nn.Conv2d) and not is_patchify(m) for m in backbone.modules())


def local_processes(accelerator: str = "auto", devices: str = "auto") -> int:
    """Training processes this machine runs for ``devices`` (1 on a CPU unless a count is given).

    Used to share the machine's memory and CPU cores between processes before Lightning has
    started them.
    """
    text = str(devices).strip()
    if "," in text:
        return len([p for p in text.split(",") if p.strip()])
    if text.isdigit() and int(text) > 0:
        return int(text)
    if device_type(accelerator) == "cuda":
        return max(1, torch.cuda.device_count())
    return 1


def cpu_count() -> int:
    """CPU cores this process may use (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def default_num_workers(processes: int = 1) -> int:
    """DataLoader workers per process.

    The cores left to each process after its main thread, at least 1 and at most 16.
    """
    return max(1, min(16, cpu_count() // max(1, processes) - 1))


def total_memory_bytes() -> int:
    """Physical memory of the machine (or of this cgroup, when that is smaller)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return int(total)


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), to print beside every measured figure."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:  # pragma: no cover - not Linux
        pass
    import platform

    return platform.processor() or "unknown CPU"


def machine_summary() -> str:
    """One line naming the CPU, its usable cores, its bf16 support and any GPU."""
    flags = (
        "AMX"
        if cpu_has_amx()
        else ("AVX-512 BF16" if fast_bf16_available("cpu") else "no fast bf16")
    )
    text = f"{cpu_model()}, {cpu_count()} cores ({flags})"
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name(0)}"
    return text
