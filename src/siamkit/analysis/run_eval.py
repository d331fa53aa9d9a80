"""Evaluation protocols on a checkpoint: the functions behind ``siamkit eval`` and ``embed``."""

from __future__ import annotations

import dataclasses
import sys
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from siamkit import runtime
from siamkit.checkpoints import load_backbone, load_method, read_checkpoint
from siamkit.config import AugmentConfig, DataConfig, RunConfig
from siamkit.data.augment import crop_flip_recipe
from siamkit.data.datasets import load_splits, require_labels
from siamkit.data.files import list_files
from siamkit.data.loader import ImageData
from siamkit.data.stream import StreamSet
from siamkit.data.views import Views
from siamkit.encoders import Encoder
from siamkit.errors import ConfigError, DataError
from siamkit.eval.features import extract_features, iter_features
from siamkit.eval.knn import knn_accuracy
from siamkit.eval.linear import linear_probe
from siamkit.eval.representation import method_metrics
from siamkit.export.plain_models import embedding_model, with_preprocessing
from siamkit.safe_io import atomic_write, atomic_write_text, check_apart, check_new_file

#: Which representation an evaluation reads: h (backbone output) or g(h) (after the projector).
Features = Literal["backbone", "projection"]


def linear_eval_views(augment: AugmentConfig) -> AugmentConfig:
    """The training views of an augmented linear probe.

    Random resized crop (scale 0.08-1) and horizontal flip only, the linear-classification
    augmentation of MoCo/SimSiam's code.
    """
    return crop_flip_recipe(augment, (0.08, 1.0))


def run_extract_options(cfg: RunConfig, device: torch.device, backbone: Encoder) -> dict[str, Any]:
    """Feature-extraction options that reproduce a run's own final figures on ``device``.

    float32 whatever the run trained with (as its final kNN, :func:`siamkit.train.pretraining.
    final_knn`: bf16 features lose the small differences between images of a network early in
    training or at random init) and its memory format (as its training chose it for
    ``backbone``).
    """
    return {
        "device": device,
        "bf16": False,
        "channels_last": runtime.use_channels_last(cfg.train.channels_last, backbone),
    }


def _labelled_features(
    checkpoint: str | Path,
    data: DataConfig | None,
    what: str,
    features: Features = "backbone",
    augment_copies: int = 0,
    seed: int = 0,
    device: torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Train/test features and labels of ``data`` (default: the checkpoint's own data).

    With ``augment_copies`` > 0 the training features are those of that many augmented views of
    every training image (labels repeated); test features are always centre views.
    """
    if features not in ("backbone", "projection"):
        raise ConfigError(
            f"features must be 'backbone' (h) or 'projection' (g(h)), got {features!r}"
        )
    if augment_copies < 0:
        raise ConfigError(f"augment copies must be >= 0, got {augment_copies}")
    device = device or torch.device("cpu")
    cfg, method = load_method(checkpoint)
    method.to(device)
    backbone, projector = method.backbone, method.projector  # every method has g
    head = projector if features == "projection" else None
    splits = load_splits(data or cfg.data)
    if splits.test is None:
        raise DataError(
            f"{what} needs a labelled held-out split; use a labelled folder "
            "(root/<class>/* or train/ + test/) or a dataset with labels"
        )
    y_train = require_labels(splits.train, what)
    y_test = require_labels(splits.test, what)
    options = {"head": head, **run_extract_options(cfg, device, backbone)}
    if augment_copies:
        views = Views([linear_eval_views(cfg.augment)])
        g = torch.Generator(device).manual_seed(seed)
        x_train = torch.cat(
            [
                extract_features(
                    backbone,
                    splits.train,
                    cfg.augment,
                    views=views,
                    generator=g,
                    seed=seed + c,
                    **options,
                )
                for c in range(augment_copies)
            ]
        )
        y_train = y_train.repeat(augment_copies)
    else:
        x_train = extract_features(backbone, splits.train, cfg.augment, **options)
    x_test = extract_features(backbone, splits.test, cfg.augment, **options)
    return x_train, y_train, x_test, y_test


def knn_eval(
    checkpoint: str | Path,
    data: DataConfig | None = None,
    k: int | None = None,
    temperature: float | None = None,
    features: Features = "backbone",
    device: torch.device | None = None,
) -> dict[str, Any]:
    """Weighted kNN top-1 (%) of a checkpoint's h (or g(h)) on the held-out split.

    ``k`` and ``temperature`` default to the run's own monitor settings (``train.knn_k``,
    ``train.knn_temperature``: 200 and 0.1 unless the recipe says otherwise), so the figure
    matches the one ``siamkit pretrain`` reported.
    """
    run = read_checkpoint(checkpoint).config.train
    k = run.knn_k if k is None else k
    temperature = run.knn_temperature if temperature is None else temperature
    if k < 1 or not temperature > 0:
        raise ConfigError(f"kNN needs k >= 1 and temperature > 0, got k={k}, T={temperature}")
    x_tr, y_tr, x_te, y_te = _labelled_features(
        checkpoint, data, "kNN evaluation", features, device=device
    )
    top1 = knn_accuracy(x_tr, y_tr, x_te, y_te, k, temperature)
    return {
        "protocol": "knn",
        "features": features,
        "k": k,
        "temperature": temperature,
        "top1": top1,
    }


def linear_eval(
    checkpoint: str | Path,
    data: DataConfig | None = None,
    epochs: int = 100,
    lr: float = 0.1,
    batch_size: int = 256,
    features: Features = "backbone",
    optimizer: Literal["sgd", "lbfgs"] = "sgd",
    weight_decay: float = 0.0,
    augment_copies: int = 0,
    seed: int = 0,
    device: torch.device | None = None,
) -> dict[str, Any]:
    """Linear probe top-1/top-5 (%) on frozen features of a checkpoint.

    Args:
        checkpoint: A pretraining checkpoint or run folder (any method).
        data: Labelled data (default: the checkpoint's own).
        epochs: SGD passes, or L-BFGS iterations.
        lr: SGD peak learning rate.
        batch_size: SGD batch.
        features: ``backbone`` (h, the standard protocol) or ``projection`` (g(h)), for the
            h-versus-g(h) study of SimCLR (arXiv:2002.05709, Sec. 4.2, Fig. 8).
        optimizer: ``sgd`` or ``lbfgs`` (see :func:`~siamkit.eval.linear.linear_probe`).
        weight_decay: L2 penalty.
        augment_copies: 0: centre views, features computed once; n > 0: n random crop + flip
            views of each training image, computed once.
        seed: Seed of the probe and of the augmented views.
        device: Where features are computed (default: the CPU).
    """
    if epochs < 1 or not lr > 0 or batch_size < 1 or weight_decay < 0:
        raise ConfigError(
            "linear probe needs epochs >= 1, lr > 0, batch size >= 1 and weight decay >= 0, got "
            f"epochs={epochs}, lr={lr}, batch_size={batch_size}, weight_decay={weight_decay}"
        )
    if optimizer not in ("sgd", "lbfgs"):
        raise ConfigError(f"linear probe optimizer must be 'sgd' or 'lbfgs', got {optimizer!r}")
    x_tr, y_tr, x_te, y_te = _labelled_features(
        checkpoint, data, "linear evaluation", features, augment_copies, seed, device
    )
    result = linear_probe(
        x_tr,
        y_tr,
        x_te,
        y_te,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        weight_decay=weight_decay,
        seed=seed,
        optimizer=optimizer,
    )
    return {
        "protocol": "linear",
        "features": features,
        "optimizer": optimizer,
        "epochs": epochs,
        "lr": lr,
        "weight_decay": weight_decay,
        "augment_copies": augment_copies,
        **dataclasses.asdict(result),
    }


def embed_folder(
    checkpoint: str | Path,
    folder: str | Path,
    output: str | Path,
    strict: bool = False,
    device: torch.device | None = None,
    num_workers: int | None = None,
    model: str | None = None,
    image_size: int | None = None,
    mean: tuple[float, float, float] | None = None,
    std: tuple[float, float, float] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write backbone features of every image under ``folder`` to ``output`` (.npy).

    Images are streamed (any folder size fits) and given the evaluation centre view: the shorter
    side resized to ``S x 256/224`` (bilinear, antialiased), the centre ``S x S`` cut and
    normalised. The row order is written beside it, one source path a line, in
    ``<output>.paths.txt``; unreadable images are left out of both (an error under ``strict``).

    Args:
        checkpoint: A run folder or ``.ckpt`` file; a siamkit ``.safetensors`` export; or, with
            ``model``, a weights file of that model (a state dict, with or without its
            classifier).
        folder: The images (any layout).
        output: The ``.npy`` file.
        strict: Fail on an unreadable image.
        device: Where to compute (default: the CPU).
        num_workers: DataLoader workers decoding the images.
        model: ``torchvision/<name>`` or ``timm/<name>``: the model ``checkpoint`` holds weights
            of (see :func:`~siamkit.export.plain_models.embedding_model`).
        image_size: Side ``S`` of the centre view. Default: the run's evaluation size (a
            checkpoint, or an export of one); timm's pretrained_cfg input size; else 224.
        mean: Per-channel normalisation mean; default as ``image_size`` (ImageNet's last).
        std: Per-channel normalisation std; default as ``image_size``.
        overwrite: Replace an existing ``output``.

    Raises:
        OutputError: ``output`` exists (without ``overwrite``), lies inside ``folder``, or
            cannot be written.
        DataError: No image under ``folder`` could be decoded (nothing is written).
    """
    out = Path(output)
    # The output is checked before a model is loaded or an image read, and is never inside the
    # folder embedded (the command never changes its input).
    check_new_file(out, "embeddings", overwrite)
    check_new_file(out.with_name(out.name + ".paths.txt"), "embeddings' row order", overwrite)
    source = "--weights" if model is not None else "--checkpoint"
    check_apart(out, "--output", {"--data": Path(folder), source: Path(checkpoint)})
    device = device or torch.device("cpu")
    options: dict[str, Any] = {"device": device}
    if model is not None or Path(checkpoint).suffix == ".safetensors":
        backbone, augment = embedding_model(checkpoint, model)
    else:
        cfg, backbone = load_backbone(checkpoint)
        augment, options = cfg.augment, run_extract_options(cfg, device, backbone)
    augment = with_preprocessing(augment, image_size, mean, std)
    backbone.to(device)
    files = list_files(Path(folder), labels="none")  # embeddings need no labels
    print(f"siamkit: data images: {len(files)} images in {folder}", file=sys.stderr)
    data = StreamSet(
        files, num_workers if num_workers is not None else runtime.default_num_workers()
    )
    rows, paths, skipped = [], [], 0
    for batch in iter_features(backbone, data, augment, strict=strict, **options):
        keep = ~batch.unreadable
        rows.append(batch.values[keep])
        paths += [files.paths[i] for i in batch.indices[keep].tolist()]
        skipped += int(batch.unreadable.sum())
    if not paths:
        raise DataError(
            f"none of the {len(files)} images under {str(folder)!r} could be decoded, so there "
            "is nothing to embed (nothing was written); check the files (corrupt, or not images)"
        )
    if skipped:
        warnings.warn(
            f"skipped {skipped} unreadable image(s) of {len(files)} under {folder}",
            stacklevel=2,
        )
    with atomic_write(out, "embeddings") as f:
        np.save(f, torch.cat(rows).numpy())
    atomic_write_text(out.with_name(out.name + ".paths.txt"), "\n".join(paths) + "\n", "paths")
    return out


def metric_images(data: DataConfig, max_images: int, seed: int = 0) -> tuple[ImageData, str]:
    """Up to ``max_images`` images of the test split (else of train) in a random order.

    The order is a permutation drawn with ``seed``, so every prefix is a random subset too (a
    folder's images come sorted by class).

    Returns:
        The images and the name of the split they come from.
    """
    splits = load_splits(data)
    images, split = (splits.test, "test") if splits.test is not None else (splits.train, "train")
    g = torch.Generator().manual_seed(seed)
    return images.subset(torch.randperm(len(images), generator=g)[:max_images]), split


def representation_metrics(
    checkpoint: str | Path,
    data: DataConfig | None = None,
    max_images: int = 5000,
    seed: int = 0,
    device: torch.device | None = None,
) -> dict[str, Any]:
    """Collapse std, RankMe, uniformity and alignment of a checkpoint's h and g(h).

    Args:
        checkpoint: A ``.ckpt`` file or a run folder.
        data: Images to measure on (default: the run's own data); the test split is used
            where there is one, else the training images.
        max_images: At most this many images (a seeded random subset); uniformity costs
            ``N^2 / 2`` pairs.
        seed: Seed of the subset and of the augmented views.
        device: Where to compute (default: the CPU).

    Returns:
        ``{"h": {...}, "g": {...}, "num_images": N, "split": "test" | "train"}``, each of
        ``h``/``g`` holding ``dim``, ``collapse_std``, ``rankme``, ``uniformity`` and
        ``alignment``.

    Raises:
        ConfigError: ``max_images`` below 2.
        CheckpointError: The checkpoint cannot be read.
        DataError: The data is missing or holds fewer than 2 images.
    """
    if max_images < 2:
        raise ConfigError(f"max_images must be at least 2 (pairs of images), got {max_images}")
    cfg, method = load_method(checkpoint)
    method.to(device or torch.device("cpu"))
    images, split = metric_images(data or cfg.data, max_images, seed)
    return {**method_metrics(method, images, cfg.augment, seed), "split": split}
