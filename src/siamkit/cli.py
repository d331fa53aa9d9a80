"""``siamkit``: a thin command line over the Python API.

    siamkit pretrain --config configs/simsiam/digits.yaml
    siamkit eval knn --checkpoint runs/simsiam-digits
    siamkit eval linear --checkpoint runs/simsiam-digits
    siamkit export --checkpoint runs/simsiam-digits --output backbone.safetensors
    siamkit embed --checkpoint runs/simsiam-digits --data my_images/ --output emb.npy

Errors from bad input print one line and exit with the error's code (2 config, 3 data,
4 diverged training, 5 checkpoint), without a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from typing import Any

from siamkit.errors import SiamkitError


def _pretrain(args: argparse.Namespace) -> int:
    from lightning.pytorch.utilities import rank_zero_only

    from siamkit.config import load_config
    from siamkit.train import format_result, pretrain

    flags = {
        "method.name": args.method,
        "data.dataset": args.dataset,
        "data.path": args.data,
        "data.strict": True if args.strict else None,
        "train.epochs": args.epochs,
        "train.max_minutes": args.max_minutes,
        "optim.batch_size": args.batch_size,
        "optim.base_lr": args.lr,
        "train.output_dir": args.output,
        "train.devices": args.devices,
        "train.strategy": args.strategy,
        "train.accelerator": args.accelerator,
        "train.progress_bar": False if args.no_progress else None,
    }
    values = {k: v for k, v in flags.items() if v is not None}
    if (
        args.data
        and not args.dataset
        and load_config(args.config, args.set).data.dataset == "digits"
    ):
        values["data.dataset"] = "folder"  # --data on the digits recipe means "my own images"
    cfg = load_config(args.config, args.set, values)
    result = pretrain(cfg, resume=args.resume, overwrite=args.overwrite)
    if getattr(rank_zero_only, "rank", 0) == 0:  # under DDP every process gets here; one summary
        print(format_result(result))
    return 0


def _data_override(args: argparse.Namespace) -> Any:
    """A DataConfig from --data/--dataset, or None to use the checkpoint's own data."""
    if not args.data and not args.dataset:
        return None
    from siamkit.config import DataConfig
    from siamkit.train import read_checkpoint

    base = read_checkpoint(args.checkpoint).config.data
    return DataConfig(
        dataset=args.dataset or ("folder" if base.dataset == "digits" else base.dataset),
        path=args.data or base.path,
        decode_size=base.decode_size,
        cache_dir=base.cache_dir,
        strict=args.strict,
    )


def _eval(args: argparse.Namespace) -> int:
    from siamkit.eval.protocols import knn_eval, linear_eval

    data = _data_override(args)
    if args.protocol == "knn":
        result = knn_eval(args.checkpoint, data, k=args.k, temperature=args.temperature)
        print(f"kNN top-1: {result['top1']:.2f}% (k={args.k}, T={args.temperature})")
    else:
        result = linear_eval(args.checkpoint, data, epochs=args.epochs, lr=args.lr)
        print(f"linear probe: top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}%")
    if args.json:
        print(json.dumps(result))
    return 0


def _export(args: argparse.Namespace) -> int:
    from siamkit.eval.export import export_backbone
    from siamkit.train import load_backbone

    _, backbone = load_backbone(args.checkpoint)
    out = export_backbone(backbone, args.output)
    print(f"wrote {out}")
    return 0


def _embed(args: argparse.Namespace) -> int:
    from siamkit.eval.protocols import embed_folder

    out = embed_folder(args.checkpoint, args.data, args.output, strict=args.strict)
    print(f"wrote {out} (row order in {out.name}.paths.txt)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used to document the CLI)."""
    from siamkit.methods import METHODS

    parser = argparse.ArgumentParser(
        prog="siamkit",
        description="Self-supervised pretraining of image encoders with siamese networks.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show Lightning's messages")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "pretrain",
        help="pretrain an encoder, then report kNN accuracy against random init",
        description="Pretrain an encoder on unlabelled images. Flags override the recipe.",
    )
    p.add_argument("--config", help="YAML recipe (see configs/); defaults if omitted")
    p.add_argument(
        "--method",
        help="method name, one of: " + ", ".join(sorted(METHODS)) + " (its defaults; a recipe "
        "under configs/<method>/ sets the rest)",
    )
    p.add_argument("--dataset", choices=["digits", "cifar10", "folder"], help="data source")
    p.add_argument("--data", help="data folder (image folder or CIFAR-10 folder)")
    p.add_argument("--epochs", type=int, help="training epochs")
    p.add_argument("--max-minutes", type=float, help="wall-clock budget for training")
    p.add_argument("--batch-size", type=int, help="images per step over all processes")
    p.add_argument("--lr", type=float, help="base learning rate (for batch 256)")
    p.add_argument("--output", help="run folder (checkpoints, logs, results.json)")
    p.add_argument("--resume", help="checkpoint or run folder to resume from")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run's checkpoints")
    p.add_argument("--strict", action="store_true", help="fail on unreadable images")
    p.add_argument("--devices", help="Lightning devices, e.g. 2")
    p.add_argument("--strategy", help="Lightning strategy, e.g. ddp")
    p.add_argument("--accelerator", help="cpu, gpu or auto")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key, e.g. --set method.stop_gradient=false (repeatable)",
    )
    p.set_defaults(func=_pretrain)

    e = sub.add_parser("eval", help="evaluate a checkpoint's frozen backbone")
    esub = e.add_subparsers(dest="protocol", required=True)
    for name, helptext in (
        ("knn", "weighted kNN on the held-out split"),
        ("linear", "linear probe on frozen features"),
    ):
        q = esub.add_parser(name, help=helptext, description=helptext)
        q.add_argument("--checkpoint", required=True, help=".ckpt file or run folder")
        q.add_argument("--data", help="labelled data folder (default: the checkpoint's data)")
        q.add_argument("--dataset", choices=["digits", "cifar10", "folder"])
        q.add_argument("--strict", action="store_true", help="fail on unreadable images")
        q.add_argument("--json", action="store_true", help="also print the result as JSON")
        if name == "knn":
            q.add_argument("--k", type=int, default=200, help="neighbours (default 200)")
            q.add_argument("--temperature", type=float, default=0.1, help="default 0.1")
        else:
            q.add_argument("--epochs", type=int, default=100, help="default 100")
            q.add_argument("--lr", type=float, default=0.1, help="default 0.1")
        q.set_defaults(func=_eval)

    x = sub.add_parser(
        "export", help="write the backbone's weights (safetensors, torchvision key names)"
    )
    x.add_argument("--checkpoint", required=True, help=".ckpt file or run folder")
    x.add_argument("--output", required=True, help="output .safetensors file")
    x.set_defaults(func=_export)

    m = sub.add_parser("embed", help="write backbone embeddings of a folder of images to .npy")
    m.add_argument("--checkpoint", required=True, help=".ckpt file or run folder")
    m.add_argument("--data", required=True, help="folder of images")
    m.add_argument("--output", required=True, help="output .npy file")
    m.add_argument("--strict", action="store_true", help="fail on unreadable images")
    m.set_defaults(func=_embed)
    return parser


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
    """Entry point of the ``siamkit`` command."""
    args = build_parser().parse_args(argv)
    if not args.verbose:
        _quiet()
    try:
        return int(args.func(args))
    except SiamkitError as err:
        print(f"siamkit: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("siamkit: interrupted; resume with --resume <run folder>", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
