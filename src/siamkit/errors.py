"""Errors a user can act on.

Every error that comes from bad input (a path, a config value, a checkpoint) or from a run that
cannot go on (a non-finite loss) is a :class:`SiamkitError`. Its message names the problem and the
fix; the CLI prints it on one line (no traceback) and exits with the class's ``exit_code``, the
same in every command for the same kind of problem:

====  ==========================================================================================
code  problem
====  ==========================================================================================
2     a config value or a flag (:class:`ConfigError`), a recipe or experiment file included
3     the data (:class:`DataError`): a missing, empty or unreadable data path or image
4     training diverged (:class:`TrainingDivergedError`)
5     a checkpoint, run folder or export given as input (:class:`CheckpointError`)
6     a full disk (:class:`DiskFullError`)
7     an output (:class:`OutputError`): it cannot be written, is an input, or holds another run
130   interrupted (Ctrl-C or SIGTERM); partial outputs are removed or resumable
141   standard output closed early (``siamkit recipes | head -1``), as Unix tools end
====  ==========================================================================================

A missing file is the error of what it was meant to be: a missing ``--checkpoint`` is 5, a
missing ``--data`` 3, a missing ``--config`` 2.
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


class DiskFullError(SiamkitError):
    """No space left for a file; what was there before is intact."""

    exit_code = 6


class OutputError(SiamkitError):
    """An output that cannot be written, is an input, or holds another run.

    A folder or file in the way, no permission, the command's own input, a folder holding
    another run's checkpoints or another kind of file.
    """

    exit_code = 7
