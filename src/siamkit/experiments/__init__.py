"""The papers' experiments as data, runnable one command each (``siamkit experiment NAME``).

Every experiment is one YAML file in ``catalogue/`` (:mod:`siamkit.experiments.spec` is its
schema): the recipe per scale, the grid of cells (overrides of that recipe), the measures, the
paper's figure for each cell with its source, and the paper's claims with how their direction is
checked. Adding an experiment is adding a file there; the tests build every cell's config of
every experiment at every scale.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from siamkit.errors import ConfigError
from siamkit.experiments.loading import cell_config, load_experiment_file
from siamkit.experiments.results import ExperimentResult
from siamkit.experiments.runner import run_experiment
from siamkit.experiments.spec import SCALES, Cell, Experiment

#: The catalogue's folder (package data).
CATALOGUE = Path(str(resources.files("siamkit") / "experiments" / "catalogue"))


def experiment_names() -> list[str]:
    """Names of the catalogue's experiments, sorted."""
    return sorted(p.stem for p in CATALOGUE.glob("*.yaml"))


def load_experiment(name: str) -> Experiment:
    """The catalogue's experiment ``name``, or the experiment in a YAML file at path ``name``.

    Raises:
        ConfigError: No such experiment (the message lists them), or an invalid file.
    """
    path = CATALOGUE / f"{name}.yaml"
    if path.is_file():
        return load_experiment_file(path)
    if name.endswith((".yaml", ".yml")) and Path(name).is_file():
        return load_experiment_file(name)
    raise ConfigError(
        f"no experiment named {name!r}; `siamkit experiment --list` lists them: "
        f"{', '.join(experiment_names())}"
    )


__all__ = [
    "CATALOGUE",
    "SCALES",
    "Cell",
    "Experiment",
    "ExperimentResult",
    "cell_config",
    "experiment_names",
    "load_experiment",
    "run_experiment",
]
