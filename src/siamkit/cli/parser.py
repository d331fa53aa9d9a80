"""The ``siamkit`` argument parser (also the documentation of every flag)."""

from __future__ import annotations

import argparse

from siamkit.cli import commands
from siamkit.cli.arguments import (
    COUNT,
    NON_NEGATIVE,
    NON_NEGATIVE_INT,
    POSITIVE,
    OneLineParser,
    integer,
    number,
    path,
)

#: The registered methods' names (:data:`siamkit.methods.METHODS`, which a test compares), written
#: out so that ``siamkit --help`` does not import the registry and with it torch.
METHOD_NAMES = (
    "barlow_twins",
    "byol",
    "mine",
    "moco_v2",
    "moco_v3",
    "simclr",
    "simsiam",
    "simsiam_ema",
    "swav",
    "vicreg",
    "wmse",
)
#: ``siamkit export --format`` choices (:data:`siamkit.protocols.export.FORMATS`, compared by a
#: test), written out for the same reason.
EXPORT_FORMATS = ("safetensors", "torchvision", "timm", "onnx")


def _add_device_args(parser: argparse.ArgumentParser) -> None:
    """--accelerator and --devices, as ``pretrain`` takes them."""
    parser.add_argument("--accelerator", help="cpu, gpu or auto (default: a GPU when there is one)")
    parser.add_argument(
        "--devices", help="GPU count or indices, e.g. 1 or 0,1 (evaluation uses the first)"
    )


def _add_loggers_arg(parser: argparse.ArgumentParser) -> None:
    """--loggers: train.loggers as a comma-separated list."""
    parser.add_argument(
        "--loggers",
        type=lambda text: [name.strip() for name in text.split(",") if name.strip()],
        metavar="NAMES",
        help="where the logs go, comma-separated: csv, tensorboard, wandb, mlflow "
        "(default csv,tensorboard; wandb and mlflow need siamkit[wandb] / siamkit[mlflow])",
    )


def _add_run_args(parser: argparse.ArgumentParser) -> None:
    """The training-run flags fine-tuning and distillation share with ``pretrain``."""
    _add_loggers_arg(parser)
    parser.add_argument("--strategy", help="Lightning strategy, e.g. ddp")
    parser.add_argument("--num-nodes", type=COUNT, help="machines of a multi-node run (Lightning)")
    parser.add_argument(
        "--resume", type=path, help="checkpoint or output folder of an interrupted run"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an earlier run's checkpoints"
    )


def _add_storage_args(parser: argparse.ArgumentParser) -> None:
    """--storage and --workers: how the images are held and read."""
    parser.add_argument(
        "--storage",
        choices=["auto", "memory", "stream", "shards"],
        help="data.storage: decode once into memory, stream files, or read packed shards",
    )
    parser.add_argument("--workers", type=NON_NEGATIVE_INT, help="DataLoader workers per process")


def _add_eval_data_args(parser: argparse.ArgumentParser, data_help: str) -> None:
    """The data, device and output flags every ``eval`` command on a checkpoint shares."""
    parser.add_argument("--data", type=path, help=f"{data_help} (default: the checkpoint's data)")
    parser.add_argument("--dataset", choices=["digits", "cifar10", "folder"])
    parser.add_argument("--strict", action="store_true", help="fail on unreadable images")
    parser.add_argument("--json", action="store_true", help="also print the result as JSON")
    _add_storage_args(parser)
    _add_device_args(parser)


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    """The flags that make a run's config: ``pretrain`` and ``config show`` take the same."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--recipe",
        help="a shipped recipe by name, e.g. simsiam/cifar10 (`siamkit recipes` lists them; "
        "default: <method>/digits)",
    )
    source.add_argument("--config", type=path, help="a YAML recipe file (may name a base: recipe)")
    parser.add_argument(
        "--method",
        help="method name, one of: " + ", ".join(METHOD_NAMES) + " (alone: its digits recipe; "
        "with a recipe of another method: its own defaults for the method section)",
    )
    parser.add_argument("--dataset", choices=["digits", "cifar10", "folder"], help="data source")
    parser.add_argument(
        "--data",
        type=path,
        help="data folder or shards (relative paths, here and in recipes: to where you run)",
    )
    parser.add_argument("--epochs", type=COUNT, help="training epochs")
    parser.add_argument("--max-minutes", type=POSITIVE, help="wall-clock budget for training")
    parser.add_argument("--max-steps", type=COUNT, help="stop after this many optimiser steps")
    parser.add_argument("--batch-size", type=COUNT, help="images per step over all processes")
    parser.add_argument("--lr", type=POSITIVE, help="base learning rate (for batch 256)")
    parser.add_argument("--output", type=path, help="run folder (checkpoints, logs, results.json)")
    parser.add_argument("--strict", action="store_true", help="fail on unreadable images")
    parser.add_argument("--devices", help="Lightning devices, e.g. 2")
    parser.add_argument("--num-nodes", type=COUNT, help="machines of a multi-node run (Lightning)")
    parser.add_argument("--strategy", help="Lightning strategy, e.g. ddp")
    parser.add_argument("--accelerator", help="cpu, gpu or auto")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_loggers_arg(parser)
    _add_storage_args(parser)
    parser.add_argument(
        "--set",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override config keys, e.g. --set method.stop_gradient=false optim.base_lr=0.1 "
        "(repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used to document the CLI)."""
    from siamkit import __version__

    parser = OneLineParser(
        prog="siamkit",
        description="Self-supervised pretraining of image encoders with siamese networks.",
    )
    parser.add_argument("--version", action="version", version=f"siamkit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show Lightning's messages")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="on an error, show the traceback with its cause (also SIAMKIT_DEBUG=1)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "pretrain",
        help="pretrain an encoder, then report kNN accuracy against random init",
        description="Pretrain an encoder on unlabelled images: a recipe (by default "
        "<method>/digits, the quick start), then flags and --set override it.",
    )
    _add_config_args(p)
    p.add_argument("--resume", type=path, help="checkpoint or run folder to resume from")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run's checkpoints")
    p.set_defaults(func=commands.pretrain)

    rec = sub.add_parser(
        "recipes",
        help="list the shipped recipes (names for --recipe) and what each is for",
        description="The recipes shipped with siamkit: run one with `siamkit pretrain --recipe "
        "NAME`, print it resolved with `siamkit config show --recipe NAME`.",
    )
    rec.set_defaults(func=commands.recipes)

    c = sub.add_parser("config", help="show the config a pretraining run would use")
    csub = c.add_subparsers(dest="action", required=True)
    show = csub.add_parser(
        "show",
        help="print the resolved config as YAML (recipe, its base, flags and --set applied)",
        description="Print, as YAML, the config `siamkit pretrain` would run with the same "
        "flags: the recipe with its base merged in and every default filled in. The output is "
        "itself a recipe: `siamkit pretrain --config FILE` runs it.",
    )
    _add_config_args(show)
    show.set_defaults(func=commands.config_show)

    e = sub.add_parser("eval", help="evaluate a checkpoint's frozen backbone")
    esub = e.add_subparsers(dest="protocol", required=True)
    for name, helptext in (
        ("knn", "weighted kNN on the held-out split"),
        ("linear", "linear probe on frozen features"),
    ):
        q = esub.add_parser(name, help=helptext, description=helptext)
        q.add_argument("--checkpoint", type=path, required=True, help=".ckpt file or run folder")
        _add_eval_data_args(q, "labelled data folder")
        q.add_argument(
            "--features",
            choices=["backbone", "projection"],
            default="backbone",
            help="h (backbone output, the standard) or g(h) (after the projection head)",
        )
        if name == "knn":
            q.add_argument(
                "--k", type=COUNT, help="neighbours (default: the run's train.knn_k, usually 200)"
            )
            q.add_argument(
                "--temperature",
                type=POSITIVE,
                help="default: the run's train.knn_temperature (0.1)",
            )
        else:
            q.add_argument(
                "--optimizer",
                choices=["sgd", "lbfgs"],
                default="sgd",
                help="mini-batch SGD with cosine decay, or full-batch L-BFGS logistic regression",
            )
            q.add_argument(
                "--epochs", type=COUNT, default=100, help="SGD epochs / L-BFGS iterations (100)"
            )
            q.add_argument("--lr", type=POSITIVE, default=0.1, help="SGD learning rate (0.1)")
            q.add_argument("--batch-size", type=COUNT, default=256, help="SGD batch (256)")
            q.add_argument("--weight-decay", type=NON_NEGATIVE, default=0.0, help="L2 penalty (0)")
            q.add_argument(
                "--augment-copies",
                type=NON_NEGATIVE_INT,
                default=0,
                help="0: centre views; n: n random crop+flip views per training image",
            )
            q.add_argument(
                "--seed", type=NON_NEGATIVE_INT, default=0, help="seed of probe and views"
            )
        q.set_defaults(func=commands.probe)

    f = esub.add_parser(
        "finetune",
        help="fine-tune the whole network on 1%%/10%% of the labels (or a scratch baseline)",
        description="Fine-tune a pretrained checkpoint on a class-balanced labelled subset "
        "(written to an index file so runs compare on the same images), or train the same "
        "architecture from random init on it (--scratch), and report test top-1/top-5.",
    )
    f.add_argument("--checkpoint", type=path, required=True, help=".ckpt file or run folder")
    f.add_argument(
        "--scratch",
        action="store_true",
        help="supervised baseline: the checkpoint's architecture and recipe from random init",
    )
    f.add_argument(
        "--label-fraction",
        type=number(0, 1, open_low=True),
        required=True,
        help="share of labels, e.g. 0.01 or 0.1",
    )
    f.add_argument(
        "--index-file", type=path, help="labelled subset to reuse or write (default: splits/)"
    )
    f.add_argument(
        "--from-head-layers",
        type=NON_NEGATIVE_INT,
        default=0,
        help="0: from the backbone (h); 1: from the projection head's first layer (SimCLRv2)",
    )
    f.add_argument("--epochs", type=COUNT, help="default: 60 for <= 1%% labels, 30 above")
    f.add_argument("--lr", type=POSITIVE, help="default: 0.05 x batch / 256 (SimCLR)")
    f.add_argument("--batch-size", type=COUNT, default=64, help="default 64")
    f.add_argument(
        "--seed", type=NON_NEGATIVE_INT, default=0, help="seed of the subset and training"
    )
    f.add_argument(
        "--output", type=path, required=True, help="folder for classifier.pt and results.json"
    )
    _add_eval_data_args(f, "labelled data folder")
    _add_run_args(f)
    f.set_defaults(func=commands.finetune)

    d = esub.add_parser(
        "distill",
        help="SimCLRv2 distillation of a fine-tuned teacher into a student",
        description="The fine-tuned teacher labels the unlabelled training images with soft "
        "targets at a temperature; a student of the same or a smaller backbone learns them.",
    )
    d.add_argument(
        "--teacher", type=path, required=True, help="folder (or classifier.pt) of eval finetune"
    )
    d.add_argument("--output", type=path, required=True, help="folder for the student")
    d.add_argument("--student-backbone", help="backbone name (default: the teacher's)")
    d.add_argument("--student-width", type=POSITIVE, help="width multiplier (default: teacher's)")
    d.add_argument("--epochs", type=COUNT, default=30, help="default 30")
    d.add_argument("--lr", type=POSITIVE, help="default: 0.1 x batch / 256")
    d.add_argument("--batch-size", type=COUNT, default=64, help="default 64")
    d.add_argument("--temperature", type=POSITIVE, default=1.0, help="tau of the soft targets (1)")
    d.add_argument(
        "--alpha",
        type=number(0, 1),
        default=1.0,
        help="weight of distillation vs labelled loss (1)",
    )
    d.add_argument("--seed", type=NON_NEGATIVE_INT, default=0, help="seed of the student")
    d.add_argument("--json", action="store_true", help="also print the result as JSON")
    _add_device_args(d)
    _add_run_args(d)
    d.set_defaults(func=commands.distill)

    r = esub.add_parser(
        "metrics",
        help="collapse std, RankMe, alignment and uniformity of h and g(h)",
        description="Representation metrics of a checkpoint's h (backbone) and g(h) "
        "(projection head): collapse std, effective rank (RankMe), alignment and uniformity.",
    )
    r.add_argument("--checkpoint", type=path, required=True, help=".ckpt file or run folder")
    r.add_argument("--max-images", type=integer(2), default=5000, help="images measured (5000)")
    r.add_argument("--seed", type=NON_NEGATIVE_INT, default=0, help="seed of the subset and views")
    _add_eval_data_args(r, "data folder")
    r.set_defaults(func=commands.metrics)

    mi = esub.add_parser(
        "mi",
        help="MINE estimates of two-view and label mutual information of h and g(h)",
        description="Mutual information (MINE, arXiv:1801.04062) between the representations "
        "of two augmented views of the same images, for h (backbone) and g(h) (projection), "
        "and between h and the label: a statistics network fitted on 60%% of the pairs, "
        "stopped where its bound on another 20%% peaks, and its bound at that step on the last "
        "20%% reported, in nats.",
    )
    mi.add_argument("--checkpoint", type=path, required=True, help=".ckpt file or run folder")
    mi.add_argument("--max-images", type=integer(10), default=5000, help="images measured (5000)")
    mi.add_argument("--bound", default="mine", choices=["mine", "dv", "mine_f", "infonce"])
    mi.add_argument("--steps", type=COUNT, default=1000, help="steps of the statistics network")
    mi.add_argument(
        "--random-init", action="store_true", help="measure the architecture at random init"
    )
    mi.add_argument(
        "--seed", type=NON_NEGATIVE_INT, default=0, help="seed of the subset, views and fits"
    )
    _add_eval_data_args(mi, "data folder")
    mi.set_defaults(func=commands.mutual_information)

    rep = sub.add_parser(
        "report", help="write a self-contained HTML report (and PNGs) of a pretraining run"
    )
    rep.add_argument("--run", type=path, required=True, help="run folder of siamkit pretrain")
    rep.add_argument(
        "--tsne-images", type=integer(10), default=2000, help="points in the t-SNE map"
    )
    rep.add_argument("--max-images", type=integer(2), default=5000, help="images for the metrics")
    _add_device_args(rep)
    rep.set_defaults(func=commands.report)

    x = sub.add_parser(
        "export",
        help="write the backbone for other libraries: safetensors, torchvision, timm or ONNX",
        description="Write a run's backbone as safetensors (weights, the siamkit architecture "
        "and the run's evaluation size and normalisation; siamkit.protocols.export."
        "load_exported reads it), a torchvision or timm state dict (.pth/.pt, loads with "
        "strict=True into torchvision.models.<name>() with fc = nn.Identity(), or timm."
        "create_model(<name>, pretrained=True, num_classes=0, pretrained_cfg_overlay=dict("
        "file=...)); only width-1 ResNets without the CIFAR stem, and timm backbones, have such "
        "a model), or ONNX (normalised (N, 3, S, S) float32 images at the run's evaluation size "
        "S -> (N, features), any N). It prints a line that loads the file.",
    )
    x.add_argument("--checkpoint", type=path, required=True, help=".ckpt file or run folder")
    x.add_argument(
        "--output",
        type=path,
        required=True,
        help=".safetensors, .pth/.pt (torchvision, timm) or .onnx file",
    )
    x.add_argument(
        "--format",
        choices=EXPORT_FORMATS,
        help="default: from the extension (.safetensors, .onnx); a .pth/.pt file needs "
        "--format torchvision or timm",
    )
    x.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    x.set_defaults(func=commands.export)

    m = sub.add_parser(
        "embed",
        help="write backbone embeddings of a folder of images to .npy",
        description="Embed every image under --data with a run's backbone, a siamkit "
        ".safetensors export, or a torchvision/timm model with local weights. Each image is "
        "resized (shorter side S x 256/224, bilinear, antialiased), centre-cropped to S x S "
        "and normalised; S, mean and std are the run's (a checkpoint, or an export of one), "
        "else timm's pretrained_cfg input size, mean and std (timm's crop_pct and "
        "interpolation are not used), else 224 and ImageNet's; --image-size, --mean and --std "
        "override them. A run embeds at its training precision (bf16 where it trained with it), "
        "anything else in float32.",
    )
    source = m.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--checkpoint",
        type=path,
        help=".ckpt file, run folder, or a .safetensors file of siamkit export",
    )
    source.add_argument(
        "--model",
        help="torchvision/<name> or timm/<name> (e.g. timm/resnet50), with --weights",
    )
    m.add_argument(
        "--weights",
        type=path,
        help="state dict of --model (.pth/.pt; timm also .safetensors), e.g. from siamkit "
        "export --format torchvision|timm; a classifier in it is ignored",
    )
    m.add_argument("--data", type=path, required=True, help="folder of images")
    m.add_argument("--output", type=path, required=True, help="output .npy file")
    m.add_argument("--image-size", type=integer(8), help="side S of the centre view (see above)")
    for flag in ("mean", "std"):
        m.add_argument(
            f"--{flag}",
            type=number() if flag == "mean" else POSITIVE,
            nargs=3,
            metavar=("R", "G", "B"),
            help=f"normalisation {flag} per channel (default: see above)",
        )
    m.add_argument("--strict", action="store_true", help="fail on unreadable images")
    m.add_argument(
        "--workers", type=NON_NEGATIVE_INT, help="DataLoader workers decoding the images"
    )
    _add_device_args(m)
    m.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    m.set_defaults(func=commands.embed)

    k = sub.add_parser(
        "pack",
        help="pack an image folder into litdata shards (data.storage: shards)",
        description="Write an image folder once as litdata shards: images keep their bytes "
        "unless their shorter side exceeds --max-side, labels come from class folders. Train "
        "and evaluate from them with --data SHARDS (a local folder or an object-store URL).",
    )
    k.add_argument(
        "--data", type=path, required=True, help="image folder (any layout pretrain reads)"
    )
    k.add_argument("--output", type=path, required=True, help="local folder for the shards")
    k.add_argument(
        "--max-side", type=integer(8), default=512, help="largest shorter side kept (512)"
    )
    k.add_argument(
        "--test-fraction",
        type=number(0, 1, open_high=True),
        default=0.2,
        help="held-out share of a root/<class>/* folder, fixed at packing (0.2)",
    )
    k.add_argument("--workers", type=COUNT, help="processes reading and encoding")
    k.add_argument("--strict", action="store_true", help="fail on unreadable images")
    k.add_argument("--overwrite", action="store_true", help="replace an existing output")
    k.set_defaults(func=commands.pack)

    ex = sub.add_parser(
        "experiment",
        help="run a paper's experiment: every cell pretrained, measured, set beside the paper",
        description="Run one of the papers' experiments (a grid of pretraining runs, each "
        "measured), skipping cells already finished, and write report.md and report.html with "
        "the paper's figure beside each measured one (mean +- std over the seeds) and each "
        "claim's verdict: reproduced, contradicted or inconclusive (within noise). --list shows "
        "the experiments.",
    )
    ex.add_argument("name", nargs="?", type=path, help="experiment name (or a YAML file of one)")
    ex.add_argument("--list", action="store_true", help="list the experiments and exit")
    ex.add_argument(
        "--scale",
        choices=["cpu", "gpu", "paper"],
        default="cpu",
        help="cpu: minutes a cell on a 2-core CPU; gpu: a single-GPU CIFAR-10 ResNet-18 grid; "
        "paper: the paper's recipe (default cpu)",
    )
    ex.add_argument("--output", type=path, help="folder (default runs/experiments/NAME-SCALE)")
    ex.add_argument(
        "--seeds",
        type=COUNT,
        help="seeds of every cell (default: the experiment's for the scale); with --resume, "
        "more seeds than before are added to the finished ones",
    )
    ex.add_argument("--resume", action="store_true", help="continue a killed experiment")
    ex.add_argument("--overwrite", action="store_true", help="start again in --output")
    ex.add_argument(
        "--data", type=path, help="data folder in place of the recipes' (e.g. CIFAR-10's)"
    )
    ex.set_defaults(func=commands.experiment)
    return parser
