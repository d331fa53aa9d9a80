"""The registry is the one list at each extension point: every entry loads and meets its
contract, everything else is derived from it, and a method comes with a digits recipe and a test
of its loss against an independent reference."""

from __future__ import annotations

import ast
import itertools
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest

from siamkit import registry

REPO = Path(__file__).resolve().parents[1]

#: Each method's test of its loss, in value and gradient, against an independent reference (the
#: paper's equations, or lightly as an oracle). A method registered without an entry here fails
#: test_every_method_has_a_reference_test_of_its_loss: name its test when adding it.
REFERENCE_TESTS = {
    "simsiam": "tests/methods/test_simsiam.py::"
    "test_symmetric_loss_matches_reference_in_value_and_all_gradients",
    "simsiam_ema": "tests/methods/test_simsiam_ema.py::"
    "test_loss_uses_blended_targets_as_constants_in_value_and_gradient",
    "byol": "tests/methods/test_byol.py::"
    "test_loss_matches_eq2_reference_in_value_and_every_gradient",
    "simclr": "tests/methods/test_simclr.py::"
    "test_loss_and_every_gradient_match_lightly_on_the_same_projections",
    "moco_v2": "tests/methods/test_moco_v2.py::test_v2_loss_and_query_gradients_match_reference",
    "moco_v3": "tests/methods/test_moco_v3.py::"
    "test_v3_symmetric_loss_and_gradients_match_reference",
    "swav": "tests/methods/test_swav.py::test_loss_and_all_gradients_match_reference_on_lightly",
    "barlow_twins": "tests/methods/test_barlow_twins.py::"
    "test_loss_matches_lightly_on_the_same_model_in_value_and_all_gradients",
    "vicreg": "tests/methods/test_vicreg.py::"
    "test_loss_matches_eq6_on_the_same_model_in_value_and_all_gradients",
    "wmse": "tests/methods/test_wmse.py::"
    "test_loss_matches_lightly_on_the_same_model_in_value_and_all_gradients",
    "mine": "tests/losses/test_mi_bounds.py::test_corrected_gradient_is_the_papers_formula",
}


def test_importing_the_registry_imports_no_implementation() -> None:
    """``siamkit --help`` draws its choices from the registry: it must stay free of torch and
    of every implementation (beyond what ``import siamkit`` itself loads)."""
    code = (
        "import sys; import siamkit; before = set(sys.modules); import siamkit.registry; "
        "heavy = ('torch', 'numpy', 'lightning', 'timm', 'torchvision'); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy "
        "or (m not in before and m != 'siamkit.registry')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("name", list(registry.METHODS))
def test_every_registered_method_loads_with_its_config_class(name: str) -> None:
    from siamkit.config import MethodConfig
    from siamkit.methods import METHODS, Method

    cls = registry.METHODS[name].load()
    assert isinstance(cls, type) and issubclass(cls, Method)
    assert issubclass(cls.config_class, MethodConfig)
    assert cls.config_class().name == name  # the config's default name is the registry's
    assert METHODS[name].method_class is cls and METHODS[name].config_class is cls.config_class


def test_the_typed_configs_accept_exactly_the_registered_names() -> None:
    """``data.dataset`` and a measure's ``kind`` are Literal types (strict YAML loading checks
    them); they must list the registry's names, no more and no fewer."""
    import typing

    from siamkit.config import DataConfig
    from siamkit.experiments.spec import MeasureKind

    assert set(get_args(typing.get_type_hints(DataConfig)["dataset"])) == set(registry.DATA_SOURCES)
    assert set(get_args(MeasureKind)) == set(registry.MEASURES)


@pytest.mark.parametrize("name", list(registry.BACKBONES))
def test_every_registered_backbone_builds_an_encoder_that_meets_the_contract(name: str) -> None:
    from siamkit.config import BackboneConfig
    from siamkit.encoders import create_backbone
    from siamkit.encoders.base import check_encoder

    encoder = create_backbone(BackboneConfig(name=name, width=0.25, cifar_stem=True))
    assert check_encoder(encoder, (32,)) is encoder


@pytest.mark.parametrize("name", list(registry.DATA_SOURCES))
def test_every_data_source_is_a_function_of_the_config_and_workers(name: str) -> None:
    import inspect

    source = registry.DATA_SOURCES[name].load()
    assert callable(source)
    assert list(inspect.signature(source).parameters) == ["cfg", "workers"]


def test_the_digits_source_loads_through_the_registry() -> None:
    from siamkit.config import DataConfig
    from siamkit.data.datasets import load_splits

    splits = load_splits(DataConfig(dataset="digits"))
    assert (len(splits.train), len(splits.test or [])) == (1438, 359)


@pytest.mark.parametrize("kind", list(registry.MEASURES))
def test_every_measure_reader_takes_the_arguments_of_take(kind: str) -> None:
    import inspect

    from siamkit.experiments.measures import take

    read = registry.MEASURES[kind].load()
    assert callable(read)
    expected = list(inspect.signature(take).parameters)
    assert list(inspect.signature(read).parameters) == expected


@pytest.mark.parametrize("name", list(registry.METHODS))
def test_every_method_has_a_digits_recipe(name: str) -> None:
    """The digits recipe is what ``siamkit pretrain --method NAME`` runs, and the quick check
    of any new method on any machine."""
    from siamkit.recipes import load_config

    recipe = REPO / "src" / "siamkit" / "configs" / name / "digits.yaml"
    assert recipe.is_file(), f"{name} has no recipe {recipe.relative_to(REPO)}"
    assert load_config(recipe).method.name == name


def test_every_method_has_a_reference_test_of_its_loss() -> None:
    assert set(REFERENCE_TESTS) == set(registry.METHODS), (
        "name each registered method's value-and-gradient reference test in REFERENCE_TESTS"
    )
    for name, where in REFERENCE_TESTS.items():
        file, _, test = where.partition("::")
        tree = ast.parse((REPO / file).read_text())
        tests = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert test in tests, f"{name}: {where} does not exist"


def test_the_readmes_methods_table_names_every_method() -> None:
    lines = (REPO / "README.md").read_text().splitlines()
    start = lines.index("| family | methods (`--method NAME`) | what keeps it from collapsing |")
    table = "\n".join(itertools.takewhile(lambda line: line.startswith("|"), lines[start:]))
    missing = [name for name in registry.METHODS if f"`{name}`" not in table]
    assert not missing, f"README.md's methods table lacks {missing}"
