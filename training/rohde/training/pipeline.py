"""`rohde train`: data -> splits -> GAN -> baselines and RoHDE -> evaluation -> ONNX package + report.

Splits (never selected on test data):
- "sessions" mode (simulated data sets): the first session (or `split.train_sessions`) is for
  training; per subject its last `val_trials` clean trials are the validation set for model
  selection and early stopping, the other clean trials are training data, and the first
  `disturbed_trials` CA and LC trials per subject are the only real disturbed data the GAN and
  baseline (b) see. Every other session is test data only. Subjects are pooled: one model serves
  every user of the shipped package, as `rohde serve` runs one model.
- "folders" mode (flexemg): `split.train_dirs` hold the training session, `split.test_dirs` the
  test session. Where a condition has no real recording, the disturbance models inject it
  (`inject_missing`), into training trials for the "seen" disturbed set and into every test trial.
- `split.inject_test` also injects each condition into every clean test trial where recorded
  disturbed trials exist: each disturbed test then holds the very EMG of the clean test, so the
  drop from clean to disturbed is the cost of the disturbance alone, not of which holds the few
  disturbed trials happen to contain.

All models train on windows built by the shared preprocessing; the CNN's filter-bank frontend is
fixed, so its output is cached per window and only the grid head is trained.
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rohde.core.errors import ConfigError
from rohde.core.preprocessing import Normalization, PreprocessingConfig
from rohde.core.recording import Recording
from rohde.core.windows import WindowConfig
from rohde.training import augment
from rohde.training.cnn import RohdeCNN, count_parameters
from rohde.training.config import PipelineConfig
from rohde.training.evaluate import evaluate_probabilities
from rohde.training.trainer import TrainResult, predict_proba, resolve_device, train_classifier
from rohde.training.windows_dataset import (
    WindowSet,
    build_window_set,
    drop_segment_edges,
    fit_normalization,
    iter_windows,
)

logger = logging.getLogger(__name__)

ROBUST_MODEL = "rohde"  # the variant shipped in the package


def _seed(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *keys]))


def _rec_id(rec: Recording) -> str:
    return f"{rec.subject}/{rec.session}/{rec.trial}/{rec.condition}"


def _key(rec: Recording) -> int:
    """A stable integer per recording (Python's str hash changes between processes)."""
    return zlib.crc32(_rec_id(rec).encode())


@dataclass
class DataSplit:
    train: list[Recording]  # clean training trials
    val: list[Recording]  # clean validation trials (model selection)
    seen_disturbed: list[Recording]  # the few real disturbed trials the GAN and baseline (b) see
    test: list[Recording]  # test trials of every condition
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "train": [_rec_id(r) for r in self.train],
            "val": [_rec_id(r) for r in self.val],
            "seen_disturbed": [_rec_id(r) for r in self.seen_disturbed],
            "test": [_rec_id(r) for r in self.test],
            "notes": self.notes,
        }


def _check_compatible(recordings: Sequence[Recording]) -> None:
    first = recordings[0]
    for rec in recordings[1:]:
        if rec.fs_hz != first.fs_hz or rec.layout != first.layout or rec.gesture_names != first.gesture_names:
            raise ConfigError(
                f"Recording {_rec_id(rec)} differs from {_rec_id(first)} in rate, layout or gestures; "
                "train one model per set-up."
            )


def _inject(rec: Recording, condition: str, seed: int) -> Recording:
    return augment.oracle_augment(rec, condition, seed=seed)


def make_split(
    config: PipelineConfig,
    *,
    data_dir: Path,
    load: Callable[[Path], list[Recording]],
) -> DataSplit:
    """Apply the split rules of the module docstring to the recordings under `data_dir`."""
    split = config.split
    conditions = config.augment.conditions
    notes: list[str] = []
    if split.mode == "folders":
        train_pool = [r for d in split.train_dirs for r in load(data_dir / d)]
        test_pool = [r for d in split.test_dirs for r in load(data_dir / d)]
    else:
        everything = load(data_dir)
        sessions = sorted({r.session for r in everything})
        train_sessions = list(split.train_sessions) or sessions[:1]
        test_sessions = list(split.test_sessions) or [s for s in sessions if s not in train_sessions]
        missing = (set(train_sessions) | set(test_sessions)) - set(sessions)
        if missing:
            raise ConfigError(f"Sessions {sorted(missing)} are not in {str(data_dir)!r} (it has {sessions}).")
        if not test_sessions or set(train_sessions) & set(test_sessions):
            raise ConfigError(
                f"Need disjoint, non-empty train and test sessions; got {train_sessions} and {test_sessions}."
            )
        train_pool = [r for r in everything if r.session in train_sessions]
        test_pool = [r for r in everything if r.session in test_sessions]
        notes.append(f"train sessions {train_sessions}, test sessions {test_sessions}")
    if not train_pool or not test_pool:
        raise ConfigError(f"No training or no test recordings found under {str(data_dir)!r}.")
    _check_compatible(train_pool + test_pool)
    if split.drop_edge_fraction > 0:
        train_pool = [replace(r, labels=drop_segment_edges(r.labels, split.drop_edge_fraction)) for r in train_pool]
        test_pool = [replace(r, labels=drop_segment_edges(r.labels, split.drop_edge_fraction)) for r in test_pool]

    train, val, seen, test = [], [], [], []
    for subject in sorted({r.subject for r in train_pool}):
        mine = sorted((r for r in train_pool if r.subject == subject), key=lambda r: (r.session, r.trial))
        clean = [r for r in mine if r.condition == "clean"]
        if len(clean) <= split.val_trials:
            raise ConfigError(
                f"Subject {subject} has {len(clean)} clean training trials; need more than split.val_trials="
                f"{split.val_trials}."
            )
        train += clean[: -split.val_trials]
        val += clean[-split.val_trials :]
        for k, condition in enumerate(conditions):
            real = [r for r in mine if r.condition == condition][: split.disturbed_trials]
            if not real and split.inject_missing:
                real = [_inject(r, condition, seed=config.seed * 1000 + 17 * k + i)
                        for i, r in enumerate(clean[: split.disturbed_trials])]  # fmt: skip
                notes.append(f"subject {subject}: no real {condition} training trial; injected into "
                             f"{len(real)} clean training trial(s) with the disturbance model")  # fmt: skip
            if not real:
                raise ConfigError(f"Subject {subject} has no {condition} training trial and inject_missing is off.")
            seen += real
    for subject in sorted({r.subject for r in test_pool}):
        mine = sorted((r for r in test_pool if r.subject == subject), key=lambda r: (r.session, r.trial))
        clean = [r for r in mine if r.condition == "clean"]
        test += clean
        for k, condition in enumerate(conditions):
            real = [r for r in mine if r.condition == condition]
            test += real
            if split.inject_test or (not real and split.inject_missing):
                test += [_inject(r, condition, seed=config.seed * 1000 + 500 + 17 * k + i) for i, r in enumerate(clean)]
                notes.append(
                    f"subject {subject}: test {condition} = {len(real)} recorded trial(s) + {len(clean)} clean test "
                    "trial(s) with it injected"
                )
    return DataSplit(train=train, val=val, seen_disturbed=seen, test=test, notes=notes)


# ------------------------------------------------------------------------------------------- stages


@dataclass
class Context:
    """What every stage needs: the configs, the shared preprocessing and the feature functions."""

    config: PipelineConfig
    preprocessing: PreprocessingConfig
    normalization: Normalization
    windows: WindowConfig
    labels: list[str]
    template: Recording  # any recording, for layout and rate
    device: torch.device
    timings: dict[str, float] = field(default_factory=dict)

    def new_model(self, key: int = 0) -> RohdeCNN:
        torch.manual_seed(self.config.seed * 100 + key)
        return RohdeCNN(
            layout=self.template.layout,
            n_classes=len(self.labels),
            fs_hz=self.preprocessing.fs_hz,
            band_hz=self.preprocessing.effective_band_hz,
            config=self.config.cnn,
        )

    def window_set(self, recordings: Sequence[Recording], *, with_td: bool = False) -> WindowSet:
        frontend = self.new_model().frontend.to(self.device).eval()

        def featurize(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return frontend(torch.from_numpy(x).to(self.device)).cpu().numpy()

        td = None
        if with_td:
            from rohde.classic.features import td_features

            # The classic features expect uV (their zero-crossing threshold is in uV): undo the scale.
            scale = np.asarray(self.normalization.scale_uv, dtype=np.float32)[None, :, None]

            def td(x: np.ndarray) -> np.ndarray:
                return td_features(x * scale)

        return build_window_set(
            recordings,
            preprocessing=self.preprocessing,
            normalization=self.normalization,
            windows=self.windows,
            featurize=featurize,
            td_features=td,
        )


def _valid(ws: WindowSet) -> tuple[np.ndarray, np.ndarray]:
    return ws.features[ws.valid], ws.labels[ws.valid]


def _stack(*parts: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _time_split(rec: Recording, fraction: float) -> tuple[Recording, Recording]:
    """(first 1 - fraction, last fraction) of a recording in time: GAN training vs quality hold-out."""
    cut = int(round(rec.n_samples * (1 - fraction)))

    def part(sl: slice) -> Recording:
        mask = None if rec.disturbance_mask is None else rec.disturbance_mask[sl]
        return replace(rec, samples=rec.samples[sl], labels=rec.labels[sl], disturbance_mask=mask)

    return part(slice(0, cut)), part(slice(cut, None))


def train_gan(
    ctx: Context, seen: Sequence[Recording], work_dir: Path, *, progress: bool = True
) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """Train the conditional WGAN-GP on the seen disturbed trials; returns (gan, quality, held-out segs)."""
    from rohde.simulation.disturbances import affected_channels
    from rohde.training.gan import GANConfig, extract_disturbance_segments, train_disturbance_gan

    settings = ctx.config.gan
    base = GANConfig.tiny() if settings.preset == "tiny" else GANConfig()
    gan_config = GANConfig.from_dict({**base.to_dict(), **settings.overrides})
    if not progress:
        gan_config = replace(gan_config, progress=False)
    layout = ctx.template.layout
    regions = {c: [int(ch) for ch in affected_channels(layout, c)] for c in ctx.config.augment.conditions}
    fitted, held = {}, {}
    for condition in ctx.config.augment.conditions:
        pieces = [_time_split(r, settings.held_out_fraction) for r in seen if r.condition == condition]
        fitted[condition], held[condition] = (
            extract_disturbance_segments([p[i] for p in pieces], condition=condition, segment_ms=gan_config.segment_ms,
                                         hop_ms=settings.hop_ms, region_channels=regions[condition])
            for i in (0, 1)
        )  # fmt: skip
        logger.info("GAN %s: %s training and %s held-out segments of %s channels", condition,
                    len(fitted[condition]), len(held[condition]), len(regions[condition]))  # fmt: skip
    gan = train_disturbance_gan(
        fitted,
        fs_hz=ctx.preprocessing.fs_hz,
        config=gan_config,
        region_channels=regions,
        out_dir=work_dir / "gan",
        seed=ctx.config.seed,
        device=ctx.device,
    )
    quality: dict[str, Any] = {"config": gan_config.to_dict()}
    try:
        from rohde.training.gan_quality import gan_quality_report

        quality["metrics"] = gan_quality_report(gan, held, fs_hz=ctx.preprocessing.fs_hz, rng=_seed(ctx.config.seed, 7))
    except (ImportError, ConfigError):
        logger.exception("GAN quality figures failed; the report will lack them.")
        quality["metrics"] = {}
    quality["segments"] = {c: {"train": int(len(fitted[c])), "held_out": int(len(held[c]))} for c in fitted}
    return gan, quality, held


def _variants(
    ctx: Context,
    recordings: Sequence[Recording],
    make: Callable[[Recording, int, int], Recording],
    *,
    conditions: Sequence[str],
) -> list[WindowSet]:
    """One aligned WindowSet per (condition, copy): every recording disturbed by `make(rec, cond_idx, copy)`."""
    sets = []
    for ci, _ in enumerate(conditions):
        for copy in range(ctx.config.augment.copies):
            sets.append(ctx.window_set([make(r, ci, copy) for r in recordings]))
    return sets


def _fit_head(
    ctx: Context,
    name: str,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    *,
    work_dir: Path,
    key: int,
) -> tuple[RohdeCNN, TrainResult]:
    model = ctx.new_model(key)
    result = train_classifier(
        model.head,
        train,
        val,
        config=ctx.config.trainer,
        seed=ctx.config.seed * 100 + key,
        checkpoint_path=work_dir / "checkpoints" / f"{name}.pt",
        meta={"variant": name, "pipeline": json.dumps(ctx.config.to_dict())},
        desc=name,
    )
    return model.cpu().eval(), result


@dataclass
class PipelineResult:
    report: dict[str, Any]
    model: RohdeCNN
    package_dir: Path


def run_pipeline(
    config: PipelineConfig,
    *,
    data_dir: str | Path,
    out_dir: str | Path,
    work_dir: str | Path | None = None,
    load: Callable[[Path], list[Recording]] | None = None,
    progress: bool = True,
    command: str | None = None,
) -> PipelineResult:
    """The whole pipeline; writes the package to `out_dir` and the report to `out_dir/report`."""
    from tqdm import tqdm

    from rohde.core.datasets import load_dataset
    from rohde.training.baselines import fit_lda
    from rohde.training.export import export_package, ort_latency_ms
    from rohde.training.report import write_report

    started = time.perf_counter()
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    # GAN weights and checkpoints stay out of the package folder (and out of the repository).
    work = Path(work_dir) if work_dir is not None else Path.home() / ".cache" / "rohde" / "work" / out_dir.name
    loader = load or (lambda p: load_dataset(p))
    stages = ["load", "features", "gan", "augment", "baselines", "rohde", "sweep", "export", "report"]
    bar = tqdm(total=len(stages), desc="rohde train", disable=not progress, unit="stage")
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def done(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[stage] = round(now - clock, 2)
        clock = now
        bar.set_postfix_str(stage)
        bar.update(1)

    split = make_split(config, data_dir=data_dir, load=loader)
    template = split.train[0]
    ws = config.windows
    preprocessing = PreprocessingConfig(fs_hz=template.fs_hz, bandpass_hz=ws.bandpass_hz, notch_hz=ws.notch_hz)
    ctx = Context(
        config=config,
        preprocessing=preprocessing,
        normalization=fit_normalization(split.train, preprocessing),
        windows=WindowConfig(ws.window_ms, ws.hop_ms),
        labels=list(template.gesture_names),
        template=template,
        device=resolve_device(config.trainer.device),
    )
    done("load")

    train_ws = ctx.window_set(split.train, with_td=True)
    val_ws = ctx.window_set(split.val)
    seen_ws = ctx.window_set(split.seen_disturbed)
    test_ws = ctx.window_set(split.test, with_td=True)
    done("features")

    gan, gan_quality, held = train_gan(ctx, split.seen_disturbed, work, progress=progress)
    done("gan")

    conds = config.augment.conditions
    aug = config.augment
    seed = config.seed

    def generic(r: Recording, ci: int, copy: int) -> Recording:
        return augment.generic_augment(r, config=aug, rng=_seed(seed, 11, _key(r), ci, copy))

    def oracle(r: Recording, ci: int, copy: int) -> Recording:
        return augment.oracle_augment(r, conds[ci], seed=int(_seed(seed, 12, _key(r), ci, copy)
                                                            .integers(2**31)))  # fmt: skip

    def gan_made(r: Recording, ci: int, copy: int) -> Recording:
        return augment.gan_augment(r, gan, conds[ci], rng=_seed(seed, 13, _key(r), ci, copy))

    variants: dict[str, tuple[list[WindowSet], list[WindowSet]]] = {}
    # Generic augmentation knows no condition: as many copies as the others have in total.
    variants["generic"] = (
        _variants(ctx, split.train, generic, conditions=conds),
        _variants(ctx, split.val, generic, conditions=conds),
    )
    variants["oracle"] = (
        _variants(ctx, split.train, oracle, conditions=conds),
        _variants(ctx, split.val, oracle, conditions=conds),
    )
    variants[ROBUST_MODEL] = (
        _variants(ctx, split.train, gan_made, conditions=conds),
        _variants(ctx, split.val, gan_made, conditions=conds),
    )
    done("augment")

    results: dict[str, dict[str, Any]] = {}
    training: dict[str, dict[str, Any]] = {}
    models: dict[str, RohdeCNN] = {}
    clean_val = _valid(val_ws)

    def record(name: str, model: RohdeCNN, result: TrainResult) -> None:
        probs = predict_proba(model.head, test_ws.features, device=str(ctx.device))
        results[name] = evaluate_probabilities(probs, test_ws, labels=ctx.labels, max_votes=config.evaluation.max_votes)
        training[name] = result.to_dict()
        models[name] = model

    model, res = _fit_head(ctx, "clean", _valid(train_ws), clean_val, work_dir=work, key=1)
    record("clean", model, res)
    model, res = _fit_head(ctx, "seen_disturbed", _stack(_valid(train_ws), _valid(seen_ws)), clean_val,
                           work_dir=work, key=2)  # fmt: skip
    record("seen_disturbed", model, res)

    def robust(name: str, fraction: float, key: int) -> tuple[RohdeCNN, TrainResult]:
        train_variants, val_variants = variants[name]
        train_xy = augment.mix_windows(train_ws, train_variants, fraction=fraction, rng=_seed(seed, 20, key))
        # Model selection sees clean and disturbed validation windows alike (never test data).
        val_xy = _stack(clean_val, *[_valid(v) for v in val_variants])
        return _fit_head(ctx, f"{name}_f{fraction:g}", train_xy, val_xy, work_dir=work, key=key)

    for key, name in ((3, "generic"), (4, "oracle")):
        model, res = robust(name, aug.synthetic_fraction, key)
        record(name, model, res)

    lda_start = time.perf_counter()
    lda = fit_lda(train_ws, n_classes=len(ctx.labels))
    assert_td = test_ws.td if test_ws.td is not None else np.zeros((len(test_ws), 0))
    lda_probs = lda.predict_proba(assert_td)
    results["lda"] = evaluate_probabilities(lda_probs, test_ws, labels=ctx.labels,
                                            max_votes=config.evaluation.max_votes)  # fmt: skip
    training["lda"] = {"seconds": time.perf_counter() - lda_start}
    done("baselines")

    model, res = robust(ROBUST_MODEL, aug.synthetic_fraction, 5)
    done("rohde")

    # Paper figure b: RoHDE at every fraction of generated windows. The fraction is a
    # hyperparameter like any other: the shipped model is the fraction with the best validation
    # accuracy (clean and GAN-disturbed validation windows; ties keep `synthetic_fraction`).
    candidates = {aug.synthetic_fraction: (model, res)}
    fractions = sorted(set(aug.fraction_sweep) | {aug.synthetic_fraction}) if aug.fraction_sweep else []
    for i, fraction in enumerate(fractions):
        if fraction not in candidates:
            candidates[fraction] = robust(ROBUST_MODEL, fraction, 50 + i)
    chosen = max(candidates, key=lambda f: (candidates[f][1].best_val_accuracy, f == aug.synthetic_fraction))
    record(ROBUST_MODEL, *candidates[chosen])
    training[ROBUST_MODEL]["synthetic_fraction"] = chosen
    sweep: dict[str, dict[str, Any]] = {}
    for fraction in fractions:
        m, r = candidates[fraction]
        probs = predict_proba(m.head, test_ws.features, device=str(ctx.device))
        sweep[f"{fraction:g}"] = {
            **evaluate_probabilities(probs, test_ws, labels=ctx.labels, max_votes=1),
            "val_accuracy": r.best_val_accuracy,
            "selected": fraction == chosen,
        }
    done("sweep")

    shipped = models[ROBUST_MODEL]
    summary_metrics = {
        cond: {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "n_windows": m["n_windows"]}
        for cond, m in results[ROBUST_MODEL].items()
    }
    first_test = iter_windows(split.test[0], preprocessing=ctx.preprocessing, normalization=ctx.normalization,
                              windows=ctx.windows, chunk_windows=16)  # fmt: skip
    parity_windows = next(first_test)[0]
    training_data = {
        "data_dir": str(data_dir),
        "split_mode": config.split.mode,
        "subjects": sorted({r.subject for r in split.train}),
        "n_train_windows": int(train_ws.valid.sum()),
        "n_val_windows": int(val_ws.valid.sum()),
        "n_test_windows": int(test_ws.valid.sum()),
        "synthetic_fraction": chosen,
        "augment_conditions": list(conds),
        "split": split.summary(),
        "seed": config.seed,
    }
    package, parity = export_package(
        shipped,
        out_dir,
        name=config.name,
        version=config.version,
        labels=ctx.labels,
        layout=template.layout,
        preprocessing=ctx.preprocessing,
        normalization=ctx.normalization,
        windows=ctx.windows,
        parity_windows=parity_windows,
        training_data=training_data,
        metrics=summary_metrics,
    )
    latency = ort_latency_ms(package.onnx_path, n_channels=template.n_channels,
                             window_samples=package.metadata.window_samples,
                             runs=config.evaluation.latency_runs)  # fmt: skip
    done("export")

    timings["total"] = round(time.perf_counter() - started, 2)
    report = {
        "name": config.name,
        "command": command,
        "config": config.to_dict(),
        "data": training_data,
        "labels": ctx.labels,
        "models": results,
        "training": training,
        "fraction_sweep": sweep,
        "gan_quality": gan_quality,
        "export": {
            "parity_max_abs_diff": parity,
            "latency": latency,
            "onnx_bytes": package.onnx_path.stat().st_size,
            "parameters": count_parameters(shipped),
            "onnx_sha256": package.metadata.onnx_sha256,
        },
        "timings_s": timings,
        "device": str(ctx.device),
    }
    write_report(report, out_dir / "report", gan=gan, held_out=held, rng=_seed(seed, 99))
    done("report")
    bar.close()
    report["timings_s"] = {**timings, "total": round(time.perf_counter() - started, 2)}
    (out_dir / "report" / "report.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    return PipelineResult(report=report, model=shipped, package_dir=out_dir)
