"""``import siamkit``: light (no torch, no Lightning), with its public names loaded on use."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import siamkit

SRC = str(Path(siamkit.__file__).resolve().parents[1])


def test_import_siamkit_loads_neither_lightning_nor_torch():
    code = (
        "import sys, siamkit\n"
        "print('lightning' in sys.modules, 'torch' in sys.modules)\n"
        "siamkit.load_config\n"  # reading recipes stays light too
        "print('lightning' in sys.modules, 'torch' in sys.modules)\n"
        "siamkit.pretrain\n"
        "print('lightning' in sys.modules)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": SRC},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False", "False", "False", "True"]


def test_public_names_load_on_use():
    from siamkit import load_backbone, load_config, load_method, pretrain
    from siamkit.checkpoints import load_backbone as backbone_loader
    from siamkit.checkpoints import load_method as method_loader
    from siamkit.recipes import load_config as config_loader
    from siamkit.train import pretrain as trainer

    assert (load_backbone, load_config, load_method, pretrain) == (
        backbone_loader,
        config_loader,
        method_loader,
        trainer,
    )
    assert set(siamkit.__all__) <= set(dir(siamkit))
    with pytest.raises(AttributeError, match="no attribute 'pretrian'"):
        siamkit.pretrian  # noqa: B018
