"""The run's loggers: CSV, TensorBoard, Weights & Biases and MLflow, through Lightning.

``train.loggers`` (``--loggers`` for fine-tuning and distillation) picks them; CSV and TensorBoard
by default, W&B and MLflow with the optional extras ``siamkit[wandb]`` and ``siamkit[mlflow]``.
Every logger gets the same three things:

1. the run's whole config, flattened (``optim.base_lr``), once at the start (:class:`RunInfo`);
   TensorBoard's HParams tab lists it beside the run's headline metrics (the loss, the kNN
   top-1), whose latest values it reads from the scalars the run logs anyway;
2. every metric the run logs, at each logging step and epoch end;
3. the learning rate of every parameter group, ``lr/<group>`` (SimSiam's ``lr/encoder`` and
   ``lr/predictor``), in the same row as the step's loss (:class:`LearningRates`).

Where they write, by default inside the run folder: ``metrics.csv``, ``tensorboard/``,
``wandb/`` and ``mlruns/`` (a local MLflow file store). A resumed run goes on in the same W&B
and MLflow runs: their ids are kept in the run folder's ``loggers.json``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import lightning as L
from lightning.pytorch.loggers import Logger, MLFlowLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from siamkit.config import LOGGER_NAMES, check_loggers
from siamkit.errors import ConfigError
from siamkit.safe_io import atomic_write_text
from siamkit.train.resume import ContinuedCSVLogger
from siamkit.train.schedules import group_name

#: The file in the run folder that keeps the W&B and MLflow run ids for a resumed run.
RUN_IDS_FILE = "loggers.json"

#: The package each optional logger needs (the extra of the same name installs it).
_PACKAGES = {"wandb": "wandb", "mlflow": "mlflow"}


@dataclass
class LogSettings:
    """What a run logs, and where.

    Attributes:
        loggers: Names from :data:`siamkit.config.LOGGER_NAMES`.
        project: The W&B project and the MLflow experiment.
        run_name: The run's name in W&B and MLflow; ``None``: the run folder's name.
        wandb_offline: Log W&B offline; otherwise W&B's own mode (``WANDB_MODE``, or online).
        mlflow_tracking_uri: ``None``: ``MLFLOW_TRACKING_URI``, else ``file:<run>/mlruns``.
        hparams: The run's config, flattened (``{"optim.base_lr": 0.05, ...}``).
        summary_metrics: The metrics TensorBoard's HParams tab shows beside the config.
    """

    loggers: list[str] = field(default_factory=lambda: ["csv", "tensorboard"])
    project: str = "siamkit"
    run_name: str | None = None
    wandb_offline: bool = False
    mlflow_tracking_uri: str | None = None
    hparams: dict[str, Any] = field(default_factory=dict)
    summary_metrics: tuple[str, ...] = ("train/loss",)

    def check(self) -> None:
        """Refuse unknown loggers, and loggers whose package is not installed.

        Raises:
            ConfigError: The message names the valid loggers, or the pip command.
        """
        check_loggers(self.loggers, "loggers")
        for name in self.loggers:
            package = _PACKAGES.get(name)
            if package and importlib.util.find_spec(package) is None:
                raise ConfigError(
                    f"the {name} logger needs the {package} package, which is not installed: "
                    f"pip install 'siamkit[{name}]' (or drop {name} from the loggers; "
                    f"valid loggers: {', '.join(LOGGER_NAMES)})"
                )


def build_loggers(settings: LogSettings, out: Path, resume_step: int | None) -> list[Logger]:
    """The loggers of ``settings`` writing into the run folder ``out``.

    Args:
        settings: What to log, and where.
        out: The run folder.
        resume_step: The global step of the checkpoint being resumed (``metrics.csv`` keeps
            the rows before it, W&B and MLflow go on in the runs of ``loggers.json``);
            ``None`` for a fresh run.
    """
    ids = _saved_run_ids(out) if resume_step is not None else {}
    name = settings.run_name or Path(os.path.abspath(out)).name
    made: list[Logger] = []
    for kind in settings.loggers:
        if kind == "csv":
            made.append(ContinuedCSVLogger(str(out), resume_step))
        elif kind == "tensorboard":
            made.append(HParamsTensorBoardLogger(str(out), settings.summary_metrics))
        elif kind == "wandb":
            mode = {"mode": "offline"} if settings.wandb_offline else {}
            made.append(
                FinishingWandbLogger(
                    name=name, save_dir=str(out), project=settings.project, id=ids.get(kind), **mode
                )
            )
        elif kind == "mlflow":
            uri = mlflow_tracking_uri(settings.mlflow_tracking_uri, out)
            made.append(
                ScopedMLFlowLogger(
                    experiment_name=settings.project,
                    run_name=name,
                    tracking_uri=uri,
                    run_id=_existing_mlflow_run(uri, ids.get(kind)),
                )
            )
    return made


def mlflow_tracking_uri(configured: str | None, out: Path) -> str:
    """The MLflow store: ``configured``, else ``MLFLOW_TRACKING_URI``, else ``<out>/mlruns``.

    MLflow 3 keeps its file store in maintenance mode and refuses it unless
    ``MLFLOW_ALLOW_FILE_STORE`` is set; for a file store this process sets it, unless the user
    has (a database store, ``sqlite:///...``, needs the full ``mlflow`` package).
    """
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI") or ""
    if not uri:
        uri = Path(os.path.abspath(out / "mlruns")).as_uri()
    if urlparse(uri).scheme in ("", "file"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return uri


def _existing_mlflow_run(uri: str, run_id: str | None) -> str | None:
    """``run_id`` if the store holds it (a resumed run goes on in it), else ``None``."""
    if run_id is None:
        return None
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        MlflowClient(uri).get_run(run_id)
    except MlflowException:
        warnings.warn(
            f"MLflow run {run_id} of {RUN_IDS_FILE} is not in the store {uri}; the resumed run "
            "logs to a new MLflow run",
            stacklevel=2,
        )
        return None
    return run_id


def _saved_run_ids(out: Path) -> dict[str, str]:
    path = out / RUN_IDS_FILE
    if not path.is_file():
        return {}
    try:
        ids = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: str(v) for k, v in ids.items() if v} if isinstance(ids, dict) else {}


class HParamsTensorBoardLogger(TensorBoardLogger):
    """Lightning's TensorBoard logger in ``<run>/tensorboard``, with a populated HParams tab.

    Lightning's writes the hyper-parameters with a placeholder metric (``hp_metric = -1``), or
    without ``default_hp_metric`` not at all. This one names metrics the run logs anyway
    (``summary_metrics``), so the tab shows the config beside their latest values, and no
    made-up scalar is written.

    Args:
        save_dir: The run folder.
        summary_metrics: Tags of scalars the run logs (``train/loss``, ``val/knn_top1``).
    """

    def __init__(self, save_dir: str, summary_metrics: tuple[str, ...]) -> None:
        super().__init__(save_dir, name="tensorboard", version="", default_hp_metric=False)
        self.summary_metrics = summary_metrics

    @rank_zero_only
    def log_hyperparams(
        self, params: Any, metrics: dict[str, Any] | None = None, step: int | None = None
    ) -> None:
        """Keep ``params`` (``hparams.yaml``) and write the HParams summary."""
        super().log_hyperparams(params, metrics, step)
        if metrics is not None or not self.summary_metrics:
            return  # Lightning's own path wrote the summary with the given metrics
        from torch.utils.tensorboard.summary import hparams

        # The plugin takes numbers, strings and booleans; lists and None are shown as text.
        plain = {
            k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in params.items()
        }
        writer = self.experiment._get_file_writer()
        for summary in hparams(plain, dict.fromkeys(self.summary_metrics, 0.0)):
            writer.add_summary(summary)


class FinishingWandbLogger(WandbLogger):
    """Lightning's W&B logger, closing its run when training ends, and clear start-up errors.

    Lightning's leaves the run open, so a second run in the same process (a fine-tuning after a
    pretraining, a notebook) would log into the first one. A failed or interrupted run is
    closed with exit code 1; a resumed one reopens it by its id.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Lightning passes anonymous=None, which wandb >= 0.22 warns about on every run.
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)
        self._finished = False

    @property
    def experiment(self) -> Any:
        """The W&B run, started on first use; W&B's refusal becomes a ConfigError."""
        import wandb

        try:
            return super().experiment
        except wandb.errors.Error as err:
            raise ConfigError(
                f"W&B could not start the run ({err}); log in with `wandb login`, or log "
                "offline with train.wandb_offline=true or WANDB_MODE=offline"
            ) from None

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Finish the W&B run (exit code 0 on success, 1 otherwise)."""
        super().finalize(status)
        if self._experiment is not None and not self._finished:
            self._experiment.finish(exit_code=0 if status == "success" else 1)
            self._finished = True


class ScopedMLFlowLogger(MLFlowLogger):
    """Lightning's MLflow logger, leaving ``MLFLOW_TRACKING_URI`` as it found it.

    Lightning's sets MLflow's tracking URI, and with it the environment variable, to its own
    store; the next run of the process (a fine-tuning after a pretraining, a notebook) would
    take that for the user's setting and log into this run's folder.
    """

    @property
    def experiment(self) -> Any:
        """The MLflow client, the run created (or reopened) on first use."""
        before = os.environ.get("MLFLOW_TRACKING_URI")
        try:
            return super().experiment
        finally:
            if before is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = before


class RunInfo(L.Callback):
    """At the start of training: the run's config to every logger, the run ids to the folder.

    Args:
        hparams: The flattened config.
        out: The run folder (``loggers.json`` goes there).
        resuming: A resumed run: MLflow, whose parameters cannot change, gets only new keys
            (the changed settings are said on the console, and are in ``config.yaml``).
    """

    def __init__(self, hparams: dict[str, Any], out: Path, resuming: bool) -> None:
        self.hparams, self.out, self.resuming = hparams, out, resuming

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Log the config; keep the W&B and MLflow run ids."""
        if not trainer.is_global_zero:
            return
        ids: dict[str, str] = {}
        for logger in trainer.loggers:
            params = self.hparams
            if isinstance(logger, MLFlowLogger):
                # MLflow stores strings, and Lightning's flattening would drop an empty mapping
                # (backbone.timm_kwargs: {}): hand it the text.
                params = {k: str(v) if isinstance(v, dict) else v for k, v in params.items()}
                if self.resuming:
                    run = logger.experiment.get_run(logger.run_id)
                    params = {k: v for k, v in params.items() if k not in run.data.params}
                ids["mlflow"] = str(logger.run_id)
            logger.log_hyperparams(params)
            if isinstance(logger, WandbLogger):
                ids["wandb"] = str(logger.version)
        if ids:
            atomic_write_text(self.out / RUN_IDS_FILE, json.dumps(ids, indent=2) + "\n", "run ids")


class LearningRates(L.Callback):
    """The learning rate of every parameter group, ``lr/<group>``, at every logging step.

    Read at the start of the step, so a row holds the rate that step used beside its loss:
    at step ``s`` of a scheduled group, ``lr x schedule(s)``. Groups are named by
    :func:`~siamkit.train.schedules.group_name`; LARS's two halves of a group share its name
    and rate.
    """

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Log the rates on the steps Lightning writes (no tensor is made on other steps)."""
        if not trainer._logger_connector.should_update_logs:
            return
        for optimizer in trainer.optimizers:
            groups = optimizer.param_groups
            rates = {
                f"lr/{group_name(g, i, len(groups))}": float(g["lr"]) for i, g in enumerate(groups)
            }
            pl_module.log_dict(rates, on_step=True, on_epoch=False)
