"""What a ``siamkit`` command writes when its output goes to a log file.

Progress as whole lines (no carriage returns), none of Lightning's information lines (its
advertisement included), no warnings of the dependencies, and siamkit's own warnings as before.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from siamkit.cli import LIGHTNING_INFO_LOGGERS, main
from siamkit.train.callbacks import CollapseMonitor

SIAMKIT = Path(sys.executable).parent / "siamkit"  # the console script of this environment

TINY = [
    "--recipe", "simsiam/digits",
    "--epochs", "2",
    "--max-steps", "25",  # into the second epoch: a run stopped inside an epoch still ends it
    "--batch-size", "64",
    "--set", "augment.size=16", "backbone.width=0.25", "method.proj_dim=64",
    "method.proj_hidden_dim=64", "method.pred_hidden_dim=16", "train.knn_every=1",
    # A threshold no output stays under: siamkit's collapse warning in every run.
    "train.collapse_threshold=10",
]  # fmt: skip

#: The first line of a warning as Python prints it (``path:line: Category: message``), or as
#: Lightning prints its own (``path:line: message``).
WARNING_LINE = re.compile(r"^(?P<path>\S+\.py):\d+: ")


@pytest.fixture
def logger_levels() -> Iterator[None]:
    """Restore the levels :func:`siamkit.cli.main` sets on Lightning's loggers."""
    names = (*LIGHTNING_INFO_LOGGERS, "lightning", "lightning.pytorch", "lightning.fabric")
    levels = {name: logging.getLogger(name).level for name in names}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess[str]:
    """A short pretraining whose standard output and error are pipes (as into a log file).

    Every warning is turned on (``PYTHONWARNINGS=always``), so that only the command's own
    filters can keep one out.
    """
    tmp = tmp_path_factory.mktemp("logged")
    env = {**os.environ, "SIAMKIT_CACHE": str(tmp / "cache"), "PYTHONWARNINGS": "always"}
    env.setdefault("OMP_NUM_THREADS", "1")
    proc = subprocess.run(
        [str(SIAMKIT), "pretrain", *TINY, "--output", str(tmp / "run")],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def test_a_logged_run_writes_one_progress_line_per_epoch_and_no_carriage_return(logged_run):
    assert "\r" not in logged_run.stdout and "\r" not in logged_run.stderr
    progress = [line for line in logged_run.stdout.splitlines() if line.startswith("epoch ")]
    ends = [line for line in progress if "| batch " not in line]
    assert len(ends) == 2, logged_run.stdout
    assert ends[0].startswith("epoch 1/2 | step ")
    assert ends[1].startswith("epoch 2/2 | step 25 | ")
    assert "val/knn_top1" in ends[1] and "images/s" in ends[1]
    # Any other progress line is one within an epoch, at most one per 30 s of training.
    hours, minutes, seconds = (int(part) for part in ends[1].rsplit(" | ", 1)[1].split(":"))
    assert len(progress) - len(ends) <= (3600 * hours + 60 * minutes + seconds) // 30


def test_a_logged_run_shows_no_lightning_information_line(logged_run):
    out = logged_run.stdout + logged_run.stderr
    for line in ("Tip:", "litlogger", "GPU available", "TPU available", "`Trainer.fit` stopped"):
        assert line not in out


def test_a_logged_run_shows_siamkits_warnings_and_no_dependencys(logged_run):
    origins = [
        m["path"] for line in logged_run.stderr.splitlines() if (m := WARNING_LINE.match(line))
    ]
    assert origins, logged_run.stderr  # siamkit's collapse warning
    assert all(Path(path).match("siamkit/*/*.py") for path in origins), logged_run.stderr
    assert "the output has collapsed" in logged_run.stderr


def _dependency_warns() -> None:
    """A dependency's deprecation, raised from a module that is not siamkit's."""
    code = 'import warnings\nwarnings.warn("old_api() is deprecated", DeprecationWarning)\n'
    exec(compile(code, "/site-packages/somedep/api.py", "exec"), {"__name__": "somedep.api"})


def test_siamkits_warning_still_shows_and_a_dependencys_deprecation_does_not(logger_levels):
    monitor = CollapseMonitor(threshold=10.0)  # any output is under it: siamkit warns
    module = type("Module", (), {"log": lambda *args, **kwargs: None})()
    trainer = type("Trainer", (), {"is_global_zero": True})()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _dependency_warns()
        assert [str(w.message) for w in caught] == ["old_api() is deprecated"]  # shown before
        caught.clear()
        assert main(["recipes"]) == 0  # the command's filters
        _dependency_warns()
        monitor.on_train_batch_end(trainer, module, {"embedding": torch.randn(8, 4)}, None, 0)
        monitor.on_train_epoch_end(trainer, module)
    assert len(caught) == 1
    assert "the output has collapsed" in str(caught[0].message)
    assert caught[0].filename.endswith("callbacks.py")


def test_lightning_information_lines_stay_hidden_after_lightning_is_imported(
    logger_levels, capfd: pytest.CaptureFixture[str]
):
    import lightning as L
    from lightning_utilities.core import rank_zero

    assert main(["recipes"]) == 0
    capfd.readouterr()
    # What importing Lightning does to its package loggers, after the command line is read.
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.INFO)
    assert not rank_zero.log.isEnabledFor(logging.INFO)
    L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    printed = "".join(capfd.readouterr())
    assert "Tip:" not in printed and "GPU available" not in printed
