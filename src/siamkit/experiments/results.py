"""What an experiment measured: each cell's figures per seed and each claim's verdict."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from siamkit.experiments.claims import Floors, Outcome, figure
from siamkit.experiments.statistics import ALPHA

if TYPE_CHECKING:
    from siamkit.experiments.spec import Experiment


@dataclass
class CellResult:
    """A cell's figures.

    Attributes:
        name: The cell.
        folder: Its folder (one ``seed-<s>`` run folder per seed below it).
        seeds: The seeds it ran, in order.
        values: Measure name -> one value per seed, in the order of ``seeds``.
        minutes: Wall-clock minutes spent on it (every seed) in the runs that did its work.
    """

    name: str
    folder: str
    seeds: list[int] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=dict)
    minutes: float = 0.0

    def shown(self, measure: str) -> str:
        """``mean +- std (n)`` of ``measure``, or ``""`` where it was not taken."""
        values = self.values.get(measure)
        return figure(values) if values else ""


@dataclass
class ExperimentResult:
    """What an experiment measured and each claim's verdict.

    Attributes:
        name: The experiment.
        scale: The scale it ran at.
        output: Its folder.
        cells: Each cell's figures, in grid order.
        claims: Each claim's outcome, in the experiment's order.
        machine: The machine it ran on.
        floors: Each measure's noise floor, where the scale has a floor cell.
    """

    name: str
    scale: str
    output: str
    cells: list[CellResult]
    claims: list[Outcome]
    machine: str = ""
    floors: Floors = field(default_factory=dict)

    def values(self) -> dict[str, dict[str, list[float]]]:
        """Cell name -> measure name -> per-seed values."""
        return {c.name: c.values for c in self.cells}

    def to_json(self, experiment: Experiment) -> dict[str, Any]:
        """The tree of ``results.json``: figures per seed, verdicts, the rule's level."""
        return {
            "name": self.name,
            "scale": self.scale,
            "output": self.output,
            "machine": self.machine,
            "alpha": ALPHA,
            "floors": {m: f.__dict__ for m, f in self.floors.items()},
            "cells": [c.__dict__ for c in self.cells],
            "claims": [
                {"text": c.text, **o.__dict__}
                for c, o in zip(experiment.claims, self.claims, strict=True)
            ],
        }


__all__ = ["CellResult", "ExperimentResult"]
