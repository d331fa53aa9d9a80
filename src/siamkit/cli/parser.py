"""The ``siamkit`` argument parser (also the documentation of every flag).

The commands are a table, :data:`COMMANDS`: each names its help, the shared flag groups of
:mod:`siamkit.cli.flags` it takes, its own flags and its handler in :mod:`siamkit.cli.commands`;
:func:`build_parser` turns the table into argparse parsers.
"""

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
from siamkit.cli.flags import (
    CHECKPOINT,
    CONFIG,
    DATASETS,
    DEVICE,
    FEATURES,
    JSON,
    LABELS,
    METHOD_NAMES,
    OVERWRITE_FILE,
    OVERWRITE_RUN,
    RUN,
    STORAGE,
    STRICT,
    eval_data,
    max_images,
    seed,
)
from siamkit.cli.specs import Command, OneOf, Spec, add_arguments, add_commands, arg

__all__ = ["COMMANDS", "EXPORT_FORMATS", "GLOBAL_FLAGS", "METHOD_NAMES", "build_parser"]

#: ``siamkit export --format`` choices (:data:`siamkit.export.formats.FORMATS`, compared by a
#: test), written out so that ``siamkit --help`` does not import the exporters and with them torch.
EXPORT_FORMATS = ("safetensors", "torchvision", "timm", "onnx")

#: The flags before the command (``--version`` is added by :func:`build_parser`).
GLOBAL_FLAGS: tuple[Spec, ...] = (
    arg("-v", "--verbose", action="store_true", help="show Lightning's messages"),
    arg(
        "--debug",
        action="store_true",
        help="on an error, show the traceback with its cause (also SIAMKIT_DEBUG=1)",
    ),
)

_KNN = "weighted kNN on the held-out split"
_LINEAR = "linear probe on frozen features"

#: The evaluations of a checkpoint, ``siamkit eval PROTOCOL``.
EVAL_COMMANDS: tuple[Command, ...] = (
    Command(
        "knn",
        help=_KNN,
        description=_KNN,
        args=(
            CHECKPOINT,
            *eval_data("labelled data folder"),
            FEATURES,
            arg("--k", type=COUNT, help="neighbours (default: the run's train.knn_k, usually 200)"),
            arg(
                "--temperature",
                type=POSITIVE,
                help="default: the run's train.knn_temperature (0.1)",
            ),
        ),
        handler=commands.probe,
    ),
    Command(
        "linear",
        help=_LINEAR,
        description=_LINEAR,
        args=(
            CHECKPOINT,
            *eval_data("labelled data folder"),
            FEATURES,
            arg(
                "--optimizer",
                choices=["sgd", "lbfgs"],
                default="sgd",
                help="mini-batch SGD with cosine decay, or full-batch L-BFGS logistic regression",
            ),
            arg("--epochs", type=COUNT, default=100, help="SGD epochs / L-BFGS iterations (100)"),
            arg("--lr", type=POSITIVE, default=0.1, help="SGD learning rate (0.1)"),
            arg("--batch-size", type=COUNT, default=256, help="SGD batch (256)"),
            arg("--weight-decay", type=NON_NEGATIVE, default=0.0, help="L2 penalty (0)"),
            arg(
                "--augment-copies",
                type=NON_NEGATIVE_INT,
                default=0,
                help="0: centre views; n: n random crop+flip views per training image",
            ),
            seed("probe and views"),
        ),
        handler=commands.probe,
    ),
    Command(
        "finetune",
        help="fine-tune the whole network on 1%%/10%% of the labels (or a scratch baseline)",
        description="Fine-tune a pretrained checkpoint on a class-balanced labelled subset "
        "(written to an index file so runs compare on the same images), or train the same "
        "architecture from random init on it (--scratch), and report test top-1/top-5.",
        args=(
            CHECKPOINT,
            arg(
                "--scratch",
                action="store_true",
                help="supervised baseline: the checkpoint's architecture and recipe from random "
                "init",
            ),
            arg(
                "--label-fraction",
                type=number(0, 1, open_low=True),
                required=True,
                help="share of labels, e.g. 0.01 or 0.1",
            ),
            arg(
                "--index-file",
                type=path,
                help="labelled subset to reuse or write (default: splits/)",
            ),
            arg(
                "--from-head-layers",
                type=NON_NEGATIVE_INT,
                default=0,
                help="0: from the backbone (h); 1: from the projection head's first layer "
                "(SimCLRv2)",
            ),
            arg("--epochs", type=COUNT, help="default: 60 for <= 1%% labels, 30 above"),
            arg("--lr", type=POSITIVE, help="default: 0.05 x batch / 256 (SimCLR)"),
            arg("--batch-size", type=COUNT, default=64, help="default 64"),
            seed("the subset and training"),
            arg(
                "--output",
                type=path,
                required=True,
                help="folder for classifier.pt and results.json",
            ),
            *eval_data("labelled data folder"),
            *RUN,
        ),
        handler=commands.finetune,
    ),
    Command(
        "distill",
        help="SimCLRv2 distillation of a fine-tuned teacher into a student",
        description="The fine-tuned teacher labels the unlabelled training images with soft "
        "targets at a temperature; a student of the same or a smaller backbone learns them.",
        args=(
            arg(
                "--teacher",
                type=path,
                required=True,
                help="folder (or classifier.pt) of eval finetune",
            ),
            arg("--output", type=path, required=True, help="folder for the student"),
            arg("--student-backbone", help="backbone name (default: the teacher's)"),
            arg("--student-width", type=POSITIVE, help="width multiplier (default: teacher's)"),
            arg("--epochs", type=COUNT, default=30, help="default 30"),
            arg("--lr", type=POSITIVE, help="default: 0.1 x batch / 256"),
            arg("--batch-size", type=COUNT, default=64, help="default 64"),
            arg("--temperature", type=POSITIVE, default=1.0, help="tau of the soft targets (1)"),
            arg(
                "--alpha",
                type=number(0, 1),
                default=1.0,
                help="weight of distillation vs labelled loss (1)",
            ),
            seed("the student"),
            JSON,
            *DEVICE,
            *RUN,
        ),
        handler=commands.distill,
    ),
    Command(
        "metrics",
        help="collapse std, RankMe, alignment and uniformity of h and g(h)",
        description="Representation metrics of a checkpoint's h (backbone) and g(h) "
        "(projection head): collapse std, effective rank (RankMe), alignment and uniformity.",
        args=(
            CHECKPOINT,
            max_images(2),
            seed("the subset and views"),
            *eval_data("data folder"),
        ),
        handler=commands.metrics,
    ),
    Command(
        "mi",
        help="MINE estimates of two-view and label mutual information of h and g(h)",
        description="Mutual information (MINE, arXiv:1801.04062) between the representations "
        "of two augmented views of the same images, for h (backbone) and g(h) (projection), "
        "and between h and the label: a statistics network fitted on 60%% of the pairs, "
        "stopped where its bound on another 20%% peaks, and its bound at that step on the last "
        "20%% reported, in nats.",
        args=(
            CHECKPOINT,
            max_images(10),
            arg("--bound", default="mine", choices=["mine", "dv", "mine_f", "infonce"]),
            arg("--steps", type=COUNT, default=1000, help="steps of the statistics network"),
            arg(
                "--random-init",
                action="store_true",
                help="measure the architecture at random init",
            ),
            seed("the subset, views and fits"),
            *eval_data("data folder"),
        ),
        handler=commands.mutual_information,
    ),
)

#: Every command: ``siamkit NAME`` (and ``siamkit GROUP NAME`` for a group's children).
COMMANDS: tuple[Command, ...] = (
    Command(
        "pretrain",
        help="pretrain an encoder, then report kNN accuracy against random init",
        description="Pretrain an encoder on unlabelled images: a recipe (by default "
        "<method>/digits, the quick start), then flags and --set override it.",
        args=(
            *CONFIG,
            arg("--resume", type=path, help="checkpoint or run folder to resume from"),
            OVERWRITE_RUN,
        ),
        handler=commands.pretrain,
    ),
    Command(
        "recipes",
        help="list the shipped recipes (names for --recipe) and what each is for",
        description="The recipes shipped with siamkit: run one with `siamkit pretrain --recipe "
        "NAME`, print it resolved with `siamkit config show --recipe NAME`.",
        handler=commands.recipes,
    ),
    Command(
        "config",
        help="show the config a pretraining run would use",
        dest="action",
        children=(
            Command(
                "show",
                help="print the resolved config as YAML (recipe, its base, flags and --set "
                "applied)",
                description="Print, as YAML, the config `siamkit pretrain` would run with the "
                "same flags: the recipe with its base merged in and every default filled in. The "
                "output is itself a recipe: `siamkit pretrain --config FILE` runs it.",
                args=CONFIG,
                handler=commands.config_show,
            ),
        ),
    ),
    Command(
        "data",
        help="look at a data source without training",
        dest="action",
        children=(
            Command(
                "inspect",
                help="say what a data source holds: splits, classes, labels, sizes, storage",
                description="Print what a run would read from --data, without training: one "
                "line per split (images, classes, where the labels come from), the image sizes "
                "(smallest, median, largest), the files that cannot be opened, and the storage "
                "data.storage=auto would choose and why.",
                args=(
                    arg("--data", type=path, help="image folder, shards, or CIFAR-10 folder"),
                    arg("--dataset", choices=DATASETS, help="default: folder with --data"),
                    *LABELS,
                    *STORAGE,
                ),
                handler=commands.data_inspect,
            ),
        ),
    ),
    Command(
        "eval",
        help="evaluate a checkpoint's frozen backbone",
        dest="protocol",
        children=EVAL_COMMANDS,
    ),
    Command(
        "report",
        help="write a self-contained HTML report (and PNGs) of a pretraining run",
        args=(
            arg("--run", type=path, required=True, help="run folder of siamkit pretrain"),
            arg("--tsne-images", type=integer(10), default=2000, help="points in the t-SNE map"),
            max_images(2, "images for the metrics"),
            *DEVICE,
        ),
        handler=commands.report,
    ),
    Command(
        "export",
        help="write the backbone for other libraries: safetensors, torchvision, timm or ONNX",
        description="Write a run's backbone as safetensors (weights, the siamkit architecture "
        "and the run's evaluation size and normalisation; siamkit.export."
        "load_exported reads it), a torchvision or timm state dict (.pth/.pt, loads with "
        "strict=True into torchvision.models.<name>() with fc = nn.Identity(), or timm."
        "create_model(<name>, pretrained=True, num_classes=0, pretrained_cfg_overlay=dict("
        "file=...)); only width-1 ResNets without the CIFAR stem, and timm backbones, have such "
        "a model), or ONNX (normalised (N, 3, S, S) float32 images at the run's evaluation size "
        "S -> (N, features), any N). It prints a line that loads the file.",
        args=(
            CHECKPOINT,
            arg(
                "--output",
                type=path,
                required=True,
                help=".safetensors, .pth/.pt (torchvision, timm) or .onnx file",
            ),
            arg(
                "--format",
                choices=EXPORT_FORMATS,
                help="default: from the extension (.safetensors, .onnx); a .pth/.pt file needs "
                "--format torchvision or timm",
            ),
            OVERWRITE_FILE,
        ),
        handler=commands.export,
    ),
    Command(
        "embed",
        help="write backbone embeddings of a folder of images to .npy",
        description="Embed every image under --data with a run's backbone, a siamkit "
        ".safetensors export, or a torchvision/timm model with local weights. Each image is "
        "resized (shorter side S x 256/224, bilinear, antialiased), centre-cropped to S x S "
        "and normalised; S, mean and std are the run's (a checkpoint, or an export of one), "
        "else timm's pretrained_cfg input size, mean and std (timm's crop_pct and "
        "interpolation are not used), else 224 and ImageNet's; --image-size, --mean and --std "
        "override them. A run embeds at its training precision (bf16 where it trained with "
        "it), anything else in float32.",
        args=(
            OneOf(
                (
                    arg(
                        "--checkpoint",
                        type=path,
                        help=".ckpt file, run folder, or a .safetensors file of siamkit export",
                    ),
                    arg(
                        "--model",
                        help="torchvision/<name> or timm/<name> (e.g. timm/resnet50), with "
                        "--weights",
                    ),
                ),
                required=True,
            ),
            arg(
                "--weights",
                type=path,
                help="state dict of --model (.pth/.pt; timm also .safetensors), e.g. from "
                "siamkit export --format torchvision|timm; a classifier in it is ignored",
            ),
            arg("--data", type=path, required=True, help="folder of images"),
            arg("--output", type=path, required=True, help="output .npy file"),
            arg("--image-size", type=integer(8), help="side S of the centre view (see above)"),
            arg(
                "--mean",
                type=number(),
                nargs=3,
                metavar=("R", "G", "B"),
                help="normalisation mean per channel (default: see above)",
            ),
            arg(
                "--std",
                type=POSITIVE,
                nargs=3,
                metavar=("R", "G", "B"),
                help="normalisation std per channel (default: see above)",
            ),
            STRICT,
            arg("--workers", type=NON_NEGATIVE_INT, help="DataLoader workers decoding the images"),
            *DEVICE,
            OVERWRITE_FILE,
        ),
        handler=commands.embed,
    ),
    Command(
        "pack",
        help="pack an image folder into litdata shards (data.storage: shards)",
        description="Write an image folder once as litdata shards: images keep their bytes "
        "unless their shorter side exceeds --max-side, labels read as pretrain reads them "
        "(--labels, --labels-file). Train "
        "and evaluate from them with --data SHARDS (a local folder or an object-store URL).",
        args=(
            arg(
                "--data",
                type=path,
                required=True,
                help="image folder (any layout pretrain reads)",
            ),
            arg("--output", type=path, required=True, help="local folder for the shards"),
            arg("--max-side", type=integer(8), default=512, help="largest shorter side kept (512)"),
            arg(
                "--test-fraction",
                type=number(0, 1, open_high=True),
                default=0.2,
                help="held-out share of a root/<class>/* folder, fixed at packing (0.2)",
            ),
            arg("--workers", type=COUNT, help="processes reading and encoding"),
            *LABELS,
            STRICT,
            arg("--overwrite", action="store_true", help="replace an existing output"),
        ),
        handler=commands.pack,
    ),
    Command(
        "experiment",
        help="run a paper's experiment: every cell pretrained, measured, set beside the paper",
        description="Run one of the papers' experiments (a grid of pretraining runs, each "
        "measured), skipping cells already finished, and write report.md and report.html with "
        "the paper's figure beside each measured one (mean +- std over the seeds) and each "
        "claim's verdict: reproduced, contradicted or inconclusive (within noise). --list shows "
        "the experiments.",
        args=(
            arg("name", nargs="?", type=path, help="experiment name (or a YAML file of one)"),
            arg("--list", action="store_true", help="list the experiments and exit"),
            arg(
                "--scale",
                choices=["cpu", "gpu", "paper"],
                default="cpu",
                help="cpu: minutes a cell on a 2-core CPU; gpu: a single-GPU CIFAR-10 ResNet-18 "
                "grid; paper: the paper's recipe (default cpu)",
            ),
            arg("--output", type=path, help="folder (default runs/experiments/NAME-SCALE)"),
            arg(
                "--seeds",
                type=COUNT,
                help="seeds of every cell (default: the experiment's for the scale); with "
                "--resume, more seeds than before are added to the finished ones",
            ),
            arg("--resume", action="store_true", help="continue a killed experiment"),
            arg("--overwrite", action="store_true", help="start again in --output"),
            arg("--data", type=path, help="data folder in place of the recipes' (e.g. CIFAR-10's)"),
        ),
        handler=commands.experiment,
    ),
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used to document the CLI).

    Returns:
        The parser of ``siamkit``: the global flags, then one subcommand of :data:`COMMANDS`.
    """
    from siamkit import __version__

    parser = OneLineParser(
        prog="siamkit",
        description="Self-supervised pretraining of image encoders with siamese networks.",
    )
    parser.add_argument("--version", action="version", version=f"siamkit {__version__}")
    add_arguments(parser, GLOBAL_FLAGS)
    add_commands(parser, "command", COMMANDS)
    return parser
