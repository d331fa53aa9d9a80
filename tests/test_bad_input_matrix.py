"""Every subcommand against a generated matrix of bad inputs.

tests/test_bad_input.py holds a catalogue of kinds, each with its message. This harness instead
generates its cases: for every command, every path argument gets every bad path (missing, empty,
a file, a folder, a symbolic link loop, the input itself, inside the input, an empty, binary or
truncated file, another kind of siamkit file) and every number argument every bad value (0,
negative, NaN, inf, huge, wrong type), one at a time in an invocation that is otherwise good.
The exit code each must give comes from the table of :mod:`siamkit.errors` by the argument's
role (a config or flag 2, data 3, checkpoint 5, output 7), not from the case. Each case asserts:

- no traceback, and exactly one ``siamkit: error:`` line, naming the argument or its path;
- the exit code of the table;
- the inputs (an image folder, a finished run, its exports, shards, a fine-tuning output) are
  byte for byte as before, and nothing was written outside the case's own folder but the
  documented shared places (the decode cache, ``splits/``).

``python tests/test_bad_input_matrix.py`` prints the matrix as a table: commands by inputs,
with the exit code each gave.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
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
#: ``teacher`` (a fine-tuning output) and ``model`` (a checkpoint or a safetensors export) are
#: checkpoints whose good inputs differ.
CODES = {"flag": 2, "config": 2, "data": 3, "checkpoint": 5, "teacher": 5, "model": 5, "output": 7}


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
         "--resume": "teacher"},
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
        ("config", "data", *CHECKPOINTS, "output", "output-file"),
        lambda w, c: "",
    ),
    "a file": (("config", "data", *CHECKPOINTS, "output"), _file(bytes(range(256)) * 8)),
    "a folder": (("config", "data", *CHECKPOINTS, "output-file"), _folder),
    "symlink loop": (("config", "data", *CHECKPOINTS, "output", "output-file"), _loop),
    "empty file": (("config", "data", *CHECKPOINTS), _file(b"")),
    "binary file": (("config",), _file(bytes(range(256)) * 8)),
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
    names = [case.flag.lstrip("-"), case.flag]
    if case.flag == "name":
        names.append("experiment")
    if value:
        names += [value, os.path.basename(value.rstrip("/"))]
    assert any(n and n in line for n in names), f"no mention of {case.flag} in: {line}"
    assert code == case.code, f"exit {code}, expected {case.code}: {line}"


# --------------------------------------------------------------------------------------------
# The test
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("world")
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SIAMKIT_CACHE", str(cache))
        yield build_world(root)


@pytest.fixture(scope="module")
def world_digest(world: World) -> dict[str, str]:
    return digest(world.root)


#: What a failed command may leave in its folder: the case's own inputs, the experiment file,
#: and the documented shared places (label split files under splits/).
_OWN = {"given", "given.ckpt", "exp.yaml", "splits"}


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input_matrix(case: Case, world: World, world_digest: dict[str, str], tmp_path: Path):
    folder = tmp_path / "case"
    folder.mkdir()
    code, err, value = run_case(case, world, folder)
    check(case, code, err, value)
    assert digest(world.root) == world_digest, "an input changed"
    left = {p.name for p in folder.iterdir()} - _OWN
    assert left <= {"out"}, f"written outside the output: {sorted(left)}"
    if "out" in left and case.command.name != "experiment":  # no half-made output is left
        assert not any((folder / "out").iterdir()), sorted((folder / "out").rglob("*"))
    # (An experiment's folder is resumable by design: its record and finished cells stay.)


def test_the_matrix_is_large_and_covers_every_command() -> None:
    assert len(CASES) >= 250
    assert {c.command.name for c in CASES} == {c.name for c in COMMANDS}
    assert {c.kind for c in CASES} >= set(PATHS) | set(VALUES)
    # Each code of the table is the expected answer somewhere.
    assert {c.code for c in CASES} == {2, 3, 5, 7}


def test_a_closed_pipe_ends_quietly_with_141() -> None:
    """``siamkit recipes | head -1``: the reader goes; siamkit stops as Unix tools do."""
    import subprocess

    code = "import sys; from siamkit.cli import main; sys.exit(main())"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "recipes"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert first and err == ""


if __name__ == "__main__":  # the matrix as a Markdown table: commands x inputs, exit codes
    import tempfile
    import time

    with tempfile.TemporaryDirectory() as base:
        os.environ["SIAMKIT_CACHE"] = str(Path(base) / "cache")
        start = time.perf_counter()
        world = build_world(Path(base) / "world")
        before = digest(world.root)
        kinds = [*PATHS, *VALUES]
        table: dict[str, dict[str, list[str]]] = {}
        failed = 0
        for i, case in enumerate(CASES):
            folder = Path(base) / f"case{i}"
            folder.mkdir()
            code, err, value = run_case(case, world, folder)
            try:
                check(case, code, err, value)
                assert digest(world.root) == before
                mark = str(code)
            except AssertionError:
                mark, failed = f"**{code}** (expected {case.code})", failed + 1
            table.setdefault(case.command.name, {}).setdefault(case.kind, []).append(mark)
            shutil.rmtree(folder, ignore_errors=True)
        shown = [k for k in kinds if any(k in row for row in table.values())]
        print("| command | " + " | ".join(shown) + " |")
        print("| --- |" + " ---: |" * len(shown))
        for name, row in table.items():
            cells = [" ".join(sorted(set(row[k]))) if k in row else "" for k in shown]
            print(f"| {name} | " + " | ".join(cells) + " |")
        minutes = (time.perf_counter() - start) / 60
        print(
            f"\n{len(CASES)} cases ({len(COMMANDS)} commands, {len(kinds)} kinds of input), "
            f"{failed} failed, {minutes:.1f} min"
        )
    sys.exit(1 if failed else 0)


# --------------------------------------------------------------------------------------------
# Unwritable outputs, as a user without the right to write there (root may write anywhere, so
# as root the command runs as `nobody` through setpriv).
# --------------------------------------------------------------------------------------------
UNWRITABLE = {
    "pretrain": ["pretrain", "--config", str(RECIPE), "--data", "{images}", "--output",
                 "{ro}/run", "--epochs", "1", "--batch-size", "8"],
    "eval finetune": ["eval", "finetune", "--checkpoint", "{run}", "--data", "{images}",
                      "--label-fraction", "0.5", "--output", "{ro}/ft"],
    "export": ["export", "--checkpoint", "{run}", "--output", "{ro}/b.safetensors"],
    "embed": ["embed", "--checkpoint", "{run}", "--data", "{images}", "--output", "{ro}/e.npy"],
    "pack": ["pack", "--data", "{images}", "--output", "{ro}/shards"],
    "experiment": ["experiment", "{exp}", "--output", "{ro}/exp"],
}  # fmt: skip


def _as_unprivileged(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    import subprocess

    code = "import sys; from siamkit.cli import main; sys.exit(main())"
    command = [sys.executable, "-c", code, *argv]
    if os.geteuid() == 0:
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    return proc.returncode, proc.stderr


@pytest.fixture(scope="module")
def open_world(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A copy of the inputs that any user may read, with a folder no one may write to."""
    import tempfile

    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: no unprivileged user to try it as")
    base = Path(tempfile.mkdtemp(prefix="siamkit-open-"))
    shutil.copytree(world.images, base / "images")
    shutil.copytree(world.run, base / "run")
    (base / "exp.yaml").write_text(EXPERIMENT)
    (base / "cache").mkdir()
    (base / "ro").mkdir()
    for path in [base, *base.rglob("*")]:
        path.chmod(0o777 if path.name == "cache" else (0o755 if path.is_dir() else 0o644))
    (base / "ro").chmod(0o555)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("name", list(UNWRITABLE))
def test_an_unwritable_output_is_exit_7_for_every_command(name: str, open_world: Path) -> None:
    places = {"images": open_world / "images", "run": open_world / "run",
              "ro": open_world / "ro", "exp": open_world / "exp.yaml"}  # fmt: skip
    argv = [word.format(**places) for word in UNWRITABLE[name]]
    env = {**os.environ, "SIAMKIT_CACHE": str(open_world / "cache"), "HOME": str(open_world)}
    before = digest(open_world / "run"), digest(open_world / "images")
    code, err = _as_unprivileged(argv, env)
    assert "Traceback" not in err, err[-2000:]
    lines = [line for line in err.splitlines() if line.startswith("siamkit: error:")]
    assert len(lines) == 1 and "no permission" in lines[0], err[-2000:]
    assert code == 7, lines
    assert (digest(open_world / "run"), digest(open_world / "images")) == before
    assert list((open_world / "ro").iterdir()) == []
