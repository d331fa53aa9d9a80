"""Progress in a log file: one line per epoch and at most one per 30 s within an epoch."""

from __future__ import annotations

import io
import itertools
import sys
import types
from typing import Any

import pytest
from lightning.pytorch.callbacks import TQDMProgressBar

from siamkit.train.engine import EngineSettings, build_trainer
from siamkit.train.progress import LogLineProgress, is_interactive, progress_callback


class _Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _trainer(max_epochs: int = 3, batches: int | float = 5) -> Any:
    return types.SimpleNamespace(
        max_epochs=max_epochs,
        current_epoch=0,
        global_step=0,
        num_training_batches=batches,
        loggers=[],
        progress_bar_metrics={"train/loss": 0.0},
        callback_metrics={},
        is_global_zero=True,
    )


def _train(
    bar: LogLineProgress,
    trainer: Any,
    clock: _Clock,
    epochs: int,
    batches: int,
    seconds_per_batch: float,
    images_per_sec: float | None = None,
) -> None:
    """Drive ``bar`` through ``epochs`` epochs as Lightning's fit loop calls it."""
    module = object()
    bar.setup(trainer, module, "fit")  # type: ignore[arg-type]
    bar.on_train_start(trainer, module)  # type: ignore[arg-type]
    for epoch in range(epochs):
        trainer.current_epoch = epoch
        for idx in range(batches):
            clock.now += seconds_per_batch
            trainer.global_step += 1
            trainer.progress_bar_metrics = {"train/loss": -0.01 * trainer.global_step}
            bar.on_train_batch_end(trainer, module, None, None, idx)  # type: ignore[arg-type]
        if images_per_sec is not None:
            trainer.callback_metrics = {"train/images_per_sec": images_per_sec}
        bar.on_train_epoch_end(trainer, module)  # type: ignore[arg-type]


def test_short_epochs_print_one_line_each():
    out, clock = io.StringIO(), _Clock()
    bar = LogLineProgress(stream=out, clock=clock)
    _train(bar, _trainer(max_epochs=3), clock, epochs=3, batches=5, seconds_per_batch=1.0)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines == [
        "epoch 1/3 | step 5 | train/loss -0.05 | 0:00:05",
        "epoch 2/3 | step 10 | train/loss -0.1 | 0:00:10",
        "epoch 3/3 | step 15 | train/loss -0.15 | 0:00:15",
    ]


def test_epoch_line_shows_prog_bar_metrics_and_the_epochs_throughput():
    out, clock = io.StringIO(), _Clock()
    bar = LogLineProgress(stream=out, clock=clock)
    trainer = _trainer(max_epochs=1)
    _train(bar, trainer, clock, epochs=1, batches=2, seconds_per_batch=1.0, images_per_sec=12345.6)
    trainer.progress_bar_metrics = {"train/loss": -0.012345, "val/knn_top1": 91.274, "v_num": 3}
    bar.on_train_epoch_end(trainer, object())  # type: ignore[arg-type]
    last = out.getvalue().splitlines()[-1]
    expected = "epoch 1/1 | step 2 | train/loss -0.01235 | val/knn_top1 91.27 | 12346 images/s"
    assert last == expected + " | 0:00:02"


def _seconds(line: str) -> int:
    """The elapsed time that ends a line (``H:MM:SS``), in seconds."""
    hours, minutes, seconds = line.rsplit(" | ", 1)[1].split(":")
    return 3600 * int(hours) + 60 * int(minutes) + int(seconds)


def test_a_long_epoch_prints_at_most_one_line_per_30_seconds():
    """20 batches of 10 s: lines within the epoch at 30, 60, ..., 180 s, then the epoch's."""
    out, clock = io.StringIO(), _Clock()
    bar = LogLineProgress(stream=out, clock=clock)
    trainer = _trainer(max_epochs=2, batches=20)
    _train(bar, trainer, clock, epochs=1, batches=20, seconds_per_batch=10.0)
    lines = out.getvalue().splitlines()
    within = [line for line in lines if "| batch " in line]
    assert len(within) == 6  # 200 s, one line at most every 30 s
    assert within[0] == "epoch 1/2 | batch 3/20 | step 3 | train/loss -0.03 | 0:00:30"
    assert lines[-1] == "epoch 1/2 | step 20 | train/loss -0.2 | 0:03:20"
    times = [_seconds(line) for line in within]
    assert all(b - a >= 30 for a, b in itertools.pairwise(times))


def test_the_30_second_interval_counts_from_the_last_line_of_any_kind():
    out, clock = io.StringIO(), _Clock()
    bar = LogLineProgress(stream=out, clock=clock)
    # Epochs of 25 s: each epoch's line resets the interval, so none comes within an epoch.
    _train(bar, _trainer(max_epochs=4), clock, epochs=4, batches=5, seconds_per_batch=5.0)
    assert len(out.getvalue().splitlines()) == 4
    assert "batch" not in out.getvalue()


def test_an_epoch_of_unknown_length_names_the_batch_alone():
    out, clock = io.StringIO(), _Clock()
    bar = LogLineProgress(every_seconds=5.0, stream=out, clock=clock)
    trainer = _trainer(max_epochs=1, batches=float("inf"))
    _train(bar, trainer, clock, epochs=1, batches=1, seconds_per_batch=6.0)
    assert out.getvalue().splitlines()[0].startswith("epoch 1/1 | batch 1 | step 1 |")


def test_other_ranks_write_nothing():
    out, clock = io.StringIO(), _Clock()
    bar = LogLineProgress(stream=out, clock=clock)
    trainer = _trainer()
    trainer.is_global_zero = False
    _train(bar, trainer, clock, epochs=2, batches=5, seconds_per_batch=40.0)
    assert out.getvalue() == ""
    assert not bar.is_enabled


def test_a_terminal_keeps_the_bar_and_a_file_gets_lines():
    assert isinstance(progress_callback(_Terminal()), TQDMProgressBar)
    assert isinstance(progress_callback(io.StringIO()), LogLineProgress)
    assert is_interactive(_Terminal()) and not is_interactive(io.StringIO())


def test_the_default_stream_is_standard_output_when_written(capsys: pytest.CaptureFixture[str]):
    clock = _Clock()
    bar = LogLineProgress(clock=clock)
    _train(bar, _trainer(max_epochs=1), clock, epochs=1, batches=1, seconds_per_batch=1.0)
    assert capsys.readouterr().out == "epoch 1/1 | step 1 | train/loss -0.01 | 0:00:01\n"


@pytest.mark.parametrize(
    ("progress_bar", "terminal", "expected"),
    [(True, True, TQDMProgressBar), (True, False, LogLineProgress), (False, True, type(None))],
)
def test_the_trainer_shows_a_bar_on_a_terminal_and_lines_elsewhere(
    monkeypatch: pytest.MonkeyPatch, progress_bar: bool, terminal: bool, expected: type
):
    monkeypatch.setattr(sys, "stdout", _Terminal() if terminal else io.StringIO())
    settings = EngineSettings(None, epochs=1, accelerator="cpu", progress_bar=progress_bar)
    trainer = build_trainer(settings, [])
    assert type(trainer.progress_bar_callback) is expected


def test_the_last_batch_of_an_epoch_leaves_its_line_to_the_epoch():
    """An epoch of 3 batches of 40 s: a line after batches 1 and 2, none after batch 3, whose
    line would only repeat the epoch's that follows at once."""
    out, clock = io.StringIO(), _Clock()
    bar = LogLineProgress(stream=out, clock=clock)
    _train(
        bar, _trainer(max_epochs=1, batches=3), clock, epochs=1, batches=3, seconds_per_batch=40.0
    )
    lines = out.getvalue().splitlines()
    assert [line.split(" | ")[1] for line in lines] == ["batch 1/3", "batch 2/3", "step 3"]
