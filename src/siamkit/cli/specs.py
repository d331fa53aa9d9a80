"""Arguments and subcommands as data, and the two functions that build argparse parsers of them.

The command line is declared in tables (:mod:`siamkit.cli.flags`, :mod:`siamkit.cli.parser`):
an :class:`Arg` is one ``add_argument`` call, a :class:`OneOf` a mutually exclusive group, and
a :class:`Command` a subcommand with its flags and either a handler or subcommands of its own.
A flag shared by several commands is then one value, so its help, type and default cannot drift
apart between the commands.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias


@dataclass(frozen=True)
class Arg:
    """One ``add_argument`` call.

    Attributes:
        flags: The option strings (``"--data"``) or the positional's name.
        options: The keyword arguments of ``add_argument`` (type, help, default, ...).
    """

    flags: tuple[str, ...]
    options: Mapping[str, Any]


def arg(*flags: str, **options: Any) -> Arg:
    """An :class:`Arg`, written as the ``add_argument`` call it stands for.

    Args:
        *flags: The option strings or the positional's name.
        **options: The keyword arguments of ``add_argument``.

    Returns:
        The argument's spec.
    """
    return Arg(flags, options)


@dataclass(frozen=True)
class OneOf:
    """Arguments of which at most one may be given (exactly one when ``required``).

    Attributes:
        args: The exclusive arguments, in the order of the help.
        required: Whether one of them must be given.
    """

    args: tuple[Arg, ...]
    required: bool = False


#: An entry of a command's flags: an argument or a mutually exclusive group of them.
Spec: TypeAlias = Arg | OneOf

#: What runs a leaf command: the parsed arguments in, the exit code out.
Handler: TypeAlias = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Command:
    """A subcommand: a leaf with a handler, or a group whose ``children`` are subcommands.

    Attributes:
        name: The word on the command line.
        help: The line in the parent's list of subcommands.
        description: The paragraph at the top of the command's ``--help`` (None: none).
        args: The command's flags in the order of its help.
        handler: The function a leaf command runs (``args.func``); None for a group.
        children: A group's subcommands.
        dest: The attribute that holds the chosen child's name (a group only).
    """

    name: str
    help: str
    description: str | None = None
    args: tuple[Spec, ...] = ()
    handler: Handler | None = None
    children: tuple[Command, ...] = ()
    dest: str = ""


def add_arguments(container: argparse._ActionsContainer, specs: tuple[Spec, ...]) -> None:
    """Add ``specs`` to a parser (or an argument group of one), in their order.

    Args:
        container: The parser or group that takes the arguments.
        specs: The arguments and exclusive groups to add.
    """
    for spec in specs:
        if isinstance(spec, OneOf):
            group = container.add_mutually_exclusive_group(required=spec.required)
            add_arguments(group, spec.args)
        else:
            container.add_argument(*spec.flags, **spec.options)


def add_commands(parser: argparse.ArgumentParser, dest: str, table: tuple[Command, ...]) -> None:
    """Add ``table``'s commands to ``parser`` as required subcommands, recursing into groups.

    The subparsers are of ``parser``'s class, so every level answers errors the same way.

    Args:
        parser: The parser the subcommands belong to.
        dest: The attribute that holds the chosen subcommand's name.
        table: The subcommands, in the order of the help.
    """
    sub = parser.add_subparsers(dest=dest, required=True)
    for command in table:
        child = sub.add_parser(command.name, help=command.help, description=command.description)
        add_arguments(child, command.args)
        if command.children:
            add_commands(child, command.dest, command.children)
        else:
            child.set_defaults(func=command.handler)
