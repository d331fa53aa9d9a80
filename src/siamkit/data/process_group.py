"""Running a piece of work in a child process that leads a process group of its own.

``siamkit pack`` runs litdata's ``optimize`` this way: it starts worker, writer and uploader
processes and replaces Ctrl-C's handler by one that ends the process with status 0. In a
child of its own group it never sees the terminal's Ctrl-C; the parent gets it (or SIGTERM)
as a ``KeyboardInterrupt``, ends the child's whole group, and removes the partial output.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
from collections.abc import Callable
from typing import Any, TypeVar, cast

from siamkit.errors import DataError

T = TypeVar("T")


def in_own_process_group(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a forked child that leads a process group of its own; its result.

    litdata's ``optimize`` starts worker, writer and uploader processes and replaces Ctrl-C's
    handler by one that ends the process with status 0 (``os._exit(0)``). Run in a child of
    its own group, it never sees the terminal's Ctrl-C: this process gets it as a
    ``KeyboardInterrupt``, ends the child's whole group (no litdata process outlives the
    command), and :func:`~siamkit.safe_io.staged_folder` removes the partial output, so the
    command exits with 130. Where processes cannot be forked, ``fn`` runs here.
    """
    if "fork" not in mp.get_all_start_methods():
        return fn(*args)
    ctx = mp.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_group_leader, args=(send, fn, args))
    # A Ctrl-C during the fork itself would be raised inside an at-fork handler, which Python
    # ignores; blocked until the child is in its own group, it arrives just after.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        child.start()
        pid = child.pid
        assert pid is not None  # set once started
        with contextlib.suppress(OSError):  # the child sets it too; whichever comes first
            os.setpgid(pid, pid)
        # SIGTERM (a scheduler's stop) ends the packing as Ctrl-C does.
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    send.close()
    try:
        try:
            kind, value = receive.recv()
        except EOFError:
            kind, value = "died", None
        child.join()
    except BaseException:
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
        child.join()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    if kind == "ok":
        return cast(T, value)  # what fn returned, through the pipe (which types it Any)
    if kind == "error":
        raise value
    raise DataError(f"packing stopped: its process ended with code {child.exitcode}")


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _group_leader(send: Any, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    """The child of :func:`_in_own_process_group`: lead a group, run ``fn``, send the outcome."""
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        send.send(("ok", fn(*args)))
    except BaseException as err:  # sent to the parent, which raises it
        try:
            send.send(("error", err))
        except Exception:  # an exception that cannot be pickled: its text
            send.send(("error", DataError(f"packing failed: {type(err).__name__}: {err}")))
    finally:
        send.close()
