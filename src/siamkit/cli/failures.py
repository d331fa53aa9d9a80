"""What a command answers when the operating system, the user or a pipe stops it.

siamkit's own checks raise a :class:`~siamkit.errors.SiamkitError` that names the problem and
the fix. What is left comes from outside: an ``OSError`` (a symbolic link loop under the data,
no permission, a file where a folder should be, a full disk), Ctrl-C, and a reader that closes
standard output early (``siamkit recipes | head -1``). Each gets the answer of
:mod:`siamkit.errors`' table: an ``OSError`` becomes the error of the argument whose path it
names (``--data``: 3, ``--output``: 7, ``--checkpoint``: 5, ``--config``: 2; a full disk: 6),
Ctrl-C exits 130 saying what was kept, and a closed pipe ends quietly with 141, as Unix tools
do (128 + SIGPIPE).

Each answer is one line. In debug mode (``--debug`` or ``SIAMKIT_DEBUG=1``) the traceback follows
it, with every exception that led to the error: the checks that turn a low-level failure into a
clear message raise it ``from None``, which hides the original from Python's own traceback.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from siamkit.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    DiskFullError,
    OutputError,
    SiamkitError,
)

#: Exit code of a command whose standard output was closed early (128 + SIGPIPE).
CLOSED_PIPE = 141

#: The environment variable that turns debug mode on (any value but empty or 0).
DEBUG_ENV = "SIAMKIT_DEBUG"

#: The path arguments, with the error a problem with each is, and how to name it.
PATH_ROLES: dict[str, tuple[type[SiamkitError], str]] = {
    "data": (DataError, "--data"),
    "index_file": (DataError, "--index-file"),
    "output": (OutputError, "--output"),
    "checkpoint": (CheckpointError, "--checkpoint"),
    "teacher": (CheckpointError, "--teacher"),
    "weights": (CheckpointError, "--weights"),
    "resume": (CheckpointError, "--resume"),
    "run": (CheckpointError, "--run"),
    "config": (ConfigError, "--config"),
    "name": (ConfigError, "the experiment file"),
}

#: The fix for each kind of operating-system error.
_FIXES: dict[int, str] = {
    errno.ELOOP: "a symbolic link there leads back to itself; remove or repair that link",
    errno.EACCES: "no permission; change the permissions or choose another path",
    errno.EPERM: "the operation is not permitted; change the permissions or choose another path",
    errno.ENOTDIR: "a part of that path is a file, not a folder; choose another path",
    errno.EEXIST: "something is in the way there; remove it or choose another path",
    errno.EISDIR: "it is a folder where a file is needed; name a file",
    errno.ENOENT: "it does not exist; check the path",
    errno.EROFS: "the filesystem is read-only; choose a path you can write to",
    errno.ENAMETOOLONG: "the name is too long; choose a shorter path",
    errno.EIO: "the device could not be read; check the disk or copy the files elsewhere",
}

#: What Ctrl-C leaves, by command.
_INTERRUPTED: dict[str, str] = {
    "pretrain": "a run stopped during training keeps a resumable last.ckpt: continue it with "
    "--resume <run folder>",
    "eval": "fine-tuning and distillation keep a resumable last.ckpt in --output (--resume); "
    "nothing else was written",
    "experiment": "finished cells are kept: continue with --resume",
    "pack": "the partial output was removed; run the command again",
}
_NOTHING_WRITTEN = "files are written whole or not at all; run the command again"


def interrupted_message(command: str | None) -> str:
    """The line printed when Ctrl-C stops ``command``."""
    return f"siamkit: interrupted; {_INTERRUPTED.get(command or '', _NOTHING_WRITTEN)}"


def from_os_error(err: OSError, args: argparse.Namespace) -> SiamkitError:
    """The :class:`SiamkitError` an ``OSError`` means for this command's arguments.

    The error's file is matched to the path argument it is (or lies under): its role gives the
    class and exit code; a full disk is a :class:`DiskFullError` wherever it happens; a file no
    argument names is a plain :class:`SiamkitError` (exit code 1).
    """
    name = err.filename if err.filename is not None else err.filename2
    reason = err.strerror or str(err)
    fix = _FIXES.get(err.errno or 0, "check the path and its permissions")
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" of {str(name)!r}" if name is not None else ""
        return DiskFullError(
            f"no space left on the disk{where}; free some space (the files written before are "
            "intact) and run again"
        )
    role = None if name is None else _role(str(name), args)
    if role is None:
        where = "" if name is None else f" {str(name)!r}"
        return SiamkitError(f"{reason}:{where}; {fix}")
    cls, flag, value = role
    inside = "" if _same(str(name), value) else f" (under {value!r})"
    return cls(f"{flag} {str(name)!r}{inside}: {reason}; {fix}")


def _role(name: str, args: argparse.Namespace) -> tuple[type[SiamkitError], str, str] | None:
    """The path argument ``name`` is or lies under (the deepest one), with its error class."""
    best: tuple[type[SiamkitError], str, str] | None = None
    for attr, (cls, flag) in PATH_ROLES.items():
        value = getattr(args, attr, None)
        if not isinstance(value, str) or not value:
            continue
        matches = _same(name, value) or _under(name, value)
        if matches and (best is None or len(value) > len(best[2])):
            best = (cls, flag, value)
    return best


def _same(a: str, b: str) -> bool:
    return os.path.abspath(a) == os.path.abspath(b)


def _under(name: str, folder: str) -> bool:
    # abspath, not resolve: resolving a path with a link loop in it fails again.
    return Path(os.path.abspath(folder)) in Path(os.path.abspath(name)).parents


def stdout_closed() -> bool:
    """Whether standard output is a pipe whose reader has gone (so a BrokenPipeError is its)."""
    import select

    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(event & (select.POLLERR | select.POLLHUP) for _, event in poll.poll(0))
    except (OSError, ValueError, AttributeError):  # no descriptor, or no poll here
        return False


def quiet_closed_pipe() -> int:
    """Standard output was closed by its reader: stop writing to it, end with 141, no message.

    Python would print an error when it flushes standard output at exit; pointing the
    descriptor at ``/dev/null`` first keeps the end quiet.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout already closed or replaced
        pass
    finally:
        os.close(devnull)
    return CLOSED_PIPE


def debug_requested(argv: Sequence[str] | None = None) -> bool:
    """Whether debug mode is on before the arguments are parsed.

    A usage error stops parsing, so ``--debug`` is looked for among the words themselves; after
    a successful parse, ``args.debug`` says the same.

    Args:
        argv: The command's arguments (default: ``sys.argv[1:]``).

    Returns:
        True when :data:`DEBUG_ENV` is set to anything but empty or 0, or ``--debug`` is given.
    """
    words = sys.argv[1:] if argv is None else argv
    return os.environ.get(DEBUG_ENV, "") not in ("", "0") or "--debug" in words


def fail(err: SiamkitError, caught: BaseException, debug: bool) -> int:
    """Print ``err`` as siamkit's one error line (and, in debug mode, ``caught``'s traceback).

    Args:
        err: The error as the user reads it.
        caught: The exception that was caught: ``err`` itself, or the ``OSError`` it stands for.
        debug: Whether to print the traceback after the line.

    Returns:
        The error's exit code.
    """
    report(f"siamkit: error: {err}", caught, debug)
    return err.exit_code


def report(line: str, caught: BaseException, debug: bool) -> None:
    """Print ``line`` on standard error, then in debug mode the traceback of ``caught``.

    Args:
        line: The one-line answer.
        caught: The exception behind it.
        debug: Whether to print the traceback.
    """
    print(line, file=sys.stderr)
    if debug:
        print_full_traceback(caught)


def print_full_traceback(error: BaseException) -> None:
    """Print ``error``'s traceback with its whole chain, including what ``from None`` hid.

    ``raise X(...) from None`` keeps the original exception as ``__context__`` but sets
    ``__suppress_context__``, so Python's traceback leaves it out; the flag is cleared along the
    chain while printing, and restored after, so the original failure shows where it happened.

    Args:
        error: The exception to print.
    """
    hidden: list[BaseException] = []
    seen: set[int] = set()
    link: BaseException | None = error
    while link is not None and id(link) not in seen:  # a chain can loop back on itself
        seen.add(id(link))
        if link.__suppress_context__ and link.__cause__ is None:
            link.__suppress_context__ = False
            hidden.append(link)
        link = link.__cause__ if link.__cause__ is not None else link.__context__
    try:
        traceback.print_exception(error, file=sys.stderr)
    finally:
        for link in hidden:
            link.__suppress_context__ = True
