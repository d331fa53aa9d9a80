"""Folders built beside their destination and renamed into place (siamkit.safe_io)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from siamkit import safe_io
from siamkit.safe_io import STAGING_PREFIX, staged_folder


def _make(dest: Path, text: str) -> None:
    with staged_folder(dest, "output") as stage:
        (stage / "f.txt").write_text(text)


def test_a_staged_folder_replaces_the_old_one_only_when_complete(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    _make(dest, "first")
    with pytest.raises(RuntimeError), staged_folder(dest, "output") as stage:
        (stage / "f.txt").write_text("half")
        raise RuntimeError("stopped while writing")
    assert (dest / "f.txt").read_text() == "first"
    _make(dest, "second")
    assert (dest / "f.txt").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_stop_between_the_two_renames_keeps_the_old_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old output is moved aside, then the new one renamed in: a failure (or a kill) in
    between must leave the old one, not nothing."""
    dest = tmp_path / "out"
    _make(dest, "first")
    real = os.replace
    calls = {"n": 0}

    def second_rename_fails(src: str | Path, dst: str | Path) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(5, "Input/output error")
        real(src, dst)

    monkeypatch.setattr(safe_io.os, "replace", second_rename_fails)
    with pytest.raises(safe_io.OutputError):
        _make(dest, "second")
    monkeypatch.setattr(safe_io.os, "replace", real)
    assert (dest / "f.txt").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_killed_process_between_the_renames_has_its_old_output_put_back(
    tmp_path: Path,
) -> None:
    """What a SIGKILL between the renames leaves (the old output aside, no output): the next
    run puts it back rather than deleting it as a staged folder."""
    dead = 2**22 + 12345  # above any pid this machine hands out
    aside = tmp_path / f"{STAGING_PREFIX}{dead}-old-out"
    aside.mkdir()
    (aside / "f.txt").write_text("first")
    staged = tmp_path / f"{STAGING_PREFIX}{dead}-out"
    staged.mkdir()
    with pytest.raises(RuntimeError), staged_folder(tmp_path / "out", "output"):
        raise RuntimeError("look only")
    assert (tmp_path / "out" / "f.txt").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
