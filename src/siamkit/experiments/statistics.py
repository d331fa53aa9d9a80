"""The noise rule of the experiments' verdicts: a contrast of cells, its standard error, a t test.

Every claim of the catalogue compares linear contrasts of cells' means (``A - B``, ``(A - B) -
(C - D)``, ``A`` against a constant) with a bound (0, or a tolerance that the paper gives). A
contrast is *beyond noise* in one direction when a one-sided t test rejects the other side at
level :data:`ALPHA`:

- cells with at least two seeds give their own variance (Welch's unequal-variance test, the
  degrees of freedom by Welch-Satterthwaite): ``SE^2 = sum_i c_i^2 s_i^2 / n_i``;
- a cell with one seed takes the variance of the experiment's *noise floor*: the standard
  deviation ``sigma`` of its reference cell over at least :data:`MIN_FLOOR_SEEDS` seeds, with
  that many seeds less one degrees of freedom. The difference of two single-seed cells then has
  ``SE = sigma sqrt(2)``, and is beyond noise at ``t(1 - ALPHA, m - 1) sigma sqrt(2)``;
- a contrast of several measures of one cell (``h`` against ``g(h)`` of the same runs) is
  paired: the per-seed contrasts are one sample, tested against the bound with ``n - 1``
  degrees of freedom;
- a cell with one seed and no floor gives no variance, and the contrast is not decidable.

Nothing here knows about claims; :mod:`siamkit.experiments.claims` builds the contrasts.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

#: One-sided level of every test. A claim is tested both ways (reproduced, contradicted), so a
#: claim with no true effect reads beyond noise with a chance of up to twice this
#: (docs/experiments/README.md says how many claims were tested).
ALPHA = 0.05
#: Seeds of a noise floor's reference cell, at least.
MIN_FLOOR_SEEDS = 5


@dataclass(frozen=True)
class NoiseFloor:
    """The seed-to-seed spread of one measure at one scale, for cells run with one seed.

    Attributes:
        std: Standard deviation of the reference cell's values over its seeds.
        seeds: How many seeds it was measured from (at least :data:`MIN_FLOOR_SEEDS`).
        cell: The reference cell.
    """

    std: float
    seeds: int
    cell: str


def mean(values: Sequence[float]) -> float:
    """The mean of the seeds' values."""
    return statistics.fmean(values)


def std(values: Sequence[float]) -> float:
    """Their sample standard deviation (``nan`` for one seed)."""
    return statistics.stdev(values) if len(values) > 1 else math.nan


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (normal for ``inf``)."""
    from scipy import stats

    return float(stats.norm.ppf(p) if math.isinf(df) else stats.t.ppf(p, df))


def _t_sf(t: float, df: float) -> float:
    from scipy import stats

    return float(stats.norm.sf(t) if math.isinf(df) else stats.t.sf(t, df))


@dataclass(frozen=True)
class Contrast:
    """A linear contrast of cells' means with its uncertainty.

    Attributes:
        estimate: ``sum_i c_i mean_i``.
        se: Its standard error (0: the seeds agreed exactly, and nothing can be judged by it).
        df: Degrees of freedom of its t statistic.
        how: ``welch`` (cells' own variances), ``one-sample`` (one cell against a constant),
            ``paired`` (measures of the same runs), ``floor`` (some variance from the floor).
    """

    estimate: float
    se: float
    df: float
    how: str

    def p_above(self, bound: float) -> float:
        """One-sided p of ``true contrast <= bound`` (small: the contrast is above ``bound``).

        Seeds that agree exactly (``se`` 0, as two kNN accuracies on a few hundred images can)
        give no measure of the noise: the p is then 1 either way, never "beyond noise".
        """
        return _t_sf((self.estimate - bound) / self.se, self.df) if self.se > 0 else 1.0

    def p_below(self, bound: float) -> float:
        """One-sided p of ``true contrast >= bound`` (small: the contrast is below ``bound``)."""
        return _t_sf((bound - self.estimate) / self.se, self.df) if self.se > 0 else 1.0

    def threshold(self, alpha: float = ALPHA) -> float:
        """How far from its bound the contrast must lie to count as beyond noise at ``alpha``.

        The critical distance of the one-sided test: a true difference of that size is called
        only half the time (about 1.4 times it, at 4 degrees of freedom, 80% of the time).
        ``inf`` where the seeds agreed exactly.
        """
        return t_quantile(1 - alpha, self.df) * self.se if self.se > 0 else math.inf


def contrast(
    samples: Sequence[Sequence[float]],
    coefficients: Sequence[float],
    floor: NoiseFloor | None = None,
    paired: bool = False,
    floor_member: Sequence[bool] | None = None,
) -> Contrast | None:
    """The contrast ``sum_i c_i mean(samples[i])`` and its standard error.

    Args:
        samples: Each cell's per-seed values (a cell's measure).
        coefficients: ``c_i``, one per sample.
        floor: The noise floor, for samples of one seed.
        paired: The samples are measures of the same runs, seed by seed (equal lengths): the
            per-seed contrasts are tested as one sample.
        floor_member: Which samples are the floor's own cell: their variance is the floor's
            estimate too, so it joins the floor's term rather than counting as independent.

    Returns:
        The contrast, or ``None`` where a sample has one seed and there is no floor.
    """
    if paired and len({len(s) for s in samples}) == 1 and len(samples[0]) > 1:
        per_seed = [sum(c * v for c, v in zip(coefficients, vs, strict=True))
                    for vs in zip(*samples, strict=True)]  # fmt: skip
        n = len(per_seed)
        return Contrast(mean(per_seed), std(per_seed) / math.sqrt(n), n - 1, "paired")
    members = floor_member or [False] * len(samples)
    terms, dfs, floor_term = [], [], 0.0
    for values, c, member in zip(samples, coefficients, members, strict=True):
        n = len(values)
        if floor is not None and (n == 1 or member):
            floor_term += c * c * floor.std**2 / n
        elif n > 1:
            terms.append(c * c * std(values) ** 2 / n)
            dfs.append(n - 1.0)
        else:
            return None
    how = "one-sample" if len(samples) == 1 else "welch"
    if floor_term > 0 and floor is not None:
        # Every single-seed cell (and the floor's own cell) takes the same estimate of sigma:
        # their terms are one variance estimate with the floor's degrees of freedom.
        terms.append(floor_term)
        dfs.append(floor.seeds - 1.0)
        how = "floor"
    estimate = sum(c * mean(v) for v, c in zip(samples, coefficients, strict=True))
    se2 = sum(terms)
    if se2 == 0:
        return Contrast(estimate, 0.0, math.inf, how)
    # Welch-Satterthwaite: the degrees of freedom of a sum of independent variance estimates.
    df = se2**2 / sum(t * t / d for t, d in zip(terms, dfs, strict=True) if t > 0)
    return Contrast(estimate, math.sqrt(se2), df, how)


def floor_of(values: Sequence[float], cell: str) -> NoiseFloor | None:
    """The noise floor measured on ``values`` of the reference ``cell`` (``None``: too few)."""
    if len(values) < MIN_FLOOR_SEEDS:
        return None
    return NoiseFloor(std(values), len(values), cell)


__all__ = [
    "ALPHA",
    "MIN_FLOOR_SEEDS",
    "Contrast",
    "NoiseFloor",
    "contrast",
    "floor_of",
    "mean",
    "std",
    "t_quantile",
]
