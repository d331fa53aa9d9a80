"""The steps every supervised classifier run shares: fine-tuning, distillation, and the next one.

A run of this kind is six steps, named here once: 1. check the output folder and ``--resume``
before anything is written (:meth:`RunOutput.check`); 2-3. build its data and model (the
protocol's own part); 4. train the model on the engine of pretraining
(:func:`train_classifier`); 5. read the held-out figures on one process (:func:`logits_reader`);
6. write the classifier and its results (:func:`save_run`). A protocol supplies a
:class:`ClassifierJob` (what differs: the model, its loss, its views and loader) and its own
figures; everything else is these functions.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn

from siamkit.config import AugmentConfig
from siamkit.data.loader import ImageData
from siamkit.data.views import Views
from siamkit.supervised.classifier import (
    CLASSIFIER_FILE,
    Classifier,
    ClassifierInfo,
    predict_logits,
    save_classifier,
)
from siamkit.supervised.sgd import (
    RESULTS_FILE,
    LossFn,
    ResumePoint,
    SGDConfig,
    SGDModule,
    check_output,
    check_resume,
    fit,
    steps_per_epoch,
    write_results,
)
from siamkit.train.engine import TrainData


@dataclass(frozen=True)
class RunOutput:
    """Where a run writes and what it resumes, checked before anything is written.

    Attributes:
        folder: The output folder (``None``: the run writes nothing).
        resume: The checkpoint of an interrupted run to continue, read once.
        overwrite: Replace an earlier run's checkpoints in ``folder``.
    """

    folder: Path | None
    resume: ResumePoint | None
    overwrite: bool

    @classmethod
    def check(
        cls,
        output: str | Path | None,
        resume: str | Path | None,
        overwrite: bool,
        inputs: dict[str, str | Path | None],
    ) -> RunOutput:
        """Step 1: refuse a bad output folder or ``--resume``, before anything is written.

        See :func:`check_output` and :func:`check_resume`; ``inputs`` are the run's input flags
        and paths.
        """
        check_output(output, inputs)
        point = None if resume is None else check_resume(resume)
        return cls(None if output is None else Path(output), point, overwrite)


@dataclass
class ClassifierJob:
    """What a supervised protocol trains: the part that differs between protocols.

    Attributes:
        model: The network to train (all of its parameters that require gradients).
        loss_fn: The loss of a batch, given the batch's view function.
        views: The training views (crop + flip).
        loader: The training data of this process.
        num_images: Images an epoch passes over (for the schedule's estimate of its length).
        what: The run's name in messages (``fine-tuning``, ``distillation``).
        config: The run's settings by section, for the loggers.
    """

    model: nn.Module
    loss_fn: LossFn
    views: Views
    loader: TrainData
    num_images: int
    what: str
    config: dict[str, Any]


def train_classifier(
    job: ClassifierJob, cfg: SGDConfig, output: RunOutput
) -> tuple[SGDModule, L.Trainer]:
    """Step 4: train ``job.model`` with ``cfg``'s SGD on the engine of pretraining.

    Returns:
        The trained module (its per-epoch losses) and the trainer (``is_global_zero`` says
        which process reports).
    """
    run = cfg.sgd_run()
    per_epoch = steps_per_epoch(job.num_images, run.batch_size, cfg)
    module = SGDModule(job.model, job.loss_fn, job.views, run, per_epoch, job.what)
    trainer = fit(
        module, job.loader, cfg, output.folder, output.resume, output.overwrite, job.config
    )
    return module, trainer


def logits_reader(
    trainer: L.Trainer, augment: AugmentConfig, cfg: SGDConfig
) -> Callable[[Classifier, ImageData], torch.Tensor]:
    """Step 5: ``read(model, images)``, the ``(N, C)`` logits of centre views.

    In the trainer's precision (bf16 where it trained in bf16) and ``cfg``'s memory format.
    """
    return functools.partial(
        predict_logits,
        augment=augment,
        batch_size=cfg.eval_batch_size,
        bf16=trainer.precision == "bf16-mixed",
        channels_last=cfg.channels_last,
    )


def save_run(
    folder: Path, model: Classifier, info: ClassifierInfo, results: dict[str, Any]
) -> Path:
    """Step 6: the classifier checkpoint and ``results.json`` in ``folder``.

    Returns:
        The classifier checkpoint's path.
    """
    path = save_classifier(folder / CLASSIFIER_FILE, model.cpu(), info)
    write_results(folder / RESULTS_FILE, results)
    return path


__all__ = ["ClassifierJob", "RunOutput", "logits_reader", "save_run", "train_classifier"]
