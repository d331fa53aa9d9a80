"""Moved to :mod:`siamkit.export` (``from siamkit.export import export_checkpoint``)."""

from __future__ import annotations

import warnings

from siamkit.export.formats import *  # noqa: F403  (the old module's names, unchanged)
from siamkit.export.formats import __all__  # noqa: F401

warnings.warn(
    "siamkit.protocols.export moved to siamkit.export: use "
    "`from siamkit.export import export_checkpoint, load_exported`",
    DeprecationWarning,
    stacklevel=2,
)
