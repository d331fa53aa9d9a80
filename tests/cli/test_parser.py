"""The ``siamkit`` parser: --version, recipe flags, and a --help that loads neither torch nor
Lightning."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

import siamkit
from siamkit.cli import main
from siamkit.cli.parser import COMMANDS, EXPORT_FORMATS, METHOD_NAMES, build_parser
from siamkit.cli.specs import Command
from siamkit.export.formats import FORMATS
from siamkit.methods import METHODS

SRC = str(Path(siamkit.__file__).resolve().parents[1])  # the siamkit these tests import


def _python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )


def test_method_names_of_the_help_are_the_registry():
    assert list(METHOD_NAMES) == sorted(METHODS)


def test_export_formats_of_the_parser_are_the_exporters():
    assert list(EXPORT_FORMATS) == list(FORMATS)


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"siamkit {siamkit.__version__}\n"
    try:
        assert siamkit.__version__ == metadata.version("siamkit")
    except metadata.PackageNotFoundError:
        assert siamkit.__version__ == "0+unknown"


def test_help_imports_neither_torch_nor_lightning():
    proc = _python(
        "import sys\n"
        "from siamkit.cli import main\n"
        "try:\n    main(['pretrain', '--help'])\nexcept SystemExit:\n    pass\n"
        "print('lightning' in sys.modules, 'torch' in sys.modules)\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert "--recipe" in proc.stdout and "barlow_twins" in proc.stdout
    assert proc.stdout.splitlines()[-1] == "False False"


@pytest.mark.parametrize("command", [["pretrain"], ["config", "show"]])
def test_recipe_and_config_together_are_a_usage_error(command, capsys):
    assert main([*command, "--recipe", "simsiam/digits", "--config", "r.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("siamkit: error:") and err.count("\n") == 1
    assert "not allowed with argument" in err


def _leaves(table: tuple[Command, ...], prefix: tuple[str, ...] = ()):
    for command in table:
        if command.children:
            assert command.handler is None and command.dest, command.name
            yield from _leaves(command.children, (*prefix, command.name))
        else:
            assert command.handler is not None and not command.dest, command.name
            yield (*prefix, command.name), command


def _subparser(parser: argparse.ArgumentParser, word: str) -> argparse.ArgumentParser:
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[word]


def test_every_leaf_of_the_command_table_runs_its_handler():
    leaves = dict(_leaves(COMMANDS))
    assert len(leaves) == 15  # with data inspect
    for words, command in leaves.items():
        parser = build_parser()
        for word in words:
            parser = _subparser(parser, word)
        assert parser.get_default("func") is command.handler, words


@pytest.mark.parametrize(
    "command",
    [
        ["pretrain"],
        ["config", "show"],
        ["eval", "finetune", "--checkpoint", "c", "--label-fraction", "0.1", "--output", "o"],
        ["eval", "distill", "--teacher", "t", "--output", "o"],
    ],
)
def test_a_shared_flag_parses_alike_in_every_command(command):
    args = build_parser().parse_args([*command, "--loggers", " csv, ,wandb "])
    assert args.loggers == ["csv", "wandb"]
