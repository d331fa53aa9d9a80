"""Strict conversion between plain mappings (YAML, checkpoints) and config dataclasses.

An unknown key is an error that lists the valid ones; a value of the wrong type is an error that
names the expected type; each dataclass's ``__post_init__`` then rejects impossible values.
Generic over any dataclass: it imports nothing of siamkit but its errors.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import types
import typing
from typing import Any, Literal, TypeVar, get_args, get_origin

from siamkit.errors import ConfigError

T = TypeVar("T")


#: Chooses the dataclass to build for a section: ``resolve(cls, data)`` returns ``cls`` or a
#: subclass (the recipe loader picks a method's own config by ``method.name``).
Resolver = typing.Callable[[type, dict[str, Any]], type]


#: How a message names a type a value may have.
_KINDS: dict[Any, str] = {
    int: "an integer",
    float: "a number",
    bool: "true or false",
    str: "a string",
}


def _kind(annotation: object) -> str:
    """``an integer``, ``a list`` ...: the type ``annotation`` in an error message's words."""
    if get_origin(annotation) is list:
        return "a list of such values"
    return _KINDS.get(annotation, getattr(annotation, "__name__", str(annotation)))


#: Converts a value to an annotation: ``(value, annotation, where, resolve)``.
_Converter = typing.Callable[[Any, Any, str, Resolver | None], Any]


def _coerce(value: object, annotation: object, where: str, resolve: Resolver | None) -> Any:
    """Convert a YAML/CLI value to ``annotation``, or raise a ConfigError naming ``where``."""
    origin = get_origin(annotation)
    if annotation is Any:
        return value
    generic = _GENERICS.get(origin)
    if generic is not None:
        return generic(value, annotation, where, resolve)
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return from_dict(annotation, value, where, resolve)
    # Only a class is looked up: another annotation need not be hashable.
    scalar = _SCALARS.get(annotation) if isinstance(annotation, type) else None
    if scalar is not None:
        return scalar(value, where)
    raise ConfigError(f"{where}: unsupported type {annotation!r}")  # pragma: no cover


def _union(value: object, annotation: object, where: str, resolve: Resolver | None) -> Any:
    """The first option of a union that takes ``value`` (``None`` where the union allows it)."""
    options = get_args(annotation)
    if value is None and type(None) in options:
        return None
    errors = []
    for option in options:
        if option is type(None):
            continue
        try:
            return _coerce(value, option, where, resolve)
        except ConfigError as err:
            errors.append(str(err))
    if len(errors) > 1:  # e.g. a timm option: say every type it may have
        kinds = [_kind(o) for o in options if o is not type(None)]
        text = ", ".join(kinds[:-1]) + " or " + kinds[-1]
        raise ConfigError(f"{where} must be {text}, got {value!r}")
    raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")


def _literal(value: object, annotation: object, where: str, resolve: Resolver | None) -> Any:
    """``value`` itself, when it is one of the literal's choices."""
    choices = get_args(annotation)
    if value not in choices:
        raise ConfigError(
            f"{where} must be one of {', '.join(repr(c) for c in choices)}, got {value!r}"
        )
    return value


def _tuple(value: object, annotation: object, where: str, resolve: Resolver | None) -> Any:
    """A tuple of a list of as many values, each converted to its item's type."""
    items = get_args(annotation)
    if not isinstance(value, (list, tuple)) or len(value) != len(items):
        raise ConfigError(f"{where} must be a list of {len(items)} values, got {value!r}")
    pairs = enumerate(zip(value, items, strict=True))
    return tuple(_coerce(v, t, f"{where}[{i}]", resolve) for i, (v, t) in pairs)


def _list(value: object, annotation: object, where: str, resolve: Resolver | None) -> Any:
    """A list of a list's values, each converted to the item type."""
    (item,) = get_args(annotation)
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{where} must be a list, got {value!r}")
    return [_coerce(v, item, f"{where}[{i}]", resolve) for i, v in enumerate(value)]


def _dict(value: object, annotation: object, where: str, resolve: Resolver | None) -> Any:
    """A dict of a mapping, its keys and values each converted."""
    key_type, item = get_args(annotation)
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a mapping, got {value!r}")
    return {
        _coerce(k, key_type, f"{where} key", resolve): _coerce(v, item, f"{where}.{k}", resolve)
        for k, v in value.items()
    }


#: The converter of each generic annotation, by its origin (``list`` of ``list[int]``).
_GENERICS: dict[Any, _Converter] = {
    typing.Union: _union,
    types.UnionType: _union,
    Literal: _literal,
    tuple: _tuple,
    list: _list,
    dict: _dict,
}


def _bool(value: object, where: str) -> bool:
    """``value`` when it is true or false (not 1 or "yes")."""
    if isinstance(value, bool):
        return value
    raise ConfigError(f"{where} must be true or false, got {value!r}")


def _int(value: object, where: str) -> int:
    """``value`` when it is an integer (not a bool)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ConfigError(f"{where} must be an integer, got {value!r}")


def _float(value: object, where: str) -> float:
    """A finite float of a number or of a string that spells one."""
    number = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):  # YAML 1.1 reads "5e-4" (no dot) as a string
        with contextlib.suppress(ValueError):
            number = float(value)
    if number is None:
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if not math.isfinite(number):
        raise ConfigError(f"{where} must be a finite number, got {value!r}")
    return number


def _str(value: object, where: str) -> str:
    """The text of a string or a number (not of a bool)."""
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise ConfigError(f"{where} must be a string, got {value!r}")


#: The converter of each scalar annotation: ``(value, where)``.
_SCALARS: dict[Any, typing.Callable[[Any, str], Any]] = {
    bool: _bool,
    int: _int,
    float: _float,
    str: _str,
}


def from_dict(
    cls: type[T], data: dict[str, Any], where: str = "", resolve: Resolver | None = None
) -> T:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types.

    Args:
        cls: The dataclass to build.
        data: Keys and values, e.g. a parsed YAML section.
        where: Dotted path of this section, for error messages.
        resolve: Chooses the dataclass of each section (``cls`` itself by default); the recipe
            loader's picks a method's own config (:func:`siamkit.recipes.config_from_dict`).

    Returns:
        The dataclass instance (its ``__post_init__`` has validated the values).

    Raises:
        ConfigError: On an unknown key, a wrong type or an impossible value.
    """
    if resolve is not None:
        cls = typing.cast(type[T], resolve(cls, data))  # resolve returns a subclass of cls
    hints = typing.get_type_hints(cls)
    # T is any dataclass: typing has no bound that says so (DataclassInstance is typeshed's).
    valid = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in valid:
            raise ConfigError(
                f"unknown config key {path!r}; valid keys{' in ' + where if where else ''}: "
                f"{', '.join(valid)}"
            )
        kwargs[key] = _coerce(value, hints[key], path, resolve)
    try:
        return cls(**kwargs)
    except TypeError as err:  # pragma: no cover - every field has a default
        raise ConfigError(f"{where or cls.__name__}: {err}") from err


def flat_dict(config: Any) -> dict[str, Any]:
    """A config tree with dotted keys, one level: ``{"optim.base_lr": 0.05, ...}``.

    Args:
        config: A config dataclass, or a mapping of sections (dataclasses, mappings, values).
    """

    def flat(tree: Any, prefix: str) -> dict[str, Any]:
        if dataclasses.is_dataclass(tree) and not isinstance(tree, type):
            tree = to_dict(tree)
        if not isinstance(tree, dict) or (prefix and not tree):  # {} stays: it would vanish
            return {prefix.removesuffix("."): tree}
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flat(value, f"{prefix}{key}."))
        return out

    return flat(config, "")


def to_dict(config: Any) -> dict[str, Any]:
    """A plain, YAML-safe dict of a config tree (tuples become lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, list):
            return [plain(x) for x in v]
        return v

    return typing.cast(dict[str, Any], plain(dataclasses.asdict(config)))  # asdict gives a dict
