"""An output without write permission is exit 7 for every command that writes, as a user who
may not write there: root may write anywhere, so as root each command runs as ``nobody``
through setpriv (the matrix of tests/test_bad_input_matrix.py runs as the current user)."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bad_inputs import EXPERIMENT, RECIPE, World, build_world, digest


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("world")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SIAMKIT_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield build_world(root)


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
    env = {**os.environ, "HOME": str(base)}
    code, err = _as_unprivileged(["--version"], env)
    if os.geteuid() == 0 and code != 0:  # e.g. a checkout inside a folder private to root
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"user nobody cannot run siamkit from this checkout: {err.strip()[-200:]}")
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
