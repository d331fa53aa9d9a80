"""An experiment from its YAML file, and the run config of each of its cells.

:mod:`siamkit.experiments.spec` is the schema; this module reads a file into it
(:func:`load_experiment_file`) and resolves a pretraining cell into the
:class:`~siamkit.config.RunConfig` it runs with at a scale (:func:`cell_config`).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from siamkit.config import RunConfig
from siamkit.errors import ConfigError
from siamkit.experiments.spec import Cell, Experiment
from siamkit.recipes import load_config, recipe_path
from siamkit.safe_io import read_user_text
from siamkit.strict import from_dict


def cell_config(
    experiment: Experiment,
    cell: Cell,
    scale: str,
    output: str | Path,
    data: str | None = None,
    seed: int | None = None,
) -> RunConfig:
    """The config a pretraining cell runs with at ``scale``, writing to ``output``.

    The scale's recipe, then the scale's overrides, then the cell's (``set``, then ``set_at`` of
    the scale), then the run folder (and ``data``, a data folder that replaces the recipe's,
    and ``seed``, ``train.seed``).
    """
    spec = experiment.scale(scale)
    if not spec.recipe:
        raise ConfigError(f"experiment {experiment.name!r}: scale {scale!r} names no recipe")
    values: dict[str, object] = {"train.output_dir": str(output), "train.progress_bar": False}
    if data:
        values["data.path"] = data
    if seed is not None:
        values["train.seed"] = seed
    method = cell.method or experiment.method
    if "{method}" in spec.recipe and not method:
        raise ConfigError(
            f"experiment {experiment.name!r}, cell {cell.name!r}: the recipe {spec.recipe!r} "
            "needs a method (the cell's or the experiment's `method`)"
        )
    try:
        recipe = recipe_path(spec.recipe.replace("{method}", method))
        overrides = [*spec.set, *cell.set, *cell.set_at.get(scale, [])]
        config = load_config(recipe, overrides, values)
        if data and config.data.dataset == "digits":  # as `pretrain --data`: the user's images
            config = load_config(recipe, overrides, {**values, "data.dataset": "folder"})
        return config
    except ConfigError as err:
        raise ConfigError(
            f"experiment {experiment.name!r}, cell {cell.name!r} at scale {scale!r}: {err}"
        ) from None


def load_experiment_file(path: str | Path) -> Experiment:
    """An experiment from its YAML file (the file's stem is its name unless it says one).

    Raises:
        ConfigError: Unreadable YAML, an unknown key, a wrong type or an inconsistent grid.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"experiment file {str(p)!r} not found")
    fix = "pass an experiment's YAML file (siamkit/experiments/catalogue/ holds examples)"
    text = read_user_text(p, "experiment file", ConfigError, fix)
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as err:
        first = str(err).splitlines()[0] if str(err) else "a syntax error"
        raise ConfigError(f"experiment file {str(p)!r} is not valid YAML: {first}") from None
    if not isinstance(tree, dict) or not tree:
        raise ConfigError(f"experiment file {str(p)!r} must be a mapping of its settings")
    tree.setdefault("name", p.stem)
    for cell in tree.get("cells") or []:  # ``paper: {knn: 67.7}`` is short for {value: 67.7}
        figures = cell.get("paper") if isinstance(cell, dict) else None
        if isinstance(figures, dict):
            cell["paper"] = {
                k: v if isinstance(v, dict) else {"value": v} for k, v in figures.items()
            }
    try:
        return from_dict(Experiment, tree)
    except ConfigError as err:
        raise ConfigError(f"experiment file {str(p)!r}: {err}") from None


__all__ = ["cell_config", "load_experiment_file"]
