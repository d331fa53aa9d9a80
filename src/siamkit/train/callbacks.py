"""Monitors that run inside the training loop: collapse, kNN, mutual information, throughput."""

from __future__ import annotations

import time
import warnings
from typing import Any

import lightning as L
import torch

from siamkit.config import AugmentConfig, RunConfig, TrainConfig
from siamkit.data.datasets import Splits
from siamkit.data.loader import ImageData
from siamkit.encoders import Encoder
from siamkit.eval.knn import knn_top1
from siamkit.eval.metrics import output_std
from siamkit.eval.mi_estimator import FitSettings, estimate_from_pairs
from siamkit.eval.representation import two_view_features
from siamkit.methods import Method


def _method_of(pl_module: L.LightningModule) -> Method:
    """The method a siamkit training module trains (its ``method`` attribute)."""
    method = pl_module.method
    if not isinstance(method, Method):
        raise TypeError(f"{type(pl_module).__name__} holds no siamkit Method as .method")
    return method


class CollapseMonitor(L.Callback):
    """Logs ``train/collapse_std`` every epoch and warns when it falls below ``threshold``.

    The metric is the std of the l2-normalised output x sqrt(d): about 1 is healthy, 0 is a
    constant output.
    """

    def __init__(self, threshold: float = TrainConfig.collapse_threshold) -> None:
        self.threshold = threshold
        self._values: list[float] = []
        self.last: float | None = None
        self.warned = False

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        """Collect the batch's detached output."""
        if isinstance(outputs, dict) and "embedding" in outputs:
            self._values.append(output_std(outputs["embedding"]))

    def state_dict(self) -> dict[str, Any]:
        """The epoch's values so far, the last mean and whether it warned (for resume)."""
        return {"values": list(self._values), "last": self.last, "warned": self.warned}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`."""
        self._values = list(state["values"])
        self.last, self.warned = state["last"], bool(state["warned"])

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Log the epoch's mean and warn once below the threshold."""
        if not self._values:
            return
        self.last = sum(self._values) / len(self._values)
        self._values.clear()
        pl_module.log("train/collapse_std", self.last, sync_dist=True)  # mean over processes
        if self.last < self.threshold and not self.warned and trainer.is_global_zero:
            self.warned = True
            warnings.warn(
                f"the output has collapsed: std of the l2-normalised output x sqrt(d) = "
                f"{self.last:.3f} (about 1 when healthy, 0 for a constant output). "
                "Check what keeps the method from collapsing (SimSiam: stop-gradient and "
                "predictor, paper Fig. 2 and Table 1; BYOL/MoCo: the EMA target; SimCLR/MoCo: "
                "the negatives and temperature) and the learning rate. For contrastive methods "
                "a low value with a rising kNN is a concentrated, not a collapsed, output",
                stacklevel=1,
            )


class KNNMonitor(L.Callback):
    """Weighted kNN top-1 on a held-out split every ``every`` epochs (``val/knn_top1``).

    Args:
        bank: Labelled training images (the feature bank), any storage.
        queries: Held-out labelled images to classify.
        augment: View size and normalisation for the centre-crop features.
        k: Neighbours (200).
        temperature: Vote temperature (0.1).
        every: Epoch interval.
        bf16: Extract features under bf16 autocast (as the run trains).
        channels_last: Feed channels-last tensors.
    """

    def __init__(
        self,
        bank: ImageData,
        queries: ImageData,
        augment: AugmentConfig,
        k: int = 200,
        temperature: float = 0.1,
        every: int = 1,
        bf16: bool = False,
        channels_last: bool = False,
    ) -> None:
        assert bank.labels is not None and queries.labels is not None
        self.bank, self.queries, self.augment = bank, queries, augment
        self.k, self.temperature, self.every = k, temperature, every
        self.bf16, self.channels_last = bf16, channels_last
        self.history: list[tuple[int, float]] = []

    def state_dict(self) -> dict[str, Any]:
        """The ``(epoch, top-1)`` history (a resumed run reports all of it)."""
        return {"history": [list(h) for h in self.history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`."""
        self.history = [(int(e), float(a)) for e, a in state["history"]]

    def evaluate(self, backbone: Encoder) -> float:
        """KNN top-1 (%) of ``backbone``'s features."""
        return knn_top1(
            backbone,
            self.bank,
            self.queries,
            self.augment,
            self.k,
            self.temperature,
            bf16=self.bf16,
            channels_last=self.channels_last,
        )

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Evaluate on rank 0 every ``every`` epochs and at the last."""
        epoch = trainer.current_epoch + 1
        # Every process holds the same weights: one evaluation (on rank 0) is enough.
        if not trainer.is_global_zero:
            return
        if self.every and (epoch % self.every == 0 or epoch == trainer.max_epochs):
            acc = self.evaluate(_method_of(pl_module).backbone)
            self.history.append((epoch, acc))
            pl_module.log("val/knn_top1", acc, prog_bar=True, rank_zero_only=True)


class MIMonitor(L.Callback):
    """MINE estimate of ``I(h(v1); h(v2))`` every ``every`` epochs (``val/mi_two_view``, nats).

    The features of two augmented views (the run's recipe) of a fixed set of training images; a
    fresh statistics network fitted on 60% of the pairs, stopped on 20% and its bound read on the
    last 20% (:func:`~siamkit.eval.mi_estimator.estimate_from_pairs`).

    Args:
        images: The images (a fixed subset of the training set).
        augment: The run's view recipe.
        every: Epoch interval.
        settings: The statistics network and its training.
    """

    def __init__(
        self, images: ImageData, augment: AugmentConfig, every: int, settings: FitSettings
    ) -> None:
        self.images, self.augment, self.every, self.settings = images, augment, every, settings
        self.history: list[tuple[int, float]] = []

    def state_dict(self) -> dict[str, Any]:
        """The ``(epoch, nats)`` history (a resumed run reports all of it)."""
        return {"history": [list(h) for h in self.history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`."""
        self.history = [(int(e), float(v)) for e, v in state["history"]]

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Estimate on rank 0 every ``every`` epochs and at the last."""
        epoch = trainer.current_epoch + 1
        if not trainer.is_global_zero or not (
            epoch % self.every == 0 or epoch == trainer.max_epochs
        ):
            return
        backbone = _method_of(pl_module).backbone
        # Fixed seeds: the same views and split at every estimate, so that the series follows the
        # encoder alone; fork_rng leaves the run's own RNG stream as it was (exact resume).
        with torch.random.fork_rng(devices=[]):
            h1, h2 = two_view_features(backbone, self.images, self.augment, seed=0)
            value = estimate_from_pairs(h1, h2, self.settings, seed=0).value
        self.history.append((epoch, value))
        pl_module.log("val/mi_two_view", value, rank_zero_only=True)


def mi_monitor(cfg: RunConfig, splits: Splits) -> MIMonitor | None:
    """The two-view MI estimate on a fixed random subset of the training images, if asked for."""
    if not cfg.train.mi_every:
        return None
    train = splits.train
    g = torch.Generator().manual_seed(0)
    images = train.subset(torch.randperm(len(train), generator=g)[: cfg.train.mi_images])
    return MIMonitor(images, cfg.augment, cfg.train.mi_every, FitSettings())


class Throughput(L.Callback):
    """Training throughput and the share of time spent waiting for data, per epoch.

    Logs ``train/images_per_sec`` (source images per second of wall-clock time between the first
    and the last batch of the epoch: steps and the waits for data between them; the monitors'
    time at the epoch's end is excluded) and ``train/data_wait`` (the share of that time spent
    waiting for the next batch: near 0 when the loader keeps up, the fraction lost otherwise).
    """

    def __init__(self) -> None:
        self.images = 0
        self.step_seconds = 0.0
        self.wait_seconds = 0.0
        self._start = 0.0
        self._last_end: float | None = None
        self.last: float | None = None
        self.data_wait: float | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Start counting the epoch."""
        self._last_end = None  # the wait for an epoch's first batch is loader start-up

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        """Start timing a step; the time since the last step was a wait for data."""
        self._start = time.perf_counter()
        if self._last_end is not None:
            self.wait_seconds += self._start - self._last_end

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        """Stop timing the step and count its images."""
        self._last_end = time.perf_counter()
        self.step_seconds += self._last_end - self._start
        self.images += len(batch.indices) * trainer.world_size

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Log the epoch's throughput and data-wait share."""
        self._finish(pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Report a run stopped inside an epoch."""
        if self.images:  # a run stopped inside an epoch (max_steps, max_minutes)
            self._finish(None)

    def _finish(self, pl_module: L.LightningModule | None) -> None:
        seconds = self.step_seconds + self.wait_seconds
        if seconds > 0:
            self.last = self.images / seconds
            self.data_wait = self.wait_seconds / seconds
            if pl_module is not None:
                pl_module.log("train/images_per_sec", self.last, rank_zero_only=True)
                pl_module.log("train/data_wait", self.data_wait, rank_zero_only=True)
        self.images, self.step_seconds, self.wait_seconds = 0, 0.0, 0.0
