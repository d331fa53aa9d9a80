"""What a run needs to stop anywhere and continue exactly where it stopped.

A checkpoint holds the model, the optimiser and schedule, the method's per-step state (EMA
targets, queues, per-image tables are buffers of the model), the loader's position
(:class:`~siamkit.data.loader.ResumableLoader`) and, from the callbacks here, the random number
generators (:class:`RandomState`) and the monitors' histories. On the CPU with deterministic
kernels a resumed run ends with the weights of the uninterrupted one, bit for bit
(``benchmarks/faults.py`` kills runs at random moments to check it).

Also here: files are written atomically and read without unpickling code
(:class:`SafeCheckpointIO`), a lock keeps a second run out of a run folder (:class:`RunLock`),
SIGTERM (cluster preemption) and Ctrl-C stop at the end of the current step with a checkpoint
(:class:`Interruption`), and ``metrics.csv`` keeps the rows of the run before a resume
(:class:`ContinuedCSVLogger`).
"""

from __future__ import annotations

import contextlib
import csv
import os
import random
import signal
import socket
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities.exceptions import SIGTERMException

from siamkit.config import RunConfig
from siamkit.errors import ConfigError, OutputError
from siamkit.safe_io import (
    atomic_torch_save,
    process_alive,
    remove_stale_temporaries,
    safe_torch_load,
)
from siamkit.strict import flat_dict

#: Name of the last checkpoint of a run, the one ``--resume RUN`` continues from.
LAST = "last.ckpt"


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O, atomic in the checkpoint's own folder, loading weights only."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        """Write to a temporary file beside ``path``, sync it, rename it over ``path``."""
        atomic_torch_save(checkpoint, path, "checkpoint")

    def load_checkpoint(
        self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """``torch.load(weights_only=True)``: a crafted file cannot run code."""
        loaded: dict[str, Any] = safe_torch_load(path)
        return loaded


class RandomState(L.Callback):
    """Saves and restores every random number generator a step draws from.

    torch's CPU generator (views are drawn from it), every CUDA device's, NumPy's and Python's;
    restored when a checkpoint is loaded, after the run's own seeding, so the resumed steps draw
    what the uninterrupted run drew.
    """

    def state_dict(self) -> dict[str, Any]:
        """The generators' states (NumPy's as plain numbers, so weights-only loading reads it)."""
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": {
                "kind": kind,
                "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                "pos": int(pos),
                "has_gauss": int(has_gauss),
                "gauss": float(gauss),
            },
            "python": _python_state_to_plain(random.getstate()),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Set every generator to the saved state."""
        torch.set_rng_state(state["torch"])
        n = state["numpy"]
        keys = n["keys"].numpy().astype(np.uint32)
        np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["gauss"]))
        random.setstate(_python_state_from_plain(state["python"]))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


def _python_state_to_plain(state: Any) -> list[Any]:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _python_state_from_plain(state: list[Any]) -> tuple[Any, ...]:
    version, internal, gauss = state
    return version, tuple(internal), gauss


class Interruption(L.Callback):
    """SIGTERM and Ctrl-C stop training at the end of the current step, with a checkpoint.

    Lightning turns SIGTERM into a stop at the next step boundary (and, on SLURM, a requeue);
    the first Ctrl-C is made to do the same (a second one interrupts at once). On that stop the
    run is saved to ``last.ckpt`` with its loader position, so ``--resume`` continues at the
    next step.

    Args:
        folder: The run's ``checkpoints`` folder.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.stopped_at: int | None = None
        self._previous: Any = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Route the first Ctrl-C to Lightning's step-boundary stop."""
        connector = trainer._signal_connector

        def first_interrupt(signum: int, frame: Any) -> None:
            connector.received_sigterm = True
            signal.signal(signal.SIGINT, self._previous or signal.default_int_handler)

        try:
            self._previous = signal.signal(signal.SIGINT, first_interrupt)
        except ValueError:  # not the main thread (notebooks, some launchers): keep Ctrl-C as is
            self._previous = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Give Ctrl-C back."""
        self._restore()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        """On the stop SIGTERM or Ctrl-C asked for, save a resumable checkpoint."""
        self._restore()
        if isinstance(exception, SIGTERMException):
            trainer.save_checkpoint(self.folder / LAST)
            self.stopped_at = trainer.global_step

    def _restore(self) -> None:
        if self._previous is not None:
            with contextlib.suppress(ValueError):  # not the main thread
                signal.signal(signal.SIGINT, self._previous)
            self._previous = None


class ContinuedCSVLogger(CSVLogger):
    """Lightning's CSV logger, but a resumed run appends to ``metrics.csv``.

    Rows the interrupted run logged after its checkpoint are dropped (they are logged again), so
    the file holds every step once. A fresh run starts a new file.

    Args:
        save_dir: The run folder.
        resume_step: The global step of the checkpoint being resumed; ``None`` for a fresh run.
    """

    def __init__(self, save_dir: str, resume_step: int | None) -> None:
        super().__init__(save_dir, name="", version="")
        self.resume_step = resume_step

    @property
    def experiment(self) -> ExperimentWriter:
        """The writer, created once, keeping the earlier rows of a resumed run."""
        if self._experiment is None:
            self._experiment = _ContinuedWriter(self.log_dir, self.resume_step)
        assert isinstance(self._experiment, ExperimentWriter)  # hparams.yaml too (Lightning's)
        return self._experiment


class _ContinuedWriter(ExperimentWriter):
    def __init__(self, log_dir: str, resume_step: int | None) -> None:
        self.resume_step = resume_step
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        if self.resume_step is None:  # a fresh run (--overwrite): a new history
            path.unlink()
            return
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            keys = list(reader.fieldnames or [])
            rows = [r for r in reader if _before(r, self.resume_step)]
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
        self.metrics_keys = keys


def _before(row: dict[str, str], step: int) -> bool:
    """Whether a metrics row was logged before a checkpoint at ``step``.

    Those are the per-step rows of earlier steps, and the epoch rows logged at that step. A
    per-step row holds the step's loss (``train/loss``, or ``train/loss_step`` of fine-tuning
    and distillation) or its learning rates (``lr/<group>``).
    """
    logged = int(row.get("step") or 0)
    per_step = any(
        value and (key in ("train/loss", "train/loss_step") or key.startswith("lr/"))
        for key, value in row.items()
    )
    return logged < step or (logged == step and not per_step)


#: Settings a resumed run may change (applied from the resumed step on, and said); every other
#: difference but the run folder is said too. The architecture and the method are checked by
#: :func:`~siamkit.checkpoints.read_checkpoint`; these two would not fit the saved optimiser
#: and loader position.
FIXED_ON_RESUME = ("optim.batch_size", "optim.optimizer")


def resume_changes(saved: RunConfig, now: RunConfig) -> list[str]:
    """What differs between the config a checkpoint was trained with and the resumed one.

    Returns:
        One ``key: before -> now`` line per changed setting (the learning rate, epochs, logging,
        monitors, data paths...), the run folder left out (a run folder may be moved).

    Raises:
        ConfigError: A setting that cannot change on resume (:data:`FIXED_ON_RESUME`).
    """
    before, after = flat_dict(saved), flat_dict(now)
    changes = []
    for key in sorted(set(before) | set(after)):
        if before.get(key) == after.get(key) or key == "train.output_dir":
            continue
        if key in FIXED_ON_RESUME:
            raise ConfigError(
                f"{key} cannot change on resume (checkpoint: {before.get(key)!r}, now: "
                f"{after.get(key)!r}): the saved optimiser and loader position belong to it; "
                f"resume with {key}={before.get(key)} or start a new run"
            )
        changes.append(f"{key}: {before.get(key)!r} -> {after.get(key)!r}")
    return changes


class RunLock:
    """A lock file in a run folder: one run at a time writes there.

    A lock whose process has died (same machine) is taken over with a warning; a live one is an
    error naming its process.

    Args:
        folder: The run folder.
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder / ".lock"
        self.held = False

    def acquire(self) -> None:
        """Take the lock.

        Raises:
            OutputError: Another live process holds it.
        """
        me = f"{socket.gethostname()} {os.getpid()}"
        if self.path.is_file():
            owner = self.path.read_text().strip()
            host, _, pid = owner.rpartition(" ")
            if host == socket.gethostname() and pid.isdigit() and process_alive(int(pid)):
                raise OutputError(
                    f"run folder {str(self.path.parent)!r} is in use by process {pid}; wait for "
                    "it to finish, stop it, or choose another --output"
                )
            if host != socket.gethostname():
                raise OutputError(
                    f"run folder {str(self.path.parent)!r} is locked by a run on {host} "
                    f"(process {pid}); if that run has ended, delete {self.path} and run again"
                )
            warnings.warn(
                f"taking over the lock of {self.path.parent}: its process {pid} has ended",
                stacklevel=2,
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(me + "\n")
        self.held = True
        removed = remove_stale_temporaries(self.path.parent / "checkpoints")
        if removed:
            warnings.warn(
                f"removed {removed} temporary file(s) a killed checkpoint write left behind",
                stacklevel=2,
            )

    def release(self) -> None:
        """Give the lock up (only if this process holds it)."""
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False
