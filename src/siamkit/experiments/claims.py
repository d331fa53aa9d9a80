"""Whether a claim's direction was reproduced, from the measured values of the cells.

Each :class:`~siamkit.experiments.spec.Check` compares figures of named cells (or a cell's figure
with its paper figure); the answer is ``True`` (reproduced in direction), ``False`` (not) or
``None`` (a figure it needs was not measured at this scale), with a line that shows the figures
it compared.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from siamkit.experiments.spec import Check

#: The measured values: cell name -> measure name -> value (absent where not measured).
Values = dict[str, dict[str, float]]
#: The paper's numeric figures: cell name -> measure name -> value.
PaperValues = dict[str, dict[str, float]]


@dataclass
class Outcome:
    """A checked claim.

    Attributes:
        reproduced: In direction (``True``), not (``False``), or not decidable (``None``).
        detail: The compared figures, e.g. ``with: 45.20, without: 12.10 (knn; ...)``.
    """

    reproduced: bool | None
    detail: str


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def evaluate(
    check: Check, values: Values, paper: PaperValues | None = None, collapse: str = "collapse_std"
) -> Outcome:
    """Check ``check`` against the measured ``values``.

    Args:
        check: The test.
        values: Cell name -> measure name -> measured value.
        paper: Cell name -> measure name -> the paper's number (for ``matches_paper``).
        collapse: The name of the collapse-std measure (read by ``collapsed``/``healthy``).
    """
    names = check.measure_of(collapse)
    figures = [values.get(c, {}).get(m) for c, m in zip(check.cells, names, strict=True)]
    labels = check.cells if len(set(names)) == 1 else [
        f"{c} ({m})" for c, m in zip(check.cells, names, strict=True)
    ]  # fmt: skip
    measure = names[0] if len(set(names)) == 1 else "measures as named"
    if not all(_finite(v) for v in figures):
        missing = [c for c, v in zip(labels, figures, strict=True) if not _finite(v)]
        return Outcome(None, f"not measured at this scale: {measure} of {missing}")
    f = [float(v) for v in figures]  # type: ignore[arg-type]
    shown = ", ".join(f"{c}: {v:.2f}" for c, v in zip(labels, f, strict=True))
    m = check.margin
    by = f" by more than {m:g}" if m else ""
    if check.kind == "greater":
        return Outcome(f[0] > f[1] + m, f"{shown} ({measure}; the first above the second{by})")
    if check.kind == "order":
        ok = all(x > y + m for x, y in itertools.pairwise(f))
        return Outcome(ok, f"{shown} ({measure}; each above the next{by})")
    if check.kind == "difference":
        first, second = f[0] - f[1], f[2] - f[3]
        return Outcome(
            first > second + m,
            f"{shown} ({measure}; gap {first:+.2f} of the first pair above {second:+.2f} of the "
            f"second{by})",
        )
    if check.kind == "above":
        return Outcome(all(v > m for v in f), f"{shown} ({measure}; every one above {m:g})")
    if check.kind == "below":
        return Outcome(all(v < m for v in f), f"{shown} ({measure}; every one below {m:g})")
    if check.kind == "near_best":
        best = max(f)
        return Outcome(best - f[0] <= m, f"{shown} ({measure}; the first within {m:g} of the "
                       f"best, {best:.2f})")  # fmt: skip
    if check.kind == "within":
        best = max(f)
        ok = all(best - v <= m for v in f)
        return Outcome(ok, f"{shown} ({measure}; every one within {m:g} of the best, {best:.2f})")
    if check.kind == "close":
        ok = abs(f[0] - f[1]) <= m
        return Outcome(ok, f"{shown} ({measure}; the two within {m:g} of each other)")
    if check.kind == "matches_paper":
        truth = [(paper or {}).get(c, {}).get(m) for c, m in zip(check.cells, names, strict=True)]
        if not all(_finite(t) for t in truth):
            return Outcome(None, f"no numeric paper figure of {measure} for every cell")
        errors = [abs(v - t) / abs(t) for v, t in zip(f, truth, strict=True)]  # type: ignore[operator,arg-type]
        worst = max(errors)
        return Outcome(worst <= m, f"{shown} ({measure}; worst relative error {worst:.1%}, "
                       f"needs at most {m:.0%})")  # fmt: skip
    if check.kind == "collapsed":
        ok = all(v < check.threshold for v in f)
        return Outcome(ok, f"{shown} (collapse std; collapsed below {check.threshold:g})")
    assert check.kind == "healthy"
    ok = all(v >= check.threshold for v in f)
    return Outcome(ok, f"{shown} (collapse std; healthy at {check.threshold:g} or above)")


__all__ = ["Outcome", "PaperValues", "Values", "evaluate"]
