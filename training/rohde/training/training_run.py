"""`rohde train`: one training run, data -> split -> windows -> GAN -> models -> ONNX package + report.

The run is a chain of typed stages, each timed and shown on one progress bar:

    load       make_split, the shared preprocessing and the normalisation    (split, run_context)
    features   window sets of the split through the fixed CNN frontend        (run_context)
    gan        the disturbance GAN and its quality on held-out segments        (gan_training)
    augment    generic, oracle and GAN-made twins of the training windows     (model_variants)
               (RoHDE's with random channels rebuilt: quality masking)
    baselines  variants (a) to (c') and the LDA                               (model_variants)
    rohde      RoHDE at the configured fraction of generated windows          (model_variants)
    sweep      RoHDE at every swept fraction; the best on validation ships    (model_variants)
    export     model.onnx + metadata.json with alignment reference, parity    (export)
    report     the figures, then report.md and report.json, written once      (report)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from rohde.core.alignment import AlignmentReference
from rohde.core.channel_repair import QUALITY_MASKING_KEY
from rohde.core.datasets import load_dataset
from rohde.core.model_package import ModelPackage
from rohde.core.preprocessing import PreprocessingConfig
from rohde.core.recording import Recording
from rohde.core.windows import WindowConfig
from rohde.training.cnn import RohdeCNN, count_parameters
from rohde.training.config import PipelineConfig
from rohde.training.distributed import current_world, require_same_json
from rohde.training.export import export_package, ort_latency_ms
from rohde.training.gan_training import TrainedGAN, train_gan
from rohde.training.model_variants import (
    ROBUST_MODEL,
    FractionSweep,
    ModelScores,
    augment_windows,
    sweep_fractions,
    train_baselines,
    train_rohde,
)
from rohde.training.report import draw_figures, write_tables
from rohde.training.run_context import RunContext, WindowSets, build_window_sets, seeded_rng
from rohde.training.split import DataSplit, make_split
from rohde.training.trainer import resolve_device
from rohde.training.windows_dataset import fit_normalization, iter_windows

logger = logging.getLogger(__name__)

STAGES = ("load", "features", "gan", "augment", "baselines", "rohde", "sweep", "export", "report")


@dataclass
class TrainedPackage:
    report: dict[str, Any]  # the content of report.json
    model: RohdeCNN  # the shipped RoHDE model
    package_dir: Path


@dataclass(frozen=True)
class ExportedPackage:
    package: ModelPackage
    parity_max_abs_diff: float  # ONNX Runtime against PyTorch, on probabilities
    latency: dict[str, float]  # ONNX Runtime, one window, one CPU thread
    training_data: dict[str, Any]  # the metadata's and the report's "data"


class StageClock:
    """Seconds per stage (the report's "timings_s") and the progress bar."""

    def __init__(self, *, progress: bool) -> None:
        self.started = self._last = time.perf_counter()
        self.timings: dict[str, float] = {}
        self._bar = tqdm(total=len(STAGES), desc="rohde train", disable=not progress, unit="stage")

    def done(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[stage] = round(now - self._last, 2)
        self._last = now
        self._bar.set_postfix_str(stage)
        self._bar.update(1)

    def finish(self) -> dict[str, float]:
        self._bar.close()
        return {**self.timings, "total": round(time.perf_counter() - self.started, 2)}


def make_context(config: PipelineConfig, split: DataSplit, work_dir: Path) -> RunContext:
    """The shared preprocessing of the data's rate, with the normalisation fitted on the clean training trials."""
    template = split.train[0]
    ws = config.windows
    preprocessing = PreprocessingConfig(fs_hz=template.fs_hz, bandpass_hz=ws.bandpass_hz, notch_hz=ws.notch_hz)
    return RunContext(
        config=config,
        preprocessing=preprocessing,
        normalization=fit_normalization(split.train, preprocessing),
        windows=WindowConfig(ws.window_ms, ws.hop_ms),
        labels=list(template.gesture_names),
        template=template,
        device=resolve_device(config.trainer.device),
        work_dir=work_dir,
    )


def export_model(
    ctx: RunContext,
    split: DataSplit,
    windows: WindowSets,
    model: RohdeCNN,
    *,
    results: dict[str, dict[str, Any]],
    chosen_fraction: float,
    data_dir: Path,
    out_dir: Path,
) -> ExportedPackage:
    """Write the package of the shipped model, checked against PyTorch on the first test windows, with the
    MAV map of the clean training trials as its alignment reference (label-free re-alignment, live and offline)."""
    config = ctx.config
    summary_metrics = {
        cond: {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "n_windows": m["n_windows"]}
        for cond, m in results.items()
    }
    first_test = iter_windows(split.test[0], preprocessing=ctx.preprocessing, normalization=ctx.normalization,
                              windows=ctx.windows, chunk_windows=16)  # fmt: skip
    parity_windows = next(first_test)[0]
    training_data = {
        "data_dir": str(data_dir),
        "split_mode": config.split.mode,
        "subjects": sorted({r.subject for r in split.train}),
        "n_train_windows": int(windows.train.valid.sum()),
        "n_val_windows": int(windows.val.valid.sum()),
        "n_test_windows": int(windows.test.valid.sum()),
        "synthetic_fraction": chosen_fraction,
        "augment_conditions": list(config.augment.conditions),
        # Trained with rebuilt channels (the shipped fraction is above 0), so served with them.
        QUALITY_MASKING_KEY: config.augment.quality_masking,
        "split": split.summary(),
        "seed": config.seed,
    }
    package, parity = export_package(
        model,
        out_dir,
        name=config.name,
        version=config.version,
        labels=ctx.labels,
        layout=ctx.template.layout,
        preprocessing=ctx.preprocessing,
        normalization=ctx.normalization,
        windows=ctx.windows,
        parity_windows=parity_windows,
        training_data=training_data,
        metrics=summary_metrics,
        alignment=AlignmentReference.from_recordings(split.train, ctx.preprocessing),
    )
    latency = ort_latency_ms(package.onnx_path, n_channels=ctx.template.n_channels,
                             window_samples=package.metadata.window_samples,
                             runs=config.evaluation.latency_runs)  # fmt: skip
    return ExportedPackage(package=package, parity_max_abs_diff=parity, latency=latency, training_data=training_data)


def build_report(
    ctx: RunContext,
    *,
    command: str | None,
    scores: ModelScores,
    sweep: FractionSweep,
    gan: TrainedGAN,
    exported: ExportedPackage,
) -> dict[str, Any]:
    """The content of report.json; `timings_s` is filled in once the report's figures are drawn."""
    return {
        "name": ctx.config.name,
        "command": command,
        "config": ctx.config.to_dict(),
        "data": exported.training_data,
        "labels": ctx.labels,
        "models": scores.results,
        "training": scores.training,
        "fraction_sweep": sweep.sweep,
        "gan_quality": gan.quality,
        "export": {
            "parity_max_abs_diff": exported.parity_max_abs_diff,
            "latency": exported.latency,
            "onnx_bytes": exported.package.onnx_path.stat().st_size,
            "parameters": count_parameters(scores.models[ROBUST_MODEL]),
            "onnx_sha256": exported.package.metadata.onnx_sha256,
        },
        "timings_s": {},
        "device": str(ctx.device),
    }


def run_training(
    config: PipelineConfig,
    *,
    data_dir: str | Path,
    out_dir: str | Path,
    work_dir: str | Path | None = None,
    load: Callable[[Path], list[Recording]] = load_dataset,
    progress: bool = True,
    command: str | None = None,
) -> TrainedPackage:
    """The whole run; writes the package to `out_dir` and the report to `out_dir/report`.

    Under torchrun every rank runs the stages and shares the training steps; rank 0 alone exports and
    writes the report, the other ranks return without them (an empty `report`).
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    # GAN weights and checkpoints stay out of the package folder (and out of the repository).
    work = Path(work_dir) if work_dir is not None else Path.home() / ".cache" / "rohde" / "work" / out_dir.name
    clock = StageClock(progress=progress)
    split = make_split(config, data_dir=data_dir, load=load)
    ctx = make_context(config, split, work)
    clock.done("load")
    windows = build_window_sets(ctx, split)
    if current_world().parallel:  # under torchrun every rank must hold the same windows
        require_same_json([split.summary(), [len(w) for w in (windows.train, windows.val, windows.test)]],
                          "the data split and its windows")  # fmt: skip
    clock.done("features")
    gan = train_gan(ctx, split.seen_disturbed, progress=progress)
    clock.done("gan")
    # Without baselines (`rohde train --quick`), only RoHDE's GAN-made twins are needed.
    augmented = augment_windows(ctx, split, gan.gan, only=None if config.baselines else [ROBUST_MODEL])
    clock.done("augment")
    scores = train_baselines(ctx, windows, augmented) if config.baselines else ModelScores()
    clock.done("baselines")
    configured = train_rohde(ctx, windows, augmented[ROBUST_MODEL])
    clock.done("rohde")
    sweep = sweep_fractions(ctx, windows, augmented[ROBUST_MODEL], configured)
    scores.add(ctx, windows.served_test, ROBUST_MODEL, sweep.shipped)
    scores.training[ROBUST_MODEL]["synthetic_fraction"] = sweep.chosen
    clock.done("sweep")
    shipped = scores.models[ROBUST_MODEL]
    if not current_world().is_main:  # the other ranks trained in step with rank 0, which alone writes
        return TrainedPackage(report={}, model=shipped, package_dir=out_dir)
    exported = export_model(ctx, split, windows, shipped, results=scores.results[ROBUST_MODEL],
                            chosen_fraction=sweep.chosen, data_dir=data_dir, out_dir=out_dir)  # fmt: skip
    clock.done("export")
    report = build_report(ctx, command=command, scores=scores, sweep=sweep, gan=gan, exported=exported)
    report_dir = out_dir / "report"
    draw_figures(report, report_dir, gan=gan.gan, held_out=gan.held_out, rng=seeded_rng(config.seed, 99))
    clock.done("report")
    report["timings_s"] = clock.finish()
    write_tables(report, report_dir)
    return TrainedPackage(report=report, model=shipped, package_dir=out_dir)
