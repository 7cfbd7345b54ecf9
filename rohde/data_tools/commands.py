"""`rohde data ...`: simulate, inspect, plot recordings and run the LDA baseline.

- `rohde data simulate --out DIR [--preset default|full|quick | --quick] [--seed N]`
- `rohde data info PATH [--json]`: channels, fs, duration, layout, condition, per-class sample
  counts, disturbance fraction and RMS range of a file, or of every recording in a folder.
- `rohde data plot PATH --out FILE_OR_DIR`: one PNG for a file; for a folder, one PNG per
  representative recording (one clean, one CA, one LC) in the output folder.
- `rohde data baseline --data DIR` or `--train DIR --test DIR`: per-subject LDA on per-channel
  RMS features of 200 ms windows (hop 50 ms) filtered with the shared causal chain.
- `rohde data spread PATH [--json]`: how much the holds of one gesture differ from each other,
  per subject and session of the clean recordings (`rohde.data_tools.hold_spread`).

Heavy imports (the simulator, matplotlib, the LDA of the training package) stay inside handlers.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from rohde.classic.lda import LDA
from rohde.core.datasets import find_recordings, load_any
from rohde.core.errors import ConfigError, RecordingFormatError
from rohde.core.gestures import UNUSABLE
from rohde.core.preprocessing import PreprocessingConfig, filter_recording
from rohde.core.recording import SUFFIX, Recording
from rohde.data_tools.hold_spread import HoldSpread, hold_patterns, hold_spread
from rohde.simulation.simulator import PRESETS, simulate_dataset

logger = logging.getLogger(__name__)

REPRESENTATIVE_CONDITIONS = ("clean", "CA", "LC")


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


def _add_load_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--layout", help="layout spec for XDF streams without one in their desc (e.g. 3x8x8)")


def _load(path: Path, args: argparse.Namespace) -> Recording:
    options: dict[str, Any] = {}
    if getattr(args, "layout", None) and path.name.lower().endswith(".xdf"):
        options["layout"] = args.layout
    return load_any(path, **options)


def _recordings(path: Path) -> list[Path]:
    paths = find_recordings(path)
    if not paths:
        raise RecordingFormatError(f"No recordings under {str(path)!r}; expected .rohde.npz, .mat or .xdf files.")
    return paths


def default_preprocessing(recording: Recording, notch: str = "auto") -> PreprocessingConfig:
    """The shared chain for a recording: 60 Hz notch for flexemg (US mains), else 50 Hz."""
    if notch == "auto":
        notch_hz: float | None = 60.0 if recording.provenance.get("source") == "flexemg" else 50.0
    elif notch == "none":
        notch_hz = None
    else:
        notch_hz = float(notch)
    return PreprocessingConfig(fs_hz=recording.fs_hz, notch_hz=notch_hz)


# ------------------------------------------------------------------------------------ simulate


def _cmd_simulate(args: argparse.Namespace) -> int:
    paths = simulate_dataset(args.out, preset=args.preset, seed=args.seed)
    logger.info("Wrote %d files to %s (preset %s, seed %d).", len(paths), args.out, args.preset, args.seed)
    return 0


# ---------------------------------------------------------------------------------------- info


def summarize_recording(recording: Recording, *, notch: str = "auto") -> dict[str, Any]:
    """A JSON-ready summary: shape, timing, layout, condition, class counts, disturbance, RMS range."""
    labels = recording.labels
    counts = {name: int(np.sum(labels == i)) for i, name in enumerate(recording.gesture_names)}
    counts["unusable"] = int(np.sum(labels == UNUSABLE))
    filtered = filter_recording(recording.samples, default_preprocessing(recording, notch))
    # Skip the filter's start-up transient (first 0.5 s) so it does not inflate the RMS.
    settle = min(int(0.5 * recording.fs_hz), recording.n_samples // 2)
    keep = labels != UNUSABLE
    keep[:settle] = False
    rms_source = filtered[keep] if keep.any() else filtered[settle:]
    rms = np.sqrt(np.mean(rms_source.astype(np.float64) ** 2, axis=0)) if len(rms_source) else np.zeros(0)
    mask = recording.disturbance_mask
    layout = recording.layout
    return {
        "subject": recording.subject,
        "session": recording.session,
        "trial": recording.trial,
        "condition": recording.condition,
        "n_channels": recording.n_channels,
        "fs_hz": recording.fs_hz,
        "duration_s": round(recording.duration_s, 3),
        "layout": {
            "name": layout.name,
            "grids": [f"{g.name} {g.rows}x{g.cols}" for g in layout.grids],
        },
        "class_samples": counts,
        "disturbance_fraction": None if mask is None else float(mask.mean()),
        "disturbed_channels": None if mask is None else int(mask.any(axis=0).sum()),
        "rms_uv": {
            "band_hz": list(default_preprocessing(recording, notch).effective_band_hz),
            "min": float(rms.min()) if rms.size else None,
            "p10": float(np.percentile(rms, 10)) if rms.size else None,
            "median": float(np.median(rms)) if rms.size else None,
            "p90": float(np.percentile(rms, 90)) if rms.size else None,
            "max": float(rms.max()) if rms.size else None,
        },
        "provenance": recording.provenance,
    }


def _format_summary(path: Path, s: dict[str, Any]) -> str:
    rms = s["rms_uv"]
    lines = [
        f"{path}",
        f"  subject {s['subject']}  session {s['session']}  trial {s['trial']}  condition {s['condition']}",
        f"  {s['n_channels']} channels at {s['fs_hz']:g} Hz, {s['duration_s']:.1f} s, "
        f"layout {s['layout']['name']} ({', '.join(s['layout']['grids'])})",
        "  samples per class: " + ", ".join(f"{k} {v}" for k, v in s["class_samples"].items()),
    ]
    if s["disturbance_fraction"] is None:
        lines.append("  disturbance mask: none stored")
    else:
        lines.append(
            f"  disturbance: {100 * s['disturbance_fraction']:.2f} % of channel-samples, "
            f"{s['disturbed_channels']} channels affected"
        )
    if rms["median"] is not None:
        lines.append(
            f"  RMS {rms['band_hz'][0]:g}-{rms['band_hz'][1]:g} Hz over channels (uV): min {rms['min']:.1f}, "
            f"p10 {rms['p10']:.1f}, median {rms['median']:.1f}, p90 {rms['p90']:.1f}, max {rms['max']:.1f}"
        )
    return "\n".join(lines)


def _cmd_info(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    paths = _recordings(args.path)
    summaries = {}
    totals: dict[str, int] = defaultdict(int)
    conditions: dict[str, int] = defaultdict(int)
    for path in paths:
        summary = summarize_recording(_load(path, args))
        summaries[str(path)] = summary
        conditions[summary["condition"]] += 1
        for name, count in summary["class_samples"].items():
            totals[name] += count
        if not args.json:
            out.write(_format_summary(path, summary) + "\n")
    if args.json:
        out.write(json.dumps(summaries, indent=2) + "\n")
    elif len(paths) > 1:
        out.write(
            f"{len(paths)} recordings; conditions: "
            + ", ".join(f"{k} {v}" for k, v in sorted(conditions.items()))
            + "\nsamples per class in all: "
            + ", ".join(f"{k} {v}" for k, v in totals.items())
            + "\n"
        )
    return 0


# ---------------------------------------------------------------------------------------- plot


def _peek_condition(path: Path) -> str:
    """The condition of a recording without loading its samples (only `.rohde.npz` stores one)."""
    if not path.name.endswith(SUFFIX):
        return "clean"
    try:
        with np.load(path, allow_pickle=False) as data:
            return str(json.loads(str(data["header"])).get("condition", "clean"))
    except (OSError, KeyError, ValueError) as exc:
        raise RecordingFormatError(f"{str(path)!r} is not a RoHDE recording ({exc}).") from exc


def representative_recordings(paths: list[Path]) -> dict[str, Path]:
    """One path per condition of REPRESENTATIVE_CONDITIONS present (the first in sorted order).

    Where no clean/CA/LC condition is recorded (real data), the first recording stands for all.
    """
    chosen: dict[str, Path] = {}
    for path in sorted(paths):
        condition = _peek_condition(path)
        if condition in REPRESENTATIVE_CONDITIONS and condition not in chosen:
            chosen[condition] = path
    if not chosen and paths:
        chosen[_peek_condition(sorted(paths)[0])] = sorted(paths)[0]
    return chosen


def _cmd_plot(args: argparse.Namespace) -> int:
    try:
        from rohde.data_tools.plots import plot_recording
    except ImportError as exc:  # matplotlib comes with the [train] extra, not the serving install
        raise ConfigError(f"rohde data plot needs matplotlib ({exc}); install rohde[train].") from exc

    if args.path.is_file():
        out = args.out if args.out.suffix.lower() == ".png" else args.out / (args.path.name.split(".")[0] + ".png")
        written = [plot_recording(_load(args.path, args), out)]
    else:
        chosen = representative_recordings(_recordings(args.path))
        written = []
        for condition, path in chosen.items():
            name = f"{condition}_{path.name.split('.')[0]}.png"
            written.append(plot_recording(_load(path, args), args.out / name))
    for path in written:
        logger.info("Wrote %s", path)
    return 0


# ------------------------------------------------------------------------------------ baseline


@dataclass
class _Features:
    subject: str
    key: tuple[str, str]  # (session, trial)
    condition: str
    X: np.ndarray  # (n_windows, n_features)
    y: np.ndarray  # (n_windows,)
    gestures: tuple[str, ...]


def _features_of(paths: list[Path], args: argparse.Namespace) -> list[_Features]:
    from rohde.classic.features import recording_features
    from rohde.core.windows import WindowConfig

    window = WindowConfig(args.window_ms, args.hop_ms)
    items = []
    for path in paths:
        rec = _load(path, args)
        preprocessing = default_preprocessing(rec, args.notch)
        X, y = recording_features(rec, preprocessing=preprocessing, window=window, kind=args.features)
        items.append(_Features(rec.subject, (rec.session, rec.trial), rec.condition, X, y, rec.gesture_names))
        logger.debug("%s: %d windows", path, len(y))
    return items


def _score(train: list[_Features], tests: dict[str, list[_Features]]) -> list[dict[str, Any]]:
    X = np.concatenate([f.X for f in train])
    y = np.concatenate([f.y for f in train])
    if len(np.unique(y)) < 2:
        raise ConfigError(f"Training windows of subject {train[0].subject} hold fewer than two classes.")
    model = LDA().fit(X, y)
    rows = []
    for condition, items in tests.items():
        Xt = np.concatenate([f.X for f in items])
        yt = np.concatenate([f.y for f in items])
        if len(yt) == 0:
            continue
        rows.append(
            {
                "subject": train[0].subject,
                "train_recordings": len(train),
                "train_windows": int(len(y)),
                "condition": condition,
                "test_recordings": len(items),
                "test_windows": int(len(yt)),
                "accuracy": model.score(Xt, yt),
            }
        )
    return rows


def _natural_key(key: tuple[str, str]) -> tuple[tuple[int, int | str], ...]:
    """Sort `('sess2', '10')` after `('sess2', '9')`: numeric parts compare as numbers."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in key)


def baseline_split(items: list[_Features]) -> tuple[list[_Features], list[_Features]]:
    """Per subject: the last third (at least one) of clean (session, trial) keys is held out.

    Every recording of a held-out key is a test recording, whatever its condition; disturbed
    recordings of training keys are left out too, since they share the training trial's EMG.
    """
    clean_keys = sorted({f.key for f in items if f.condition == "clean"}, key=_natural_key)
    if len(clean_keys) < 2:
        raise ConfigError(
            f"Subject {items[0].subject} has {len(clean_keys)} clean trial(s); the baseline needs at least two."
        )
    n_test = max(1, len(clean_keys) // 3)
    train_keys = set(clean_keys[:-n_test])
    train = [f for f in items if f.key in train_keys and f.condition == "clean"]
    test = [f for f in items if f.key not in train_keys]
    return train, test


def _by_condition(items: list[_Features]) -> dict[str, list[_Features]]:
    grouped: dict[str, list[_Features]] = defaultdict(list)
    for f in items:
        grouped[f.condition].append(f)
    order = {c: i for i, c in enumerate(("clean", "CA", "LC"))}
    return dict(sorted(grouped.items(), key=lambda kv: (order.get(kv[0], 99), kv[0])))


def run_baseline(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The baseline's result rows (one per subject and test condition)."""
    if args.data is not None and (args.train is not None or args.test is not None):
        raise ConfigError("Give either --data DIR or --train DIR --test DIR, not both.")
    rows: list[dict[str, Any]] = []
    if args.data is not None:
        per_subject: dict[str, list[_Features]] = defaultdict(list)
        for f in _features_of(_recordings(args.data), args):
            per_subject[f.subject].append(f)
        for subject in sorted(per_subject):
            train, test = baseline_split(per_subject[subject])
            rows.extend(_score(train, _by_condition(test)))
        return rows
    if args.train is None or args.test is None:
        raise ConfigError("rohde data baseline needs --data DIR, or both --train DIR and --test DIR.")
    train_by: dict[str, list[_Features]] = defaultdict(list)
    test_by: dict[str, list[_Features]] = defaultdict(list)
    for f in _features_of(_recordings(args.train), args):
        train_by[f.subject].append(f)
    for f in _features_of(_recordings(args.test), args):
        test_by[f.subject].append(f)
    common = sorted(set(train_by) & set(test_by))
    if not common:
        raise ConfigError(f"No subject appears in both --train ({sorted(train_by)}) and --test ({sorted(test_by)}).")
    for subject in common:
        rows.extend(_score(train_by[subject], _by_condition(test_by[subject])))
    return rows


def format_baseline(rows: list[dict[str, Any]]) -> str:
    header = f"{'subject':<10}{'condition':<11}{'train win':>10}{'test rec':>9}{'test win':>10}{'accuracy':>10}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['subject']:<10}{r['condition']:<11}{r['train_windows']:>10}{r['test_recordings']:>9}"
            f"{r['test_windows']:>10}{100 * r['accuracy']:>9.2f}%"
        )
    by_condition: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        by_condition[r["condition"]].append(r["accuracy"])
    if len(rows) > 1:
        lines.append("-" * len(header))
        for condition, accs in by_condition.items():
            lines.append(f"{'mean':<10}{condition:<11}{'':>29}{100 * float(np.mean(accs)):>9.2f}%")
    return "\n".join(lines)


def _cmd_baseline(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    rows = run_baseline(args)
    out.write(f"LDA on per-channel {args.features} features, {args.window_ms:g} ms windows, hop {args.hop_ms:g} ms\n")
    out.write(format_baseline(rows) + "\n")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


# -------------------------------------------------------------------------------------- spread


def hold_spreads(paths: list[Path], args: argparse.Namespace) -> dict[str, HoldSpread]:
    """The hold spread of the clean recordings of each subject and session, keyed `subject/session`."""
    groups: dict[str, list[tuple[int, np.ndarray]]] = defaultdict(list)
    for path in paths:
        if _peek_condition(path) != "clean":  # skip disturbed trials without loading their samples
            continue
        recording = _load(path, args)
        key = f"{recording.subject}/{recording.session}"
        groups[key].extend(hold_patterns(recording, default_preprocessing(recording)))
    if not groups:
        raise RecordingFormatError("No clean recordings found; the hold spread is measured on clean holds.")
    return {key: hold_spread(groups[key]) for key in sorted(groups)}


def _cmd_spread(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    spreads = hold_spreads(_recordings(args.path), args)
    if args.json:
        out.write(json.dumps({k: v.to_dict() for k, v in spreads.items()}, indent=2) + "\n")
        return 0
    out.write(f"{'subject/session':<24}{'holds':>6}{'gestures':>9}{'corr':>8}{'dispersion':>11}{'nearest':>9}\n")
    for key, v in spreads.items():
        out.write(
            f"{key:<24}{v.n_holds:>6}{v.n_gestures:>9}{v.corr_to_mean:>8.3f}{v.dispersion:>11.3f}"
            f"{v.nearest_mean_accuracy:>9.3f}\n"
        )
    out.write(
        "corr: median correlation of a hold's pattern with its gesture's mean; dispersion: spread of the holds "
        "over the distance between gestures; nearest: holds nearer their own gesture's mean than any other.\n"
    )
    return 0
