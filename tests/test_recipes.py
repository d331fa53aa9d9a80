"""Recipes: shipped ones by name, recipes built on a base, what every shipped recipe resolves to.

``recipes_resolved.json`` holds every shipped recipe's resolved config as it was before the
recipes were written as bases and overrides (2026-12-02); each must still resolve to it. After a
deliberate change of a recipe's values, rewrite it with ``python tests/test_recipes.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from siamkit.errors import ConfigError
from siamkit.methods import METHODS
from siamkit.recipes import (
    list_recipes,
    load_config,
    merge_recipe,
    read_recipe,
    recipe_description,
    recipe_path,
)
from siamkit.strict import to_dict

SNAPSHOT = Path(__file__).with_name("recipes_resolved.json")


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --------------------------------------------------------------------------------------------
# Shipped recipes
# --------------------------------------------------------------------------------------------
SNAPSHOTS = json.loads(SNAPSHOT.read_text())


@pytest.mark.parametrize("name", sorted(SNAPSHOTS))
def test_shipped_recipe_resolves_to_its_snapshot(name):
    """Every key of the snapshot has its value (keys added to the schema later are not in it)."""
    assert name in list_recipes()
    now = _flat(to_dict(load_config(recipe=name)))
    expected = _flat(SNAPSHOTS[name])
    differ = {k: (v, now.get(k, "<missing>")) for k, v in expected.items() if now.get(k) != v}
    assert not differ, f"{name}: (snapshot, now) {differ}"


def test_every_method_has_a_digits_recipe():
    """A bare ``siamkit pretrain --method NAME`` runs NAME's digits recipe."""
    for name in METHODS:
        cfg = load_config(recipe=f"{name}/digits")
        assert cfg.method.name == name and cfg.data.dataset == "digits"


@pytest.mark.parametrize("name", list_recipes())
def test_every_shipped_recipe_says_what_it_is_for(name):
    text = recipe_description(name)
    assert text and not text.startswith("siamkit recipe")
    assert recipe_path(name).read_text().startswith(f"# siamkit recipe: {text}\n")


def test_recipe_path_finds_a_recipe_by_name_and_lists_the_methods_recipes():
    path = recipe_path("simsiam/cifar10")
    assert path.name == "cifar10.yaml" and path.parent.name == "simsiam"
    assert recipe_path("simsiam/cifar10.yaml") == path
    with pytest.raises(ConfigError, match="no recipe named 'simsiam/cifar100'") as err:
        recipe_path("simsiam/cifar100")
    assert "simsiam/digits" in str(err.value) and "byol/digits" not in str(err.value)
    with pytest.raises(ConfigError, match="<method>/<name>"):
        recipe_path("digits")


def test_load_config_takes_a_file_or_a_recipe_name_not_both(tmp_path):
    assert load_config(recipe="byol/digits") == load_config(recipe_path("byol/digits"))
    with pytest.raises(ConfigError, match="not both"):
        load_config(recipe_path("byol/digits"), recipe="byol/digits")


# --------------------------------------------------------------------------------------------
# Bases and overrides
# --------------------------------------------------------------------------------------------
def test_merge_mappings_by_key_lists_and_scalars_replace():
    base = {
        "augment": {"size": 32, "crop_scale": [0.2, 1.0], "mean": [0.5, 0.5, 0.5]},
        "train": {"epochs": 800, "max_minutes": 15, "knn_every": 10},
        "optim": {"batch_size": 512},
    }
    recipe = {
        "augment": {"crop_scale": [0.08, 1.0]},
        "train": {"epochs": 30, "max_minutes": None},
        "backbone": {"width": 0.25},
    }
    merged = merge_recipe(base, recipe)
    assert merged == {
        "augment": {"size": 32, "crop_scale": [0.08, 1.0], "mean": [0.5, 0.5, 0.5]},
        "train": {"epochs": 30, "max_minutes": None, "knn_every": 10},
        "optim": {"batch_size": 512},
        "backbone": {"width": 0.25},
    }
    # neither input is changed
    assert base["train"] == {"epochs": 800, "max_minutes": 15, "knn_every": 10}
    assert recipe["train"] == {"epochs": 30, "max_minutes": None}


def test_merge_of_a_method_section():
    base = {"method": {"name": "simclr", "temperature": 0.5, "proj_dim": 128}}
    # the same method (or none named): key by key
    assert merge_recipe(base, {"method": {"proj_dim": 64}})["method"] == {
        "name": "simclr",
        "temperature": 0.5,
        "proj_dim": 64,
    }
    # another method: the base's keys belong to the base's method, so they go
    assert merge_recipe(base, {"method": {"name": "mine", "proj_dim": 64}})["method"] == {
        "name": "mine",
        "proj_dim": 64,
    }
    # a base without a method section is SimSiam
    assert merge_recipe({}, {"method": {"proj_dim": 64}}) == {"method": {"proj_dim": 64}}


def test_a_recipe_on_a_shipped_base(tmp_path):
    recipe = _write(
        tmp_path,
        "mine.yaml",
        "base: simsiam/cifar10\naugment:\n  crop_scale: [0.5, 1.0]\ntrain:\n  epochs: 3\n",
    )
    cfg = load_config(recipe)
    shipped = load_config(recipe="simsiam/cifar10")
    assert cfg.train.epochs == 3 and cfg.augment.crop_scale == (0.5, 1.0)
    assert cfg.optim == shipped.optim and cfg.method == shipped.method
    assert cfg.augment.mean == shipped.augment.mean and cfg.train.knn_every == 10
    # flags and --set apply on top of the merged recipe
    cfg = load_config(recipe, ["optim.base_lr=0.1"], {"train.epochs": 4})
    assert cfg.optim.base_lr == 0.1 and cfg.train.epochs == 4 and cfg.augment.size == 32


def test_a_base_file_relative_to_the_recipe_and_a_chain(tmp_path):
    _write(tmp_path, "common/cifar.yaml", "data: {dataset: cifar10, path: x}\ntrain: {seed: 7}\n")
    _write(tmp_path, "common/small.yaml", "base: cifar.yaml\nbackbone: {width: 0.5}\n")
    recipe = _write(tmp_path, "runs/r.yaml", "base: ../common/small.yaml\ntrain: {epochs: 2}\n")
    assert read_recipe(recipe) == {
        "data": {"dataset": "cifar10", "path": "x"},
        "train": {"seed": 7, "epochs": 2},
        "backbone": {"width": 0.5},
    }
    cfg = load_config(recipe)
    assert (cfg.data.path, cfg.train.seed, cfg.backbone.width) == ("x", 7, 0.5)


def test_bases_in_a_cycle_are_an_error_naming_the_chain(tmp_path):
    a = _write(tmp_path, "a.yaml", "base: b.yaml\ntrain: {epochs: 2}\n")
    _write(tmp_path, "b.yaml", "base: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle") as err:
        load_config(a)
    message = str(err.value)
    assert message.index("a.yaml") < message.index("b.yaml") < message.rindex("a.yaml")
    itself = _write(tmp_path, "self.yaml", "base: self.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(itself)


def test_a_missing_base_is_an_error_naming_the_recipe(tmp_path):
    recipe = _write(tmp_path, "r.yaml", "base: simsiam/cifar11\n")
    with pytest.raises(ConfigError, match=r"r\.yaml.*no recipe named 'simsiam/cifar11'") as err:
        load_config(recipe)
    assert "simsiam/cifar10" in str(err.value)  # the method's recipes, to choose from
    _write(tmp_path, "f.yaml", "base: ../nowhere.yaml\n")
    with pytest.raises(ConfigError, match=r"base file '\.\./nowhere\.yaml' not found"):
        load_config(tmp_path / "f.yaml")
    _write(tmp_path, "l.yaml", "base: [simsiam/digits]\n")
    with pytest.raises(ConfigError, match="base must be a recipe name"):
        load_config(tmp_path / "l.yaml")


def test_unknown_keys_in_a_recipe_or_its_base_name_the_dotted_path(tmp_path):
    recipe = _write(tmp_path, "r.yaml", "base: simsiam/digits\naugment:\n  sizee: 16\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'augment\.sizee'") as err:
        load_config(recipe)
    assert "eval_size" in str(err.value)  # the valid keys
    _write(tmp_path, "base.yaml", "method: {name: simsiam, temperature: 0.1}\n")
    _write(tmp_path, "child.yaml", "base: base.yaml\ntrain: {epochs: 2}\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'method\.temperature'"):
        load_config(tmp_path / "child.yaml")
    # base is a key of a recipe file only, not of the config
    with pytest.raises(ConfigError, match="unknown config key 'base'"):
        load_config(overrides=["base=simsiam/digits"])


def test_a_method_of_its_own_on_a_base_of_another(tmp_path):
    """As mine/* on simclr/*: everything but the method section comes from the base."""
    recipe = _write(tmp_path, "r.yaml", "base: simclr/digits\nmethod: {name: byol}\n")
    cfg = load_config(recipe)
    simclr = load_config(recipe="simclr/digits")
    assert cfg.method == METHODS["byol"].config_class()
    assert (cfg.augment, cfg.backbone, cfg.optim) == (simclr.augment, simclr.backbone, simclr.optim)


if __name__ == "__main__":
    # Rewrite the snapshot from the recipes as they resolve now (after a deliberate change).
    snapshot = {name: to_dict(load_config(recipe=name)) for name in list_recipes()}
    SNAPSHOT.write_text(json.dumps(snapshot, indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(snapshot)} recipes to {SNAPSHOT}", file=sys.stderr)
