"""The flags several ``siamkit`` commands share, each declared once, and the groups they form.

:mod:`siamkit.cli.parser` composes a command's flags from these groups and its own. A group is
a tuple of :class:`~siamkit.cli.specs.Spec` in the order of the help; the few whose help names
the command's data take that text as an argument.
"""

from __future__ import annotations

from siamkit import registry
from siamkit.cli.arguments import COUNT, NON_NEGATIVE_INT, POSITIVE, integer, name_list, path
from siamkit.cli.specs import Arg, OneOf, Spec, arg

#: The registered methods' names, from the torch-free registry (``siamkit --help`` imports no
#: implementation).
METHOD_NAMES = tuple(sorted(registry.METHODS))
#: The data sources of ``--dataset``.
DATASETS = tuple(registry.DATA_SOURCES)

# Single flags that recur with the same meaning.
STRICT = arg("--strict", action="store_true", help="fail on unreadable images")
JSON = arg("--json", action="store_true", help="also print the result as JSON")
CHECKPOINT = arg("--checkpoint", type=path, required=True, help=".ckpt file or run folder")
STRATEGY = arg("--strategy", help="Lightning strategy, e.g. ddp")
NUM_NODES = arg("--num-nodes", type=COUNT, help="machines of a multi-node run (Lightning)")
OVERWRITE_RUN = arg("--overwrite", action="store_true", help="replace an earlier run's checkpoints")
OVERWRITE_FILE = arg("--overwrite", action="store_true", help="replace an existing --output file")
LOGGERS = arg(
    "--loggers",
    type=name_list,
    metavar="NAMES",
    help="where the logs go, comma-separated: csv, tensorboard, wandb, mlflow "
    "(default csv,tensorboard; wandb and mlflow need siamkit[wandb] / siamkit[mlflow])",
)


def seed(what: str) -> Arg:
    """``--seed``: a non-negative integer, 0 by default.

    Args:
        what: What the seed draws, for the help ("the subset and training").

    Returns:
        The flag.
    """
    return arg("--seed", type=NON_NEGATIVE_INT, default=0, help=f"seed of {what}")


def max_images(least: int, text: str = "images measured (5000)") -> Arg:
    """``--max-images``: how many images a measurement uses, 5000 by default.

    Args:
        least: The fewest the measurement works with.
        text: The help.

    Returns:
        The flag.
    """
    return arg("--max-images", type=integer(least), default=5000, help=text)


#: --accelerator and --devices of the commands that run a model once (evaluation, embedding).
DEVICE: tuple[Spec, ...] = (
    arg("--accelerator", help="cpu, gpu or auto (default: a GPU when there is one)"),
    arg("--devices", help="GPU count or indices, e.g. 1 or 0,1 (evaluation uses the first)"),
)

#: --storage and --workers: how the images are held and read.
STORAGE: tuple[Spec, ...] = (
    arg(
        "--storage",
        choices=["auto", "memory", "stream", "shards"],
        help="data.storage: decode once into memory, stream files, or read packed shards",
    ),
    arg("--workers", type=NON_NEGATIVE_INT, help="DataLoader workers per process"),
)

#: How a folder's labels are read (``data.labels``, ``data.labels_file``).
LABELS: tuple[Spec, ...] = (
    arg(
        "--labels",
        choices=["auto", "folders", "file", "none"],
        help="data.labels: class folders, a label file, or none (default auto)",
    ),
    arg("--labels-file", type=path, help="data.labels_file: lines of 'file name, class'"),
)

#: The training-run flags fine-tuning and distillation share with ``pretrain``.
RUN: tuple[Spec, ...] = (
    LOGGERS,
    STRATEGY,
    NUM_NODES,
    arg("--resume", type=path, help="checkpoint or output folder of an interrupted run"),
    OVERWRITE_RUN,
)

#: The flags that make a run's config: ``pretrain`` and ``config show`` take the same.
CONFIG: tuple[Spec, ...] = (
    OneOf(
        (
            arg(
                "--recipe",
                help="a shipped recipe by name, e.g. simsiam/cifar10 (`siamkit recipes` lists "
                "them; default: <method>/digits)",
            ),
            arg("--config", type=path, help="a YAML recipe file (may name a base: recipe)"),
        )
    ),
    arg(
        "--method",
        help="method name, one of: " + ", ".join(METHOD_NAMES) + " (alone: its digits recipe; "
        "with a recipe of another method: its own defaults for the method section)",
    ),
    arg("--dataset", choices=DATASETS, help="data source"),
    arg(
        "--data",
        type=path,
        help="data folder or shards (relative paths, here and in recipes: to where you run)",
    ),
    arg("--epochs", type=COUNT, help="training epochs"),
    arg("--max-minutes", type=POSITIVE, help="wall-clock budget for training"),
    arg("--max-steps", type=COUNT, help="stop after this many optimiser steps"),
    arg("--batch-size", type=COUNT, help="images per step over all processes"),
    arg("--lr", type=POSITIVE, help="base learning rate (for batch 256)"),
    arg("--output", type=path, help="run folder (checkpoints, logs, results.json)"),
    STRICT,
    arg("--devices", help="Lightning devices, e.g. 2"),
    NUM_NODES,
    STRATEGY,
    arg("--accelerator", help="cpu, gpu or auto"),
    arg("--no-progress", action="store_true", help="no progress (bar or log lines)"),
    LOGGERS,
    *STORAGE,
    arg(
        "--set",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override config keys, e.g. --set method.stop_gradient=false optim.base_lr=0.1 "
        "(repeatable)",
    ),
)


def eval_data(data: str) -> tuple[Spec, ...]:
    """The data, device and output flags every ``eval`` command on a checkpoint shares.

    Args:
        data: What ``--data`` names, for its help ("labelled data folder").

    Returns:
        The group.
    """
    return (
        arg("--data", type=path, help=f"{data} (default: the checkpoint's data)"),
        arg("--dataset", choices=DATASETS),
        *LABELS,
        STRICT,
        JSON,
        *STORAGE,
        *DEVICE,
    )


#: --features of the probes: which representation they read.
FEATURES = arg(
    "--features",
    choices=["backbone", "projection"],
    default="backbone",
    help="h (backbone output, the standard) or g(h) (after the projection head)",
)
