"""Every claim of the catalogue can fail: figures that contradict it give 'contradicted', figures
that support it give 'reproduced'; and no measured figure is typed into the catalogue."""

from __future__ import annotations

import re

import pytest

from siamkit.experiments import experiment_names, load_experiment
from siamkit.experiments.claims import Values, evaluate
from siamkit.experiments.runner import paper_values
from siamkit.experiments.spec import Check, Experiment

CLAIMS = [
    (name, i)
    for name in experiment_names()
    for i in range(len(load_experiment(name).claims))
]  # fmt: skip


def spread(centre: float, width: float = 0.5) -> list[float]:
    """Three seeds around ``centre``."""
    return [centre - width, centre, centre + width]


def figures(experiment: Experiment, check: Check, support: bool) -> Values:
    """Figures of the check's cells that support the claim (or contradict it), by its kind.

    Built from the claim's kind, cells, margin and the paper's figures only: the same builder
    serves every claim, so a check that could not fail on contrary figures fails here.
    """
    names = check.measure_of(experiment.collapse_measure)
    keys = list(zip(check.cells, names, strict=True))
    assert len(set(keys)) == len(keys), "a check reads one figure twice"
    values: Values = {}

    def put(i: int, v: list[float]) -> None:
        # Each figure's seeds spread a little differently: measures of the same runs are
        # paired seed by seed, and per-seed differences that agree exactly decide nothing.
        cell, measure = keys[i]
        centre = v[1]
        values.setdefault(cell, {})[measure] = [
            centre + (x - centre) * (1 + (i % 4) ** 2 / 4) for x in v
        ]

    m, k, sign = check.margin, len(keys), 1 if support else -1
    if check.kind == "greater":
        put(0, spread(50 + m + sign * 10))
        put(1, spread(50))
    elif check.kind == "order":
        for i in range(k):
            put(i, spread(50 + sign * 10 * (k - i)))
    elif check.kind == "difference":
        # Supported: an advantage of 20 that shrinks to 5 - m; contradicted: no advantage.
        put(0, spread(70 if support else 40))
        put(1, spread(50))
        put(2, spread(55 - m))
        put(3, spread(50))
    elif check.kind in ("above", "below"):
        side = 1 if check.kind == "above" else -1
        for i in range(k):
            put(i, spread(m + side * sign * 10))
    elif check.kind == "near_best":
        put(0, spread(60 if support else 50))
        for i in range(1, k):
            put(i, spread(50 if support else 60 + m))
    elif check.kind == "within":
        assert m > 0, "an equivalence needs the paper's tolerance"
        for i in range(k):
            put(i, spread(50, m / 20) if support or i else spread(50 + 3 * m + 5, m / 20))
    elif check.kind == "matches_paper":
        truth = paper_values(experiment)
        for i, (cell, measure) in enumerate(keys):
            t = truth[cell][measure]
            tolerance = m * abs(t) if check.relative else m
            assert tolerance > 0, "a relative tolerance of a paper figure of 0 is 0"
            put(i, spread(t if support else t + 3 * tolerance, tolerance / 20))
    else:
        collapsed = [check.threshold / 10] * 3
        healthy = [max(1.0, check.threshold * 2)] * 3
        on_side = (check.kind == "collapsed") == support
        for i in range(k):
            put(i, collapsed if on_side else healthy)
        if check.reference:
            values.setdefault(check.reference, {})[experiment.collapse_measure] = healthy
    return values


@pytest.mark.parametrize(("name", "index"), CLAIMS)
def test_every_claim_is_reproduced_on_supporting_and_contradicted_on_contrary_figures(name, index):
    experiment = load_experiment(name)
    claim = experiment.claims[index]
    paper = paper_values(experiment)
    collapse = experiment.collapse_measure
    for scale in experiment.scales:  # each scale's check (its collapse reference)
        check = claim.check.at(scale)
        for support, verdict in ((True, "reproduced"), (False, "contradicted")):
            outcome = evaluate(check, figures(experiment, check, support), paper, collapse)
            assert outcome.verdict == verdict, f"{claim.text} ({scale}): {outcome.detail}"


def _decimals(text: str) -> set[str]:
    return set(re.findall(r"\d+\.\d+", text))


@pytest.mark.parametrize("name", experiment_names())
def test_no_measured_figure_is_typed_into_the_catalogue(name):
    """Notes are written before a run: a decimal in one is a paper's figure, or was measured.

    Every decimal of a note (a claim's, a cell's, a scale's) must be one of the experiment's
    paper figures or appear in a claim's text (which quotes the paper); no note carries a date.
    """
    experiment = load_experiment(name)
    allowed = {f"{f.value:g}" for c in experiment.cells for f in c.paper.values()
               if isinstance(f.value, float)}  # fmt: skip
    allowed |= {d for c in experiment.claims for d in _decimals(c.text)}
    allowed |= {d for c in experiment.claims for d in _decimals(c.check.margin_source)}
    notes = [n for c in experiment.claims for n in c.notes.values()]
    notes += [c.note for c in experiment.cells] + [s.note for s in experiment.scales.values()]
    for note in notes:
        assert not re.search(r"\b20\d\d-\d\d-\d\d\b", note), f"a date in a note: {note}"
        typed = _decimals(note) - allowed
        assert not typed, f"{name}: {sorted(typed)} in a note is no paper figure: {note}"


def test_one_configuration_is_judged_in_one_experiment():
    """SimSiam without predictor (and so without an average) is simsiam_predictor's cell only:
    two experiments once judged it by two checks and gave it two opposite verdicts."""
    from siamkit.experiments import cell_config
    from siamkit.strict import to_dict

    def config(name: str, cell: str) -> dict:
        experiment = load_experiment(name)
        spec = next(c for c in experiment.cells if c.name == cell)
        built = to_dict(cell_config(experiment, spec, "cpu", "/tmp/cell", seed=0))
        built["train"].pop("output_dir")
        return built

    no_predictor = config("simsiam_predictor", "no predictor")
    for name in experiment_names():
        experiment = load_experiment(name)
        if name == "simsiam_predictor" or "cpu" not in experiment.scales:
            continue
        for cell in experiment.cells_at("cpu"):
            if cell.kind == "pretrain" and experiment.scale("cpu").recipe:
                assert config(name, cell.name) != no_predictor, f"{name}: {cell.name}"
