"""Argument types of the ``siamkit`` command line: each value checked as argparse reads it.

A bad value is one line naming the flag and what it takes (exit code 2), before anything runs:
every path is non-empty, every float finite, every count in its range.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import NoReturn

from siamkit.errors import ConfigError


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are siamkit's: one line, ``siamkit: error: ...``, exit 2.

    argparse prints the usage and ``PROG: error: ...`` on two lines and exits; here the error
    is a :class:`~siamkit.errors.ConfigError` with the fix (the command's ``--help``), which
    the command line prints as every other.
    """

    def error(self, message: str) -> NoReturn:
        """Raise the problem with the flags as a :class:`~siamkit.errors.ConfigError` (exit 2)."""
        raise ConfigError(f"{message}; see `{self.prog} --help`")


def path(text: str) -> str:
    """A file or folder path: any non-empty string (``--data ""`` is an error, not a default)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty: name a file or folder")
    return text


def name_list(text: str) -> list[str]:
    """Comma-separated names, each stripped, empty ones dropped (``"csv, wandb"``)."""
    return [name.strip() for name in text.split(",") if name.strip()]


def number(
    low: float | None = None,
    high: float | None = None,
    *,
    open_low: bool = False,
    open_high: bool = False,
) -> Callable[[str], float]:
    """A finite float, optionally within ``[low, high]`` (``open_low``/``open_high``: strict)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        _check_range(value, text, low, high, open_low, open_high)
        return value

    return parse


def integer(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """An integer within ``[low, high]`` (either bound optional)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        _check_range(value, text, low, high, False, False)
        return value

    return parse


def _check_range(
    value: float,
    text: str,
    low: float | None,
    high: float | None,
    open_low: bool,
    open_high: bool,
) -> None:
    below = low is not None and (value <= low if open_low else value < low)
    above = high is not None and (value >= high if open_high else value > high)
    if below or above:
        left = "" if low is None else ("(" if open_low else "[") + f"{low:g}"
        right = "" if high is None else f"{high:g}" + (")" if open_high else "]")
        if low is not None and high is not None:
            raise argparse.ArgumentTypeError(f"must be in {left}, {right}, got {text}")
        if low is not None:
            word = "greater than" if open_low else "at least"
            raise argparse.ArgumentTypeError(f"must be {word} {low:g}, got {text}")
        word = "less than" if open_high else "at most"
        raise argparse.ArgumentTypeError(f"must be {word} {high:g}, got {text}")


#: Types of the flags that recur across commands.
POSITIVE = number(0, open_low=True)
NON_NEGATIVE = number(0)
COUNT = integer(1)
NON_NEGATIVE_INT = integer(0)
