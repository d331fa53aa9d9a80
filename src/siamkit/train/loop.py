"""The one training loop, for every method, on PyTorch Lightning.

Per step: (1) a batch arrives on the device: whole uint8 images (memory storage) or uint8 view
crops cut by DataLoader workers (stream, shards); (2) the view recipe finishes ``num_views``
batched views; (3-5) the method encodes them, extracts representations, compares them and
returns its loss; (6) the optimiser steps; (7) the method updates its per-step state (EMA,
queues). Methods supply the step; the loop owns precision, memory format, schedule, logging,
checkpoints, resume and the monitors.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

import lightning as L
import torch

from siamkit import runtime
from siamkit.checkpoints import CONFIG_KEY
from siamkit.config import RunConfig
from siamkit.data.loader import Batch, ImageData
from siamkit.data.views import Views
from siamkit.eval.online_probe import OnlineLinearProbe
from siamkit.methods import Method
from siamkit.strict import to_dict
from siamkit.train.cpu_conv import patch_conv_helps, use_patch_grad_convs
from siamkit.train.schedules import StepSchedule, build_optimizer
from siamkit.train.step_checks import StepChecks


class PretrainModule(L.LightningModule):
    """Wraps a method for the Lightning trainer.

    Args:
        cfg: The run config.
        method: The method, built once by the caller (its backbone included).
        steps_per_epoch: Optimiser steps per epoch (an estimate; the loader's real length is
            taken once training starts).
        num_classes: Classes of the online linear probe (``train.online_probe``).
        data: The training images (to name unreadable files in messages).
    """

    def __init__(
        self,
        cfg: RunConfig,
        method: Method,
        steps_per_epoch: int,
        num_classes: int = 0,
        data: ImageData | None = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.method = method
        self.data = data
        # One batched view recipe per view (the method derives them from the run's recipe).
        self.views = Views(method.view_recipes(cfg.augment))
        # Same convolutions, faster weight gradient for small maps on AMX CPUs (see cpu_conv).
        if patch_conv_helps(cfg.train.patch_conv):
            use_patch_grad_convs(self.method)
        warmup = round(cfg.optim.warmup_epochs * steps_per_epoch)
        self.schedule = StepSchedule(self.total_steps_for(steps_per_epoch), warmup)
        self.channels_last = runtime.use_channels_last(cfg.train.channels_last, method.backbone)
        if self.channels_last:
            self.method.to(memory_format=torch.channels_last)
        if cfg.train.compile:
            self.method.backbone.compile()
        # Outside the method and its optimiser: the probe only reads detached features.
        self.probe: OnlineLinearProbe | None = None
        if cfg.train.online_probe:
            width = int(self.method.backbone.num_features)
            self.probe = OnlineLinearProbe(width, num_classes, cfg.train.online_probe_lr)
        describe = data.describe if data is not None else None
        self.checks = StepChecks(cfg.data.strict, steps_per_epoch, describe)
        #: Settings changed on resume (from :func:`~siamkit.train.resume.resume_changes`).
        self.resumed_with: list[str] = []

    def total_steps_for(self, steps_per_epoch: int) -> int:
        """Optimiser steps of the run for ``steps_per_epoch`` (``train.max_steps`` caps it)."""
        total = steps_per_epoch * self.cfg.train.epochs
        return min(total, self.cfg.train.max_steps) if self.cfg.train.max_steps else total

    def training_step(self, batch: Batch, idx: int) -> dict[str, Any]:
        """Views, the method's step and its loss, checked (on every process) for NaN/inf."""
        self.checks.note_batch(batch)  # a problem is raised after the loss, on every process
        # 1. Views, in fp32 whatever the autocast: (B, 3, S_v, S_v) per view.
        with torch.autocast(batch.labels.device.type, enabled=False):
            views = self.views(batch.images)
        if self.channels_last:
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        # 2-5. Encode, project/predict, compare, loss: the method's step.
        out: dict[str, Any] = self.method.training_step(views, batch.indices)
        loss = out["loss"]
        self.checks.stop_if_any(loss, self.current_epoch + 1, self.global_step)
        self.log("train/loss", loss, prog_bar=True)
        for key, value in out.items():  # a method's own scalars, e.g. MINE's bound "mi"
            if key != "loss" and isinstance(value, torch.Tensor) and value.ndim == 0:
                self.log(f"train/{key}", value)
        if self.probe is not None:
            self._update_probe(self.probe, views[0], batch.labels)
        return out

    def _update_probe(
        self, probe: OnlineLinearProbe, view: torch.Tensor, labels: torch.Tensor
    ) -> None:
        """One step of the online probe on backbone features of ``view`` (eval mode, no grad)."""
        backbone = self.method.backbone
        backbone.eval()  # running statistics, as at evaluation; BN buffers stay untouched
        with torch.no_grad():
            h = backbone.forward_features(view)
        backbone.train()
        stats = probe.update(h, labels)
        if stats:
            self.log("train/online_probe_loss", stats["loss"], on_step=False, on_epoch=True)
            self.log("train/online_probe_top1", stats["top1"], on_step=False, on_epoch=True)

    def on_train_start(self) -> None:
        """Take the loader's real length for the schedule; say which BatchNorm runs."""
        # The loader's real length (litdata's per-rank split may drop a few batches).
        batches = self.trainer.num_training_batches
        if isinstance(batches, int) and batches > 0:
            self.schedule.total_steps = self.total_steps_for(batches)
            self.schedule.warmup_steps = round(self.cfg.optim.warmup_epochs * batches)
        if self.resumed_with:
            self._apply_optimiser_settings()
        if self.trainer.world_size > 1 and self.trainer.is_global_zero:
            # Say which BatchNorm the run really has (Lightning converts it for sync_batchnorm).
            n_sync = sum(isinstance(m, torch.nn.SyncBatchNorm) for m in self.method.modules())
            mode = "synchronised across processes" if n_sync else "per process"
            print(f"siamkit: BatchNorm {mode} ({n_sync} SyncBatchNorm layers)", file=sys.stderr)

    def _apply_optimiser_settings(self) -> None:
        """A resumed run trains on with this config's learning rate and weight decay.

        The optimiser and schedule come back from the checkpoint with the saved run's values;
        here the schedule's base learning rate and every group's weight decay are set from
        ``optim``, and the next step's rate follows the schedule from the saved step on.
        """
        optimizer = self.optimizers(use_pl_optimizer=False)
        scheduler = self.lr_schedulers()
        assert isinstance(optimizer, torch.optim.Optimizer)
        assert isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR)  # build_optimizer's
        lr, decay = self.cfg.optim.lr, self.cfg.optim.weight_decay
        scheduler.base_lrs = [lr] * len(optimizer.param_groups)
        lambdas, step = scheduler.lr_lambdas, scheduler.last_epoch
        for group, factor in zip(optimizer.param_groups, lambdas, strict=True):
            group["initial_lr"] = lr
            group["lr"] = lr * factor(step)
            group["weight_decay"] = decay

    def on_train_epoch_start(self) -> None:
        """The method's per-epoch state."""
        self.method.on_epoch_start(self.current_epoch)

    def on_train_epoch_end(self) -> None:
        """Warn about the epoch's unreadable images."""
        if self.checks.unreadable and self.trainer.is_global_zero:
            warnings.warn(
                f"{self.checks.unreadable} unreadable image(s) were skipped in epoch "
                f"{self.current_epoch + 1} (another image of the batch stood in); use --strict "
                "to make this an error",
                stacklevel=1,
            )
        self.checks.unreadable = 0

    def on_train_batch_end(self, outputs: Any, batch: Any, idx: int) -> None:
        """Step 7: the method's per-step state."""
        # 7. Per-step state of the method (EMA targets, queues), with progress in [0, 1].
        self.method.on_step_end(self.global_step / max(1, self.schedule.total_steps))

    def configure_optimizers(self) -> Any:
        """The method's optimiser with the per-step schedule."""
        optimizer, scheduler = build_optimizer(
            self.method.param_groups(), self.cfg.optim, self.schedule
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the run config, so that the checkpoint can be read on its own."""
        checkpoint[CONFIG_KEY] = to_dict(self.cfg)
