"""``siamkit recipes``, ``siamkit config show`` and the config a ``siamkit pretrain`` runs."""

from __future__ import annotations

import pytest
import yaml

import siamkit.train
from siamkit.cli import main
from siamkit.recipes import list_recipes, load_config, recipe_description, recipe_path

CIFAR = str(recipe_path("simsiam/cifar10"))


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_recipes_lists_every_shipped_recipe_with_what_it_is_for(capsys):
    code, out, _ = _run(["recipes"], capsys)
    assert code == 0
    listed = {}
    for line in out.splitlines():
        name, _, text = line.partition(" ")
        if name in list_recipes():
            listed[name] = text.strip()
    assert listed == {name: recipe_description(name) for name in list_recipes()}
    assert "siamkit pretrain --recipe NAME" in out


@pytest.mark.parametrize("name", list_recipes())
def test_config_show_prints_a_recipe_that_loads_back_to_the_same_config(name, tmp_path, capsys):
    code, out, _ = _run(["config", "show", "--recipe", name], capsys)
    assert code == 0
    assert out.startswith(f"# siamkit config show: --recipe {name},")
    shown = tmp_path / "shown.yaml"
    shown.write_text(out)
    assert "base" not in yaml.safe_load(out)  # resolved: the base is merged in
    assert load_config(shown) == load_config(recipe=name)


def test_config_show_applies_flags_and_set(tmp_path, capsys):
    argv = ["--config", CIFAR, "--epochs", "3", "--data", "/d"]
    argv += ["--set", "method.stop_gradient=false", "augment.crop_scale=[0.5, 1.0]"]
    code, out, _ = _run(["config", "show", *argv], capsys)
    assert code == 0
    tree = yaml.safe_load(out)
    assert tree["train"]["epochs"] == 3 and tree["data"]["path"] == "/d"
    assert tree["data"]["dataset"] == "cifar10"  # --data alone keeps the recipe's data set
    assert tree["method"]["stop_gradient"] is False
    assert tree["augment"]["crop_scale"] == [0.5, 1.0]  # lists print inline
    assert "crop_scale: [0.5, 1.0]" in out
    shown = tmp_path / "shown.yaml"
    shown.write_text(out)
    expected = load_config(
        CIFAR,
        ["method.stop_gradient=false", "augment.crop_scale=[0.5, 1.0]"],
        {"train.epochs": 3, "data.path": "/d"},
    )
    assert load_config(shown) == expected


@pytest.mark.parametrize(
    ("argv", "recipe"),
    [
        ([], "simsiam/digits"),
        (["--method", "byol"], "byol/digits"),
        (["--recipe", "swav/cifar10_cpu"], "swav/cifar10_cpu"),
    ],
)
def test_config_show_without_a_recipe_is_the_methods_digits_recipe(argv, recipe, capsys):
    code, out, _ = _run(["config", "show", *argv], capsys)
    assert code == 0
    assert f"--recipe {recipe}" in out.splitlines()[0]
    assert load_config(values=yaml.safe_load(out)) == load_config(recipe=recipe)


class _Captured(Exception):
    """Raised by the stand-in trainer with the config pretrain was given."""


@pytest.mark.parametrize(
    ("argv", "recipe", "changes"),
    [
        ([], "simsiam/digits", {}),
        (["--method", "byol", "--epochs", "2"], "byol/digits", {"train.epochs": 2}),
        (
            ["--recipe", "simclr/cifar10", "--data", "cifar"],
            "simclr/cifar10",
            {"data.path": "cifar"},
        ),
        (["--data", "photos"], "simsiam/digits", {"data.path": "photos", "data.dataset": "folder"}),
    ],
)
def test_bare_pretrain_runs_the_digits_recipe(argv, recipe, changes, monkeypatch):
    """The config handed to the trainer (captured there; nothing trains)."""

    def capture(cfg, **_):
        raise _Captured(cfg)

    monkeypatch.setattr(siamkit.train, "pretrain", capture)
    with pytest.raises(_Captured) as captured:
        main(["pretrain", *argv])
    assert captured.value.args[0] == load_config(recipe=recipe, values=changes)


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--method", "nope"], "unknown method 'nope'; valid methods: barlow_twins"),
        (["--recipe", "simsiam/cifar100"], "no recipe named 'simsiam/cifar100'"),
    ],
)
def test_an_unknown_method_or_recipe_is_one_error_line(argv, fragment, capsys):
    for command in (["pretrain"], ["config", "show"]):
        code, out, err = _run([*command, *argv], capsys)
        assert code == 2 and not out
        assert err.startswith("siamkit: error: ") and fragment in err
        assert len(err.splitlines()) == 1
