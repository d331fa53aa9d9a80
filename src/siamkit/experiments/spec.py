"""An experiment as data: a grid of cells, what is measured, the paper's figures, the claims.

Each experiment of the catalogue is one YAML file under ``siamkit/experiments/catalogue/``,
loaded strictly onto :class:`Experiment` (an unknown key is an error naming its place). Nothing
here runs anything: :func:`cell_config` turns a cell into the :class:`~siamkit.config.RunConfig`
it pretrains with at a scale, and the runner (:mod:`siamkit.experiments.runner`) does the rest.

A cell is one pretraining run (``kind: pretrain``: the scale's recipe, the scale's overrides,
then the cell's) or one estimate on pairs of known mutual information (``kind: gaussian_mi``).
Each :class:`Measure` is then taken of every cell that has a paper figure or that a claim names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Literal

from siamkit.errors import ConfigError
from siamkit.experiments.statistics import MIN_FLOOR_SEEDS

#: The scales of every experiment: ``cpu`` fits each cell in minutes on a 2-core CPU, ``gpu``
#: is a single-GPU CIFAR-10 ResNet-18 grid, ``paper`` is the paper's own recipe.
SCALES = ("cpu", "gpu", "paper")
Scale = Literal["cpu", "gpu", "paper"]

#: What a measure reads or computes of a cell (see :mod:`siamkit.experiments.measures`).
MeasureKind = Literal[
    "knn",
    "knn_gain",
    "random_init_knn",
    "collapse_std",
    "eval_collapse_std",
    "final_loss",
    "linear",
    "finetune",
    "finetune_scratch",
    "distill",
    "gaussian_mi",
]

#: Claims about the measured values (see :mod:`siamkit.experiments.claims`).
CheckKind = Literal[
    "greater",
    "order",
    "difference",
    "above",
    "below",
    "near_best",
    "within",
    "matches_paper",
    "collapsed",
    "healthy",
]


@dataclass
class Measure:
    """One figure taken of every cell.

    Attributes:
        name: Column key, unique in the experiment; the paper's figures are keyed by it.
        kind: What is measured (:data:`MeasureKind`).
        label: Column header (default: ``name``).
        features: ``linear``: probe ``backbone`` (h) or ``projection`` (g(h)) features.
        label_fraction: ``finetune``/``finetune_scratch``: share of the training labels.
        from_head_layers: ``finetune``: projection-head layers kept (SimCLRv2: 1).
        teacher: ``distill``: the ``finetune`` measure whose classifier teaches.
        student_width: ``distill``: the student's width multiplier (default: the teacher's).
        estimator: ``gaussian_mi``: ``mine``, ``mine_f`` or ``infonce``.
        epochs: Epochs of a probe, fine-tuning or distillation at each scale
            (``{cpu: 10, gpu: 100}``); a scale without an entry takes the protocol's default.
    """

    name: str = ""
    kind: MeasureKind = "knn"
    label: str = ""
    features: Literal["backbone", "projection"] = "backbone"
    label_fraction: float = 0.1
    from_head_layers: int = 0
    teacher: str = ""
    student_width: float | None = None
    estimator: Literal["mine", "mine_f", "infonce"] = "mine"
    epochs: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("every measure needs a name")
        if self.kind == "distill" and not self.teacher:
            raise ConfigError(f"measure {self.name!r}: distill needs a teacher measure")
        if not 0.0 < self.label_fraction <= 1.0:
            raise ConfigError(f"measure {self.name!r}: label_fraction must be in (0, 1]")
        bad = sorted(set(self.epochs) - set(SCALES))
        if bad:
            raise ConfigError(f"measure {self.name!r}: epochs for unknown scales {bad}")

    @property
    def header(self) -> str:
        """The column header."""
        return self.label or self.name


@dataclass
class PaperFigure:
    """A figure of the paper for a cell: a number, or a word such as ``unstable``.

    Attributes:
        value: The figure (``collapse``, ``unstable`` and the like stay words).
        source: Where it is printed, if not the experiment's ``source``.
    """

    value: float | str = ""
    source: str = ""


@dataclass
class Cell:
    """One point of the grid.

    Attributes:
        name: Row label, unique in the experiment.
        method: Fills ``{method}`` in the scale's recipe name (default: the experiment's).
        set: ``section.key=value`` overrides on top of the scale's (``--set`` syntax).
        set_at: Further overrides at one scale only (``{cpu: [train.epochs=3]}``), applied last.
        kind: ``pretrain`` or ``gaussian_mi``.
        dim: ``gaussian_mi``: dimension of each Gaussian.
        rho: ``gaussian_mi``: correlation of every coordinate pair.
        scales: The scales this cell runs at (default: all).
        paper: The paper's figure for each measure name.
        note: What differs from the paper in this cell, for the report.
    """

    name: str = ""
    method: str = ""
    set: list[str] = field(default_factory=list)
    set_at: dict[str, list[str]] = field(default_factory=dict)
    kind: Literal["pretrain", "gaussian_mi"] = "pretrain"
    dim: int = 2
    rho: float = 0.0
    scales: list[str] = field(default_factory=lambda: list(SCALES))
    paper: dict[str, PaperFigure] = field(default_factory=dict)
    note: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("every cell needs a name")
        bad = sorted((set(self.scales) | set(self.set_at)) - set(SCALES))
        if bad:
            raise ConfigError(f"cell {self.name!r}: unknown scales {bad}; use {list(SCALES)}")
        if self.kind == "gaussian_mi" and not -1.0 < self.rho < 1.0:
            raise ConfigError(f"cell {self.name!r}: rho must be in (-1, 1), got {self.rho}")

    @property
    def slug(self) -> str:
        """The cell's folder name: its name in lower-case letters, digits and dashes.

        Signs are spelt out (``rho=-0.5`` and ``rho=+0.5`` get different folders).
        """
        name = re.sub(r"-(?=[\d.])", " minus ", self.name.replace("+", " plus "))
        return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "cell"


@dataclass
class ScaleSpec:
    """How an experiment runs at one scale.

    Attributes:
        recipe: Recipe name every pretraining cell starts from (``simsiam/cifar10_cpu``);
            ``{method}`` in it stands for the cell's method (``{method}/cifar10_cpu``).
        set: Overrides for every cell (the budget: epochs, time).
        mi_steps: ``gaussian_mi``: steps of the statistics network.
        mi_batch: ``gaussian_mi``: pairs per step of MINE and MINE-f.
        mi_infonce_batch: ``gaussian_mi``: InfoNCE's pairs per step; it scores all ``B x B``
            pairs of a batch (so its cost grows as ``B^2``) and cannot exceed ``log B``.
        seeds: Seeds of every cell (``0 .. seeds - 1``, ``train.seed`` of a pretraining cell);
            ``siamkit experiment --seeds N`` overrides it.
        floor_cell: The reference cell of the noise floor, which then runs
            ``max(seeds, floor_seeds)`` seeds; its spread over them stands for the spread of
            single-seed cells (:mod:`siamkit.experiments.statistics`).
        floor_seeds: Seeds of the noise floor's cell (at least 5).
        note: What this scale can and cannot show, for the report.
    """

    recipe: str = ""
    set: list[str] = field(default_factory=list)
    mi_steps: int = 2000
    mi_batch: int = 256
    mi_infonce_batch: int = 64
    seeds: int = 1
    floor_cell: str = ""
    floor_seeds: int = MIN_FLOOR_SEEDS
    note: str = ""

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise ConfigError(f"seeds must be at least 1, got {self.seeds}")
        if self.floor_seeds < MIN_FLOOR_SEEDS:
            raise ConfigError(
                f"a noise floor needs at least {MIN_FLOOR_SEEDS} seeds, got {self.floor_seeds}"
            )

    def seeds_of(self, cell: str, seeds: int | None = None) -> int:
        """How many seeds ``cell`` runs (``seeds``: the command line's, in place of ours)."""
        n = seeds or self.seeds
        return max(n, self.floor_seeds) if cell == self.floor_cell else n


@dataclass
class Check:
    """A claim's test on the measured values.

    Attributes:
        kind: ``greater``: ``cells[0]`` above ``cells[1]`` by more than ``margin``; ``order``:
            each cell above the next (by more than ``margin``); ``difference``: the advantage
            ``cells[0] - cells[1]`` exists and is above ``cells[2] - cells[3]`` by more than
            ``margin`` (an advantage that shrinks); ``above``/``below``: every cell above/below
            ``margin`` itself (a gain over random init); ``near_best``: ``cells[0]`` not worse
            than any other cell by ``margin`` or more; ``within``: every two cells within
            ``margin`` of each other (an equivalence); ``matches_paper``: every cell within
            ``margin`` (relative) of its paper figure for the measure; ``collapsed``: every
            seed's collapse metric below ``threshold``; ``healthy``: every seed's at or above
            it. :mod:`siamkit.experiments.claims` turns each into verdicts beyond noise.
        cells: The cells it compares, by name.
        measure: The measure it reads (``collapsed``/``healthy`` read ``collapse_std``).
        measures: One measure per cell instead, to compare two measures of one cell (h
            against g(h)): ``cells: [A, A]`` with ``measures: [linear_h, linear_g]``.
        margin: See ``kind``: 0, or a tolerance the paper states (never negative: an "at least
            as good" claim is ``near_best`` with the paper's tolerance, or ``greater``).
        margin_source: Where a non-zero margin comes from (required with one).
        relative: ``matches_paper``: the margin is a share of the paper's figure (else an
            absolute tolerance, as for a figure of 0).
        threshold: Collapse threshold of ``collapsed``/``healthy`` (the runs' own default),
            fixed before the run.
        reference: ``collapsed``: a cell that must be healthy on every seed for the verdict to
            count (the metric must tell a collapse from a healthy run at this scale).
        reference_at: The reference at one scale, in place of ``reference`` (a cell whose
            settings match the collapsing cell's at that scale only).
    """

    kind: CheckKind = "greater"
    cells: list[str] = field(default_factory=list)
    measure: str = "knn"
    measures: list[str] = field(default_factory=list)
    margin: float = 0.0
    margin_source: str = ""
    relative: bool = True
    threshold: float = 0.3
    reference: str = ""
    reference_at: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.margin < 0:
            raise ConfigError(
                f"a {self.kind!r} check has margin {self.margin:g}: margins are 0 or the paper's "
                "tolerance, never negative (an 'at least as good' claim is near_best with the "
                "paper's tolerance)"
            )
        if self.margin and not self.margin_source:
            raise ConfigError(
                f"a {self.kind!r} check's margin {self.margin:g} needs a margin_source"
            )
        if (self.reference or self.reference_at) and self.kind != "collapsed":
            raise ConfigError("only a 'collapsed' check takes a reference cell")
        bad = sorted(set(self.reference_at) - set(SCALES))
        if bad:
            raise ConfigError(f"a check's reference_at names unknown scales {bad}")
        needs = {"greater": 2, "difference": 4}.get(self.kind)
        if needs is not None and len(self.cells) != needs:
            raise ConfigError(f"a {self.kind!r} check compares {needs} cells, got {self.cells}")
        if not self.cells:
            raise ConfigError(f"a {self.kind!r} check needs cells")
        if self.measures and len(self.measures) != len(self.cells):
            raise ConfigError("a check's measures, when given, name one measure per cell")
        read = list(zip(self.cells, self.measures or [self.measure] * len(self.cells), strict=True))
        if len(set(read)) != len(read):
            raise ConfigError(
                f"a {self.kind!r} check reads one figure twice ({self.cells}): a contrast names "
                "each cell's measure once"
            )

    def at(self, scale: str) -> Check:
        """The check as it applies at ``scale`` (its reference for that scale)."""
        return replace(self, reference=self.reference_at.get(scale, self.reference))

    def measure_of(self, collapse: str = "collapse_std") -> list[str]:
        """The measure read for each cell, in order (``collapse``: the collapse-std measure)."""
        if self.kind in ("collapsed", "healthy"):
            return [collapse] * len(self.cells)
        return self.measures or [self.measure] * len(self.cells)


@dataclass
class Claim:
    """A claim of the paper and how its direction is checked.

    Attributes:
        text: The claim, in the paper's words where possible.
        source: Where the paper makes it.
        check: The test on the measured values.
        scales: The scales that can test the claim (default: every one); at another its verdict
            is ``not tested``, with the note of that scale saying why.
        notes: Per scale, what that scale cannot show when the claim is not reproduced there, and
            what would; written before the run, so it holds no measured figure (a report prints
            the note of its own scale only).
    """

    text: str = ""
    source: str = ""
    check: Check = field(default_factory=Check)
    scales: list[str] = field(default_factory=lambda: list(SCALES))
    notes: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        bad = sorted((set(self.notes) | set(self.scales)) - set(SCALES))
        if bad:
            raise ConfigError(f"claim {self.text!r}: notes for unknown scales {bad}")


@dataclass
class Experiment:
    """One experiment of a paper, as data.

    Attributes:
        name: Its name (``siamkit experiment NAME``); the YAML file's stem.
        title: One line.
        citation: The paper: authors, short name and arXiv id (with the version read).
        method: The method of cells that name none (fills ``{method}`` in recipe names).
        paper_metric: What the paper's figures are (dataset, metric, epochs).
        source: Table or figure and page of the paper's figures (cells may name their own).
        about: What the experiment asks, a few sentences.
        scales: How it runs at ``cpu``, ``gpu`` and ``paper``.
        measures: What is taken of every cell.
        cells: The grid.
        claims: The claims whose direction is checked.
    """

    name: str = ""
    title: str = ""
    citation: str = ""
    method: str = ""
    paper_metric: str = ""
    source: str = ""
    about: str = ""
    scales: dict[str, ScaleSpec] = field(default_factory=dict)
    measures: list[Measure] = field(default_factory=lambda: [Measure(name="knn")])
    cells: list[Cell] = field(default_factory=list)
    claims: list[Claim] = field(default_factory=list)

    def __post_init__(self) -> None:
        where = f"experiment {self.name!r}"
        if not self.cells:
            raise ConfigError(f"{where} has no cells")
        for names, what in (
            ([c.name for c in self.cells], "cell"),
            ([m.name for m in self.measures], "measure"),
        ):
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ConfigError(f"{where}: {what} names used twice: {twice}")
        slugs = [c.slug for c in self.cells]
        if len(set(slugs)) != len(slugs):
            raise ConfigError(f"{where}: two cell names give the same folder name ({slugs})")
        bad = sorted(set(self.scales) - set(SCALES))
        if bad:
            raise ConfigError(f"{where}: unknown scales {bad}; use {list(SCALES)}")
        measures = {m.name: m for m in self.measures}
        for m in self.measures:
            if m.kind == "distill" and measures.get(m.teacher, m).kind != "finetune":
                raise ConfigError(f"{where}: distill measure {m.name!r} needs a finetune teacher")
        cells = {c.name for c in self.cells}
        for cell in self.cells:
            unknown = sorted(set(cell.paper) - set(measures))
            if unknown:
                raise ConfigError(f"{where}, cell {cell.name!r}: paper figures of {unknown}")
        for scale, spec in self.scales.items():
            if spec.floor_cell and spec.floor_cell not in cells:
                raise ConfigError(
                    f"{where}: the {scale} noise floor names unknown cell {spec.floor_cell!r}"
                )
        for claim in self.claims:
            missing = sorted(set(claim.check.cells) - cells)
            for scale in self.scales:
                ref = claim.check.at(scale).reference
                if ref and ref not in {c.name for c in self.cells_at(scale)}:
                    missing.append(f"{ref} (the reference at the {scale} scale)")
            if missing:
                raise ConfigError(f"{where}: a claim names unknown cells {missing}")
            unknown = sorted(set(claim.check.measure_of(self.collapse_measure)) - set(measures))
            if unknown:
                raise ConfigError(
                    f"{where}: a claim reads unknown measures {unknown} (a collapsed or healthy "
                    "check needs a measure of kind collapse_std)"
                )

    @property
    def collapse_measure(self) -> str:
        """The measure a collapse claim reads.

        Of kind ``eval_collapse_std`` where the experiment takes one, else ``collapse_std`` (its
        kind, if there is none).
        """
        for kind in ("eval_collapse_std", "collapse_std"):
            name = next((m.name for m in self.measures if m.kind == kind), None)
            if name is not None:
                return name
        return "collapse_std"

    def cells_at(self, scale: str) -> list[Cell]:
        """The cells that run at ``scale``."""
        return [c for c in self.cells if scale in c.scales]

    def scale(self, scale: str) -> ScaleSpec:
        """The settings of ``scale``.

        Raises:
            ConfigError: The experiment does not define that scale.
        """
        if scale not in self.scales:
            raise ConfigError(
                f"experiment {self.name!r} has no {scale!r} scale; it has {sorted(self.scales)}"
            )
        return self.scales[scale]

    def measure(self, name: str) -> Measure:
        """The measure called ``name``."""
        return next(m for m in self.measures if m.name == name)


__all__ = [
    "SCALES",
    "Cell",
    "Check",
    "Claim",
    "Experiment",
    "Measure",
    "PaperFigure",
    "ScaleSpec",
]
