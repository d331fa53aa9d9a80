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


def _quiet() -> None:
    """Hide Lightning's banner lines and known-harmless warnings; siamkit prints a summary."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*Experiment logs directory.*")
    warnings.filterwarnings("ignore", message=".*litlogger.*")
    warnings.filterwarnings("ignore", message=".*sync_dist=True.*")  # rank-0-only kNN


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
