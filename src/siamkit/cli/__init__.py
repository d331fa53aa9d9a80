"""``siamkit``: a thin command line over the Python API.

    siamkit pretrain                      # the quick start: --recipe simsiam/digits
    siamkit recipes                       # the shipped recipes
    siamkit config show --recipe simsiam/cifar10 --epochs 5
    siamkit eval knn --checkpoint runs/simsiam-digits
    siamkit eval linear --checkpoint runs/simsiam-digits
    siamkit eval finetune --checkpoint runs/simsiam-digits --label-fraction 0.1 --output ft
    siamkit eval distill --teacher ft --output student
    siamkit eval metrics --checkpoint runs/simsiam-digits
    siamkit report --run runs/simsiam-digits
    siamkit export --checkpoint runs/simsiam-digits --output backbone.safetensors
    siamkit export --checkpoint runs/simsiam-digits --output backbone.onnx
    siamkit embed --checkpoint runs/simsiam-digits --data my_images/ --output emb.npy
    siamkit embed --model timm/resnet50 --weights r50.pth --data my_images/ --output emb.npy
    siamkit pack --data /data/imagenet --output /data/imagenet-shards

Building the parser imports neither torch nor Lightning (each command imports what it needs), so
``siamkit --help`` and ``siamkit --version`` answer at once. Errors from bad input print one line
and exit with the error's code (:mod:`siamkit.errors` has the table: 2 config or flag, 3 data, 4
diverged training, 5 checkpoint, 6 full disk, 7 output, 130 interrupted, 141 closed pipe),
without a traceback; with ``--debug`` (or ``SIAMKIT_DEBUG=1``) the traceback follows the line,
with the whole chain of exceptions behind the error, including those raised ``from None``.
Lightning's information lines and the warnings of the dependencies are hidden (``--verbose`` shows
them); siamkit's own warnings show.
"""

from __future__ import annotations

import logging
import sys
import warnings

from siamkit.cli.failures import (
    debug_requested,
    fail,
    from_os_error,
    interrupted_message,
    quiet_closed_pipe,
    report,
    stdout_closed,
)
from siamkit.cli.parser import build_parser
from siamkit.errors import SiamkitError

__all__ = ["build_parser", "main"]


#: The loggers of Lightning's information lines ("GPU available: ...", its advertisement of
#: litlogger, "`Trainer.fit` stopped: ..."). Their package loggers (``lightning.pytorch``,
#: ``lightning.fabric``) cannot be quietened beforehand: importing Lightning, which each command
#: does after the command line is read, sets them to INFO. These loggers keep a level set before
#: the import.
LIGHTNING_INFO_LOGGERS = (
    # rank_zero_info logs through one of these three, whichever module was imported last.
    "lightning_utilities.core.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.distributed",  # "Initializing distributed: GLOBAL_RANK: ..."
    "lightning.fabric.utilities.seed",  # "Seed set to ..."
    "lightning.pytorch.accelerators.cuda",  # "LOCAL_RANK: 0 - CUDA_VISIBLE_DEVICES: [...]"
    "lightning.pytorch.trainer.connectors.checkpoint_connector",
    "lightning.pytorch.trainer.connectors.signal_connector",
)

#: Warnings raised in any module but siamkit's (a regular expression of the module name that
#: :func:`warnings.filterwarnings` matches at the start of the name).
NOT_SIAMKIT = r"(?!siamkit(\.|$))"


def _quiet() -> None:
    """Hide Lightning's information lines and the dependencies' warnings.

    siamkit prints its own summary of a run. Warnings whose module is not siamkit's (Lightning,
    PyTorch, ...) are for the developers of that dependency and are hidden; siamkit's own warnings
    (an unreadable image, a collapsed output) are left to Python's usual filters, so they still
    show. ``--verbose`` shows everything.
    """
    for name in (*LIGHTNING_INFO_LOGGERS, "lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # A warning belongs to the module of the line it names: Lightning's own (few loader workers,
    # a run folder that exists, kNN logged on rank 0 alone) name a line of Lightning; a
    # deprecation names the line that calls the deprecated function, in the dependency that does.
    warnings.filterwarnings("ignore", module=NOT_SIAMKIT)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``siamkit`` command.

    Args:
        argv: The arguments after ``siamkit`` (default: ``sys.argv[1:]``).

    Returns:
        The exit code: 0, or the code of the error (:mod:`siamkit.errors`).
    """
    debug = debug_requested(argv)
    try:
        args = build_parser().parse_args(argv)
    except SiamkitError as usage:  # a flag's problem, one line as every other
        return fail(usage, usage, debug)
    if not args.verbose:
        _quiet()
    debug = debug or args.debug
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # a closed pipe shows here, not at exit outside this handler
        return code
    except BrokenPipeError as caught:
        if stdout_closed():  # the reader of standard output has gone (`| head -1`)
            return quiet_closed_pipe()
        return fail(from_os_error(caught, args), caught, debug)
    except (SiamkitError, OSError) as caught:
        err = caught if isinstance(caught, SiamkitError) else from_os_error(caught, args)
        return fail(err, caught, debug)
    except KeyboardInterrupt as caught:
        report(interrupted_message(args.command), caught, debug)
        return 130


if __name__ == "__main__":
    sys.exit(main())
