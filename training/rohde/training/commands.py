"""`rohde train` and `rohde evaluate` (torch and the training stack load inside the handlers)."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def register(subparsers: Any) -> None:  # argparse's _SubParsersAction is private
    train = subparsers.add_parser(
        "train",
        help="train a model package: your own recordings in one command, or a data set with a config",
        description="Train the disturbance GAN and the robust RoHDE classifier, evaluate per condition (clean, "
        "injected CA and LC) and export the model package. Without --config the recordings are a user's own "
        "(rohde record): each is split by repetition (the last hold of every gesture tests, the one before "
        "validates; with --test, those recordings test and the last hold validates). With --config and one data-set "
        "folder, the config's split applies (sessions or folders of a data set). --quick trains the GAN and RoHDE only "
        "(no baselines, no sweep): a few minutes on 2 CPU cores.",
    )
    train.add_argument("--data", nargs="+", type=Path, default=[],
                       help="recordings: files (.rohde.npz, .xdf, flexemg .mat) and/or folders of them")
    train.add_argument("--out", required=True, type=Path,
                       help="package folder to write, e.g. models/NAME (the server serves the folders of its models "
                            "directory: rohde serve --models-dir DIR --model NAME)")
    train.add_argument("--config", type=Path, default=None, help="JSON config (configs/*.json); defaults if omitted")
    train.add_argument("--name", default=None,
                       help="model name in the package (default: the --out folder's name; for a data set with "
                            "--config, the config's name)")
    train.add_argument("--gestures", default=None,
                       help="comma-separated classes to learn, any names the recordings' cues use (rest is added "
                            "when present); default: every class with samples")
    train.add_argument("--layout", default=None, help="electrode layout preset of the recordings (3x8x8, "
                                                      "flexemg16x4, GRIDSxROWSxCOLS) when theirs is missing or wrong")
    train.add_argument("--mains", type=float, choices=(50.0, 60.0), default=None,
                       help="power-line frequency to notch, 50 or 60 Hz (default: the config's, 50)")
    train.add_argument("--train", nargs="+", type=Path, default=[], dest="train_paths",
                       help="recordings to train on (split into train and validation by repetition)")
    train.add_argument("--test", nargs="+", type=Path, default=[], dest="test_paths",
                       help="recordings to test on only")
    train.add_argument("--settle-ms", type=float, default=500.0,
                       help="own recordings: ms after each cue not used, the user reacting (default 500)")
    train.add_argument("--quick", action="store_true",
                       help="the GAN and the robust classifier only: no baselines, no fraction sweep, shorter training")
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
                          help="comma-separated conditions to inject into every clean recording with the disturbance "
                          "models, for data that has none: a kind where the recordings' own disturbances sit (CA, LC), "
                          "or KIND@SHAPE at random electrodes of that shape (CA@any, dead@patch; 5-15 %% of them)")
    evaluate.add_argument("--raw-windows", action="store_true",
                          help="score a package trained with quality masking without the server's rebuild of the "
                          "channels its monitor flags (by default it is scored as served)")  # fmt: skip
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the injected disturbances")
    evaluate.set_defaults(handler=_evaluate)

    from rohde.training import cross_day_commands  # rohde calibrate, rohde study cross-day

    cross_day_commands.register(subparsers)


def _train(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from rohde.core.datasets import load_dataset
    from rohde.core.errors import ConfigError
    from rohde.training.config import load_config, quick_config
    from rohde.training.distributed import distributed_training
    from rohde.training.training_run import run_training

    config = load_config(args.config)
    gestures = [g.strip() for g in args.gestures.split(",") if g.strip()] if args.gestures else None
    # Own recordings: no config, or recording files, or --train/--test; else a data-set folder and its config's split.
    own = args.config is None or bool(args.train_paths or args.test_paths) or any(p.is_file() for p in args.data)
    if not own and (len(args.data) != 1 or gestures or args.layout):
        raise ConfigError("With --config, a folder given to --data is one data set split as the config says, and "
                          "--gestures and --layout do not apply; for your own recordings give their files, or "
                          "--train/--test.")
    if own:
        from rohde.training.personal import load_user_recordings

        train_paths = args.train_paths or args.data
        if not train_paths:
            raise ConfigError("Give the recordings to train on: --data FILE_OR_FOLDER ... (or --train ... --test ...).")
        loaded = load_user_recordings([*train_paths, *args.test_paths], layout=args.layout, gestures=gestures)
        config = replace(config, split=replace(config.split, mode="repetitions",
                                               train_paths=tuple(str(p) for p in train_paths),
                                               test_paths=tuple(str(p) for p in args.test_paths),
                                               settle_ms=args.settle_ms))

        def load(path: Path) -> list[Any]:
            return loaded[path]
    else:
        load = load_dataset
    name = args.name or (args.out.name if own else config.name)
    config = replace(config, name=name)
    if args.mains is not None:
        config = replace(config, windows=replace(config.windows, notch_hz=args.mains))
    import torch

    threads = torch.get_num_threads()
    if args.quick:
        config = quick_config(config)
        if "OMP_NUM_THREADS" not in os.environ:
            # One intra-op thread: the quick run's ops are small, and on a busy machine the spin-waits of two
            # OpenMP threads made its GAN 20 times slower (measured: 31 s against over 15 minutes).
            torch.set_num_threads(1)
    data_dir = Path() if own else args.data[0]
    try:
        with distributed_training(args.dist_backend) as world:  # one process unless started by torchrun
            if not world.is_main:
                logging.getLogger().setLevel(logging.WARNING)  # rank 0 tells the story
            result = run_training(config, data_dir=data_dir, out_dir=args.out, work_dir=args.work_dir, load=load,
                                  progress=not args.no_progress and world.is_main,
                                  command=_command_line(args))  # fmt: skip
    finally:
        torch.set_num_threads(threads)  # the caller's count (tests run the command in their own process)
    if not world.is_main:
        return 0
    for condition, m in result.report["models"]["rohde"].items():
        logger.info("RoHDE %s: accuracy %.4f, macro-F1 %.4f", condition, m["accuracy"], m["macro_f1"])
    logger.info("Package %r written to %s (report in %s, %.0f s)", name, result.package_dir,
                result.package_dir / "report", result.report["timings_s"]["total"])
    return 0


def _command_line(args: argparse.Namespace) -> str:
    """The `rohde train` command as given (for the report), rebuilt from the parsed flags."""
    import shlex

    words = ["rohde", "train"]
    for flag, value in (("--data", args.data), ("--train", args.train_paths), ("--test", args.test_paths)):
        words += [flag, *map(str, value)] if value else []
    words += ["--out", str(args.out)]
    for flag, value in (("--config", args.config), ("--name", args.name), ("--gestures", args.gestures),
                        ("--layout", args.layout), ("--mains", args.mains)):
        words += [flag, f"{value:g}" if isinstance(value, float) else str(value)] if value is not None else []
    return shlex.join(words + (["--quick"] if args.quick else []))


def _injection(entry: str) -> tuple[str, Any]:
    """`--inject` entry: a kind where the recordings' own disturbances sit ("CA"), or `KIND@SHAPE` ("CA@any"),
    placed at random electrodes of that shape covering as much of the array as the live demo's."""
    from rohde.core.errors import ConfigError
    from rohde.simulation.disturbances import DISTURBANCE_CONDITIONS
    from rohde.simulation.placement import SHAPES, Placement
    from rohde.simulation.simulator import MOVING_SEVERITY

    kind, at, shape = entry.partition("@")
    if kind not in DISTURBANCE_CONDITIONS or (at and shape not in SHAPES):
        raise ConfigError(f"--inject entry {entry!r}: use a kind of {list(DISTURBANCE_CONDITIONS)}, optionally "
                          f"@SHAPE with a shape of {list(SHAPES)} (e.g. CA@any).")  # fmt: skip
    return kind, Placement(shape, MOVING_SEVERITY) if at else None


def _evaluate(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from rohde.core.channel_repair import QUALITY_MASKING_KEY
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
        for k, entry in enumerate(conditions):
            condition, placement = _injection(entry)
            recordings += [replace(inject(r, condition, seed=args.seed * 1000 + 17 * k + i, placement=placement),
                                   condition=entry) for i, r in enumerate(clean)]  # fmt: skip
    results = evaluate_package(args.model, recordings, as_served=not args.raw_windows)
    report = {
        "name": package.name,
        "labels": package.metadata.labels,
        "data": {"data_dir": str(args.data), "injected": conditions, "n_recordings": len(recordings),
                 "bad_channels_rebuilt": not args.raw_windows
                 and bool(package.metadata.training_data.get(QUALITY_MASKING_KEY, False))},  # fmt: skip
        "models": {package.name: results},
    }
    write_report(report, args.out)
    for condition, m in results.items():
        logger.info("%s %s: accuracy %.4f, macro-F1 %.4f", package.name, condition, m["accuracy"], m["macro_f1"])
    return 0
