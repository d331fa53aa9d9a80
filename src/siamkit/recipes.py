"""Recipes: YAML files and command-line overrides turned into a validated :class:`RunConfig`.

The schema is :mod:`siamkit.config`; this module adds what needs the method registry (each
method's config dataclass, chosen by ``method.name``), so that the schema itself imports no
method. The registry (and with it torch) is imported only when a config is validated: listing
and reading recipes stays light, for ``siamkit recipes`` and ``siamkit --help``.

A recipe may build on another one: a top-level ``base:`` names a shipped recipe
(``simsiam/cifar10``) or a YAML file relative to the recipe's own file (``../common.yaml``; a
value ending in ``.yaml`` or ``.yml``). The recipe's keys then override the base's: mappings merge
key by key, lists and scalars replace (``crop_scale: [0.2, 1.0]`` is one value), and a ``method``
section that names another method than the base's replaces the base's section whole (its keys
belong to that other method, as with ``--method``). A base may have a base of its own; a chain
that comes back to a recipe already in it is an error that names the chain.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from siamkit.config import MethodConfig, RunConfig
from siamkit.errors import ConfigError
from siamkit.safe_io import read_user_text, real_path
from siamkit.strict import from_dict, to_dict

#: The recipes shipped with the package (``siamkit/configs/<method>/<name>.yaml``); in a checkout
#: the repository's ``configs/`` points here.
RECIPE_DIR = Path(str(resources.files("siamkit") / "configs"))

#: The method of a recipe (or tree) whose ``method`` section names none.
DEFAULT_METHOD = "simsiam"


def list_recipes() -> list[str]:
    """Names of the shipped recipes, ``<method>/<name>``, sorted."""
    return sorted(p.relative_to(RECIPE_DIR).with_suffix("").as_posix() for p in _recipe_files())


def _recipe_files() -> list[Path]:
    return list(RECIPE_DIR.glob("*/*.yaml"))


def recipe_path(name: str) -> Path:
    """The file of the shipped recipe ``name`` (``simsiam/cifar10``; ``.yaml`` may be given).

    Raises:
        ConfigError: No recipe of that name; the message lists the recipes of its method.
    """
    stem = name.removesuffix(".yaml").strip("/")
    path = RECIPE_DIR / f"{stem}.yaml"
    if stem.count("/") != 1 or not path.is_file():
        method = stem.split("/")[0]
        close = [r for r in list_recipes() if r.startswith(f"{method}/")] or list_recipes()
        raise ConfigError(
            f"no recipe named {name!r}; recipes are <method>/<name>, e.g. {', '.join(close)} "
            "(`siamkit recipes` lists them all)"
        )
    return path


def recipe_description(name: str) -> str:
    """The first line of the shipped recipe's header comment (what it is for), or ``""``."""
    for line in recipe_path(name).read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip().removeprefix("siamkit recipe:").strip()
        if text:
            return text
    return ""


def _shown(path: Path) -> str:
    """A recipe as a user names it: ``simsiam/digits`` when shipped, else its path."""
    try:
        return real_path(path).relative_to(RECIPE_DIR.resolve()).with_suffix("").as_posix()
    except ValueError:
        return str(path)


def _read_yaml(path: Path) -> dict[str, Any]:
    """One recipe file's own mapping, with clear errors (an empty file is one)."""
    if not path.is_file():
        raise ConfigError(
            f"config file {str(path)!r} not found; a shipped recipe is chosen by name with "
            "--recipe (`siamkit recipes` lists them)"
        )
    fix = "pass a YAML recipe (`siamkit config show` prints one)"
    text = read_user_text(path, "config file", ConfigError, fix)
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(
            f"config file {str(path)!r} is not valid YAML{where}: {problem}; fix the recipe's "
            "syntax (indentation, a missing ':' or an unclosed bracket or quote)"
        ) from None
    if not isinstance(loaded, dict) and loaded is not None:
        raise ConfigError(f"config file {str(path)!r} must be a mapping of sections")
    if not loaded:  # it would run the schema's defaults, SimSiam's ImageNet recipe, unasked
        raise ConfigError(
            f"config file {str(path)!r} is empty; a recipe names its settings, or a base and "
            "what differs from it (e.g. `base: simsiam/digits`); `siamkit recipes` lists the "
            "shipped ones"
        )
    return loaded


def _base_path(base: Any, recipe: Path) -> Path:
    """The file a recipe's ``base:`` value names."""
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(
            f"recipe {_shown(recipe)!r}: base must be a recipe name such as simsiam/cifar10 or a "
            f".yaml file relative to the recipe, got {base!r}"
        )
    if base.endswith((".yaml", ".yml")):
        path = recipe.parent / base
        if not path.is_file():
            raise ConfigError(
                f"recipe {_shown(recipe)!r}: base file {base!r} not found (relative to "
                f"{str(recipe.parent)!r}); a shipped recipe is named without .yaml, e.g. "
                "simsiam/cifar10"
            )
        return path
    try:
        return recipe_path(base)
    except ConfigError as err:
        raise ConfigError(f"recipe {_shown(recipe)!r}: base: {err}") from None


def _method_name(tree: dict[str, Any]) -> Any:
    section = tree.get("method")
    return section.get("name", DEFAULT_METHOD) if isinstance(section, dict) else DEFAULT_METHOD


def merge_recipe(base: dict[str, Any], recipe: dict[str, Any]) -> dict[str, Any]:
    """``recipe`` over ``base``: mappings merge key by key, lists and scalars replace.

    A ``method`` section that names another method than the base's replaces the base's whole
    (one that names none keeps the base's method). Neither argument is changed.
    """
    section = recipe.get("method")
    if isinstance(section, dict) and section.get("name", _method_name(base)) != _method_name(base):
        base = {k: v for k, v in base.items() if k != "method"}
    return _merge(base, recipe)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        old = merged.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            merged[key] = _merge(old, value)  # a section: key by key
        else:
            merged[key] = value  # a scalar, a list (one value) or null: replaced
    return merged


def read_recipe(path: str | Path) -> dict[str, Any]:
    """A recipe's tree with its ``base`` chain merged in (see the module docstring).

    Raises:
        ConfigError: A missing or malformed file or base, or a chain of bases with a cycle.
    """
    chain: list[Path] = []
    trees: list[dict[str, Any]] = []
    path = Path(path)
    while True:
        if real_path(path) in chain:
            names = " -> ".join(_shown(p) for p in [*chain, real_path(path)])
            raise ConfigError(
                f"recipe bases form a cycle: {names}; one of them must not name a base"
            )
        chain.append(real_path(path))
        tree = _read_yaml(path)
        trees.append(tree)
        if "base" not in tree:
            break
        path = _base_path(tree.pop("base"), path)
    merged = trees.pop()
    while trees:
        merged = merge_recipe(merged, trees.pop())
    return merged


class _RecipeDumper(yaml.SafeDumper):
    """Sections as blocks, lists inline (``crop_scale: [0.2, 1.0]``), as the recipes are written."""


_RecipeDumper.add_representer(
    list, lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:seq", data, True)
)


def recipe_yaml(config: RunConfig) -> str:
    """A config as recipe YAML, every key set, in the schema's order; it loads back the same."""
    return yaml.dump(to_dict(config), Dumper=_RecipeDumper, sort_keys=False)


def method_config_class(name: str) -> type[MethodConfig]:
    """The config dataclass of the registered method ``name``.

    Raises:
        ConfigError: No method of that name.
    """
    from siamkit.methods import METHODS  # the registry imports torch: only when validating

    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; valid methods: {', '.join(sorted(METHODS))}")
    return METHODS[name].config_class


def _pick_method_config(cls: type, data: dict[str, Any]) -> type:
    """The ``method`` section's own dataclass, by its ``name`` (SimSiam's by default)."""
    if cls is MethodConfig:
        return method_config_class(str(data.get("name", DEFAULT_METHOD)))
    return cls


def config_from_dict(tree: dict[str, Any]) -> RunConfig:
    """A :class:`RunConfig` from a plain tree (a parsed recipe, a checkpoint's stored config).

    A tree without a ``method`` section gets SimSiam's defaults, as its own config class.
    """
    return from_dict(RunConfig, {"method": {}, **tree}, resolve=_pick_method_config)


def method_from_dict(data: dict[str, Any]) -> MethodConfig:
    """A method's own config from a plain mapping with its ``name``."""
    return from_dict(MethodConfig, data, "method", resolve=_pick_method_config)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``section.key=value`` (the value as YAML) into a key path and a value."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    return key.strip().split("."), yaml.safe_load(raw) if raw.strip() else None


def set_in(tree: dict[str, Any], keys: list[str], value: Any) -> None:
    """Set ``tree[k0][k1]... = value``, creating sections as needed."""
    node = tree
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {'.'.join(keys)}: {key!r} is not a section")
        node = child
    node[keys[-1]] = value


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    values: dict[str, Any] | None = None,
    *,
    recipe: str | None = None,
) -> RunConfig:
    """Load a recipe, apply overrides, validate.

    Args:
        path: A YAML recipe file, or ``None`` for a shipped ``recipe`` or the defaults.
        overrides: ``section.key=value`` strings (``--set``), applied in order.
        values: Dotted keys to values (from dedicated CLI flags), applied last.
        recipe: A shipped recipe by name (``simsiam/digits``, see :func:`list_recipes`), instead
            of ``path``.

    Returns:
        The validated :class:`RunConfig`.

    Raises:
        ConfigError: Both ``path`` and ``recipe``; the file is missing or not a mapping, a base
            is missing or the bases form a cycle, or any key or value is invalid.
    """
    if path is not None and recipe is not None:
        raise ConfigError(
            "give a recipe file (--config) or a shipped recipe's name (--recipe), not both"
        )
    if recipe is not None:
        path = recipe_path(recipe)
    tree: dict[str, Any] = {} if path is None else read_recipe(path)
    for text in overrides or []:
        keys, value = parse_override(text)
        set_in(tree, keys, value)
    for dotted, value in (values or {}).items():
        if dotted == "method.name" and _method_name(tree) != value:
            # Another method than the recipe's: the recipe's method keys belong to that other
            # method, so start from the new method's defaults (its own --set keys still apply).
            tree["method"] = {}
            for text in overrides or []:
                keys, override = parse_override(text)
                if keys[0] == "method":
                    set_in(tree, keys, override)
        set_in(tree, dotted.split("."), value)
    return config_from_dict(tree)
