"""``siamkit``: a thin command line over the Python API.

    siamkit pretrain --config configs/simsiam/digits.yaml
    siamkit eval knn --checkpoint runs/simsiam-digits
    siamkit eval linear --checkpoint runs/simsiam-digits
    siamkit eval finetune --checkpoint runs/simsiam-digits --label-fraction 0.1 --output ft
    siamkit eval distill --teacher ft --output student
    siamkit eval metrics --checkpoint runs/simsiam-digits
    siamkit report --run runs/simsiam-digits
    siamkit export --checkpoint runs/simsiam-digits --output backbone.safetensors
    siamkit embed --checkpoint runs/simsiam-digits --data my_images/ --output emb.npy
    siamkit pack --data /data/imagenet --output /data/imagenet-shards

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
        "train.num_nodes": args.num_nodes,
        "train.strategy": args.strategy,
        "train.accelerator": args.accelerator,
        "train.progress_bar": False if args.no_progress else None,
        "train.max_steps": args.max_steps,
        "data.storage": args.storage,
        "data.num_workers": args.workers,
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
    """A DataConfig from --data/--dataset/--storage/--workers, or None for the checkpoint's."""
    if not args.data and not args.dataset and not args.storage and args.workers is None:
        return None
    import dataclasses

    from siamkit.train import read_checkpoint

    base = read_checkpoint(args.checkpoint).config.data
    changes: dict[str, Any] = {"strict": args.strict or base.strict}
    if args.data or args.dataset:
        changes["dataset"] = args.dataset or (
            "folder" if base.dataset == "digits" else base.dataset
        )
        changes["path"] = args.data or base.path
    if args.storage:
        changes["storage"] = args.storage
    if args.workers is not None:
        changes["num_workers"] = args.workers
    return dataclasses.replace(base, **changes)


def _device(args: argparse.Namespace) -> Any:
    """The evaluation device from --accelerator/--devices (a GPU when there is one)."""
    from siamkit.runtime import resolve_device

    return resolve_device(args.accelerator or "auto", args.devices or "auto")


def _eval(args: argparse.Namespace) -> int:
    from siamkit.eval.protocols import knn_eval, linear_eval

    data = _data_override(args)
    where = "g(h), after the projector" if args.features == "projection" else "h, the backbone"
    if args.protocol == "knn":
        result = knn_eval(
            args.checkpoint,
            data,
            k=args.k,
            temperature=args.temperature,
            features=args.features,
            device=_device(args),
        )
        print(
            f"kNN top-1: {result['top1']:.2f}% (k={result['k']}, T={result['temperature']:g}; "
            f"{where})"
        )
    else:
        result = linear_eval(
            args.checkpoint,
            data,
            epochs=args.epochs,
            lr=args.lr,
            batch_size=args.batch_size,
            features=args.features,
            optimizer=args.optimizer,
            weight_decay=args.weight_decay,
            augment_copies=args.augment_copies,
            seed=args.seed,
            device=_device(args),
        )
        print(
            f"linear probe: top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}% "
            f"({args.optimizer}; {where})"
        )
    if args.json:
        print(json.dumps(result))
    return 0


def _finetune(args: argparse.Namespace) -> int:
    from siamkit.data.datasets import load_splits
    from siamkit.eval.finetune import FinetuneConfig, finetune
    from siamkit.eval.splits import dataset_name, default_index_path
    from siamkit.train import read_checkpoint

    cfg = FinetuneConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        label_fraction=args.label_fraction,
        seed=args.seed,
        from_head_layers=args.from_head_layers,
        device=str(_device(args)),
    )
    run = read_checkpoint(args.checkpoint).config
    data = _data_override(args) or run.data
    splits = load_splits(data)
    # One index file per data set, fraction and seed (under splits/), so that every fine-tuned
    # model and the scratch baseline train on the same labelled images.
    index_file = args.index_file or default_index_path(
        dataset_name(data), len(splits.train), cfg.label_fraction, cfg.seed
    )
    result = finetune(
        data=data,
        cfg=cfg,
        # --scratch: the same architecture and recipe from random weights (the baseline).
        checkpoint=None if args.scratch else args.checkpoint,
        index_file=index_file,
        backbone=run.backbone,
        augment=run.augment,
        output=args.output,
        splits=splits,
    )
    start = "random init" if args.scratch else f"{args.checkpoint}"
    if not args.scratch and cfg.from_head_layers:
        start += f" + {cfg.from_head_layers} projection-head layer(s)"
    print(
        f"fine-tuned on {result.num_labelled} labelled images ({args.label_fraction:g} of the "
        f"labels) from {start}: top-1 {result.top1:.2f}%  top-5 {result.top5:.2f}%"
    )
    print(f"labelled subset: {index_file}")
    if args.json:
        print(json.dumps(result.to_dict()))
    return 0


def _distill(args: argparse.Namespace) -> int:
    import dataclasses

    from siamkit.eval.distill import DistillConfig, distill
    from siamkit.eval.finetune import load_classifier

    cfg = DistillConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        temperature=args.temperature,
        alpha=args.alpha,
        seed=args.seed,
        device=str(_device(args)),
    )
    _, info = load_classifier(args.teacher)
    student = info.backbone
    if args.student_width is not None:
        student = dataclasses.replace(student, width=args.student_width)
    if args.student_backbone is not None:
        student = dataclasses.replace(student, name=args.student_backbone)
    result = distill(args.teacher, cfg=cfg, student_backbone=student, output=args.output)
    print(
        f"distilled student top-1 {result.student_top1:.2f}% vs teacher "
        f"{result.teacher_top1:.2f}% (student {result.student_params / 1e6:.2f}M params)"
    )
    if args.json:
        print(json.dumps(dataclasses.asdict(result)))
    return 0


def _metrics(args: argparse.Namespace) -> int:
    from siamkit.eval.representation import representation_metrics

    result = representation_metrics(
        args.checkpoint,
        _data_override(args),
        max_images=args.max_images,
        seed=args.seed,
        device=_device(args),
    )
    print(f"{result['num_images']} {result['split']} images")
    print("        dim   collapse std   RankMe   alignment   uniformity")
    for key, name in (("h", "h"), ("g", "g(h)")):
        m = result[key]
        print(
            f"{name:5} {m['dim']:5d}   {m['collapse_std']:12.3f}   {m['rankme']:6.1f}   "
            f"{m['alignment']:9.3f}   {m['uniformity']:10.3f}"
        )
    if args.json:
        print(json.dumps(result))
    return 0


def _report(args: argparse.Namespace) -> int:
    from siamkit.eval.report import write_report

    out = write_report(
        args.run, tsne_images=args.tsne_images, max_images=args.max_images, device=_device(args)
    )
    print(f"wrote {out} (PNGs beside it)")
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

    out = embed_folder(
        args.checkpoint,
        args.data,
        args.output,
        strict=args.strict,
        device=_device(args),
        num_workers=args.workers,
    )
    print(f"wrote {out} (row order in {out.name}.paths.txt)")
    return 0


def _pack(args: argparse.Namespace) -> int:
    from siamkit.data.shards import pack
    from siamkit.runtime import default_num_workers

    meta = pack(
        args.data,
        args.output,
        max_side=args.max_side,
        test_fraction=args.test_fraction,
        num_workers=args.workers or default_num_workers(),
        strict=args.strict,
        overwrite=args.overwrite,
    )
    for name, split in meta["splits"].items():
        print(f"{name}: {split['num_images']} images ({len(split['unreadable'])} unreadable)")
    print(f"wrote {args.output}; train with --data {args.output}")
    return 0


def _add_device_args(parser: argparse.ArgumentParser) -> None:
    """--accelerator and --devices, as ``pretrain`` takes them."""
    parser.add_argument("--accelerator", help="cpu, gpu or auto (default: a GPU when there is one)")
    parser.add_argument(
        "--devices", help="GPU count or indices, e.g. 1 or 0,1 (evaluation uses the first)"
    )


def _add_storage_args(parser: argparse.ArgumentParser) -> None:
    """--storage and --workers: how the images are held and read."""
    parser.add_argument(
        "--storage",
        choices=["auto", "memory", "stream", "shards"],
        help="data.storage: decode once into memory, stream files, or read packed shards",
    )
    parser.add_argument("--workers", type=int, help="DataLoader workers per process")


def _add_eval_data_args(parser: argparse.ArgumentParser, data_help: str) -> None:
    """The data, device and output flags every ``eval`` command on a checkpoint shares."""
    parser.add_argument("--data", help=f"{data_help} (default: the checkpoint's data)")
    parser.add_argument("--dataset", choices=["digits", "cifar10", "folder"])
    parser.add_argument("--strict", action="store_true", help="fail on unreadable images")
    parser.add_argument("--json", action="store_true", help="also print the result as JSON")
    _add_storage_args(parser)
    _add_device_args(parser)


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
    p.add_argument("--max-steps", type=int, help="stop after this many optimiser steps")
    p.add_argument("--batch-size", type=int, help="images per step over all processes")
    p.add_argument("--lr", type=float, help="base learning rate (for batch 256)")
    p.add_argument("--output", help="run folder (checkpoints, logs, results.json)")
    p.add_argument("--resume", help="checkpoint or run folder to resume from")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run's checkpoints")
    p.add_argument("--strict", action="store_true", help="fail on unreadable images")
    p.add_argument("--devices", help="Lightning devices, e.g. 2")
    p.add_argument("--num-nodes", type=int, help="machines of a multi-node run (Lightning)")
    p.add_argument("--strategy", help="Lightning strategy, e.g. ddp")
    p.add_argument("--accelerator", help="cpu, gpu or auto")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_storage_args(p)
    p.add_argument(
        "--set",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override config keys, e.g. --set method.stop_gradient=false optim.base_lr=0.1 "
        "(repeatable)",
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
        _add_eval_data_args(q, "labelled data folder")
        q.add_argument(
            "--features",
            choices=["backbone", "projection"],
            default="backbone",
            help="h (backbone output, the standard) or g(h) (after the projection head)",
        )
        if name == "knn":
            q.add_argument(
                "--k", type=int, help="neighbours (default: the run's train.knn_k, usually 200)"
            )
            q.add_argument(
                "--temperature", type=float, help="default: the run's train.knn_temperature (0.1)"
            )
        else:
            q.add_argument(
                "--optimizer",
                choices=["sgd", "lbfgs"],
                default="sgd",
                help="mini-batch SGD with cosine decay, or full-batch L-BFGS logistic regression",
            )
            q.add_argument(
                "--epochs", type=int, default=100, help="SGD epochs / L-BFGS iterations (100)"
            )
            q.add_argument("--lr", type=float, default=0.1, help="SGD learning rate (0.1)")
            q.add_argument("--batch-size", type=int, default=256, help="SGD batch (256)")
            q.add_argument("--weight-decay", type=float, default=0.0, help="L2 penalty (0)")
            q.add_argument(
                "--augment-copies",
                type=int,
                default=0,
                help="0: centre views; n: n random crop+flip views per training image",
            )
            q.add_argument("--seed", type=int, default=0, help="seed of probe and views")
        q.set_defaults(func=_eval)

    f = esub.add_parser(
        "finetune",
        help="fine-tune the whole network on 1%%/10%% of the labels (or a scratch baseline)",
        description="Fine-tune a pretrained checkpoint on a class-balanced labelled subset "
        "(written to an index file so runs compare on the same images), or train the same "
        "architecture from random init on it (--scratch), and report test top-1/top-5.",
    )
    f.add_argument("--checkpoint", required=True, help=".ckpt file or run folder")
    f.add_argument(
        "--scratch",
        action="store_true",
        help="supervised baseline: the checkpoint's architecture and recipe from random init",
    )
    f.add_argument(
        "--label-fraction", type=float, required=True, help="share of labels, e.g. 0.01 or 0.1"
    )
    f.add_argument("--index-file", help="labelled subset to reuse or write (default: splits/)")
    f.add_argument(
        "--from-head-layers",
        type=int,
        default=0,
        help="0: from the backbone (h); 1: from the projection head's first layer (SimCLRv2)",
    )
    f.add_argument("--epochs", type=int, help="default: 60 for <= 1%% labels, 30 above")
    f.add_argument("--lr", type=float, help="default: 0.05 x batch / 256 (SimCLR)")
    f.add_argument("--batch-size", type=int, default=64, help="default 64")
    f.add_argument("--seed", type=int, default=0, help="seed of the subset and training")
    f.add_argument("--output", required=True, help="folder for classifier.pt and results.json")
    _add_eval_data_args(f, "labelled data folder")
    f.set_defaults(func=_finetune)

    d = esub.add_parser(
        "distill",
        help="SimCLRv2 distillation of a fine-tuned teacher into a student",
        description="The fine-tuned teacher labels the unlabelled training images with soft "
        "targets at a temperature; a student of the same or a smaller backbone learns them.",
    )
    d.add_argument("--teacher", required=True, help="folder (or classifier.pt) of eval finetune")
    d.add_argument("--output", required=True, help="folder for the student")
    d.add_argument("--student-backbone", help="backbone name (default: the teacher's)")
    d.add_argument("--student-width", type=float, help="width multiplier (default: teacher's)")
    d.add_argument("--epochs", type=int, default=30, help="default 30")
    d.add_argument("--lr", type=float, help="default: 0.1 x batch / 256")
    d.add_argument("--batch-size", type=int, default=64, help="default 64")
    d.add_argument("--temperature", type=float, default=1.0, help="tau of the soft targets (1)")
    d.add_argument(
        "--alpha", type=float, default=1.0, help="weight of distillation vs labelled loss (1)"
    )
    d.add_argument("--seed", type=int, default=0, help="seed of the student")
    d.add_argument("--json", action="store_true", help="also print the result as JSON")
    _add_device_args(d)
    d.set_defaults(func=_distill)

    r = esub.add_parser(
        "metrics",
        help="collapse std, RankMe, alignment and uniformity of h and g(h)",
        description="Representation metrics of a checkpoint's h (backbone) and g(h) "
        "(projection head): collapse std, effective rank (RankMe), alignment and uniformity.",
    )
    r.add_argument("--checkpoint", required=True, help=".ckpt file or run folder")
    r.add_argument("--max-images", type=int, default=5000, help="images measured (5000)")
    r.add_argument("--seed", type=int, default=0, help="seed of the subset and views")
    _add_eval_data_args(r, "data folder")
    r.set_defaults(func=_metrics)

    rep = sub.add_parser(
        "report", help="write a self-contained HTML report (and PNGs) of a pretraining run"
    )
    rep.add_argument("--run", required=True, help="run folder of siamkit pretrain")
    rep.add_argument("--tsne-images", type=int, default=2000, help="points in the t-SNE map")
    rep.add_argument("--max-images", type=int, default=5000, help="images for the metrics")
    _add_device_args(rep)
    rep.set_defaults(func=_report)

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
    m.add_argument("--workers", type=int, help="DataLoader workers decoding the images")
    _add_device_args(m)
    m.set_defaults(func=_embed)

    k = sub.add_parser(
        "pack",
        help="pack an image folder into litdata shards (data.storage: shards)",
        description="Write an image folder once as litdata shards: images keep their bytes "
        "unless their shorter side exceeds --max-side, labels come from class folders. Train "
        "and evaluate from them with --data SHARDS (a local folder or an object-store URL).",
    )
    k.add_argument("--data", required=True, help="image folder (any layout pretrain reads)")
    k.add_argument("--output", required=True, help="local folder for the shards")
    k.add_argument("--max-side", type=int, default=512, help="largest shorter side kept (512)")
    k.add_argument(
        "--test-fraction",
        type=float,
        default=0.2,
        help="held-out share of a root/<class>/* folder, fixed at packing (0.2)",
    )
    k.add_argument("--workers", type=int, help="processes reading and encoding")
    k.add_argument("--strict", action="store_true", help="fail on unreadable images")
    k.add_argument("--overwrite", action="store_true", help="replace an existing output")
    k.set_defaults(func=_pack)
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
