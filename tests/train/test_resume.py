"""Resume: a run stopped anywhere continues exactly, keeps its history, takes new settings where
they may change, and its files are safe (atomic writes, weights-only loading, a run lock)."""

from __future__ import annotations

import csv
import errno
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from siamkit import safe_io
from siamkit.checkpoints import read_checkpoint
from siamkit.data.datasets import Splits, load_digits
from siamkit.errors import CheckpointError, ConfigError, OutputError, TrainingInterrupted
from siamkit.safe_io import DiskFullError, atomic_torch_save
from siamkit.train import pretrain
from siamkit.train.loop import PretrainModule
from siamkit.train.resume import RunLock
from tests.train.test_loop import small_config

pytestmark = pytest.mark.filterwarnings("ignore:.*exists and is not empty.*")

#: Two epochs of 22 steps, a checkpoint every 4 steps, the kNN monitor every epoch.
RUN = ("train.epochs=2", "train.checkpoint_every_steps=4", "train.knn_every=1")


@pytest.fixture(scope="module")
def splits() -> Splits:
    return load_digits(32)


def _stop_at(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """Make the run receive SIGTERM's stop request at ``step`` (as a cluster preemption)."""
    original = PretrainModule.on_train_batch_end

    def stopping(self, outputs, batch, idx):  # type: ignore[no-untyped-def]
        original(self, outputs, batch, idx)
        if self.global_step == step:
            self.trainer._signal_connector.received_sigterm = True

    monkeypatch.setattr(PretrainModule, "on_train_batch_end", stopping)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(run).state_dict


@pytest.fixture(scope="module")
def whole(tmp_path_factory, splits) -> tuple[Path, dict]:
    """The uninterrupted run: its folder and results."""
    out = tmp_path_factory.mktemp("whole") / "run"
    pretrain(small_config(out, *RUN), splits=splits)
    return out, json.loads((out / "results.json").read_text())


def test_a_run_stopped_mid_epoch_resumes_bit_for_bit(whole, splits, tmp_path, monkeypatch):
    """SIGTERM at step 27 (inside epoch 2): a checkpoint is saved and the run exits with a
    message; resumed, it ends with every tensor of the uninterrupted run, and its history,
    metrics and results are complete."""
    reference, expected = whole
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        _stop_at(m, 27)
        with pytest.raises(TrainingInterrupted, match=r"stopped at step 27.*--resume"):
            pretrain(small_config(out, *RUN), splits=splits)
    assert read_checkpoint(out).global_step == 27
    pretrain(small_config(out, *RUN), resume=str(out), splits=splits)
    mine, theirs = _weights(out), _weights(reference)
    assert mine.keys() == theirs.keys()
    different = [k for k in mine if not torch.equal(mine[k], theirs[k])]
    assert not different, different
    results = json.loads((out / "results.json").read_text())
    assert results["knn_history"] == expected["knn_history"] and len(results["knn_history"]) == 2
    assert results["knn_top1"] == expected["knn_top1"]
    assert results["collapse_std"] == expected["collapse_std"]
    with (out / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    steps = [int(r["step"]) for r in rows if r["train/loss"]]
    assert steps == sorted(set(steps)) == [9, 19, 29, 39]  # every logged step once


def test_resuming_a_finished_run_reports_its_whole_history(whole, splits, tmp_path):
    reference, expected = whole
    copy = tmp_path / "moved"
    shutil.copytree(reference, copy)  # a moved run folder resumes into its own last.ckpt
    pretrain(small_config(copy, *RUN), resume=str(copy), splits=splits)
    results = json.loads((copy / "results.json").read_text())
    assert results["knn_history"] == expected["knn_history"]
    assert results["collapse_std"] == expected["collapse_std"]
    assert not list((copy / "checkpoints").glob("last-v*.ckpt"))


def test_a_new_learning_rate_on_resume_is_applied_and_said(whole, splits, tmp_path, capsys):
    """The NaN message's advice works: the optimiser trains on at the new rate."""
    reference, _ = whole
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    cfg = small_config(out, "train.epochs=3", "optim.base_lr=0.001", *RUN[1:])
    pretrain(cfg, resume=str(out), splits=splits)
    err = capsys.readouterr().err
    assert "resumed with optim.base_lr: 0.05 -> 0.001" in err
    assert "resumed with train.epochs: 2 -> 3" in err
    raw = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    (scheduler,) = raw["lr_schedulers"]
    assert scheduler["base_lrs"] == [pytest.approx(cfg.optim.lr)] * len(scheduler["base_lrs"])


def test_settings_the_saved_optimiser_depends_on_cannot_change_on_resume(whole, splits):
    reference, _ = whole
    with pytest.raises(ConfigError, match=r"optim\.batch_size cannot change on resume"):
        pretrain(small_config(reference, *RUN, "optim.batch_size=32"), resume=str(reference))


def test_a_crafted_checkpoint_is_not_executed(tmp_path):
    """A pickle whose loading would run a command is refused before anything runs."""
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.system, (f"touch {marker}",))

    crafted = tmp_path / "crafted.ckpt"
    crafted.write_bytes(pickle.dumps({"siamkit_config": {}, "state_dict": Payload()}))
    torch_like = tmp_path / "crafted-torch.ckpt"
    torch.save({"state_dict": Payload()}, torch_like)
    for path in (crafted, torch_like):
        with pytest.raises(CheckpointError, match=r"not loaded|cannot be read"):
            read_checkpoint(path)
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "siamkit"),
            "eval",
            "knn",
            "--checkpoint",
            str(torch_like),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == CheckpointError.exit_code and "Traceback" not in proc.stderr
    assert not marker.exists()


def test_a_full_disk_during_a_save_keeps_the_earlier_file(tmp_path, monkeypatch):
    """The temporary file is removed, the earlier checkpoint is intact, the error says why."""
    path = tmp_path / "ckpt" / "last.ckpt"
    atomic_torch_save({"a": torch.ones(3)}, path)

    def full(obj, f):  # type: ignore[no-untyped-def]
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(DiskFullError, match="no space left"):
        atomic_torch_save({"a": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(3))
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]


def test_the_temporary_file_lives_beside_the_destination(tmp_path, monkeypatch):
    """Whatever TMPDIR is, the write goes to the destination's folder (an atomic rename)."""
    monkeypatch.setenv("TMPDIR", str(tmp_path / "elsewhere"))
    seen = []
    real = safe_io.os.replace

    def spy(src, dst):  # type: ignore[no-untyped-def]
        seen.append(Path(src).parent)
        real(src, dst)

    monkeypatch.setattr(safe_io.os, "replace", spy)
    atomic_torch_save({"a": 1}, tmp_path / "run" / "x.ckpt")
    assert seen == [tmp_path / "run"]


def test_a_second_run_on_a_locked_folder_is_refused_and_a_stale_lock_taken_over(tmp_path):
    folder = tmp_path / "run"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        folder.mkdir()
        (folder / ".lock").write_text(f"{os.uname().nodename} {live.pid}\n")
        with pytest.raises(OutputError, match=f"in use by process {live.pid}"):
            RunLock(folder).acquire()
    finally:
        live.kill()
        live.wait()
    lock = RunLock(folder)
    with pytest.warns(UserWarning, match="taking over the lock"):
        lock.acquire()
    assert (folder / ".lock").read_text().split()[-1] == str(os.getpid())
    lock.release()
    assert not (folder / ".lock").exists()
