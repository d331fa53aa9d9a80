"""Training progress: a bar on a terminal, plain lines in a log file.

A TQDM bar redraws itself with carriage returns, which a terminal turns into one moving line but a
log file keeps as hundreds of updates on one physical line. When the stream the bar writes to
(standard output, as Lightning's :class:`~lightning.pytorch.callbacks.TQDMProgressBar` does) is
not a terminal, :class:`LogLineProgress` takes its place: one line at each epoch's end and, within
a long epoch, at most one line every :data:`EVERY_SECONDS` seconds.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from typing import IO, Any

import lightning as L
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar

#: The longest a long epoch goes without a progress line, in seconds.
EVERY_SECONDS = 30.0

#: The logged metric shown as the epoch's throughput (:class:`~siamkit.train.callbacks.Throughput`).
IMAGES_PER_SEC = "train/images_per_sec"


def is_interactive(stream: IO[str]) -> bool:
    """Whether ``stream`` shows a progress bar as one moving line (a terminal or a notebook).

    A notebook's output is no terminal, yet it renders carriage returns like one, so it keeps the
    bar too.
    """
    try:
        if stream.isatty():
            return True
    except (AttributeError, ValueError):  # no isatty, or the stream is closed
        return False
    return type(stream).__module__.split(".")[0] == "ipykernel"


def progress_callback(stream: IO[str] | None = None) -> ProgressBar:
    """The progress display of a run whose progress goes to ``stream`` (default: standard output).

    Args:
        stream: Where the progress is written.

    Returns:
        Lightning's TQDM bar where ``stream`` is interactive, else :class:`LogLineProgress`.
    """
    if is_interactive(sys.stdout if stream is None else stream):
        return TQDMProgressBar(refresh_rate=1)
    return LogLineProgress(stream=stream)


class LogLineProgress(ProgressBar):
    """Progress as whole lines: one per epoch, and one at most every ``every_seconds`` within one.

    An epoch's line reads ``epoch 3/40 | step 33 | train/loss -0.0521 | val/knn_top1 91.2 |
    180 images/s | 0:00:31``: the epoch of the total, the optimiser steps so far, the metrics
    logged with ``prog_bar=True``, the epoch's throughput where a callback logs
    ``train/images_per_sec``, and the time since training started. A line within an epoch names
    the batch instead of the throughput (``epoch 3/40 | batch 120/500 | ...``). Only global rank
    0 writes; nothing is logged or saved, so metrics and checkpoints are those of a run without a
    progress display.

    Args:
        every_seconds: The longest a long epoch goes without a line.
        stream: Where lines go (default: standard output at the time of writing, where Lightning's
            bar would go).
        clock: Seconds of a monotonic clock (a test gives its own).
    """

    def __init__(
        self,
        every_seconds: float = EVERY_SECONDS,
        stream: IO[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.every_seconds = every_seconds
        self.stream = stream
        self.clock = clock
        self._enabled = True
        self._start = 0.0
        self._last_line = 0.0

    def disable(self) -> None:
        """Write nothing (ranks other than 0; Lightning's tuner while it probes)."""
        self._enabled = False

    def enable(self) -> None:
        """Write again."""
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        """Whether lines are written."""
        return self._enabled

    def print(self, *args: Any, **kwargs: Any) -> None:
        """Print to the stream of the progress lines (Lightning's way to print beside a bar)."""
        kwargs.setdefault("file", self._out())
        print(*args, **kwargs)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Start the clock of the elapsed time and of the lines within epochs."""
        self._start = self._last_line = self.clock()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        """A line when ``every_seconds`` have passed since the last one."""
        if not self._enabled or self.clock() - self._last_line < self.every_seconds:
            return
        total = self.total_train_batches
        if isinstance(total, int) and idx + 1 >= total:
            return  # the epoch's own line follows at once
        done = f"{idx + 1}/{total}" if isinstance(total, int) else f"{idx + 1}"
        self._write(trainer, pl_module, [f"batch {done}"], {})

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The epoch's line, with its throughput if a callback logged it."""
        if not self._enabled:
            return
        rate = trainer.callback_metrics.get(IMAGES_PER_SEC)
        tail = {} if rate is None else {"images/s": float(rate)}
        self._write(trainer, pl_module, [], tail)

    def _write(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        where: list[str],
        tail: Mapping[str, float],
    ) -> None:
        """Write one line: the epoch, ``where`` in it, the step, metrics, ``tail``, the time."""
        epochs = trainer.max_epochs
        epoch = f"epoch {trainer.current_epoch + 1}"
        if epochs is not None and epochs > 0:
            epoch += f"/{epochs}"
        metrics = self.get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)  # the logger's version: the same on every line
        parts = [epoch, *where, f"step {trainer.global_step}"]
        parts += [f"{name} {_number(value)}" for name, value in metrics.items()]
        parts += [f"{_number(value)} {unit}" for unit, value in tail.items()]
        now = self.clock()
        parts.append(_duration(now - self._start))
        self._last_line = now
        out = self._out()
        print(" | ".join(parts), file=out, flush=True)  # a log file shows the line at once

    def _out(self) -> IO[str]:
        # Looked up when writing, not when built: a test's capture or a redirection made after
        # the trainer was built is where the line belongs.
        return sys.stdout if self.stream is None else self.stream


def _number(value: Any) -> str:
    """A metric as a short number, or as it is when not a number.

    Four significant digits (a loss of -0.05213, a top-1 of 91.27); whole numbers from 10,000 on
    (a throughput of 12345, not 1.234e+04).
    """
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{number:.0f}" if abs(number) >= 1e4 else f"{number:.4g}"


def _duration(seconds: float) -> str:
    """``H:MM:SS``."""
    whole = max(0, int(seconds))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"
