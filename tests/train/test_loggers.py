"""The loggers: the run's config, its loss and its learning rates reach CSV, TensorBoard, W&B
and MLflow, each read back from its own files; a resumed run goes on in the same W&B and MLflow
runs; a logger without its package is refused before anything is written.

W&B runs offline and MLflow on a file store in the test's folder, with their telemetry off:
nothing here touches the network. A short digits run of 6 (or 8) steps, logged every 2 steps.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from siamkit.config import RunConfig
from siamkit.data.datasets import Splits, load_digits
from siamkit.errors import ConfigError, TrainingInterrupted
from siamkit.strict import flat_dict
from siamkit.train import pretrain
from siamkit.train.loggers import RUN_IDS_FILE, LogSettings, build_loggers, mlflow_tracking_uri
from tests.train.test_loop import small_config
from tests.train.test_resume import _stop_at

pytestmark = pytest.mark.filterwarnings("ignore:.*exists and is not empty.*")

ALL = "train.loggers=[csv,tensorboard,wandb,mlflow]"
EVERY = 2  # train.log_every_n_steps: rows at steps 1, 3, 5, ...

#: W&B offline, quiet, without git, code, console or system-stats capture; MLflow's and other
#: libraries' usage telemetry off.
OFFLINE = {
    "WANDB_MODE": "offline",
    "WANDB_SILENT": "true",
    "WANDB_CONSOLE": "off",
    "WANDB_DISABLE_GIT": "true",
    "WANDB_DISABLE_CODE": "true",
    "WANDB__DISABLE_STATS": "true",
    "WANDB__DISABLE_MACHINE_INFO": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
}


@pytest.fixture(scope="module")
def splits() -> Splits:
    return load_digits(32)


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    """The environment above, W&B's own folders in a temporary one; its service ended after."""
    wandb = pytest.importorskip("wandb")
    pytest.importorskip("mlflow")
    home = tmp_path_factory.mktemp("wandb-home")
    had_file_store_flag = "MLFLOW_ALLOW_FILE_STORE" in os.environ
    with pytest.MonkeyPatch.context() as m:
        for key, value in OFFLINE.items():
            m.setenv(key, value)
        for key in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
            m.setenv(key, str(home / key.lower()))
        m.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield
        wandb.teardown()
    if not had_file_store_flag:  # set by siamkit for its file store
        os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)


@pytest.fixture(scope="module")
def logged(offline, tmp_path_factory, splits) -> tuple[RunConfig, Path]:
    """One 6-step run with the four loggers."""
    out = tmp_path_factory.mktemp("logs") / "run"
    cfg = small_config(out, ALL, "train.max_steps=6", f"train.log_every_n_steps={EVERY}")
    pretrain(cfg, splits=splits)
    return cfg, out


def scheduled_lr(cfg: RunConfig, step: int, total: int) -> float:
    """SimSiam's cosine decay, ``lr x 0.5 (1 + cos(pi t / T))`` (arXiv:2011.10566, Sec. 4.1),
    per step, as the loggers store it (float32)."""
    return float(np.float32(cfg.optim.lr * (0.5 * (1.0 + math.cos(math.pi * step / total)))))


def fixed_lr(cfg: RunConfig) -> float:
    """SimSiam's predictor keeps the peak rate (Sec. 4.1, Table 1), as stored (float32)."""
    return float(np.float32(cfg.optim.lr))


# --------------------------------------------------------------------------------------------
# Reading each logger's own files
# --------------------------------------------------------------------------------------------
def csv_rows(out: Path) -> list[dict[str, str]]:
    """The per-step rows of metrics.csv (those with a loss)."""
    with (out / "metrics.csv").open() as f:
        return [r for r in csv.DictReader(f) if r["train/loss"]]


def wandb_runs(out: Path) -> list[dict[str, Any]]:
    """Each offline W&B run folder under ``out/wandb``, oldest first, from its ``.wandb`` file.

    The file is W&B's transaction log: LevelDB's log format (32 KiB blocks of records with a
    7-byte header: checksum, length, type full/first/middle/last) after a 7-byte file header,
    each record a ``wandb_internal_pb2.Record``.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    runs = []
    for folder in sorted((out / "wandb").glob("offline-run-*")):
        (log,) = folder.glob("run-*.wandb")
        raw = log.read_bytes()
        assert raw[:4] == b":W&B"
        records, pending, pos = [], b"", 7
        while pos + 7 <= len(raw):
            left = 32768 - pos % 32768
            _, length, kind = struct.unpack("<IHB", raw[pos : pos + 7])
            if left < 7 or (kind == 0 and length == 0):  # block trailer or padding
                pos += left
                continue
            data, pos = raw[pos + 7 : pos + 7 + length], pos + 7 + length
            pending = data if kind in (1, 2) else pending + data
            if kind in (1, 4):  # a whole record, or the last piece of one
                record = pb.Record()
                record.ParseFromString(pending)
                records.append(record)
        run: dict[str, Any] = {"config": {}, "history": [], "exit_code": None}

        def items(entries: Any) -> dict[str, Any]:  # a key with "/" comes as a nested key
            return {e.key or "/".join(e.nested_key): json.loads(e.value_json) for e in entries}

        for r in records:
            what = r.WhichOneof("record_type")
            if what == "run":
                run.update(id=r.run.run_id, name=r.run.display_name, project=r.run.project)
            elif what == "config":
                run["config"].update(items(r.config.update))
            elif what == "history":
                run["history"].append(items(r.history.item))
            elif what == "exit":
                run["exit_code"] = r.exit.exit_code
        runs.append(run)
    return runs


def mlflow_client(out: Path) -> Any:
    from mlflow import MlflowClient

    return MlflowClient((out / "mlruns").resolve().as_uri())


def tensorboard_session(logdir: Path) -> tuple[dict[str, Any], dict[str, tuple[int, float]]]:
    """What TensorBoard's HParams tab shows for the run: its hyper-parameters and the latest
    (step, value) of each metric, from the plugin's own backend (list_session_groups)."""
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider
    from tensorboard.backend.event_processing import plugin_event_multiplexer as em
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import api_pb2, backend_context, list_session_groups

    mux = em.EventMultiplexer()
    mux.AddRunsFromDirectory(str(logdir))
    mux.Reload()
    provider = data_provider.MultiplexerDataProvider(mux, str(logdir))
    tb = base_plugin.TBContext(logdir=str(logdir), multiplexer=mux, data_provider=provider)
    statuses = [api_pb2.STATUS_UNKNOWN, api_pb2.STATUS_SUCCESS, api_pb2.STATUS_RUNNING]
    request = api_pb2.ListSessionGroupsRequest(slice_size=10, allowed_statuses=statuses)
    handler = list_session_groups.Handler(
        context.RequestContext(), backend_context.Context(tb), "", request
    )
    (group,) = handler.run().session_groups
    hparams = {k: getattr(v, str(v.WhichOneof("kind"))) for k, v in group.hparams.items()}
    metrics = {m.name.tag: (m.training_step, m.value) for m in group.metric_values}
    return hparams, metrics


def tensorboard_scalars(logdir: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


# --------------------------------------------------------------------------------------------
# One run, four loggers
# --------------------------------------------------------------------------------------------
def test_metrics_csv_holds_each_groups_scheduled_learning_rate_beside_the_loss(logged):
    cfg, out = logged
    rows = csv_rows(out)
    assert [int(r["step"]) for r in rows] == [1, 3, 5]
    for r in rows:
        assert float(r["lr/encoder"]) == scheduled_lr(cfg, int(r["step"]), 6)
        assert float(r["lr/predictor"]) == fixed_lr(cfg)
    # The config, flattened, in the CSV logger's hparams.yaml.
    assert yaml.safe_load((out / "hparams.yaml").read_text()) == flat_dict(cfg)


def test_tensorboard_hparams_tab_shows_the_config_with_the_runs_metrics(logged):
    cfg, out = logged
    hparams, metrics = tensorboard_session(out / "tensorboard")
    flat = flat_dict(cfg)
    assert set(hparams) == set(flat)
    assert hparams["optim.base_lr"] == cfg.optim.base_lr
    assert hparams["train.max_steps"] == 6
    assert hparams["method.name"] == "simsiam"
    assert hparams["train.loggers"] == str(cfg.train.loggers)  # a list, shown as text
    last = csv_rows(out)[-1]
    assert metrics["train/loss"] == (5, float(last["train/loss"]))
    assert "train/collapse_std" in metrics  # logged at the epoch's end
    lrs = tensorboard_scalars(out / "tensorboard", "lr/encoder")
    assert lrs == [(s, scheduled_lr(cfg, s, 6)) for s in (1, 3, 5)]


def test_wandb_offline_run_holds_the_config_the_loss_and_the_learning_rates(logged):
    cfg, out = logged
    (run,) = wandb_runs(out)
    assert run["id"] == json.loads((out / RUN_IDS_FILE).read_text())["wandb"]
    assert (run["name"], run["project"], run["exit_code"]) == ("run", "siamkit", 0)
    config = {k: v for k, v in run["config"].items() if k != "_wandb"}
    assert config == flat_dict(cfg)
    rows = [h for h in run["history"] if "train/loss" in h]
    expected = [(int(r["step"]), float(r["train/loss"])) for r in csv_rows(out)]
    assert [(h["trainer/global_step"], h["train/loss"]) for h in rows] == expected
    for h in rows:
        assert h["lr/encoder"] == scheduled_lr(cfg, h["trainer/global_step"], 6)
        assert h["lr/predictor"] == fixed_lr(cfg)


def test_mlflow_run_holds_the_config_the_loss_and_the_learning_rates(logged):
    cfg, out = logged
    client = mlflow_client(out)
    run = client.get_run(json.loads((out / RUN_IDS_FILE).read_text())["mlflow"])
    assert (run.info.run_name, run.info.status) == ("run", "FINISHED")
    assert client.get_experiment(run.info.experiment_id).name == "siamkit"
    assert run.data.params == {k: str(v) for k, v in flat_dict(cfg).items()}
    history = client.get_metric_history(run.info.run_id, "train/loss")
    expected = [(int(r["step"]), float(r["train/loss"])) for r in csv_rows(out)]
    assert [(m.step, m.value) for m in history] == expected
    encoder = client.get_metric_history(run.info.run_id, "lr/encoder")
    assert [(m.step, m.value) for m in encoder] == [(s, scheduled_lr(cfg, s, 6)) for s in (1, 3, 5)]
    predictor = client.get_metric_history(run.info.run_id, "lr/predictor")
    assert {m.value for m in predictor} == {fixed_lr(cfg)}


# --------------------------------------------------------------------------------------------
# Resume
# --------------------------------------------------------------------------------------------
def test_a_resumed_run_goes_on_in_the_same_wandb_and_mlflow_runs(
    offline, splits, tmp_path, monkeypatch
):
    """Stopped at step 4 of 8 (SIGTERM) and resumed: one MLflow run and one W&B id (two offline
    folders, the first closed as failed), every step logged once everywhere."""
    out = tmp_path / "run"
    overrides = (ALL, "train.max_steps=8", f"train.log_every_n_steps={EVERY}")
    cfg = small_config(out, *overrides)
    with monkeypatch.context() as m:
        _stop_at(m, 4)
        with pytest.raises(TrainingInterrupted):
            pretrain(cfg, splits=splits)
    ids = json.loads((out / RUN_IDS_FILE).read_text())
    pretrain(small_config(out, *overrides), resume=str(out), splits=splits)
    assert json.loads((out / RUN_IDS_FILE).read_text()) == ids

    steps = [int(r["step"]) for r in csv_rows(out)]
    assert steps == [1, 3, 5, 7]
    runs = wandb_runs(out)
    assert [r["id"] for r in runs] == [ids["wandb"]] * 2
    assert [r["exit_code"] for r in runs] == [1, 0]
    logged = [[h["trainer/global_step"] for h in r["history"] if "train/loss" in h] for r in runs]
    assert logged == [[1, 3], [5, 7]]

    client = mlflow_client(out)
    run = client.get_run(ids["mlflow"])
    assert run.info.status == "FINISHED"
    assert len(client.search_runs([run.info.experiment_id])) == 1
    encoder = client.get_metric_history(ids["mlflow"], "lr/encoder")
    assert [(m.step, m.value) for m in encoder] == [(s, scheduled_lr(cfg, s, 8)) for s in steps]
    assert [s for s, _ in tensorboard_scalars(out / "tensorboard", "train/loss")] == steps


# --------------------------------------------------------------------------------------------
# Settings: W&B's mode, MLflow's store
# --------------------------------------------------------------------------------------------
def test_wandb_is_offline_when_asked_and_else_follows_wandb_mode(offline, tmp_path):
    """``train.wandb_offline`` forces offline; without it nothing is forced, so W&B's own
    ``WANDB_MODE`` decides (the loggers are built, no run is started)."""
    (forced,) = build_loggers(LogSettings(["wandb"], wandb_offline=True), tmp_path, None)
    (own,) = build_loggers(LogSettings(["wandb"]), tmp_path, None)
    assert forced._wandb_init["mode"] == "offline"
    assert "mode" not in own._wandb_init
    assert (own._wandb_init["name"], own._wandb_init["dir"]) == (tmp_path.name, str(tmp_path))


def test_mlflow_store_is_the_config_key_else_the_variable_else_the_run_folder(
    offline, tmp_path, monkeypatch
):
    assert mlflow_tracking_uri(None, tmp_path) == (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking:5000")
    assert mlflow_tracking_uri(None, tmp_path) == "http://tracking:5000"
    assert mlflow_tracking_uri("sqlite:///x.db", tmp_path) == "sqlite:///x.db"


# --------------------------------------------------------------------------------------------
# Errors, and the end of the W&B service
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["wandb", "mlflow"])
def test_a_logger_without_its_package_is_refused_before_anything_is_written(
    name, splits, tmp_path, monkeypatch
):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == name else real(n, *a)
    )
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=rf"pip install 'siamkit\[{name}\]'"):
        pretrain(small_config(out, f"train.loggers=[csv,{name}]"), splits=splits)
    assert not out.exists()


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads Linux's /proc")
def test_no_wandb_process_outlives_the_runs(logged):
    """After W&B's teardown (the fixture's, and at exit) no child process of W&B remains."""
    import wandb

    wandb.teardown()
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():  # the parent's pid
            children.append((stat.parent / "comm").read_text().strip())
    assert not [c for c in children if "wandb" in c], children
