"""`rohde calibrate`, `rohde reference` and `rohde cross-day` (torch loads inside the handlers)."""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def register(subparsers: Any) -> None:  # argparse's _SubParsersAction is private
    calibrate = subparsers.add_parser(
        "calibrate",
        help="adapt a model package to a new placement of the array from one short labelled recording",
        description="Rebuild the package's CNN, align it to the new placement (label-free, when the package has an "
        "alignment reference), fine-tune it on the recording(s) and write a new package for PUT /models/active.",
    )
    calibrate.add_argument("--model", required=True, type=Path, help="model package folder (models/NAME)")
    calibrate.add_argument(
        "--data",
        required=True,
        nargs="+",
        type=Path,
        help="labelled recording(s) of the new session: one repetition of each gesture",
    )
    calibrate.add_argument("--out", required=True, type=Path, help="package folder to write (models/NAME-cal)")
    calibrate.add_argument("--name", default=None, help="model name in the new package (default: NAME-calibrated)")
    calibrate.add_argument("--no-align", action="store_true", help="fine-tune only, no shift alignment")
    calibrate.add_argument("--reference-data", nargs="+", type=Path, default=None,
                           help="the model's training recordings: their MAV map becomes the alignment reference "
                                "(for packages made without one)")  # fmt: skip
    calibrate.add_argument("--epochs", type=int, default=40, help="fine-tuning passes over the recording")
    calibrate.set_defaults(handler=_calibrate)

    reference = subparsers.add_parser(
        "reference",
        help="store (or refresh) the alignment reference of a package's training data in the package",
        description="Find the package's clean training trials (training_data.split.train) under --data, check that "
        "they are the data it was trained on (the normalisation fitted on them again must be the package's) and "
        "write their MAV map (and, of several subjects, each subject's map) into its metadata.json as the "
        "alignment reference, as rohde train does: it adds one to a package made without, and the per-subject maps "
        "to a package whose reference predates them. model.onnx and everything else in the metadata are left as "
        "they are.",
    )
    reference.add_argument("--model", required=True, type=Path, help="model package folder (models/NAME)")
    reference.add_argument(
        "--data",
        required=True,
        type=Path,
        help="the data set it was trained on, e.g. made again by the command in its report",
    )
    reference.set_defaults(handler=_reference)

    # A top-level command: `rohde study` is the robustness study's group.
    cross = subparsers.add_parser(
        "cross-day",
        help="flexemg Session1 <-> Session3 (array re-applied): LDA, CNN, shift-robust CNN, alignment, recalibration",
        description="Train on one session of each flexemg subject, test on the other (the array was re-applied), "
        "with and without label-free alignment, AdaBN and recalibration; writes results.json and cross_day.md.",
    )
    cross.add_argument("--data", required=True, type=Path, help="the flexemg data folder (holding NNN-SessionX...)")
    cross.add_argument("--out", required=True, type=Path, help="folder for results.json and cross_day.md")
    cross.add_argument("--doc", type=Path, default=None, help="also copy the table here (e.g. docs/cross_day.md)")
    cross.add_argument("--config", type=Path, default=None, help="pipeline config (default configs/flexemg.json)")
    cross.add_argument("--subjects", default="001,002", help="comma-separated subjects")
    cross.add_argument("--sim-data", type=Path, default=None,
                       help="also run the simulated-shift check on this simulated default data set "
                            "(e.g. ~/.cache/rohde/sim-default) with --sim-model")  # fmt: skip
    cross.add_argument(
        "--sim-model",
        type=Path,
        default=Path("models/rohde-default"),
        help="model package of the simulated-shift check (default models/rohde-default)",
    )
    cross.add_argument("--skip-flexemg", action="store_true",
                       help="only the simulated-shift check (keeps the flexemg results in --out)")  # fmt: skip
    cross.add_argument("--packages", type=Path, default=None,
                       help="also export each subject's and source session's CNNs as model packages here, "
                            "with their alignment reference (inputs for rohde calibrate)")  # fmt: skip
    cross.add_argument(
        "--fresh",
        action="store_true",
        help="run everything again (default: keep the directions already in --out/results.json)",
    )
    cross.add_argument("--work-dir", type=Path, default=Path.home() / ".cache" / "rohde" / "work" / "cross-day",
                       help="checkpoints")  # fmt: skip
    cross.set_defaults(handler=_cross_day)


def _single_thread() -> None:
    import torch

    # The heads are tiny: one thread is faster than two fighting over busy cores (measured 8x).
    torch.set_num_threads(1)


def _calibrate(args: argparse.Namespace) -> int:
    from rohde.core.datasets import load_dataset
    from rohde.training.calibrate import calibrate_package

    _single_thread()
    recordings = [r for path in args.data for r in load_dataset(path)]
    reference = None
    if args.reference_data:
        from rohde.core.alignment import AlignmentReference
        from rohde.core.model_package import load_model_package

        training = [r for path in args.reference_data for r in load_dataset(path)]
        reference = AlignmentReference.from_recordings(training, load_model_package(args.model).preprocessing)
    result = calibrate_package(args.model, recordings, args.out, align=False if args.no_align else None,
                               epochs=args.epochs, name=args.name, reference=reference)  # fmt: skip
    if result.estimate is not None:
        s = result.estimate.shift
        logger.info("Alignment: %+.2f rows, %+.2f cols, gain %.2f (map correlation %.2f, unshifted %.2f)", s.rows,
                    s.cols, s.gain, result.estimate.score, result.estimate.score_unshifted)  # fmt: skip
    logger.info("Calibration steps (s): %s", {k: round(v, 1) for k, v in result.seconds.items()})
    logger.info("Calibration windows: accuracy %.3f before, %.3f after; %s written in %.1f s", result.accuracy_before,
                result.accuracy_after, result.package.path, result.seconds["total"])  # fmt: skip
    return 0


def _reference(args: argparse.Namespace) -> int:
    from rohde.core.model_package import load_model_package
    from rohde.training.calibrate import training_recordings, with_alignment_reference

    recordings = training_recordings(load_model_package(args.model), args.data)
    package = with_alignment_reference(args.model, recordings)
    groups = (package.metadata.alignment or {}).get("groups", [])
    logger.info("Alignment reference of %s: the MAV map of %d training recordings (%.0f s) and %d per-subject maps "
                "written to %s", package.name, len(recordings), sum(r.duration_s for r in recordings), len(groups),
                package.path / "metadata.json")  # fmt: skip
    return 0


def _cross_day(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from rohde.training.cross_day import (
        DirectionResult,
        default_config,
        read_results,
        run_study,
        simulated_shift_check,
        write_results,
    )

    _single_thread()
    config = default_config(args.config)
    config = replace(config, subjects=tuple(s.strip() for s in args.subjects.split(",") if s.strip()))
    done, simulated = ([], None) if args.fresh else read_results(args.out)
    command = f"rohde cross-day --data {args.data} --out {args.out}" + (f" --doc {args.doc}" if args.doc else "")
    if args.sim_data is not None:
        command += f" --sim-data SIM --sim-model {args.sim_model}"

    def save(results: list[DirectionResult]) -> None:
        write_results(results, args.out, command=command, simulated=simulated)

    results = (
        done
        if args.skip_flexemg
        else run_study(config, args.data, args.work_dir, done=done, on_result=save, packages_dir=args.packages)
    )
    if args.sim_data is not None:
        simulated = simulated_shift_check(args.sim_data.expanduser(), args.sim_model, seed=config.pipeline.seed)
    markdown = write_results(results, args.out, command=command, simulated=simulated)
    if args.doc is not None:
        args.doc.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(markdown, args.doc)
    logger.info("Results in %s", markdown)
    return 0
