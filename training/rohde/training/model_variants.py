"""The compared models of a training run: augmented window sets, baselines, RoHDE and its fraction sweep.

Each variant of `rohde.training.baselines.VARIANTS` trains a fresh head on its own training windows;
every one is scored on the same test windows. Model selection (early stopping, the RoHDE fraction)
sees validation windows only, never test data.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rohde.core.recording import Recording
from rohde.training import augment
from rohde.training.baselines import fit_lda
from rohde.training.cnn import RohdeCNN
from rohde.training.evaluate import evaluate_probabilities
from rohde.training.gan import DisturbanceGAN
from rohde.training.run_context import RunContext, WindowSets, seeded_rng, stack_windows, valid_windows
from rohde.training.split import DataSplit, recording_key
from rohde.training.trainer import TrainResult, predict_proba
from rohde.training.windows_dataset import WindowSet

ROBUST_MODEL = "rohde"  # the variant shipped in the package

FittedModel = tuple[RohdeCNN, TrainResult]


@dataclass(frozen=True)
class AugmentedWindows:
    """One aligned WindowSet per (condition, copy) of the training and of the validation trials."""

    train: list[WindowSet]
    val: list[WindowSet]


@dataclass
class ModelScores:
    """Test figures, training figures and the model of every variant, in the report's order."""

    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # model -> condition -> figures
    training: dict[str, dict[str, Any]] = field(default_factory=dict)  # model -> training figures
    models: dict[str, RohdeCNN] = field(default_factory=dict)

    def add(self, ctx: RunContext, test: WindowSet, name: str, fitted: FittedModel) -> None:
        model, result = fitted
        probs = predict_proba(model.head, test.features, device=str(ctx.device))
        self.results[name] = evaluate_probabilities(probs, test, labels=ctx.labels,
                                                    max_votes=ctx.config.evaluation.max_votes)  # fmt: skip
        self.training[name] = result.to_dict()
        self.models[name] = model


@dataclass(frozen=True)
class FractionSweep:
    chosen: float  # the fraction of the shipped RoHDE model
    shipped: FittedModel
    sweep: dict[str, dict[str, Any]]  # the report's "fraction_sweep", keyed by the fraction


def _variant_sets(
    ctx: RunContext, recordings: Sequence[Recording], make: Callable[[Recording, int, int], Recording]
) -> list[WindowSet]:
    """One WindowSet per (condition, copy): every recording disturbed by `make(rec, cond_idx, copy)`."""
    sets = []
    for ci, _ in enumerate(ctx.config.augment.conditions):
        for copy in range(ctx.config.augment.copies):
            sets.append(ctx.window_set([make(r, ci, copy) for r in recordings]))
    return sets


def augment_windows(
    ctx: RunContext, split: DataSplit, gan: DisturbanceGAN, *, only: Sequence[str] | None = None
) -> dict[str, AugmentedWindows]:
    """Generic, oracle and GAN-made disturbed twins of the training and validation trials (`only` these).

    With `augment.quality_masking`, RoHDE's GAN-made twins also get random electrode sets rebuilt from their
    neighbours, and one more twin of every trial is the clean trial so rebuilt: a rebuilt channel is ordinary
    input to the shipped model, as it is where the server rebuilds the channels its detector flags."""
    conds, aug, seed = ctx.config.augment.conditions, ctx.config.augment, ctx.config.seed

    def generic(r: Recording, ci: int, copy: int) -> Recording:
        return augment.generic_augment(r, config=aug, rng=seeded_rng(seed, 11, recording_key(r), ci, copy))

    def oracle(r: Recording, ci: int, copy: int) -> Recording:
        return augment.oracle_augment(r, conds[ci], seed=int(seeded_rng(seed, 12, recording_key(r), ci, copy)
                                                            .integers(2**31)))  # fmt: skip

    def masked(r: Recording, ci: int, copy: int) -> Recording:
        return augment.mask_augment(r, rng=seeded_rng(seed, 14, recording_key(r), ci, copy),
                                    block_ms=aug.block_ms, severity=aug.mask_severity)  # fmt: skip

    def gan_made(r: Recording, ci: int, copy: int) -> Recording:
        made = augment.gan_augment(r, gan, conds[ci], rng=seeded_rng(seed, 13, recording_key(r), ci, copy))
        return masked(made, ci, copy) if aug.quality_masking else made

    def sets(recordings: Sequence[Recording], name: str, make: Callable[[Recording, int, int], Recording]
             ) -> list[WindowSet]:  # fmt: skip
        made = _variant_sets(ctx, recordings, make)
        if name == ROBUST_MODEL and aug.quality_masking:  # rebuilt channels on clean EMG: one more twin
            made.append(ctx.window_set([masked(r, len(conds), 0) for r in recordings]))
        return made

    # Generic augmentation knows no condition: as many copies as the others have in total.
    makers = {"generic": generic, "oracle": oracle, ROBUST_MODEL: gan_made}
    return {
        name: AugmentedWindows(train=sets(split.train, name, make), val=sets(split.val, name, make))
        for name, make in makers.items()
        if only is None or name in only
    }


def train_augmented(
    ctx: RunContext, windows: WindowSets, augmented: AugmentedWindows, *, name: str, fraction: float, key: int
) -> FittedModel:
    """A head trained on clean windows of which `fraction` is swapped for augmented twins."""
    train_xy = augment.mix_windows(windows.train, augmented.train, fraction=fraction,
                                   rng=seeded_rng(ctx.config.seed, 20, key))  # fmt: skip
    # Model selection sees clean and disturbed validation windows alike (never test data).
    val_xy = stack_windows(valid_windows(windows.val), *[valid_windows(v) for v in augmented.val])
    return ctx.fit_head(f"{name}_f{fraction:g}", train_xy, val_xy, key=key)


def train_baselines(ctx: RunContext, windows: WindowSets, augmented: dict[str, AugmentedWindows]) -> ModelScores:
    """Variants (a) to (c') and the LDA, each scored on the test windows."""
    scores = ModelScores()
    clean_train, clean_val = valid_windows(windows.train), valid_windows(windows.val)
    scores.add(ctx, windows.test, "clean", ctx.fit_head("clean", clean_train, clean_val, key=1))
    seen_train = stack_windows(clean_train, valid_windows(windows.seen_disturbed))
    scores.add(ctx, windows.test, "seen_disturbed", ctx.fit_head("seen_disturbed", seen_train, clean_val, key=2))
    fraction = ctx.config.augment.synthetic_fraction
    for key, name in ((3, "generic"), (4, "oracle")):
        fitted = train_augmented(ctx, windows, augmented[name], name=name, fraction=fraction, key=key)
        scores.add(ctx, windows.test, name, fitted)

    started = time.perf_counter()
    lda = fit_lda(windows.train, n_classes=len(ctx.labels))
    test_td = windows.test.td if windows.test.td is not None else np.zeros((len(windows.test), 0))
    scores.results["lda"] = evaluate_probabilities(lda.predict_proba(test_td), windows.test, labels=ctx.labels,
                                                   max_votes=ctx.config.evaluation.max_votes)  # fmt: skip
    scores.training["lda"] = {"seconds": time.perf_counter() - started}
    return scores


def train_rohde(ctx: RunContext, windows: WindowSets, augmented: AugmentedWindows) -> FittedModel:
    """RoHDE (d) at the configured fraction of GAN-made windows."""
    fraction = ctx.config.augment.synthetic_fraction
    return train_augmented(ctx, windows, augmented, name=ROBUST_MODEL, fraction=fraction, key=5)


def sweep_fractions(
    ctx: RunContext, windows: WindowSets, augmented: AugmentedWindows, configured: FittedModel
) -> FractionSweep:
    """Paper figure b: RoHDE at every fraction of generated windows, and the fraction to ship.

    The fraction is a hyperparameter like any other: the shipped model is the fraction with the
    best validation accuracy (clean and GAN-disturbed validation windows; ties keep
    `synthetic_fraction`, whose model is `configured`). With quality masking, fraction 0 (no
    rebuilt channel seen) is scored but never shipped.
    """
    aug = ctx.config.augment
    candidates = {aug.synthetic_fraction: configured}
    fractions = sorted(set(aug.fraction_sweep) | {aug.synthetic_fraction}) if aug.fraction_sweep else []
    for i, fraction in enumerate(fractions):
        if fraction not in candidates:
            candidates[fraction] = train_augmented(ctx, windows, augmented, name=ROBUST_MODEL, fraction=fraction,
                                                   key=50 + i)  # fmt: skip
    # With quality masking only a model that saw rebuilt channels (a fraction above 0) ships: it is served with them.
    eligible = [f for f in candidates if f > 0 or not aug.quality_masking]
    chosen = max(eligible, key=lambda f: (candidates[f][1].best_val_accuracy, f == aug.synthetic_fraction))
    sweep: dict[str, dict[str, Any]] = {}
    for fraction in fractions:
        model, result = candidates[fraction]
        probs = predict_proba(model.head, windows.served_test.features, device=str(ctx.device))
        sweep[f"{fraction:g}"] = {
            **evaluate_probabilities(probs, windows.served_test, labels=ctx.labels, max_votes=1),
            "val_accuracy": result.best_val_accuracy,
            "selected": fraction == chosen,
        }
    return FractionSweep(chosen=chosen, shipped=candidates[chosen], sweep=sweep)
