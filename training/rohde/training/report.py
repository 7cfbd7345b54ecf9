"""Reports: `report.json` (everything), `report.md` (tables) and PNG figures.

Figures: accuracy against the number of majority-voted decisions (paper figure a), RoHDE accuracy
against the fraction of generated training windows (paper figure b), confusion matrices of the
shipped model, and real against GAN-made disturbance segments.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rohde.core.channel_repair import QUALITY_MASKING_KEY
from rohde.core.errors import RohdeError
from rohde.training.baselines import VARIANTS

if TYPE_CHECKING:  # torch loads only where a GAN figure is drawn
    from rohde.training.gan import DisturbanceGAN

logger = logging.getLogger(__name__)

_CONDITION_ORDER = {"clean": 0, "CA": 1, "LC": 2}


def _conditions(models: dict[str, dict[str, Any]]) -> list[str]:
    found = {c for per in models.values() for c in per}
    return sorted(found, key=lambda c: (_CONDITION_ORDER.get(c, 99), c))


def _pct(x: float) -> str:
    return "n/a" if x is None or x != x else f"{100 * x:.2f}"


def markdown(report: dict[str, Any]) -> str:
    """The report's tables as Markdown."""
    models: dict[str, dict[str, Any]] = report["models"]
    conds = _conditions(models)
    lines = [f"# Evaluation report: {report.get('name', 'model')}", ""]
    if report.get("command"):
        lines += [f"Produced by `{report['command']}`.", ""]
    data = report.get("data", {})
    if data:
        lines += [
            "## Data and split",
            "",
            f"- data: `{data.get('data_dir', '?')}` (split mode `{data.get('split_mode', '?')}`, "
            f"subjects {data.get('subjects', '?')})",
            f"- windows: train {data.get('n_train_windows', '?')}, validation {data.get('n_val_windows', '?')}, "
            f"test {data.get('n_test_windows', '?')} (valid windows; test sessions are never used for selection)",
        ]
        if QUALITY_MASKING_KEY in data:
            lines.append("- quality masking: " + (
                "on (RoHDE trained with random electrode sets rebuilt from their neighbours; the server rebuilds the "
                "channels its quality monitor flags before this model, and RoHDE's test figures here, the fraction "
                "sweep's included, are scored that way: as served)" if data[QUALITY_MASKING_KEY] else "off"))
        for note in data.get("split", {}).get("notes", []):
            lines.append(f"- {note}")
        lines.append("")
    lines += ["## Accuracy / macro-F1 per condition (%), single window decisions", ""]
    lines.append("| model | " + " | ".join(f"{c} acc | {c} F1" for c in conds) + " | trained on |")
    lines.append("|---" * (2 * len(conds) + 2) + "|")
    for name, per in models.items():
        cells = []
        for c in conds:
            m = per.get(c, {})
            cells += [_pct(m.get("accuracy", float("nan"))), _pct(m.get("macro_f1", float("nan")))]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {VARIANTS.get(name, '')} |")
    lines.append("")
    lines += ["## Accuracy (%) against the number of majority-voted decisions", ""]
    for c in conds:
        votes = sorted({int(k) for per in models.values() for k in per.get(c, {}).get("accuracy_vs_votes", {})})
        if not votes:
            continue
        lines.append(f"**{c}**")
        lines.append("")
        lines.append("| model | " + " | ".join(str(v) for v in votes) + " |")
        lines.append("|---" * (len(votes) + 1) + "|")
        for name, per in models.items():
            curve = per.get(c, {}).get("accuracy_vs_votes", {})
            lines.append(f"| {name} | " + " | ".join(_pct(curve.get(str(v), float("nan"))) for v in votes) + " |")
        lines.append("")
    sweep = report.get("fraction_sweep") or {}
    if sweep:
        lines += ["## RoHDE accuracy (%) against the fraction of generated training windows", ""]
        lines.append("| fraction | " + " | ".join(conds) + " | validation | shipped |")
        lines.append("|---" * (len(conds) + 3) + "|")
        for frac, per in sorted(sweep.items(), key=lambda kv: float(kv[0])):
            cells = [_pct(per.get(c, {}).get("accuracy", float("nan"))) for c in conds]
            cells += [_pct(per.get("val_accuracy", float("nan"))), "yes" if per.get("selected") else ""]
            lines.append(f"| {frac} | " + " | ".join(cells) + " |")
        lines += ["", "The shipped RoHDE model is the fraction with the best validation accuracy.", ""]
    quality = (report.get("gan_quality") or {}).get("metrics") or {}
    if quality:
        lines += ["## GAN quality on held-out real disturbed segments", ""]
        lines.append("| condition | metric | GAN | naive | real vs real |")
        lines.append("|---|---|---|---|---|")
        for cond, metrics in quality.items():
            for metric, row in metrics.items():
                if isinstance(row, dict) and {"gan", "naive", "real"} <= set(row):
                    lines.append(f"| {cond} | {metric} | {row['gan']:.4g} | {row['naive']:.4g} | {row['real']:.4g} |")
        lines.append("")
        lines.append("Naive generator: resampled noise with the real segments' amplitudes (see `gan_quality.py`); "
                     "'real vs real' compares two halves of the held-out real segments.")  # fmt: skip
        lines.append("")
    export = report.get("export")
    if export:
        lat = export.get("latency", {})
        lines += [
            "## Exported model",
            "",
            f"- ONNX size {export.get('onnx_bytes', 0) / 1024:.1f} kB, {export.get('parameters', '?')} parameters",
            "- parity ONNX Runtime vs PyTorch: max abs difference "
            f"{export.get('parity_max_abs_diff', float('nan')):.2e} on probabilities",
            f"- ONNX Runtime latency, one window, one CPU thread: median {lat.get('median_ms', float('nan')):.3f} ms, "
            f"p95 {lat.get('p95_ms', float('nan')):.3f} ms",
            "",
        ]
    timings = report.get("timings_s")
    if timings:
        lines += ["## Timings (s)", "", "| stage | seconds |", "|---|---|"]
        lines += [f"| {k} | {v:.1f} |" for k, v in timings.items()]
        lines.append("")
    return "\n".join(lines)


def _plots(report: dict[str, Any], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    written = []
    models: dict[str, dict[str, Any]] = report["models"]
    conds = _conditions(models)
    fig, axes = plt.subplots(1, len(conds), figsize=(4.5 * len(conds), 3.6), squeeze=False)
    for ax, c in zip(axes[0], conds, strict=True):
        for name, per in models.items():
            curve = per.get(c, {}).get("accuracy_vs_votes", {})
            if curve:
                ks = sorted(int(k) for k in curve)
                ax.plot(ks, [100 * curve[str(k)] for k in ks], marker="o", ms=3, label=name)
        ax.set_title(f"{c}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("majority-voted decisions")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    path = out_dir / "accuracy_vs_votes.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    written.append(path)

    sweep = report.get("fraction_sweep") or {}
    if sweep:
        fig, ax = plt.subplots(figsize=(5, 3.6))
        fracs = sorted(sweep, key=float)
        for c in conds:
            ax.plot([100 * float(f) for f in fracs], [100 * sweep[f].get(c, {}).get("accuracy", np.nan) for f in fracs],
                    marker="o", label=c)  # fmt: skip
        ax.set_xlabel("generated windows in the training set (%)")
        ax.set_ylabel("RoHDE accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = out_dir / "accuracy_vs_generated_fraction.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)

    shipped = "rohde" if "rohde" in models else next(iter(models))
    per = models[shipped]
    labels = report.get("labels", [])
    fig, axes = plt.subplots(1, len(conds), figsize=(4.2 * len(conds), 4), squeeze=False)
    for ax, c in zip(axes[0], conds, strict=True):
        cm = np.asarray(per.get(c, {}).get("confusion", [[0]]), dtype=float)
        norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
        ax.set_title(f"{shipped}: {c}")
        ticks = range(len(labels))
        ax.set_xticks(list(ticks), [lab[:8] for lab in labels], rotation=60, fontsize=7)
        ax.set_yticks(list(ticks), [lab[:8] for lab in labels], fontsize=7)
        ax.set_xlabel("predicted")
        for (i, j), v in np.ndenumerate(norm):
            if v >= 0.01:
                ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=6)
    fig.tight_layout()
    path = out_dir / "confusion.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    written.append(path)
    return written


def write_tables(report: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Write report.json (everything) and report.md (its tables) to `out_dir`; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "report.json", out_dir / "report.md"]
    paths[0].write_text(json.dumps(report, indent=1, default=float) + "\n")
    paths[1].write_text(markdown(report) + "\n")
    logger.info("Report written to %s", out_dir)
    return paths


def draw_figures(
    report: dict[str, Any],
    out_dir: str | Path,
    *,
    gan: DisturbanceGAN | None = None,
    held_out: dict[str, np.ndarray] | None = None,
    rng: np.random.Generator | None = None,
) -> list[Path]:
    """Draw the report's PNG figures into `out_dir` (given the GAN, also real against GAN-made segments)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = _plots(report, out_dir)
    if gan is not None and held_out:
        # A failing figure must not throw away a finished training run: log it, keep the rest.
        try:
            from rohde.training.gan_quality import plot_synthetic_vs_real

            paths.append(
                plot_synthetic_vs_real(gan, held_out, out_path=out_dir / "gan_synthetic_vs_real.png",
                                       rng=rng or np.random.default_rng(0))  # fmt: skip
            )
        except (ImportError, RohdeError, ValueError):
            logger.exception("The GAN figure could not be drawn; the report is complete without it.")
    return paths


def write_report(report: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Write report.json, report.md and the PNG figures to `out_dir`; returns the written paths."""
    figures = draw_figures(report, out_dir)
    return write_tables(report, out_dir) + figures
