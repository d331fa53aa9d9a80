"""The matrix of bad inputs: every command, every argument, every kind of bad value.

Made of data: the commands with an otherwise good invocation and their path and number
arguments (:data:`COMMANDS`), the kinds of bad path (:data:`PATHS`) and value
(:data:`VALUES`), and the exit code each must give by the argument's role (:data:`CODES`,
the table of :mod:`siamkit.errors`). :func:`generate` crosses them; :func:`run_case` and
:func:`check` run and judge one case. tests/test_bad_input_matrix.py runs them all.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from siamkit.cli import main

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "configs" / "simsiam" / "digits.yaml"
TINY = [
    "--set", "augment.size=16", "backbone.name=small_cnn", "backbone.width=0.25",
    "method.proj_layers=2", "method.proj_dim=32", "method.proj_hidden_dim=32",
    "method.pred_hidden_dim=8", "train.knn_every=0", "train.precision=32-true",
]  # fmt: skip

#: Exit codes of :mod:`siamkit.errors` by the role of the argument a bad input was given to.
#: ``index`` is --index-file (read when it exists, else written: a folder there is an output
#: error); ``teacher`` (a fine-tuning output) and ``model`` (a checkpoint or an export) are
#: checkpoints whose good inputs differ.
CODES = {
    "flag": 2, "config": 2, "data": 3, "index": 3,
    "checkpoint": 5, "teacher": 5, "model": 5, "output": 7,
}  # fmt: skip


# --------------------------------------------------------------------------------------------
# The inputs every case may read: made once, hashed before and after every case.
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class World:
    """Good inputs of every kind, in one folder that no command may change."""

    root: Path

    @property
    def images(self) -> Path:  # a labelled folder: images/<class>/*.png
        return self.root / "images"

    @property
    def run(self) -> Path:  # a finished pretraining run
        return self.root / "run"

    @property
    def ckpt(self) -> Path:
        return self.run / "checkpoints" / "last.ckpt"

    @property
    def export(self) -> Path:  # its backbone, exported
        return self.root / "backbone.safetensors"

    @property
    def shards(self) -> Path:  # the image folder, packed
        return self.root / "shards"

    @property
    def finetuned(self) -> Path:  # a fine-tuning output (a classifier)
        return self.root / "ft"

    @property
    def embeddings(self) -> Path:
        return self.root / "emb.npy"


def _quiet(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, err.getvalue()


def build_world(root: Path) -> World:
    """Make every input once (about 20 s on a 2-core CPU)."""
    world = World(root)
    rng = np.random.default_rng(0)
    for i in range(24):
        folder = world.images / f"c{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
    steps = [
        ["pretrain", "--config", str(RECIPE), "--output", str(world.run), "--epochs", "1",
         "--batch-size", "64", "--no-progress", *TINY],
        ["export", "--checkpoint", str(world.run), "--output", str(world.export)],
        ["pack", "--data", str(world.images), "--output", str(world.shards), "--workers", "1"],
        ["eval", "finetune", "--checkpoint", str(world.run), "--label-fraction", "0.1",
         "--epochs", "1", "--output", str(world.finetuned), "--index-file",
         str(root / "ft-index.txt")],
        ["embed", "--checkpoint", str(world.run), "--data", str(world.images), "--output",
         str(world.embeddings)],
    ]  # fmt: skip
    for argv in steps:
        code, err = _quiet(argv)
        assert code == 0, (argv, err)
    return world


def digest(root: Path) -> dict[str, str]:
    """Every file below ``root`` (links as their target text) with a digest of its bytes."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = "link:" + os.readlink(path)
        elif path.is_file():
            out[rel] = hashlib.sha1(path.read_bytes()).hexdigest()
        else:
            out[rel] = "folder"
    return out


# --------------------------------------------------------------------------------------------
# The commands: an otherwise good invocation, its path arguments and number arguments.
# --------------------------------------------------------------------------------------------
#: Path roles: what the argument is, which decides the exit code and the kinds that apply.
#: ``output`` is a folder the command makes; ``output-file`` a file it writes.
Roles = dict[str, str]


@dataclass(frozen=True)
class Command:
    """One subcommand as the matrix calls it.

    Attributes:
        name: The words after ``siamkit`` (``eval knn``).
        base: The good flags, as (flag, value) pairs (``None`` for a switch); a value may name a
            world input (``{run}``) or the case folder (``{case}``).
        paths: Path flags and their roles.
        numbers: Number flags and the bad values that apply (by name).
    """

    name: str
    base: tuple[tuple[str, str | None], ...]
    paths: Roles
    numbers: dict[str, tuple[str, ...]]

    def argv(self, world: World, case: Path, flag: str, value: str) -> list[str]:
        """The invocation with ``flag`` set to ``value`` (added when not in the base)."""
        words = self.name.split()
        pairs = list(self.base)
        if flag not in dict(pairs):
            pairs.append((flag, value))
        for key, given in pairs:
            given = value if key == flag else given
            if given is not None:
                given = given.format(**_places(world, case))
            if key.startswith("--"):
                words += [key] if given is None else [key, given]
            else:  # a positional argument
                words.append(str(given))
        return words


def _places(world: World, case: Path) -> dict[str, str]:
    return {
        "images": str(world.images),
        "run": str(world.run),
        "ckpt": str(world.ckpt),
        "export": str(world.export),
        "shards": str(world.shards),
        "ft": str(world.finetuned),
        "recipe": str(RECIPE),
        "case": str(case),
    }


ALL_NUMBERS = ("zero", "negative", "nan", "inf", "text")
FRACTION = ("zero", "negative", "nan", "inf", "huge", "text")
NON_NEGATIVE = ("negative", "nan", "inf", "text")
WEIGHT = ("negative", "nan", "inf", "huge", "text")  # 0 is allowed: --alpha, --test-fraction

COMMANDS = [
    Command(
        "pretrain",
        (("--config", "{recipe}"), ("--data", "{images}"), ("--output", "{case}/out"),
         ("--epochs", "1"), ("--batch-size", "8"), ("--no-progress", None)),
        {"--config": "config", "--data": "data", "--output": "output", "--resume": "checkpoint"},
        {"--epochs": ALL_NUMBERS, "--batch-size": (*ALL_NUMBERS, "huge"), "--lr": ALL_NUMBERS,
         "--max-minutes": ALL_NUMBERS, "--max-steps": ALL_NUMBERS, "--workers": NON_NEGATIVE,
         "--num-nodes": ALL_NUMBERS},
    ),
    Command(
        "config show",
        (("--config", "{recipe}"),),
        {"--config": "config"},
        {"--epochs": ALL_NUMBERS, "--lr": ALL_NUMBERS, "--batch-size": ALL_NUMBERS},
    ),
    Command(
        "eval knn",
        (("--checkpoint", "{run}"), ("--data", "{images}")),
        {"--checkpoint": "checkpoint", "--data": "data"},
        {"--k": ALL_NUMBERS, "--temperature": ALL_NUMBERS, "--workers": NON_NEGATIVE},
    ),
    Command(
        "eval linear",
        (("--checkpoint", "{run}"), ("--data", "{images}"), ("--epochs", "1")),
        {"--checkpoint": "checkpoint", "--data": "data"},
        {"--epochs": ALL_NUMBERS, "--lr": ALL_NUMBERS, "--batch-size": ALL_NUMBERS,
         "--weight-decay": NON_NEGATIVE, "--augment-copies": NON_NEGATIVE,
         "--seed": NON_NEGATIVE},
    ),
    Command(
        "eval finetune",
        (("--checkpoint", "{run}"), ("--data", "{images}"), ("--label-fraction", "0.5"),
         ("--epochs", "1"), ("--output", "{case}/out"), ("--index-file", "{case}/index.txt")),
        {"--checkpoint": "checkpoint", "--data": "data", "--output": "output",
         "--resume": "teacher", "--index-file": "index"},
        {"--label-fraction": FRACTION, "--epochs": ALL_NUMBERS, "--lr": ALL_NUMBERS,
         "--batch-size": ALL_NUMBERS, "--from-head-layers": NON_NEGATIVE,
         "--seed": NON_NEGATIVE},
    ),
    Command(
        "eval distill",
        (("--teacher", "{ft}"), ("--output", "{case}/out"), ("--epochs", "1")),
        {"--teacher": "teacher", "--output": "output", "--resume": "teacher"},
        {"--epochs": ALL_NUMBERS, "--lr": ALL_NUMBERS, "--batch-size": ALL_NUMBERS,
         "--temperature": ALL_NUMBERS, "--alpha": WEIGHT, "--student-width": ALL_NUMBERS,
         "--seed": NON_NEGATIVE},
    ),
    Command(
        "eval metrics",
        (("--checkpoint", "{run}"), ("--data", "{images}")),
        {"--checkpoint": "checkpoint", "--data": "data"},
        {"--max-images": ALL_NUMBERS, "--seed": NON_NEGATIVE},
    ),
    Command(
        "eval mi",
        (("--checkpoint", "{run}"), ("--data", "{images}"), ("--steps", "1")),
        {"--checkpoint": "checkpoint", "--data": "data"},
        {"--max-images": ALL_NUMBERS, "--steps": ALL_NUMBERS, "--seed": NON_NEGATIVE},
    ),
    Command(
        "report",
        (("--run", "{run}"),),
        {"--run": "checkpoint"},
        {"--tsne-images": ALL_NUMBERS, "--max-images": ALL_NUMBERS},
    ),
    Command(
        "export",
        (("--checkpoint", "{run}"), ("--output", "{case}/b.safetensors")),
        {"--checkpoint": "checkpoint", "--output": "output-file"},
        {},
    ),
    Command(
        "embed",
        (("--checkpoint", "{run}"), ("--data", "{images}"), ("--output", "{case}/e.npy")),
        {"--checkpoint": "model", "--data": "data", "--output": "output-file"},
        {"--image-size": ALL_NUMBERS, "--workers": NON_NEGATIVE},
    ),
    Command(
        "pack",
        (("--data", "{images}"), ("--output", "{case}/out"), ("--workers", "1")),
        {"--data": "data", "--output": "output"},
        {"--max-side": ALL_NUMBERS, "--test-fraction": WEIGHT, "--workers": ALL_NUMBERS},
    ),
    Command(
        "experiment",
        (("name", "{case}/exp.yaml"), ("--output", "{case}/out")),
        {"name": "config", "--output": "output", "--data": "data"},
        {},
    ),
]  # fmt: skip

#: Bad number values by name.
VALUES = {
    "zero": "0",
    "negative": "-3",
    "nan": "nan",
    "inf": "inf",
    "huge": "1000000000",
    "text": "many",
}


# --------------------------------------------------------------------------------------------
# Bad paths: how each is made in the case folder, and which roles it applies to.
# --------------------------------------------------------------------------------------------
def _file(data: bytes) -> Callable[[World, Path], str]:
    def make(world: World, case: Path) -> str:
        path = case / "given"
        path.write_bytes(data)
        return str(path)

    return make


def _folder(world: World, case: Path) -> str:
    (case / "given").mkdir()
    return str(case / "given")


def _loop(world: World, case: Path) -> str:
    (case / "given").symlink_to(case / "given")  # a link to itself
    return str(case / "given")


def _truncated(world: World, case: Path) -> str:
    data = world.ckpt.read_bytes()
    (case / "given.ckpt").write_bytes(data[: len(data) // 2])
    return str(case / "given.ckpt")


def _truncated_images(world: World, case: Path) -> str:
    """A folder of images cut short: none can be decoded."""
    source = next(world.images.rglob("*.png")).read_bytes()
    for k in range(2):
        folder = case / "given" / f"c{k}"
        folder.mkdir(parents=True)
        for i in range(8):
            (folder / f"{i}.png").write_bytes(source[: len(source) // 3])
    return str(case / "given")


#: name -> (roles it applies to, how to make it)
CHECKPOINTS = ("checkpoint", "teacher", "model")
PATHS: dict[str, tuple[tuple[str, ...], Callable[[World, Path], str]]] = {
    "missing": (("config", "data", *CHECKPOINTS), lambda w, c: str(c / "nowhere")),
    "empty string": (
        ("config", "data", "index", *CHECKPOINTS, "output", "output-file"),
        lambda w, c: "",
    ),
    "a file": (("config", "data", *CHECKPOINTS, "output"), _file(bytes(range(256)) * 8)),
    "a folder": (("config", "data", *CHECKPOINTS, "output-file"), _folder),
    "symlink loop": (("config", "data", *CHECKPOINTS, "output", "output-file"), _loop),
    "empty file": (("config", "data", "index", *CHECKPOINTS), _file(b"")),
    "binary file": (("config", "index"), _file(bytes(range(256)) * 8)),
    "truncated file": (("data", *CHECKPOINTS), _truncated),
    "truncated images": (("data",), _truncated_images),
    "the input itself": (("output", "output-file"), lambda w, c: "{input}"),
    "inside the input": (("output", "output-file"), lambda w, c: "{input}/sub"),
    "an existing file": (("output-file",), _file(b"mine")),
    "an export": (("checkpoint", "teacher", "data", "config"), lambda w, c: str(w.export)),
    "packed shards": (CHECKPOINTS, lambda w, c: str(w.shards)),
    "a fine-tuning output": (("checkpoint", "model"), lambda w, c: str(w.finetuned)),
    "a pretraining run": (("data", "teacher"), lambda w, c: str(w.run)),
    "embeddings": (CHECKPOINTS, lambda w, c: str(w.embeddings)),
}


@dataclass(frozen=True)
class Case:
    """One cell of the matrix: a command, an argument, a bad input, the expected code."""

    command: Command
    flag: str
    kind: str
    code: int

    @property
    def id(self) -> str:
        return f"{self.command.name} {self.flag} {self.kind}"


def _input_of(command: Command, world: World, case_folder: Path) -> str:
    """The input an output may not be, nor lie in: the command's first data or model input."""
    base = dict(command.base)
    for flag in ("--data", "--checkpoint", "--teacher", "--run", "name"):
        if flag in base and base[flag] is not None:
            given = str(base[flag]).format(**_places(world, case_folder))
            # An export's input is the checkpoint file a run folder stands for.
            if command.paths.get("--output") == "output-file" and flag == "--checkpoint":
                return str(world.ckpt)
            return given
    raise AssertionError(f"{command.name} has no input")


def _role_code(role: str, kind: str) -> int:
    if kind == "empty string":
        return CODES["flag"]
    return CODES["output" if role.startswith("output") else role]


def generate() -> Iterator[Case]:
    """Every applicable (command, argument, bad input), with the code the table gives it."""
    for command in COMMANDS:
        for flag, role in command.paths.items():
            for kind, (roles, _) in PATHS.items():
                if role not in roles:
                    continue
                yield Case(command, flag, kind, _role_code(role, kind))
        for flag, kinds in command.numbers.items():
            for kind in kinds:
                # A batch larger than the data is a problem of the data (exit 3), as
                # tests/test_bad_input.py's "fewer than one batch" says.
                code = 3 if (flag, kind) == ("--batch-size", "huge") else CODES["flag"]
                yield Case(command, flag, kind, code)


CASES = list(generate())

#: A one-cell experiment of the digits recipe (the matrix never lets it run).
EXPERIMENT = """\
title: tiny
scales:
  cpu:
    recipe: simsiam/digits
measures:
  - {name: knn, kind: knn, label: "kNN"}
cells:
  - name: a
    paper: {knn: 1.0}
"""


def make_input(case: Case, world: World, folder: Path) -> str:
    """The bad value of the case's argument, made in ``folder`` where it is a file."""
    if case.kind in VALUES:
        return VALUES[case.kind]
    value = PATHS[case.kind][1](world, folder)
    if "{input}" not in value:
        return value
    return value.format(input=_input_of(case.command, world, folder))


def run_case(case: Case, world: World, folder: Path) -> tuple[int, str, str]:
    """Run one case in ``folder`` (the working directory); its code, stderr and bad value."""
    (folder / "exp.yaml").write_text(EXPERIMENT)
    value = make_input(case, world, folder)
    argv = case.command.argv(world, folder, case.flag, value)
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        code, err = _quiet(argv)
    finally:
        os.chdir(cwd)
    return code, err, value


def check(case: Case, code: int, err: str, value: str) -> None:
    """The assertions every case must meet (see the module docstring)."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("siamkit: error:")]
    assert len(lines) == 1, err
    line = lines[0]
    # The message names what was wrong: the flag, as argparse names it, for a value; the path
    # given (or the file under it the problem was found in) for a path.
    if case.code == CODES["data"] and case.kind in VALUES:  # a batch larger than the data
        names = [case.flag]
    elif case.kind in VALUES or not value:
        names = [f"argument {case.flag}"]
    else:
        names = [value, os.path.abspath(value)]
    assert any(n in line for n in names), f"no mention of {names[0]!r} in: {line}"
    assert code == case.code, f"exit {code}, expected {case.code}: {line}"
