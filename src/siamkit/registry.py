"""The names at every extension point, and where each implementation lives.

This module imports nothing of siamkit, torch or any other library, so the command line's
choices and ``--help`` come from here at no cost; an implementation is imported when it is used
(:meth:`Entry.load`), as timm's and Lightning's registries do. The tables below are the one list
of each kind: the method registry (:data:`siamkit.methods.METHODS`), the backbones
(:data:`siamkit.encoders.BACKBONES`), the data sources (:func:`siamkit.data.datasets.load_splits`),
the experiments' measures (:func:`siamkit.experiments.measures.take`), the CLI's choices and the
contract tests are all derived from them. CONTRIBUTING.md walks through adding an entry of each
kind.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    """One registered implementation.

    Attributes:
        target: ``package.module:attribute``, imported on :meth:`load`.
        summary: One line for ``--help`` and the docs' tables (with the paper it follows).
    """

    target: str
    summary: str

    def load(self) -> object:
        """Import the implementation (once; Python caches the module)."""
        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module), attribute)


#: Methods, by the name a config's ``method.name`` gives: each target is a
#: :class:`~siamkit.methods.base.Method` subclass with its ``config_class``.
METHODS: dict[str, Entry] = {
    "simsiam": Entry(
        "siamkit.methods.simsiam:SimSiam", "SimSiam, stop-gradient and a predictor [2011.10566]"
    ),
    "simsiam_ema": Entry(
        "siamkit.methods.simsiam_ema:SimSiamEMA",
        "SimSiam's alternation study: targets from a moving average [2011.10566, Sec. 5]",
    ),
    "byol": Entry("siamkit.methods.byol:BYOL", "BYOL, a momentum target [2006.07733]"),
    "simclr": Entry(
        "siamkit.methods.simclr:SimCLR", "SimCLR and SimCLRv2, NT-Xent [2002.05709, 2006.10029]"
    ),
    "moco_v2": Entry("siamkit.methods.moco_v2:MoCoV2", "MoCo v2, a queue of keys [2003.04297]"),
    "moco_v3": Entry("siamkit.methods.moco_v3:MoCoV3", "MoCo v3, in-batch keys [2104.02057]"),
    "swav": Entry("siamkit.methods.swav:SwAV", "SwAV, swapped prototype assignments [2006.09882]"),
    "barlow_twins": Entry(
        "siamkit.methods.barlow_twins:BarlowTwins", "Barlow Twins, cross-correlation [2103.03230]"
    ),
    "vicreg": Entry(
        "siamkit.methods.vicreg:VICReg", "VICReg, variance-invariance-covariance [2105.04906]"
    ),
    "wmse": Entry("siamkit.methods.wmse:WMSE", "W-MSE, whitened MSE [2007.06346]"),
    "mine": Entry(
        "siamkit.methods.mine:MINE", "MINE, a neural bound on mutual information [1801.04062]"
    ),
}

#: Backbones by ``backbone.name`` (besides ``timm/<model>`` for any timm model): each target
#: builds an :class:`~siamkit.encoders.base.Encoder` from ``width``, ``cifar_stem`` and, where it
#: has the option, ``norm``.
BACKBONES: dict[str, Entry] = {
    "resnet18": Entry("siamkit.encoders.resnet:resnet18", "torchvision's ResNet-18 [1512.03385]"),
    "resnet34": Entry("siamkit.encoders.resnet:resnet34", "torchvision's ResNet-34 [1512.03385]"),
    "resnet50": Entry("siamkit.encoders.resnet:resnet50", "torchvision's ResNet-50 [1512.03385]"),
    "small_cnn": Entry(
        "siamkit.encoders.small_cnn:SmallCNN", "a small CNN for the digits and CPU tests"
    ),
}

#: Data sources by ``data.dataset``: each target is ``source(cfg, workers) -> Splits``.
DATA_SOURCES: dict[str, Entry] = {
    "digits": Entry(
        "siamkit.data.datasets:digits_source",
        "scikit-learn's bundled 8x8 digits, upsampled (offline, any machine)",
    ),
    "cifar10": Entry(
        "siamkit.data.datasets:cifar10_source",
        "CIFAR-10: an image folder, packed shards or torchvision's files",
    ),
    "folder": Entry(
        "siamkit.data.datasets:folder_source",
        "your images: a folder (root/<class>/*, or train/ + test/) or packed shards",
    ),
}

#: What an experiment's measure reads or computes of a cell, by ``kind``: each target is
#: ``read(measure, cell, run, root, scale, spec, seed) -> float``.
MEASURES: dict[str, Entry] = {
    "knn": Entry("siamkit.experiments.measures:read_result", "final kNN top-1 (%)"),
    "knn_gain": Entry(
        "siamkit.experiments.measures:read_result", "kNN top-1 gain over random init (points)"
    ),
    "random_init_knn": Entry(
        "siamkit.experiments.measures:read_result", "kNN top-1 of the random init (%)"
    ),
    "collapse_std": Entry(
        "siamkit.experiments.measures:read_result",
        "SimSiam's collapse std of the projections x sqrt(d), training (train mode)",
    ),
    "eval_collapse_std": Entry(
        "siamkit.experiments.measures:read_eval_collapse_std",
        "SimSiam's collapse std x sqrt(d) of held-out projections (eval mode)",
    ),
    "final_loss": Entry(
        "siamkit.experiments.measures:read_final_loss", "mean training loss of the last epoch"
    ),
    "linear": Entry("siamkit.experiments.measures:read_linear", "linear probe top-1 (%)"),
    "finetune": Entry(
        "siamkit.experiments.measures:read_finetune", "fine-tuning top-1 on a label share (%)"
    ),
    "finetune_scratch": Entry(
        "siamkit.experiments.measures:read_finetune",
        "supervised top-1 from scratch on the same label share (%)",
    ),
    "distill": Entry("siamkit.experiments.measures:read_distill", "distilled student's top-1 (%)"),
    "gaussian_mi": Entry(
        "siamkit.experiments.measures:read_gaussian_mi",
        "an MI estimate on correlated Gaussians (nats)",
    ),
}

__all__ = ["BACKBONES", "DATA_SOURCES", "MEASURES", "METHODS", "Entry"]
