"""Errors a user can act on.

Every error that comes from bad input (a path, a config value, a checkpoint) or from a run that
cannot go on (a non-finite loss) is a :class:`SiamkitError`. Its message names the problem and the
fix; the CLI prints it on one line (no traceback) and exits with the class's ``exit_code``.
"""

from __future__ import annotations


class SiamkitError(Exception):
    """Base class: a problem the user can fix, with a message that says how."""

    exit_code = 1


class ConfigError(SiamkitError):
    """An unknown config key, a value of the wrong type, or an impossible value."""

    exit_code = 2


class DataError(SiamkitError):
    """A missing or empty data path, an unreadable image under ``--strict``, missing labels."""

    exit_code = 3


class TrainingDivergedError(SiamkitError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""

    exit_code = 4


class TrainingInterrupted(SiamkitError):
    """SIGTERM or Ctrl-C stopped training at a step boundary; a resumable checkpoint is saved."""

    exit_code = 130


class CheckpointError(SiamkitError):
    """A checkpoint that cannot be read or does not match the requested model."""

    exit_code = 5
