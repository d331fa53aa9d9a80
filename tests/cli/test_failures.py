"""Errors of the ``siamkit`` command: one line, and in debug mode (``--debug``,
``SIAMKIT_DEBUG=1``) the traceback after it, with the causes that ``raise ... from None`` hides."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from siamkit.cli import main
from siamkit.cli.failures import DEBUG_ENV, debug_requested, print_full_traceback, report

SIAMKIT = Path(sys.executable).parent / "siamkit"  # the console script of this environment
YAML_ERROR = "yaml.parser.ParserError"  # what the recipe reader raises its ConfigError from None


@pytest.fixture
def bad_recipe(tmp_path: Path) -> Path:
    """A recipe file that is not valid YAML: the reader's ConfigError hides yaml's error."""
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("train: [1, 2\n")
    return recipe


@pytest.fixture(autouse=True)
def _no_debug_env(monkeypatch):
    # The suite may itself run with debug mode on; these tests set it themselves.
    monkeypatch.delenv(DEBUG_ENV, raising=False)


def _run(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def _assert_line_then_traceback(err: str, fragment: str, *names: str) -> None:
    first, _, rest = err.partition("\n")
    assert first.startswith("siamkit: error:") and fragment in first, err
    assert rest.startswith("Traceback (most recent call last):"), err
    assert "siamkit: error:" not in rest
    for name in names:
        assert name in rest, err


def test_without_debug_an_error_is_one_line(bad_recipe, capsys):
    code, err = _run(["config", "show", "--config", str(bad_recipe)], capsys)
    assert code == 2
    assert err.startswith("siamkit: error:") and err.count("\n") == 1
    assert "not valid YAML" in err and "Traceback" not in err


def test_debug_flag_adds_the_traceback_with_the_hidden_cause(bad_recipe, capsys):
    code, err = _run(["--debug", "config", "show", "--config", str(bad_recipe)], capsys)
    assert code == 2  # the error's code, as without --debug
    _assert_line_then_traceback(err, "not valid YAML", YAML_ERROR, "siamkit.errors.ConfigError")
    # The hidden cause comes first, then the error raised while handling it.
    assert err.index(YAML_ERROR) < err.index("siamkit.errors.ConfigError")


@pytest.mark.parametrize(
    ("value", "shown"), [("1", True), ("yes", True), ("0", False), ("", False)]
)
def test_debug_env_var(value, shown, bad_recipe, capsys, monkeypatch):
    monkeypatch.setenv(DEBUG_ENV, value)
    code, err = _run(["config", "show", "--config", str(bad_recipe)], capsys)
    assert code == 2
    if shown:
        _assert_line_then_traceback(err, "not valid YAML", YAML_ERROR)
    else:
        assert err.count("\n") == 1 and "Traceback" not in err


def test_debug_shows_the_cause_of_a_bad_flag(capsys):
    # The number type raises argparse's error from None over float()'s ValueError.
    code, err = _run(["--debug", "pretrain", "--lr", "abc"], capsys)
    assert code == 2
    _assert_line_then_traceback(err, "argument --lr: must be a number", "ValueError")
    code, err = _run(["pretrain", "--lr", "abc"], capsys)
    assert code == 2 and err.count("\n") == 1


def test_debug_of_the_console_script(bad_recipe):
    """The installed command, as a user runs it: the line, the traceback, the same exit code."""
    argv = [str(SIAMKIT), "config", "show", "--config", str(bad_recipe)]
    env = {key: value for key, value in os.environ.items() if key != DEBUG_ENV}
    plain = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    debug = subprocess.run(
        argv, env={**env, DEBUG_ENV: "1"}, capture_output=True, text=True, timeout=300
    )
    assert plain.returncode == debug.returncode == 2
    assert plain.stderr.count("\n") == 1 and "Traceback" not in plain.stderr
    _assert_line_then_traceback(debug.stderr, "not valid YAML", YAML_ERROR)
    assert plain.stdout == debug.stdout == ""


def test_debug_requested():
    assert debug_requested(["--debug", "recipes"])
    assert not debug_requested(["recipes"])


def _hidden_chain() -> ValueError:
    try:
        try:
            raise KeyError("original")
        except KeyError:
            raise ValueError("shown") from None
    except ValueError as err:
        return err


def test_full_traceback_shows_a_context_hidden_by_from_none_and_restores_the_flag(
    monkeypatch,
):
    err = _hidden_chain()
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    print_full_traceback(err)
    text = stderr.getvalue()
    assert "KeyError: 'original'" in text and "ValueError: shown" in text
    assert err.__suppress_context__  # left as it was for anyone else printing it


def test_full_traceback_follows_an_explicit_cause_and_survives_a_loop(monkeypatch):
    outer = ValueError("outer")
    inner = KeyError("inner")
    outer.__cause__ = inner
    inner.__context__ = outer  # a loop: printing must still end
    inner.__suppress_context__ = True
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    print_full_traceback(outer)
    assert "KeyError: 'inner'" in stderr.getvalue() and "ValueError: outer" in stderr.getvalue()


def test_report_of_an_interruption(monkeypatch):
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    report("siamkit: interrupted; run the command again", KeyboardInterrupt(), debug=False)
    assert stderr.getvalue() == "siamkit: interrupted; run the command again\n"
    report("siamkit: interrupted; run the command again", KeyboardInterrupt(), debug=True)
    assert stderr.getvalue().count("KeyboardInterrupt") == 1
