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

``python -m tests.test_bad_input_matrix`` prints the matrix as a table: commands by inputs,
with the exit code each gave.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bad_inputs import (
    CASES,
    COMMANDS,
    PATHS,
    VALUES,
    Case,
    World,
    build_world,
    check,
    digest,
    run_case,
)


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
    """``siamkit recipes | head -1``: the reader goes; siamkit stops as Unix tools do. The
    reader closes before siamkit (still importing) writes, so every write meets the closed
    pipe."""
    import subprocess

    code = "import sys; from siamkit.cli import main; sys.exit(main())"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "recipes"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141, err
    assert err == ""


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
