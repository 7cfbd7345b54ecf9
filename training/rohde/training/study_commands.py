"""`rohde study robustness` and `rohde study gan-patches` (torch loads inside the handlers)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def register(subparsers: Any) -> None:  # argparse's _SubParsersAction is private
    study = subparsers.add_parser("study", help="studies of the trained models (robustness to disturbances)")
    study_sub = study.add_subparsers(dest="study_command", required=True, metavar="STUDY")
    robustness = study_sub.add_parser(
        "robustness",
        help="accuracy vs share of electrodes disturbed, per kind and variant, over several seeds",
        description="Train the clean, generic, channel-dropout, oracle and patch-GAN CNN variants and the LDA with one "
        "budget, "
        "select each on one validation set disturbed by a neutral generator, and score every disturbance kind "
        "(placed at random) at each severity, with and without quality masking; the held-out kind apart. Writes "
        "robustness.json, robustness.md and severity plots. Reduced protocol (one simulated subject, short trials, or "
        "one flexemg subject with --flexemg): "
        "see rohde/training/robustness_study.py.",
    )
    robustness.add_argument("--out", type=Path, required=True, help="folder for the report and plots")
    robustness.add_argument("--seeds", type=int, default=3, help="independent repetitions (default 3)")
    robustness.add_argument("--kinds", default=None, help="comma-separated kinds (default: every placed kind)")
    robustness.add_argument("--severities", default="0,0.1,0.3,0.5", help="shares of electrodes disturbed")
    robustness.add_argument("--max-epochs", type=int, default=15, help="training budget of every variant")
    robustness.add_argument("--patience", type=int, default=5, help="early-stopping patience of every variant")
    robustness.add_argument("--train-trials", type=int, default=2, help="clean training trials of session 1")
    robustness.add_argument("--test-trials", type=int, default=1, help="clean test trials (default 1)")
    robustness.add_argument("--flexemg", type=Path, default=None,
                            help="the flexemg data folder: one subject's real recordings (Session1Train, "
                                 "within-session Session1Test) instead of the simulator's, every disturbance injected")
    robustness.add_argument("--subject", default="001", help="the flexemg subject (default 001)")
    robustness.add_argument("--sim-subjects", type=int, default=1,
                            help="simulated subjects, each with its own trials (default 1; the embedded set has 3)")
    robustness.add_argument(
        "--gan-steps",
        type=int,
        default=None,
        help="generator steps of the gan variant's patch GAN (default: the study's, 200)",
    )
    robustness.add_argument("--docs", type=Path, default=None, help="also write the markdown here (docs/robustness.md)")
    robustness.set_defaults(handler=_robustness)

    patches = study_sub.add_parser(
        "gan-patches",
        help="the patch GAN against the naive and the untrained generator, per disturbance kind, over seeds",
        description="Simulate disturbed trials (every trainable kind at random positions), cut patches of "
        "neighbouring electrodes where the ground-truth mask is set, train the conditional patch WGAN-GP on "
        "session 1 and compare it with the naive and the untrained generator on held-out session-2 patches on "
        "every quality metric. Writes gan_patches.json and gan_patches.md: see rohde/training/gan_patch_study.py.",
    )
    patches.add_argument("--out", type=Path, required=True, help="folder for the report")
    patches.add_argument("--seeds", type=int, default=3, help="independent GAN trainings (default 3)")
    patches.add_argument("--steps", type=int, default=None, help="generator steps per training (default: the study's)")
    patches.add_argument("--kinds", default=None, help="comma-separated kinds (default: every generated kind)")
    patches.add_argument("--docs", type=Path, default=None, help="also write the markdown here (docs/gan_quality.md)")
    patches.set_defaults(handler=_gan_patches)


def _robustness(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from rohde.training.robustness_study import STUDY_KINDS, StudyConfig, run_study, write_report

    kinds = tuple(args.kinds.split(",")) if args.kinds else STUDY_KINDS
    config = StudyConfig(seeds=args.seeds, kinds=kinds, max_epochs=args.max_epochs, patience=args.patience,
                         train_trials=args.train_trials, test_trials=args.test_trials,
                         flexemg=str(args.flexemg) if args.flexemg is not None else None, subject=args.subject,
                         sim_subjects=args.sim_subjects,
                         severities=tuple(float(s) for s in args.severities.split(",")))  # fmt: skip
    if args.gan_steps is not None:
        config = replace(config, gan=replace(config.gan, gan=replace(config.gan.gan, steps=args.gan_steps)))
    result = run_study(args.out, config, progress=lambda m: logger.info("%s", m))
    write_report(result, args.out, docs=args.docs)
    return 0


def _gan_patches(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from rohde.training.gan_patch_study import PatchStudyConfig, run_patch_study, write_report

    config = PatchStudyConfig(seeds=args.seeds)
    if args.kinds:
        config = replace(config, kinds=tuple(args.kinds.split(",")))
    if args.steps is not None:
        config = replace(config, gan=replace(config.gan, steps=args.steps))
    result = run_patch_study(args.out, config, progress=lambda m: logger.info("%s", m))
    path = write_report(result, args.out, docs=args.docs)
    logger.info("Wrote %s", path)
    return 0
