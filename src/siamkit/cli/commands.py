"""What each ``siamkit`` subcommand does: a thin call of the Python API, and its printout.

Every function takes the parsed arguments and returns the exit code.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from siamkit.config import RunConfig


def _run_config(args: argparse.Namespace, resume: str | None = None) -> RunConfig:
    """The config of ``pretrain`` and ``config show``: a recipe, then flags and ``--set``.

    The recipe is ``--config`` (a file) or ``--recipe`` (a shipped one by name); with neither, the
    method's digits recipe (``--method``, SimSiam by default): a bare ``siamkit pretrain`` is the
    quick start. A run resumed (``resume``) without ``--output`` continues in its own folder.
    """
    from siamkit.recipes import DEFAULT_METHOD, load_config, method_config_class

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
        "train.loggers": args.loggers,
        "train.max_steps": args.max_steps,
        "data.storage": args.storage,
        "data.num_workers": args.workers,
    }
    values = {k: v for k, v in flags.items() if v is not None}
    if resume and args.output is None:
        from siamkit.train.engine import run_folder_of

        # --resume RUN continues in RUN, whatever folder the recipe names.
        folder = run_folder_of(resume)
        if folder is not None:
            values["train.output_dir"] = str(folder)
    recipe = args.recipe
    if args.config is None and recipe is None:
        method_config_class(args.method or DEFAULT_METHOD)  # an unknown --method lists the valid
        recipe = f"{args.method or DEFAULT_METHOD}/digits"
    if (
        args.data
        and not args.dataset
        and load_config(args.config, args.set, recipe=recipe).data.dataset == "digits"
    ):
        values["data.dataset"] = "folder"  # --data on the digits recipe means "my own images"
    return load_config(args.config, args.set, values, recipe=recipe)


def pretrain(args: argparse.Namespace) -> int:
    """``siamkit pretrain``: pretrain, then print the run's figures (rank 0)."""
    from siamkit.train import format_result, pretrain

    cfg = _run_config(args, args.resume)
    result = pretrain(cfg, resume=args.resume, overwrite=args.overwrite)
    if _is_rank_zero():  # under DDP every process gets here; one summary
        print(format_result(result))
    return 0


def config_show(args: argparse.Namespace) -> int:
    """``siamkit config show``: the resolved config of the same flags as YAML (a recipe itself)."""
    from siamkit.recipes import recipe_yaml

    cfg = _run_config(args)
    if args.config or args.recipe:
        source = f"--config {args.config}" if args.config else f"--recipe {args.recipe}"
    else:
        source = f"--recipe {cfg.method.name}/digits (the default)"
    print(f"# siamkit config show: {source}, with the command's flags and --set applied.")
    print("# Every key is set; `siamkit pretrain --config THIS_FILE` runs this config.")
    print(recipe_yaml(cfg), end="")
    return 0


def recipes(args: argparse.Namespace) -> int:
    """``siamkit recipes``: the shipped recipes' names and what each is for."""
    from siamkit.recipes import list_recipes, recipe_description

    names = list_recipes()
    width = max(len(name) for name in names)
    for name in names:
        print(f"{name:{width}}  {recipe_description(name)}")
    print(
        "\nrun one: siamkit pretrain --recipe NAME; see it resolved: "
        "siamkit config show --recipe NAME"
    )
    return 0


def data_inspect(args: argparse.Namespace) -> int:
    """``siamkit data inspect``: what a data source holds, without training."""
    from siamkit.config import DataConfig
    from siamkit.data.survey import survey

    options: dict[str, Any] = {"dataset": args.dataset or ("folder" if args.data else "digits")}
    for key, value in (
        ("path", args.data),
        ("labels", args.labels),
        ("labels_file", args.labels_file),
        ("storage", args.storage),
        ("num_workers", args.workers),
    ):
        if value is not None:
            options[key] = str(value) if key in ("path", "labels_file") else value
    for line in survey(DataConfig(**options)).report():
        print(line)
    return 0


def _data_override(args: argparse.Namespace) -> Any:
    """A DataConfig from --data/--dataset/--storage/--workers, or None for the checkpoint's."""
    flags = (args.data, args.dataset, args.storage, args.labels, args.labels_file)
    if not any(flags) and args.workers is None:
        return None
    import dataclasses

    from siamkit.checkpoints import read_checkpoint

    base = read_checkpoint(args.checkpoint).config.data
    changes: dict[str, Any] = {"strict": args.strict or base.strict}
    if args.data or args.dataset:
        changes["dataset"] = args.dataset or (
            "folder" if base.dataset == "digits" else base.dataset
        )
        changes["path"] = args.data or base.path
        if args.data:  # other data: read its labels by its own layout, not the run's settings
            changes["labels"], changes["labels_file"] = "auto", None
    if args.labels:
        changes["labels"] = args.labels
    if args.labels_file:
        changes["labels_file"] = str(args.labels_file)
    if args.storage:
        changes["storage"] = args.storage
    if args.workers is not None:
        changes["num_workers"] = args.workers
    return dataclasses.replace(base, **changes)


def _machine(args: argparse.Namespace) -> dict[str, Any]:
    """Accelerator, devices, strategy, nodes and loggers of a fine-tuning or distillation run."""
    flags = {
        "accelerator": args.accelerator,
        "devices": args.devices,
        "strategy": args.strategy,
        "num_nodes": args.num_nodes,
        "loggers": args.loggers,
    }
    return {k: v for k, v in flags.items() if v is not None}


def _is_rank_zero() -> bool:
    """Whether this process reports (every process of a DDP run runs the command)."""
    from lightning.pytorch.utilities import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def _device(args: argparse.Namespace) -> Any:
    """The evaluation device from --accelerator/--devices (a GPU when there is one)."""
    from siamkit.runtime import resolve_device

    return resolve_device(args.accelerator or "auto", args.devices or "auto")


def probe(args: argparse.Namespace) -> int:
    """``siamkit eval knn|linear``: a probe of a checkpoint's frozen features."""
    from siamkit.analysis.run_eval import knn_eval, linear_eval

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


def finetune(args: argparse.Namespace) -> int:
    """``siamkit eval finetune``: fine-tune on a share of the labels (or the scratch baseline)."""
    from siamkit.checkpoints import read_checkpoint
    from siamkit.data.datasets import load_splits
    from siamkit.data.splits import dataset_name, default_index_path
    from siamkit.supervised.finetune import FinetuneConfig, finetune

    cfg = FinetuneConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        label_fraction=args.label_fraction,
        seed=args.seed,
        from_head_layers=args.from_head_layers,
        **_machine(args),
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
        resume=args.resume,
        overwrite=args.overwrite,
    )
    if not _is_rank_zero():
        return 0
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


def distill(args: argparse.Namespace) -> int:
    """``siamkit eval distill``: distil a fine-tuned teacher into a student."""
    import dataclasses

    from siamkit.supervised.classifier import load_classifier
    from siamkit.supervised.distill import DistillConfig, distill

    cfg = DistillConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        temperature=args.temperature,
        alpha=args.alpha,
        seed=args.seed,
        **_machine(args),
    )
    _, info = load_classifier(args.teacher)
    student = info.backbone
    if args.student_width is not None:
        student = dataclasses.replace(student, width=args.student_width)
    if args.student_backbone is not None:
        student = dataclasses.replace(student, name=args.student_backbone)
    result = distill(
        args.teacher,
        cfg=cfg,
        student_backbone=student,
        output=args.output,
        resume=args.resume,
        overwrite=args.overwrite,
    )
    if not _is_rank_zero():
        return 0
    print(
        f"distilled student top-1 {result.student_top1:.2f}% vs teacher "
        f"{result.teacher_top1:.2f}% (student {result.student_params / 1e6:.2f}M params)"
    )
    if args.json:
        print(json.dumps(dataclasses.asdict(result)))
    return 0


def metrics(args: argparse.Namespace) -> int:
    """``siamkit eval metrics``: representation metrics of h and g(h)."""
    from siamkit.analysis.run_eval import representation_metrics

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


def mutual_information(args: argparse.Namespace) -> int:
    """``siamkit eval mi``: MINE estimates of two-view and label MI."""
    from siamkit.analysis.checkpoint_mi import checkpoint_mi
    from siamkit.errors import ConfigError
    from siamkit.eval.mi_estimator import FitSettings

    if args.steps < 1:
        raise ConfigError(f"--steps must be at least 1, got {args.steps}")
    result = checkpoint_mi(
        args.checkpoint,
        _data_override(args),
        max_images=args.max_images,
        seed=args.seed,
        device=_device(args),
        settings=FitSettings(bound=args.bound, steps=args.steps),
        random_init=args.random_init,
    )
    init = " (random init)" if args.random_init else ""
    print(f"{result['num_images']} {result['split']} images{init}; {args.bound} bound, nats")

    def nats(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    print(f"I(h(v1); h(v2))       {nats(result['h']['two_view'])}")
    print(f"I(g(v1); g(v2))       {nats(result['g']['two_view'])}")
    if "label" in result["h"]:
        entropy = result["label_entropy"]
        print(f"I(h; y)               {nats(result['h']['label'])}   (H(y) = {entropy:.3f})")
    if args.json:
        print(json.dumps(result))
    return 0


def report(args: argparse.Namespace) -> int:
    """``siamkit report``: the HTML report of a run."""
    from siamkit.analysis.run_report import write_report

    out = write_report(
        args.run, tsne_images=args.tsne_images, max_images=args.max_images, device=_device(args)
    )
    print(f"wrote {out} (PNGs beside it)")
    return 0


def export(args: argparse.Namespace) -> int:
    """``siamkit export``: the backbone in a format other libraries load."""
    from siamkit.export.formats import export_checkpoint

    out = export_checkpoint(args.checkpoint, args.output, args.format, args.overwrite)
    print(f"wrote {out.path} ({out.format}); load with: {out.load_hint}")
    return 0


def embed(args: argparse.Namespace) -> int:
    """``siamkit embed``: embeddings of a folder of images."""
    from siamkit.analysis.run_eval import embed_folder
    from siamkit.errors import ConfigError

    if (args.model is None) != (args.weights is None):
        raise ConfigError(
            "--model and --weights go together (e.g. --model timm/resnet18 --weights "
            "r18.pth); a run or a siamkit .safetensors export is passed as --checkpoint"
        )
    out = embed_folder(
        args.checkpoint or args.weights,
        args.data,
        args.output,
        strict=args.strict,
        device=_device(args),
        num_workers=args.workers,
        model=args.model,
        image_size=args.image_size,
        mean=args.mean,
        std=args.std,
        overwrite=args.overwrite,
    )
    print(f"wrote {out} (row order in {out.name}.paths.txt)")
    return 0


def pack(args: argparse.Namespace) -> int:
    """``siamkit pack``: litdata shards of an image folder."""
    from siamkit.data.pack import pack
    from siamkit.runtime import default_num_workers

    meta = pack(
        args.data,
        args.output,
        max_side=args.max_side,
        test_fraction=args.test_fraction,
        num_workers=args.workers or default_num_workers(),
        strict=args.strict,
        overwrite=args.overwrite,
        labels=args.labels or "auto",
        labels_file=args.labels_file,
    )
    for name, split in meta["splits"].items():
        print(f"{name}: {split['num_images']} images ({len(split['unreadable'])} unreadable)")
    print(f"wrote {args.output}; train with --data {args.output}")
    return 0


def experiment(args: argparse.Namespace) -> int:
    """``siamkit experiment``: run a paper's experiment, or list them."""
    from collections import Counter

    from siamkit.errors import ConfigError
    from siamkit.experiments import experiment_names, load_experiment, run_experiment

    if args.list:
        for name in experiment_names():
            exp = load_experiment(name)
            scales = "/".join(s for s in ("cpu", "gpu", "paper") if s in exp.scales)
            print(f"{name:28} {len(exp.cells):3d} cells  {scales:14} {exp.title}")
        return 0
    if not args.name:
        raise ConfigError("name an experiment (siamkit experiment --list shows them)")
    result = run_experiment(
        load_experiment(args.name),
        scale=args.scale,
        output=args.output,
        resume=args.resume,
        overwrite=args.overwrite,
        data=args.data,
        seeds=args.seeds,
    )
    counts = Counter(c.verdict for c in result.claims)
    verdicts = ", ".join(f"{n} {v}" for v, n in counts.most_common())
    print(
        f"{result.name} ({result.scale}): {len(result.cells)} cells; {len(result.claims)} "
        f"claims: {verdicts}; report: {result.output}/report.md and report.html"
    )
    return 0
