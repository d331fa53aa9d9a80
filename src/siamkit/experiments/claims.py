"""A claim's verdict from the seeds' figures: reproduced, contradicted or inconclusive.

The rule (docs/experiments/README.md prints it beside the counts):

- Each :class:`~siamkit.experiments.spec.Check` is one or more linear contrasts of the cells'
  means against a bound: ``A - B > margin`` (``greater``), each adjacent pair of ``order``, the
  claimed advantage ``A - B > 0`` *and* its change ``(A - B) - (C - D) > margin`` (``difference``),
  each cell against a constant (``above``/``below``), the first cell against each other one
  (``near_best``: not worse by ``margin`` or more), every pair within ``margin`` (``within``,
  an equivalence), every cell within ``margin`` of the paper's figure, relative or absolute
  (``matches_paper``, an equivalence).
- A contrast is *beyond noise* when a one-sided t test at level
  :data:`~siamkit.experiments.statistics.ALPHA` rejects the other side
  (:mod:`siamkit.experiments.statistics`: Welch's test on the seeds, the noise floor for
  single-seed cells, paired for measures of the same runs). An equivalence (``within``,
  ``matches_paper``) is two one-sided tests (TOST): the difference is shown to be above
  ``-margin`` and below ``+margin``.
- *reproduced*: every contrast of the claim is beyond noise in the paper's direction (every
  equivalence shown). *contradicted*: some contrast is beyond noise the other way (for a claim
  of several contrasts, at ``ALPHA / k`` each, Bonferroni; the advantage a ``difference``
  claim is about is one of them, so an advantage shown reversed contradicts it).
  *inconclusive*: neither; the detail then gives each test's critical distance (how far from its
  bound a contrast must lie to be called) beside the paper's difference. A claim is tested both
  ways, so with no true effect it reads beyond noise with a chance of up to ``2 ALPHA``. Seeds
  that agree exactly give no measure of the noise, and decide nothing.
- A collapse claim (``collapsed``/``healthy``) reads the collapse metric of every seed against a
  threshold fixed before the run, cell by cell: reproduced when every seed of every cell is on
  the claimed side, contradicted when every seed of some cell is on the other, inconclusive
  otherwise; a ``collapsed`` check with a ``reference`` cell is inconclusive unless the reference
  is healthy on every seed (the metric must be able to tell the two apart). No test of noise is
  involved, so these claims are not counted among the tested ones.
- Margins are 0 or a tolerance (``margin_source`` says where it comes from); never negative.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from siamkit.experiments.spec import Check
from siamkit.experiments.statistics import ALPHA, Contrast, NoiseFloor, contrast, mean, std

#: The measured values: cell name -> measure name -> one value per seed.
Values = dict[str, dict[str, list[float]]]
#: The paper's numeric figures: cell name -> measure name -> value.
PaperValues = dict[str, dict[str, float]]
#: Each measure's noise floor, where the experiment measured one.
Floors = dict[str, NoiseFloor]
#: A claim's verdict (``not tested``: the claim names the scales that can test it, and this
#: is not one of them).
Verdict = Literal["reproduced", "contradicted", "inconclusive", "not measured", "not tested"]


@dataclass
class Outcome:
    """A checked claim.

    Attributes:
        verdict: See :data:`Verdict`.
        detail: The compared figures and the test, e.g. ``A: 45.20 +- 0.31 (3), ...``.
        threshold: The smallest difference the rule could have called beyond noise (the
            largest of the claim's contrasts), ``None`` where not computed.
        paper_difference: The same contrast of the paper's figures, where it prints them.
    """

    verdict: Verdict
    detail: str
    threshold: float | None = None
    paper_difference: float | None = None


def figure(values: Sequence[float]) -> str:
    """``mean +- std (n)`` of a cell's seeds (``mean (1)`` for one seed)."""
    if len(values) == 1:
        return f"{values[0]:.2f} (1)"
    return f"{mean(values):.2f} +- {std(values):.2f} ({len(values)})"


@dataclass
class _Test:
    """One contrast against a bound, in the claim's direction (``+1`` above, ``-1`` below)."""

    name: str
    contrast: Contrast | None
    bound: float
    direction: int

    def p(self, towards_claim: bool) -> float:
        assert self.contrast is not None
        above = (self.direction > 0) == towards_claim
        return self.contrast.p_above(self.bound) if above else self.contrast.p_below(self.bound)

    def shown(self) -> str:
        c = self.contrast
        if c is None:
            return f"{self.name}: one seed and no noise floor"
        side = ">" if self.direction > 0 else "<"
        if c.se == 0:
            return f"{self.name} {c.estimate:+.2f} {side} {self.bound:+g}: the seeds agree exactly"
        return (f"{self.name} {c.estimate:+.2f} {side} {self.bound:+g}: called at "
                f"{c.threshold():.2f} from the bound ({c.how}, p {self.p(True):.3f})")  # fmt: skip


def _combine(tests: list[_Test]) -> tuple[Verdict, float | None]:
    """All shown -> reproduced; any shown the other way (Bonferroni) -> contradicted."""
    if any(t.contrast is None for t in tests):
        return "inconclusive", None
    # One name per contrast: an equivalence's two one-sided tests of a pair share theirs, so k
    # counts contrasts, not tests.
    k = len({t.name for t in tests})
    threshold = max(t.contrast.threshold() for t in tests if t.contrast is not None)
    if any(t.p(False) < ALPHA / k for t in tests):
        return "contradicted", threshold
    if all(t.p(True) < ALPHA for t in tests):
        return "reproduced", threshold
    return "inconclusive", threshold


def _paper(coefficients: dict[str, float], figures: dict[str, float | None]) -> float | None:
    """The same contrast of the paper's figures (``None`` where one is not a number)."""
    known = {k: figures.get(k) for k in coefficients}
    total = 0.0
    for k, c in coefficients.items():
        value = known[k]
        if value is None:
            return None
        total += c * value
    return total


@dataclass
class _Cells:
    """A check's cells as the detail names them, with their seeds and the paper's figures.

    Attributes:
        keys: Each cell's name in the detail (with its measure where the check reads several).
        cell_of: Key -> the cell's name in the experiment.
        samples: Key -> the measured values, one per seed.
        truth: Key -> the paper's figure, ``None`` where it prints none.
        floor: The measure's noise floor (only where the check reads one measure).
        paired: The cells are measures of the same runs, compared seed by seed.
    """

    keys: list[str]
    cell_of: dict[str, str]
    samples: dict[str, list[float]]
    truth: dict[str, float | None]
    floor: NoiseFloor | None
    paired: bool

    def test(
        self, name: str, coefficients: dict[str, float], bound: float, direction: int
    ) -> _Test:
        """The contrast ``coefficients`` of the cells' seeds against ``bound``."""
        floor = self.floor
        members = [floor is not None and self.cell_of[k] == floor.cell for k in coefficients]
        c = contrast([self.samples[k] for k in coefficients], list(coefficients.values()), floor,
                     self.paired, members)  # fmt: skip
        return _Test(name, c, bound, direction)


#: A check's contrasts and the same contrast of the paper's figures, where it has one; ``None``
#: where the check needs a paper figure that is not a number.
_TestPlan = tuple[list[_Test], float | None] | None


def _greater(check: Check, cells: _Cells) -> _TestPlan:
    """``A - B > margin``."""
    k = cells.keys
    gap: dict[str, float] = {k[0]: 1, k[1]: -1}
    return [cells.test(f"{k[0]} - {k[1]}", gap, check.margin, +1)], _paper(gap, cells.truth)


def _order(check: Check, cells: _Cells) -> _TestPlan:
    """Each cell above the next by more than ``margin``."""
    pairs = itertools.pairwise(cells.keys)
    return [cells.test(f"{a} - {b}", {a: 1, b: -1}, check.margin, +1) for a, b in pairs], None


def _difference(check: Check, cells: _Cells) -> _TestPlan:
    """The advantage ``A - B > 0`` and its change ``(A - B) - (C - D) > margin``."""
    k = cells.keys
    gap = {k[0]: 1.0, k[1]: -1.0}
    change = {k[0]: 1.0, k[1]: -1.0, k[2]: -1.0, k[3]: 1.0}
    tests = [
        cells.test(f"the advantage {k[0]} - {k[1]}", gap, 0.0, +1),
        cells.test(f"its change ({k[0]} - {k[1]}) - ({k[2]} - {k[3]})", change, check.margin, +1),
    ]
    return tests, _paper(change, cells.truth)


def _above_or_below(check: Check, cells: _Cells) -> _TestPlan:
    """Every cell above (``above``) or below (``below``) the constant ``margin``."""
    direction = 1 if check.kind == "above" else -1
    return [cells.test(f"{c}", {c: 1}, check.margin, direction) for c in cells.keys], None


def _near_best(check: Check, cells: _Cells) -> _TestPlan:
    """The first cell not worse than any other by ``margin`` or more."""
    k, m = cells.keys, check.margin
    return [cells.test(f"{k[0]} - {c}", {k[0]: 1, c: -1}, -m, +1) for c in k[1:]], None


def _within(check: Check, cells: _Cells) -> _TestPlan:
    """Every pair within ``margin`` of each other: two one-sided tests per pair."""
    k, m = cells.keys, check.margin
    pairs = [(a, b) for i, a in enumerate(k) for b in k[i + 1 :]]
    tests = [
        cells.test(f"{a} - {b}", {a: 1, b: -1}, bound, direction)
        for a, b in pairs
        for bound, direction in ((-m, +1), (m, -1))
    ]
    printed = [v for v in (cells.truth[c] for c in k) if v is not None]
    return tests, (max(printed) - min(printed) if len(printed) == len(k) else None)


def _matches_paper(check: Check, cells: _Cells) -> _TestPlan:
    """Every cell within ``margin`` (relative or absolute) of its paper figure: two tests each."""
    m = check.margin
    given = {c: cells.truth[c] for c in cells.keys}
    tests: list[_Test] = []
    for c, t in given.items():
        if t is None:
            return None
        tolerance = m * abs(t) if check.relative else m
        tests += [
            cells.test(c, {c: 1}, t - tolerance, +1),
            cells.test(c, {c: 1}, t + tolerance, -1),
        ]
    return tests, None


#: The contrasts of each kind of check that a t test decides.
_TESTS_BY_KIND: dict[str, Callable[[Check, _Cells], _TestPlan]] = {
    "greater": _greater,
    "order": _order,
    "difference": _difference,
    "above": _above_or_below,
    "below": _above_or_below,
    "near_best": _near_best,
    "within": _within,
    "matches_paper": _matches_paper,
}


def _keys(check: Check, names: list[str]) -> list[str]:
    """Each cell's name in the detail: with its measure where the check reads several."""
    return [
        f"{c} ({m})" if len(set(names)) > 1 else c for c, m in zip(check.cells, names, strict=True)
    ]


def evaluate(
    check: Check,
    values: Values,
    paper: PaperValues | None = None,
    collapse: str = "collapse_std",
    floors: Floors | None = None,
) -> Outcome:
    """The verdict of ``check`` on the measured ``values``.

    Args:
        check: The test.
        values: Cell name -> measure name -> per-seed values.
        paper: Cell name -> measure name -> the paper's number (``matches_paper``, and the
            paper's difference shown beside the threshold).
        collapse: The name of the collapse-std measure (read by ``collapsed``/``healthy``).
        floors: Measure name -> the experiment's noise floor (for single-seed cells).
    """
    names = check.measure_of(collapse)
    keys = _keys(check, names)
    samples = {
        k: values.get(c, {}).get(m) or [] for k, c, m in zip(keys, check.cells, names, strict=True)
    }
    missing = [k for k, v in samples.items() if not v or not all(math.isfinite(x) for x in v)]
    measure = names[0] if len(set(names)) == 1 else "measures as named"
    if missing:
        return Outcome("not measured", f"not measured at this scale: {measure} of {missing}")
    shown = "; ".join(f"{k}: {figure(v)}" for k, v in samples.items())
    if check.kind in ("collapsed", "healthy"):
        return _collapse(check, values, collapse, samples, shown)
    floor = (floors or {}).get(names[0]) if len(set(names)) == 1 else None
    paired = len(set(check.cells)) == 1  # measures of the same runs, seed by seed
    truth = {
        k: (paper or {}).get(c, {}).get(m) for k, c, m in zip(keys, check.cells, names, strict=True)
    }
    cells = _Cells(keys, dict(zip(keys, check.cells, strict=True)), samples, truth, floor, paired)
    plan = _TESTS_BY_KIND.get(check.kind)
    assert plan is not None
    built = plan(check, cells)
    if built is None:
        return Outcome(
            "not measured", f"{shown}; no numeric paper figure of {measure} for every cell"
        )
    tests, paper_diff = built
    verdict, threshold = _combine(tests)
    lines = "; ".join(t.shown() for t in tests)
    paper_line = f"; the paper's difference {paper_diff:+.2f}" if paper_diff is not None else ""
    return Outcome(verdict, f"{shown} ({measure}). {lines}{paper_line}", threshold, paper_diff)


def _collapse(check: Check, values: Values, collapse: str, samples: dict[str, list[float]],
              shown: str) -> Outcome:  # fmt: skip
    """Every seed of every cell on the claimed side of the threshold, cell by cell."""
    t = check.threshold
    per_cell = {
        k: [v < t if check.kind == "collapsed" else v >= t for v in vs] for k, vs in samples.items()
    }
    side = "below" if check.kind == "collapsed" else "at or above"
    detail = f"{shown} (collapse metric of every seed {side} {t:g})"
    if check.reference:
        ref = values.get(check.reference, {}).get(collapse) or []
        if not ref or not all(v >= t for v in ref):
            return Outcome("inconclusive", f"{detail}; the reference {check.reference!r} is not "
                           f"healthy on every seed ({figure(ref) if ref else 'not measured'}), "
                           "so the metric does not tell the two apart")  # fmt: skip
        detail += f"; reference {check.reference!r} healthy: {figure(ref)}"
    against = [k for k, on_side in per_cell.items() if not any(on_side)]
    if against:
        return Outcome("contradicted", f"{detail}; every seed of {against} on the other side")
    if all(all(on_side) for on_side in per_cell.values()):
        return Outcome("reproduced", detail)
    mixed = {k: f"{sum(v)} of {len(v)}" for k, v in per_cell.items() if not all(v)}
    return Outcome("inconclusive", f"{detail}; seeds on that side: {mixed}")


__all__ = ["Floors", "Outcome", "PaperValues", "Values", "Verdict", "evaluate", "figure"]
