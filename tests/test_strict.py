"""Strict mapping-to-dataclass loading: lists and mappings of typed values."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from siamkit.errors import ConfigError
from siamkit.strict import from_dict, to_dict


@dataclass
class Item:
    name: str = ""
    value: float = 0.0


@dataclass
class Holder:
    names: list[str] = field(default_factory=list)
    items: list[Item] = field(default_factory=list)
    table: dict[str, float | str] = field(default_factory=dict)


def test_lists_and_mappings_are_converted_item_by_item():
    h = from_dict(Holder, {"names": ["a", 1], "items": [{"name": "x", "value": 2}],
                           "table": {"p": 3, "q": "unstable"}})  # fmt: skip
    assert h.names == ["a", "1"]
    assert h.items == [Item("x", 2.0)] and isinstance(h.items[0].value, float)
    assert h.table == {"p": 3.0, "q": "unstable"}
    assert from_dict(Holder, to_dict(h)) == h


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"names": "a"}, "names must be a list"),
        ({"items": [{"name": "x", "colour": 1}]}, r"unknown config key 'items\[0\].colour'"),
        ({"items": [{"value": "big"}]}, r"items\[0\].value must be a number"),
        ({"table": ["p"]}, "table must be a mapping"),
        ({"table": {"p": [1]}}, "table.p must be"),
    ],
)
def test_wrong_items_name_their_place(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Holder, data)
