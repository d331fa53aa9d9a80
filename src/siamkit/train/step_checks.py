"""The checks of every training step: unreadable images and a non-finite loss, on every process.

A problem that only one process of a multi-process run sees (an unreadable image under
``--strict`` in its part of the data, a folder part with no readable image, a NaN loss of its
batch) must stop every process: a process that raised alone would leave the others waiting in
the next collective (the gradient all-reduce, a gathered loss) until the process group's
timeout. So a process notes its problem, runs its step as usual, and at one point after the
loss all processes exchange their problems (one small all-reduce, where the loss check already
reads the loss on the host) and stop together, each with the error of the kind found; the
process that found it names the file or the value.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from siamkit import distributed
from siamkit.data.loader import Batch
from siamkit.errors import DataError, SiamkitError, TrainingDivergedError

#: A run stops with a data error when this many images in a row from its start (or its whole
#: first epoch, if shorter) could not be decoded: the data holds no readable image.
NO_READABLE_AFTER = 512

#: The kinds of problem, in the order they are exchanged between processes.
_KINDS = ("unreadable under --strict", "no readable image", "non-finite loss")


class StepChecks:
    """What a training step checks, with the counts it keeps between steps.

    Args:
        strict: ``data.strict``: an unreadable image stops the run.
        steps_per_epoch: Steps of this process per epoch (bounds the "no readable image" wait).
        describe: Names image ``i`` in messages (its file).
    """

    def __init__(
        self, strict: bool, steps_per_epoch: int, describe: Callable[[int], str] | None
    ) -> None:
        self.strict = strict
        self.steps_per_epoch = steps_per_epoch
        self.describe = describe or (lambda i: f"image {i}")
        #: Unreadable images skipped in the current epoch (a warning at its end).
        self.unreadable = 0
        #: Images read before the first readable one (``None`` once one was readable).
        self.seen_before_readable: int | None = 0
        self._problems: dict[int, str] = {}

    def note_batch(self, batch: Batch) -> None:
        """Count the batch's unreadable images; note a problem (raised by :meth:`stop_if_any`).

        Streamed and sharded images are decoded as they are read, so a folder where no image
        is readable is found here: a run whose first :data:`NO_READABLE_AFTER` images (or its
        whole first epoch, if shorter) were all unreadable stops rather than train on
        stand-ins (zeros). The memory storage finds it before training.
        """
        if not bool(batch.unreadable.any()):
            self.seen_before_readable = None
            return
        bad = batch.indices[batch.unreadable].tolist()
        if self.seen_before_readable is not None:
            if not bool(batch.unreadable.all()):
                self.seen_before_readable = None
            else:
                self.seen_before_readable += len(bad)
                limit = min(NO_READABLE_AFTER, self.steps_per_epoch * len(batch.unreadable))
                if self.seen_before_readable >= limit:
                    self._problems[1] = (
                        f"none of the first {self.seen_before_readable} images read could be "
                        f"decoded (e.g. {self.describe(bad[0])}): the data holds no readable "
                        "image; check the files (corrupt, or not images) and --data"
                    )
        if self.strict:
            self._problems[0] = (
                f"unreadable image {self.describe(bad[0])}; remove or replace it, or drop "
                "--strict to skip unreadable images with a warning"
            )
        self.unreadable += len(bad)

    def stop_if_any(self, loss: torch.Tensor, epoch: int, step: int) -> None:
        """Raise, on every process, the first problem any process noted at this step.

        Args:
            loss: This process's loss of the step (checked for NaN and inf).
            epoch: The epoch, from 1, for messages.
            step: The global step, for messages.

        Raises:
            DataError: An unreadable image under ``--strict``, or no readable image.
            TrainingDivergedError: A NaN or infinite loss.
        """
        finite = torch.isfinite(loss.detach())
        if not finite:
            self._problems[2] = (
                f"the loss became {loss.item()} at epoch {epoch}, step {step}; training stopped"
            )
        flags = torch.tensor([float(k in self._problems) for k in range(len(_KINDS))])
        if distributed.is_distributed():
            flags = flags.to(loss.device)
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
        found = [k for k, v in enumerate(flags.tolist()) if v > 0]
        if not found:
            return
        kind = found[0]
        error: type[SiamkitError] = TrainingDivergedError if kind == 2 else DataError
        message = self._problems.get(kind) or (
            f"another process of this run stopped on its part of the data or its loss "
            f"({_KINDS[kind]}, at step {step}); its message names the cause"
        )
        self._problems.clear()
        raise error(message)
