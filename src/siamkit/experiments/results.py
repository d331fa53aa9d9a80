"""What an experiment measured: each cell's figures and each claim's outcome."""

from __future__ import annotations

from dataclasses import dataclass, field

from siamkit.experiments.claims import Outcome


@dataclass
class CellResult:
    """A cell's figures.

    Attributes:
        name: The cell.
        folder: Its folder.
        values: Measure name -> value.
        minutes: Wall-clock minutes spent on it in the runs that did its work.
    """

    name: str
    folder: str
    values: dict[str, float] = field(default_factory=dict)
    minutes: float = 0.0


@dataclass
class ExperimentResult:
    """What an experiment measured and which claims it reproduced.

    Attributes:
        name: The experiment.
        scale: The scale it ran at.
        output: Its folder.
        cells: Each cell's figures, in grid order.
        claims: Each claim's outcome, in the experiment's order.
        machine: The machine it ran on.
    """

    name: str
    scale: str
    output: str
    cells: list[CellResult]
    claims: list[Outcome]
    machine: str = ""

    def values(self) -> dict[str, dict[str, float]]:
        """Cell name -> measure name -> value."""
        return {c.name: c.values for c in self.cells}


__all__ = ["CellResult", "ExperimentResult"]
