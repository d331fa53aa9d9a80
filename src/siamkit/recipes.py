"""Recipes: YAML files and command-line overrides turned into a validated :class:`RunConfig`.

The schema is :mod:`siamkit.config`; this module adds what needs the method registry (each
method's config dataclass, chosen by ``method.name``), so that the schema itself imports no
method.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from siamkit.config import MethodConfig, RunConfig
from siamkit.errors import ConfigError
from siamkit.methods import METHODS
from siamkit.strict import from_dict

#: The recipes shipped with the package (``siamkit/configs/<method>/<name>.yaml``); in a checkout
#: the repository's ``configs/`` points here.
RECIPE_DIR = Path(str(resources.files("siamkit") / "configs"))


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
            f"no recipe named {name!r}; recipes are <method>/<name>, e.g. {', '.join(close)}"
        )
    return path


def method_config_class(name: str) -> type[MethodConfig]:
    """The config dataclass of the registered method ``name``.

    Raises:
        ConfigError: No method of that name.
    """
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; valid methods: {', '.join(sorted(METHODS))}")
    return METHODS[name].config_class


def _pick_method_config(cls: type, data: dict[str, Any]) -> type:
    """The ``method`` section's own dataclass, by its ``name`` (SimSiam's by default)."""
    if cls is MethodConfig:
        return method_config_class(str(data.get("name", "simsiam")))
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
) -> RunConfig:
    """Load a recipe, apply overrides, validate.

    Args:
        path: A YAML recipe, or ``None`` for the defaults.
        overrides: ``section.key=value`` strings (``--set``), applied in order.
        values: Dotted keys to values (from dedicated CLI flags), applied last.

    Returns:
        The validated :class:`RunConfig`.

    Raises:
        ConfigError: The file is missing or not a mapping, or any key or value is invalid.
    """
    tree: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} not found; recipes live under configs/")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ConfigError(
                f"config file {str(p)!r} is not valid YAML{where}: {problem}; fix the recipe's "
                "syntax (indentation, a missing ':' or an unclosed bracket or quote)"
            ) from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {str(p)!r} must be a mapping of sections")
        tree = loaded
    for text in overrides or []:
        keys, value = parse_override(text)
        set_in(tree, keys, value)
    for dotted, value in (values or {}).items():
        if dotted == "method.name" and tree.get("method", {}).get("name", "simsiam") != value:
            # Another method than the recipe's: the recipe's method keys belong to that other
            # method, so start from the new method's defaults (its own --set keys still apply).
            tree["method"] = {}
            for text in overrides or []:
                keys, override = parse_override(text)
                if keys[0] == "method":
                    set_in(tree, keys, override)
        set_in(tree, dotted.split("."), value)
    return config_from_dict(tree)
