"""`rohde study robustness`: the multi-seed severity study (torch loads inside the handler)."""

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
        description="Train the clean, generic, channel-dropout and oracle CNN variants and the LDA with one budget, "
        "select each on one validation set disturbed by a neutral generator, and score every disturbance kind "
        "(placed at random) at each severity, with and without quality masking; the held-out kind apart. Writes "
        "robustness.json, robustness.md and severity plots. Reduced protocol (one simulated subject, short trials): "
        "see rohde/training/robustness_study.py.",
    )
    robustness.add_argument("--out", type=Path, required=True, help="folder for the report and plots")
    robustness.add_argument("--seeds", type=int, default=3, help="independent repetitions (default 3)")
    robustness.add_argument("--kinds", default=None, help="comma-separated kinds (default: every placed kind)")
    robustness.add_argument("--severities", default="0,0.1,0.3,0.5", help="shares of electrodes disturbed")
    robustness.add_argument("--max-epochs", type=int, default=15, help="training budget of every variant")
    robustness.add_argument("--docs", type=Path, default=None, help="also write the markdown here (docs/robustness.md)")
    robustness.set_defaults(handler=_robustness)


def _robustness(args: argparse.Namespace) -> int:
    from rohde.training.robustness_study import STUDY_KINDS, StudyConfig, run_study, write_report

    kinds = tuple(args.kinds.split(",")) if args.kinds else STUDY_KINDS
    config = StudyConfig(seeds=args.seeds, kinds=kinds, max_epochs=args.max_epochs,
                         severities=tuple(float(s) for s in args.severities.split(",")))  # fmt: skip
    result = run_study(args.out, config, progress=lambda m: logger.info("%s", m))
    write_report(result, args.out, docs=args.docs)
    return 0
