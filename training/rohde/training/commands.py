"""`rohde train` and `rohde evaluate` (torch and the training stack load inside the handlers)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def register(subparsers: Any) -> None:  # argparse's _SubParsersAction is private
    train = subparsers.add_parser(
        "train",
        help="run the whole training pipeline (GAN, baselines, RoHDE, evaluation, ONNX export)",
        description="Train the GAN, the baselines and the robust RoHDE classifier on a data folder, "
        "evaluate them per condition and export the RoHDE model as a package.",
    )
    train.add_argument("--data", required=True, type=Path, help="folder of recordings (.rohde.npz, flexemg .mat)")
    train.add_argument("--out", required=True, type=Path, help="package folder to write, e.g. models/NAME")
    train.add_argument("--config", type=Path, default=None, help="JSON config (configs/*.json); defaults if omitted")
    train.add_argument("--work-dir", type=Path, default=None,
                       help="GAN and checkpoints (default: ~/.cache/rohde/work/NAME)")  # fmt: skip
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    train.add_argument("--dist-backend", choices=("auto", "gloo", "nccl"), default="auto",
                       help="under torchrun: the process group's backend (auto: NCCL on GPUs, else gloo)")  # fmt: skip
    train.set_defaults(handler=_train)

    evaluate = subparsers.add_parser(
        "evaluate",
        help="evaluate a model package on recordings and write the report",
        description="Score a model package with ONNX Runtime per condition (accuracy, macro-F1, confusion, "
        "accuracy against majority votes) and write report.json, report.md and PNG plots.",
    )
    evaluate.add_argument("--model", required=True, type=Path, help="model package folder (models/NAME)")
    evaluate.add_argument("--data", required=True, type=Path, help="folder of test recordings")
    evaluate.add_argument("--out", required=True, type=Path, help="report folder to write")
    evaluate.add_argument("--inject", default="",
                          help="comma-separated conditions (e.g. CA,LC) to inject into every clean recording "
                          "with the disturbance models, for data that has none")  # fmt: skip
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the injected disturbances")
    evaluate.set_defaults(handler=_evaluate)


def _train(args: argparse.Namespace) -> int:
    from rohde.training.config import load_config
    from rohde.training.distributed import distributed_training
    from rohde.training.training_run import run_training

    config = load_config(args.config)
    command = " ".join(["rohde", "train", "--data", str(args.data), "--out", str(args.out)]
                       + (["--config", str(args.config)] if args.config else []))  # fmt: skip
    with distributed_training(args.dist_backend) as world:  # one process unless started by torchrun
        if not world.is_main:
            logging.getLogger().setLevel(logging.WARNING)  # rank 0 tells the story
        result = run_training(config, data_dir=args.data, out_dir=args.out, work_dir=args.work_dir,
                              progress=not args.no_progress and world.is_main, command=command)  # fmt: skip
    if not world.is_main:
        return 0
    for condition, m in result.report["models"]["rohde"].items():
        logger.info("RoHDE %s: accuracy %.4f, macro-F1 %.4f", condition, m["accuracy"], m["macro_f1"])
    logger.info("Package written to %s (report in %s)", result.package_dir, result.package_dir / "report")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from rohde.core.datasets import load_dataset
    from rohde.core.errors import ConfigError
    from rohde.core.model_package import load_model_package
    from rohde.training.evaluate import evaluate_package
    from rohde.training.report import write_report

    package = load_model_package(args.model)
    recordings = load_dataset(args.data)
    conditions = [c.strip() for c in args.inject.split(",") if c.strip()]
    if conditions:
        from rohde.simulation.disturbances import inject

        clean = [r for r in recordings if r.condition == "clean"]
        if not clean:
            raise ConfigError(f"--inject needs clean recordings under {str(args.data)!r}; none found.")
        for k, condition in enumerate(conditions):
            recordings += [inject(r, condition, seed=args.seed * 1000 + 17 * k + i) for i, r in enumerate(clean)]
    results = evaluate_package(args.model, recordings)
    report = {
        "name": package.name,
        "labels": package.metadata.labels,
        "data": {"data_dir": str(args.data), "injected": conditions, "n_recordings": len(recordings)},
        "models": {package.name: results},
    }
    write_report(report, args.out)
    for condition, m in results.items():
        logger.info("%s %s: accuracy %.4f, macro-F1 %.4f", package.name, condition, m["accuracy"], m["macro_f1"])
    return 0
