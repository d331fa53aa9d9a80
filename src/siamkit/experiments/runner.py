"""Running an experiment: every cell pretrained and measured, finished work kept.

The experiment's folder holds one folder per cell and one per seed below it
(``<cell>/seed-<s>``: a pretraining run folder, resumable like any other, with ``measures.json``
beside its ``results.json``), the experiment's ``results.json``, and the reports. Seeds run in
rounds: every cell's seed 0, then every cell's seed 1, and so on, so that a stopped experiment
has whole rounds. A run whose pretraining finished is not trained again, a measure that was
taken is not taken again, and a run killed in the middle resumes from its ``last.ckpt``, so a
killed experiment continues with ``resume=True`` (``siamkit experiment NAME --resume``); a
later ``--seeds`` larger than before adds seeds to a finished experiment.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from siamkit.data.files import check_folder
from siamkit.errors import ConfigError
from siamkit.experiments.claims import Floors, Outcome, evaluate
from siamkit.experiments.loading import cell_config
from siamkit.experiments.measures import take
from siamkit.experiments.results import CellResult, ExperimentResult
from siamkit.experiments.spec import Cell, Experiment, Measure, ScaleSpec
from siamkit.experiments.statistics import floor_of
from siamkit.safe_io import atomic_write_text
from siamkit.strict import to_dict

if TYPE_CHECKING:
    from siamkit.config import RunConfig
    from siamkit.train import RandomInitKNN

#: Written first into an experiment's folder: what runs there, to refuse another one.
SPEC_FILE = "experiment.json"
#: The measured values of a cell, in its folder.
MEASURES_FILE = "measures.json"
#: Measures read from a pretraining run, as opposed to protocols that train (a probe, ...).
READ_ONLY = ("knn", "knn_gain", "random_init_knn", "collapse_std", "final_loss")


def applies(measure: Measure, cell: Cell) -> bool:
    """Whether ``measure`` is taken of ``cell`` (Gaussian estimates only of Gaussian cells)."""
    return (measure.kind == "gaussian_mi") == (cell.kind == "gaussian_mi")


def paper_values(experiment: Experiment) -> dict[str, dict[str, float]]:
    """The paper's numeric figures: cell name -> measure name -> value (words left out)."""
    return {
        c.name: {k: f.value for k, f in c.paper.items() if isinstance(f.value, float)}
        for c in experiment.cells
    }


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _write_json(path: Path, tree: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(tree, indent=2) + "\n", path.stem)


def _prepare(experiment: Experiment, scale: str, out: Path, resume: bool, overwrite: bool) -> None:
    """Check the folder can hold this experiment, then record what runs there.

    Raises:
        ConfigError: The folder holds another experiment or scale, or this one without
            ``resume`` or ``overwrite``.
    """
    spec = {"name": experiment.name, "scale": scale, "experiment": to_dict(experiment)}
    recorded = _read_json(out / SPEC_FILE)
    if recorded and overwrite:
        shutil.rmtree(out)
    elif recorded and not resume:
        raise ConfigError(
            f"{out} already holds experiment {recorded.get('name')!r} at scale "
            f"{recorded.get('scale')!r}; continue it with --resume, or pass --overwrite to start "
            "again, or choose another --output"
        )
    elif recorded and (recorded.get("name"), recorded.get("scale")) != (experiment.name, scale):
        raise ConfigError(
            f"{out} holds experiment {recorded.get('name')!r} at scale {recorded.get('scale')!r}, "
            f"not {experiment.name!r} at {scale!r}; choose another --output"
        )
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / SPEC_FILE, spec)


def run_experiment(
    experiment: Experiment,
    scale: str = "cpu",
    output: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    data: str | None = None,
    log: Callable[[str], None] | None = None,
    seeds: int | None = None,
) -> ExperimentResult:
    """Pretrain and measure every cell of ``experiment`` at ``scale``, check its claims, report.

    Args:
        experiment: The experiment (:func:`siamkit.experiments.load_experiment`).
        scale: ``cpu``, ``gpu`` or ``paper``.
        output: Its folder (default ``runs/experiments/<name>-<scale>``).
        resume: Continue the experiment in ``output``: finished cells and measures are kept, an
            interrupted cell resumes from its last checkpoint.
        overwrite: Remove what ``output`` holds first.
        data: A data folder in place of the recipes' (e.g. where CIFAR-10 lies).
        log: Where progress lines go (default: standard error).
        seeds: Seeds of every cell, in place of the scale's ``seeds`` (the noise floor's cell
            runs at least its ``floor_seeds``).

    Returns:
        The figures and claims; ``results.json``, ``report.md`` and ``report.html`` in ``output``
        hold the same.

    Raises:
        ConfigError: An unknown scale, a cell whose config is invalid (checked for every cell
            before anything runs), or a folder that holds other work.
    """
    from siamkit.experiments.report import write_reports

    say = log or (lambda line: print(f"siamkit: {line}", file=sys.stderr, flush=True))
    spec = experiment.scale(scale)  # an unknown scale is an error before anything is written
    if seeds is not None and seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {seeds}")
    if data is not None and "://" not in data:
        check_folder(Path(data))  # a missing --data is an error before anything is written
    out = Path(output or Path("runs") / "experiments" / f"{experiment.name}-{scale}")
    cells = experiment.cells_at(scale)
    # Without --seeds a cell runs the scale's seeds, or the seeds it already has if more (a
    # resumed experiment that --seeds once extended keeps them).
    runs = {
        c.name: list(range(seeds_to_run(spec, c, out, seeds))) for c in cells
    }  # fmt: skip
    configs = {
        (c.name, s): cell_config(experiment, c, scale, seed_folder(out, c, s), data, seed=s)
        for c in cells
        if c.kind == "pretrain"
        for s in runs[c.name]
    }
    _prepare(experiment, scale, out, resume, overwrite)
    from siamkit.train import RandomInitKNN  # torch: only once there is something to train

    baselines = RandomInitKNN()  # the cells share their random init: its kNN is read once
    results = {c.name: CellResult(c.name, str(out / c.slug)) for c in cells}
    rounds = max(len(r) for r in runs.values())
    for s in range(rounds):  # every cell's seed 0 first: a stopped experiment has whole rounds
        todo = [c for c in cells if s in runs[c.name]]
        for i, cell in enumerate(todo, 1):
            say(
                f"experiment {experiment.name} ({scale}): seed {s + 1}/{rounds}, cell "
                f"{i}/{len(todo)} {cell.name!r}"
            )
            values, minutes = _run_seed(
                experiment, cell, s, scale, out, configs.get((cell.name, s)), say, baselines
            )
            result = results[cell.name]
            result.seeds.append(s)
            for name, value in values.items():
                result.values.setdefault(name, []).append(value)
            result.minutes += minutes
    outcome = _outcome(experiment, scale, out, list(results.values()), spec)
    _write_json(out / "results.json", outcome.to_json(experiment))
    write_reports(experiment, outcome)
    return outcome


def seeds_to_run(spec: ScaleSpec, cell: Cell, out: Path, seeds: int | None) -> int:
    """How many seeds ``cell`` runs: ``seeds``, else the scale's or the ones kept, if more."""
    if seeds is not None:
        return spec.seeds_of(cell.name, seeds)
    kept = 0
    while (seed_folder(out, cell, kept) / MEASURES_FILE).is_file():
        kept += 1
    return max(spec.seeds_of(cell.name), kept)


def seed_folder(out: Path, cell: Cell, seed: int) -> Path:
    """The folder of ``cell``'s run with ``seed`` in the experiment's folder ``out``."""
    return out / cell.slug / f"seed-{seed}"


def floors(spec: ScaleSpec, cells: list[CellResult]) -> Floors:
    """Each measure's noise floor from the floor cell's seeds (none without a floor cell)."""
    ref = next((c for c in cells if c.name == spec.floor_cell), None)
    if ref is None:
        return {}
    measured = {m: floor_of(v, ref.name) for m, v in ref.values.items()}
    return {m: f for m, f in measured.items() if f is not None}


def _outcome(
    experiment: Experiment, scale: str, out: Path, cells: list[CellResult], spec: ScaleSpec
) -> ExperimentResult:
    """Each claim's verdict on the cells' figures."""
    from siamkit.runtime import machine_summary

    values = {r.name: r.values for r in cells}
    floor = floors(spec, cells)
    claims = [
        evaluate(
            c.check.at(scale), values, paper_values(experiment), experiment.collapse_measure, floor
        )
        if scale in c.scales
        else Outcome("not tested", f"this claim is tested at the {', '.join(c.scales)} scale")
        for c in experiment.claims
    ]
    return ExperimentResult(experiment.name, scale, str(out), cells, claims, machine_summary(),
                            floor)  # fmt: skip


#: A key missing from a saved config.
_ABSENT = object()


def _definition(measure: Measure, cell: Cell, spec: ScaleSpec) -> dict[str, Any]:
    """What ``measure`` of ``cell`` depends on, recorded beside its value."""
    made = to_dict(measure)
    if measure.kind == "gaussian_mi":  # no run config: the estimate's own settings
        made |= {"dim": cell.dim, "rho": cell.rho, "mi_steps": spec.mi_steps,
                 "mi_batch": spec.mi_batch, "mi_infonce_batch": spec.mi_infonce_batch}  # fmt: skip
    return made


def _check_same_measures(
    cell: Cell, folder: Path, store: dict[str, Any], now: dict[str, Any]
) -> None:
    """Refuse to mix a measure taken under another definition with ones taken now.

    Raises:
        ConfigError: A kept value was taken with another definition of its measure.
    """
    made = store.get("made", {})
    differ = [n for n in store.get("values", {}) if n in made and n in now and made[n] != now[n]]
    if differ:
        raise ConfigError(
            f"cell {cell.name!r} in {folder} took {', '.join(differ)} with other settings than "
            "the experiment has now; remove that folder to take them again, or pass --overwrite"
        )


#: Keys added to the config after runs were recorded, with the value that reproduces what those
#: runs did: a saved config without one of them matches a config holding that value. The label
#: rules read the digits and CIFAR-10 folders of the catalogue as before.
_ADDED_SINCE: dict[str, object] = {
    "data.labels": "auto",
    "data.labels_file": None,
    "data.require_labels": False,
}


def _check_same_config(cell: Cell, folder: Path, config: RunConfig) -> None:
    """Refuse to continue a cell that was run with another config than it has now.

    Raises:
        ConfigError: The cell's folder holds a run of another config (the experiment's file
            changed since), naming the keys that differ.
    """
    import yaml

    saved_file = folder / "config.yaml"
    if not saved_file.is_file():
        return
    saved = yaml.safe_load(saved_file.read_text())
    now = to_dict(config)
    differ = [
        f"{section}.{key}"
        for section, keys in now.items()
        for key, value in keys.items()
        if key not in ("output_dir", "progress_bar")
        # A key the saved config lacks was added since: its default may change what runs,
        # unless it is one whose default reads the earlier runs' data as they read it.
        and saved.get(section, {}).get(key, _ADDED_SINCE.get(f"{section}.{key}", _ABSENT)) != value
    ]
    if differ:
        raise ConfigError(
            f"cell {cell.name!r} in {folder} was run with another config (differs in "
            f"{', '.join(differ)}); remove that folder to run the cell again, or pass --overwrite"
        )


def _run_seed(
    experiment: Experiment,
    cell: Cell,
    seed: int,
    scale: str,
    out: Path,
    config: RunConfig | None,
    say: Callable[[str], None],
    baselines: RandomInitKNN,
) -> tuple[dict[str, float], float]:
    """Pretrain ``cell`` with ``seed`` (unless finished), then take each measure not taken yet.

    Returns:
        Measure name -> value, and the minutes its work took over every run that did some.
    """
    from siamkit.train import pretrain

    folder = seed_folder(out, cell, seed)
    folder.mkdir(parents=True, exist_ok=True)
    if config is not None:
        _check_same_config(cell, folder, config)
    store = _read_json(folder / MEASURES_FILE)
    spec = experiment.scale(scale)
    made = {m.name: _definition(m, cell, spec) for m in experiment.measures if applies(m, cell)}
    _check_same_measures(cell, folder, store, made)
    minutes = float(store.get("minutes", 0.0))
    values: dict[str, float] = dict(store.get("values", {}))
    start = time.perf_counter()
    worked = False  # a finished cell's measures.json stays as it was
    if config is not None and not (folder / "results.json").is_file():
        last = folder / "checkpoints" / "last.ckpt"
        if last.is_file():
            say(f"  resuming its pretraining from {last}")
        resume = str(folder) if last.is_file() else None
        pretrain(config, resume=resume, overwrite=True, random_init_knn=baselines)
        worked = True
    for measure in experiment.measures:
        if not applies(measure, cell) or measure.name in values:
            continue
        if measure.kind not in READ_ONLY:
            say(f"  {measure.kind} {measure.name!r}")
        values[measure.name] = take(measure, cell, folder, out, scale, spec, seed)
        worked = True
        # Each measure is kept as it is taken: an interrupted cell redoes only the missing ones.
        spent = minutes + (time.perf_counter() - start) / 60
        _write_json(folder / MEASURES_FILE, {"values": values, "minutes": spent, "made": made})
    if worked:
        minutes += (time.perf_counter() - start) / 60
        _write_json(folder / MEASURES_FILE, {"values": values, "minutes": minutes, "made": made})
    return values, minutes


__all__ = ["applies", "floors", "paper_values", "run_experiment", "seed_folder"]
