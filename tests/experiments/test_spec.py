"""The experiment catalogue as data: every experiment's grid builds valid configs at every scale,
and bad experiment files are refused with a message that names the problem."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

import siamkit.experiments
from siamkit.config import RunConfig
from siamkit.errors import ConfigError
from siamkit.experiments import (
    SCALES,
    cell_config,
    experiment_names,
    load_experiment,
)
from siamkit.experiments.loading import load_experiment_file
from siamkit.experiments.spec import Cell

NAMES = experiment_names()
#: The experiments the source articles ask for (one NAME each).
REQUIRED = {
    "simsiam_stop_gradient", "simsiam_predictor", "simsiam_batch_size", "simsiam_batchnorm",
    "simsiam_similarity", "simsiam_symmetry", "simsiam_alternation", "simsiam_methods",
    "simclr_projection_head", "simclr_augmentations", "simclr_colour_strength",
    "simclr_batch_size", "simclrv2_head_depth", "simclrv2_distillation", "byol_normalization",
    "vicreg_terms", "barlow_twins", "mine_gaussian",
}  # fmt: skip


def test_the_catalogue_has_every_experiment_of_the_articles():
    assert set(NAMES) >= REQUIRED


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("scale", SCALES)
def test_every_cell_builds_a_valid_config_at_every_scale(name, scale, tmp_path):
    experiment = load_experiment(name)
    assert experiment.name == name and experiment.title and experiment.citation
    cells = experiment.cells_at(scale)
    assert cells, f"{name} has no cell at {scale}"
    configs = {}
    for cell in cells:
        if cell.kind != "pretrain":
            continue
        cfg = cell_config(experiment, cell, scale, tmp_path / cell.slug)
        assert isinstance(cfg, RunConfig)
        assert cfg.train.output_dir == str(tmp_path / cell.slug)
        configs[cell.name] = cfg
    # Cells differ from one another: a cell whose overrides changed nothing is a typo.
    trees = [repr(c) for c in configs.values()]
    assert len(set(trees)) == len(trees), f"{name}: two cells run the same config at {scale}"


@pytest.mark.parametrize("name", NAMES)
def test_every_cell_has_a_paper_figure_and_claims_name_real_cells(name):
    experiment = load_experiment(name)
    for cell in experiment.cells:
        assert cell.paper, f"{name}: cell {cell.name!r} has no paper figure"
    assert experiment.claims, f"{name} checks no claim"
    for claim in experiment.claims:
        assert claim.text and claim.source


@pytest.mark.parametrize("name", NAMES)
def test_prose_has_no_word_split_by_line_folding(name):
    """A folded YAML string (``>-``) joins lines with a space: "weight-" at the end of a line and
    "standardised" on the next read "weight- standardised" in every report."""
    path = Path(siamkit.experiments.__file__).parent / "catalogue" / f"{name}.yaml"

    def strings(node: object) -> list[str]:
        if isinstance(node, str):
            return [node]
        values = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
        return [s for v in values for s in strings(v)]

    for text in strings(yaml.safe_load(path.read_text())):
        assert not re.search(r"[A-Za-z]- [a-z]", text), f"{name}: a split word in {text!r}"


def test_cpu_scale_settings_follow_the_recipes():
    # A cell's overrides land on the scale's recipe: SimSiam without stop-gradient at cpu scale
    # is the digits recipe for 20 epochs, stop-gradient off.
    e = load_experiment("simsiam_stop_gradient")
    cfg = cell_config(e, e.cells[1], "cpu", "out")
    assert cfg.method.stop_gradient is False  # type: ignore[attr-defined]
    assert (cfg.data.dataset, cfg.train.epochs, cfg.backbone.name) == ("digits", 20, "small_cnn")
    # ... and at gpu scale the CIFAR-10 recipe with the same switch.
    gpu = cell_config(e, e.cells[1], "gpu", "out")
    assert (gpu.data.dataset, gpu.method.stop_gradient) == ("cifar10", False)  # type: ignore[attr-defined]
    # {method} in a recipe name takes each cell's method.
    methods = load_experiment("simsiam_methods")
    names = [cell_config(methods, c, "cpu", "o").method.name for c in methods.cells]
    assert names == ["simsiam", "simclr", "moco_v2", "byol", "swav", "barlow_twins", "vicreg",
                     "wmse"]  # fmt: skip
    # set_at applies at its scale only.
    sizes = load_experiment("simclr_batch_size")
    cell = sizes.cells[2]
    assert cell_config(sizes, cell, "cpu", "o").train.epochs == 4
    assert cell_config(sizes, cell, "gpu", "o").train.epochs == 200


def test_slugs_spell_out_signs():
    assert Cell(name="d=2 rho=-0.50").slug == "d-2-rho-minus-0-50"
    assert Cell(name="d=2 rho=+0.50").slug == "d-2-rho-plus-0-50"
    assert Cell(name="1-step (SimSiam)").slug == "1-step-simsiam"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


GOOD = """
title: t
citation: c
scales: {cpu: {recipe: simsiam/digits}}
measures: [{name: knn, kind: knn}, {name: collapse, kind: collapse_std}]
cells:
  - {name: a, paper: {knn: 1.0}}
  - {name: b, set: [method.stop_gradient=false], paper: {knn: unstable}}
claims:
  - {text: x, source: y, check: {kind: greater, cells: [a, b]}}
"""


def test_a_good_file_loads_with_the_short_paper_form(tmp_path):
    e = load_experiment_file(_write(tmp_path, GOOD))
    assert e.name == "exp"
    assert e.cells[0].paper["knn"].value == 1.0 and e.cells[1].paper["knn"].value == "unstable"
    assert load_experiment(str(tmp_path / "exp.yaml")).cells[1].set == [
        "method.stop_gradient=false"
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("title: t", "title: t\ncolour: red"), "unknown config key 'colour'"),
        (("{name: a, paper", "{name: a, sett: [], paper"), r"unknown config key 'cells\[0\].sett'"),
        (("cells: [a, b]}", "cells: [a, c]}"), "unknown cells"),
        (("kind: greater, cells: [a, b]", "kind: greater, cells: [a]"), "compares 2 cells"),
        (("{name: b,", "{name: a,"), "cell names used twice"),
        (("paper: {knn: 1.0}", "paper: {linear: 1.0}"), "paper figures of"),
        (("{cpu: {recipe", "{tpu: {recipe"), "unknown scales"),
        (("cells: [a, b]}", "cells: [a, b], measure: linear}"), "unknown measures"),
        (("title: t", "title: [t"), "not valid YAML"),
        (
            ("kind: greater, cells: [a, b]", "kind: greater, cells: [a, b], margin: -1"),
            "never negative",
        ),
        (
            ("kind: greater, cells: [a, b]", "kind: greater, cells: [a, b], margin: 1"),
            "needs a margin_source",
        ),
        (
            ("kind: greater, cells: [a, b]", "kind: collapsed, cells: [b], reference: c"),
            r"unknown cells \['c \(the reference at the cpu scale\)'\]",
        ),
        (
            ("kind: greater, cells: [a, b]", "kind: greater, cells: [a, b], reference: a"),
            "only a 'collapsed' check",
        ),
        (
            ("{cpu: {recipe: simsiam/digits}}", "{cpu: {recipe: simsiam/digits, seeds: 0}}"),
            "seeds must be at least 1",
        ),
        (
            ("{cpu: {recipe: simsiam/digits}}", "{cpu: {recipe: simsiam/digits, floor_seeds: 3}}"),
            "at least 5 seeds",
        ),
        (
            ("{cpu: {recipe: simsiam/digits}}", "{cpu: {recipe: simsiam/digits, floor_cell: z}}"),
            "noise floor names unknown cell 'z'",
        ),
    ],
)
def test_bad_files_name_the_problem(tmp_path, change, message):
    old, new = change
    assert old in GOOD
    with pytest.raises(ConfigError, match=message):
        load_experiment_file(_write(tmp_path, GOOD.replace(old, new, 1)))


def test_bad_overrides_and_names_are_refused_before_anything_runs(tmp_path):
    e = load_experiment_file(_write(tmp_path, GOOD.replace("stop_gradient=false", "stop=1")))
    with pytest.raises(ConfigError, match=r"cell 'b' at scale 'cpu'.*unknown config key"):
        cell_config(e, e.cells[1], "cpu", tmp_path / "o")
    with pytest.raises(ConfigError, match="no 'gpu' scale"):
        e.scale("gpu")
    with pytest.raises(ConfigError, match=r"no experiment named 'nope'.*simsiam_stop_gradient"):
        load_experiment("nope")


def test_a_collapse_reference_can_differ_by_scale(tmp_path):
    text = GOOD.replace(
        "kind: greater, cells: [a, b]}",
        "kind: collapsed, cells: [b], reference: a, reference_at: {gpu: c}}",
    ).replace("  - {name: b,", "  - {name: c, scales: [gpu], paper: {knn: 2.0}}\n  - {name: b,")
    e = load_experiment_file(_write(tmp_path, text))
    check = e.claims[0].check
    assert check.at("cpu").reference == "a" and check.at("gpu").reference == "c"
    # The floor's cell runs the floor's seeds, every other cell the scale's.
    spec = e.scale("cpu")
    assert (spec.seeds_of("a", 2), spec.seeds_of("b", 2)) == (2, 2)
    spec.floor_cell = "a"
    assert (spec.seeds_of("a", 2), spec.seeds_of("b", 2)) == (5, 2)
    # A reference must run at the scale it serves.
    with pytest.raises(ConfigError, match=r"'c \(the reference at the cpu scale\)'"):
        load_experiment_file(_write(tmp_path, text.replace("reference: a,", "reference: c,")))
