"""A trained backbone for other libraries, and plain models read back for embeddings.

- :mod:`~siamkit.export.formats`: :func:`~siamkit.export.formats.export_checkpoint` writes
  safetensors, torchvision or timm state dicts, or ONNX; ``load_exported`` reads them back;
- :mod:`~siamkit.export.plain_models`: models from exported files and torchvision/timm weights.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from siamkit.export.formats import export_checkpoint, load_exported

__all__ = ["export_checkpoint", "load_exported"]


def __getattr__(name: str) -> Any:
    # Imported on use: ``siamkit export --help`` and ``import siamkit.export`` stay light.
    if name in __all__:
        from siamkit.export import formats

        return getattr(formats, name)
    raise AttributeError(f"module 'siamkit.export' has no attribute {name!r}")
