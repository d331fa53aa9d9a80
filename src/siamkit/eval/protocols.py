"""Evaluation protocols on a checkpoint: the functions behind ``siamkit eval`` and ``embed``."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from siamkit.config import DataConfig
from siamkit.data.datasets import load_folder, load_splits, require_labels
from siamkit.errors import DataError
from siamkit.eval.features import extract_features
from siamkit.eval.knn import knn_accuracy
from siamkit.eval.linear import linear_probe
from siamkit.train.checkpoint import load_backbone


def _labelled_features(
    checkpoint: str | Path, data: DataConfig | None, what: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Train/test features and labels of ``data`` (default: the checkpoint's own data)."""
    cfg, backbone = load_backbone(checkpoint)
    splits = load_splits(data or cfg.data)
    if splits.test is None:
        raise DataError(
            f"{what} needs a labelled held-out split; use a labelled folder "
            "(root/<class>/* or train/ + test/) or a dataset with labels"
        )
    y_train = require_labels(splits.train, what)
    y_test = require_labels(splits.test, what)
    x_train = extract_features(backbone, splits.train.images, cfg.augment)
    x_test = extract_features(backbone, splits.test.images, cfg.augment)
    return x_train, y_train, x_test, y_test


def knn_eval(
    checkpoint: str | Path,
    data: DataConfig | None = None,
    k: int = 200,
    temperature: float = 0.1,
) -> dict[str, Any]:
    """Weighted kNN top-1 (%) of a checkpoint's backbone on the held-out split."""
    x_tr, y_tr, x_te, y_te = _labelled_features(checkpoint, data, "kNN evaluation")
    top1 = knn_accuracy(x_tr, y_tr, x_te, y_te, k, temperature)
    return {"protocol": "knn", "k": k, "temperature": temperature, "top1": top1}


def linear_eval(
    checkpoint: str | Path,
    data: DataConfig | None = None,
    epochs: int = 100,
    lr: float = 0.1,
    batch_size: int = 256,
) -> dict[str, Any]:
    """Linear probe top-1/top-5 (%) on frozen backbone features."""
    x_tr, y_tr, x_te, y_te = _labelled_features(checkpoint, data, "linear evaluation")
    result = linear_probe(x_tr, y_tr, x_te, y_te, epochs=epochs, lr=lr, batch_size=batch_size)
    return {"protocol": "linear", "epochs": epochs, "lr": lr, **dataclasses.asdict(result)}


def embed_folder(
    checkpoint: str | Path, folder: str | Path, output: str | Path, strict: bool = False
) -> Path:
    """Write backbone features of every image under ``folder`` to ``output`` (.npy).

    The row order is written beside it, one source path a line, in ``<output>.paths.txt``.
    """
    cfg, backbone = load_backbone(checkpoint)
    data = dataclasses.replace(cfg.data, dataset="folder", path=str(folder), strict=strict)
    # Decode as training did; small views are used whole, large ones centre-cropped 224/256.
    view = cfg.augment.size
    size = cfg.data.decode_size or (view if view <= 64 else round(view * 256 / 224))
    images = load_folder(Path(folder), size, data)
    feats = extract_features(backbone, images.images, cfg.augment)
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, feats.numpy())
    paths = out.with_name(out.name + ".paths.txt")
    paths.write_text("\n".join(images.paths or []) + "\n")
    return out
