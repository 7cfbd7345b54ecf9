"""`rohde data ...`: argument parsing and thin handlers; the work is in the modules named below.

- `rohde data simulate --out DIR [--preset default|full|quick | --quick] [--seed N]`
  (`rohde.simulation.simulator.simulate_dataset`)
- `rohde data info PATH [--json]`: channels, fs, duration, layout, condition, per-class sample
  counts, disturbance fraction and RMS range of a file, or of every recording in a folder (`summary`).
- `rohde data plot PATH --out FILE_OR_DIR`: one PNG for a file; for a folder, one PNG per
  representative recording (one clean, one CA, one LC) in the output folder (`plots`).
- `rohde data baseline --data DIR` or `--train DIR --test DIR`: per-subject LDA on per-channel
  RMS features of 200 ms windows (hop 50 ms) filtered with the shared causal chain (`baseline`).
- `rohde data spread PATH [--json]`: how much the holds of one gesture differ from each other,
  per subject and session of the clean recordings (`hold_spread`).
- `rohde data detector --out DIR [--flexemg DIR]`: precision, recall and F1 of the neighbour
  bad-channel detector per disturbance kind against ground-truth masks (`detector_eval`).

matplotlib loads inside the plot handler only: it comes with the `[train]` extra.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, TextIO

from rohde.core.errors import ConfigError
from rohde.data_tools.baseline import BaselineOptions, baseline_across, baseline_within, format_baseline
from rohde.data_tools.hold_spread import format_hold_spreads, hold_spreads
from rohde.data_tools.inputs import recording_paths
from rohde.data_tools.summary import format_summary, format_totals, iter_summaries
from rohde.simulation.simulator import PRESETS, simulate_dataset

logger = logging.getLogger(__name__)


def register(subparsers: Any) -> None:  # argparse's _SubParsersAction is private
    data = subparsers.add_parser("data", help="simulate, inspect and plot recordings; LDA baseline")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")

    sim = data_sub.add_parser("simulate", help="write a simulated HD-EMG data set (*.rohde.npz + dataset.json)")
    sim.add_argument("--out", type=Path, required=True, help="output folder")
    sim.add_argument("--preset", choices=sorted(PRESETS), default="default", help="data set size and protocol")
    sim.add_argument("--quick", action="store_const", const="quick", dest="preset", help="same as --preset quick")
    sim.add_argument("--seed", type=int, default=0, help="random seed")
    sim.set_defaults(handler=_cmd_simulate)

    info = data_sub.add_parser("info", help="summarise a recording file or every recording in a folder")
    info.add_argument("path", type=Path, help=".rohde.npz, flexemg .mat or .xdf file, or a folder")
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    _add_load_options(info)
    info.set_defaults(handler=_cmd_info)

    plot = data_sub.add_parser("plot", help="plot RMS maps, traces and spectra of recordings")
    plot.add_argument("path", type=Path, help="a recording file or a folder")
    plot.add_argument("--out", type=Path, required=True, help="PNG file (for a file) or folder (for a folder)")
    _add_load_options(plot)
    plot.set_defaults(handler=_cmd_plot)

    base = data_sub.add_parser("baseline", help="per-subject LDA on RMS features: clean vs CA vs LC")
    base.add_argument("--data", type=Path, help="folder: train on clean trials, test on held-out trials")
    base.add_argument("--train", type=Path, help="folder of training recordings (with --test)")
    base.add_argument("--test", type=Path, help="folder of test recordings (with --train)")
    base.add_argument("--window-ms", type=float, default=200.0, help="window length (default 200 ms)")
    base.add_argument("--hop-ms", type=float, default=50.0, help="hop (default 50 ms)")
    base.add_argument(
        "--features", choices=("rms", "logrms", "td"), default="rms", help="feature set (default per-channel RMS)"
    )
    base.add_argument(
        "--notch",
        choices=("auto", "50", "60", "none"),
        default="auto",
        help="power-line notch; auto = 60 Hz for flexemg data (recorded in the US), else 50 Hz",
    )
    base.add_argument("--json", type=Path, help="also write the result rows to this JSON file")
    _add_load_options(base)
    base.set_defaults(handler=_cmd_baseline)

    spread = data_sub.add_parser("spread", help="hold-to-hold spread of gesture patterns per subject and session")
    spread.add_argument("path", type=Path, help="a folder of recordings (or one recording with several holds)")
    spread.add_argument("--json", action="store_true", help="print JSON instead of text")
    _add_load_options(spread)
    spread.set_defaults(handler=_cmd_spread)

    detector = data_sub.add_parser("detector", help="precision, recall and F1 of the bad-channel detector per kind")
    detector.add_argument("--out", type=Path, required=True, help="folder for detector.md and detector.json")
    detector.add_argument("--flexemg", type=Path, help="flexemg data folder: also inject into real trials")
    detector.add_argument("--sdr-db", type=float, default=0.0, help="signal-to-disturbance of additive kinds")
    detector.add_argument("--severity", type=float, default=0.0, help="fraction of electrodes (0: one)")
    detector.add_argument("--draws", type=int, default=2, help="disturbance draws per recording and kind")
    detector.add_argument("--window-stride", type=int, default=3, help="judge every n-th window (1: all)")
    detector.set_defaults(handler=_cmd_detector)


def _add_load_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--layout", help="layout spec for XDF streams without one in their desc (e.g. 3x8x8)")


def _cmd_simulate(args: argparse.Namespace) -> int:
    paths = simulate_dataset(args.out, preset=args.preset, seed=args.seed)
    logger.info("Wrote %d files to %s (preset %s, seed %d).", len(paths), args.out, args.preset, args.seed)
    return 0


def _cmd_info(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    summaries = {}
    for path, summary in iter_summaries(recording_paths(args.path), layout=args.layout):
        summaries[str(path)] = summary
        if not args.json:
            out.write(format_summary(path, summary) + "\n")
    if args.json:
        out.write(json.dumps(summaries, indent=2) + "\n")
    elif len(summaries) > 1:
        out.write(format_totals(list(summaries.values())) + "\n")
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    try:
        from rohde.data_tools.plots import plot_recordings
    except ImportError as exc:  # matplotlib comes with the [train] extra, not the serving install
        raise ConfigError(f"rohde data plot needs matplotlib ({exc}); install rohde[train].") from exc

    for path in plot_recordings(args.path, args.out, layout=args.layout):
        logger.info("Wrote %s", path)
    return 0


def _cmd_baseline(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    options = BaselineOptions(window_ms=args.window_ms, hop_ms=args.hop_ms, features=args.features, notch=args.notch,
                              layout=args.layout)  # fmt: skip
    if args.data is not None and (args.train is not None or args.test is not None):
        raise ConfigError("Give either --data DIR or --train DIR --test DIR, not both.")
    if args.data is not None:
        rows = baseline_within(args.data, options)
    elif args.train is None or args.test is None:
        raise ConfigError("rohde data baseline needs --data DIR, or both --train DIR and --test DIR.")
    else:
        rows = baseline_across(args.train, args.test, options)
    out.write(f"LDA on per-channel {args.features} features, {args.window_ms:g} ms windows, hop {args.hop_ms:g} ms\n")
    out.write(format_baseline(rows) + "\n")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


def _cmd_detector(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from rohde.data_tools.detector_eval import DetectorEvalOptions, detector_report

    options = DetectorEvalOptions(sdr_db=args.sdr_db, severity=args.severity, draws=args.draws,
                                  window_stride=args.window_stride)  # fmt: skip
    detector_report(args.out, flexemg=args.flexemg, options=options)
    (out or sys.stdout).write((args.out / "detector.md").read_text())
    return 0


def _cmd_spread(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    spreads = hold_spreads(recording_paths(args.path), layout=args.layout)
    if args.json:
        out.write(json.dumps({k: v.to_dict() for k, v in spreads.items()}, indent=2) + "\n")
    else:
        out.write(format_hold_spreads(spreads) + "\n")
    return 0
