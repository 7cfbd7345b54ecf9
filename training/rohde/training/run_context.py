"""What every stage of a training run shares: configs, the fitted normalisation, the device, the work folder.

All models train on windows built by the shared preprocessing; the CNN's filter-bank frontend is
fixed, so its output is cached per window (`RunContext.window_set`) and only the grid head is trained.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rohde.core.preprocessing import Normalization, PreprocessingConfig
from rohde.core.recording import Recording
from rohde.core.windows import WindowConfig
from rohde.training.augment import REDONNED_RANGE, shift_augment_windows
from rohde.training.cnn import RohdeCNN
from rohde.training.config import PipelineConfig
from rohde.training.split import DataSplit
from rohde.training.trainer import TrainResult, train_classifier
from rohde.training.windows_dataset import WindowSet, build_window_set

# Windows and their labels, as the trainer takes them: (features (N, ...), labels (N,)).
LabelledWindows = tuple[np.ndarray, np.ndarray]


def seeded_rng(seed: int, *keys: int) -> np.random.Generator:
    """A generator for one purpose of the run: the keys name the purpose (and the recording, copy...)."""
    return np.random.default_rng(np.random.SeedSequence([seed, *keys]))


def valid_windows(windows: WindowSet) -> LabelledWindows:
    return windows.features[windows.valid], windows.labels[windows.valid]


def stack_windows(*parts: LabelledWindows) -> LabelledWindows:
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


@dataclass(frozen=True)
class RunContext:
    config: PipelineConfig
    preprocessing: PreprocessingConfig
    normalization: Normalization  # fitted on the clean training trials
    windows: WindowConfig
    labels: list[str]
    template: Recording  # any recording, for layout and rate
    device: torch.device
    work_dir: Path  # GAN weights and checkpoints, outside the package folder

    def new_model(self, key: int = 0) -> RohdeCNN:
        torch.manual_seed(self.config.seed * 100 + key)
        return RohdeCNN(
            layout=self.template.layout,
            n_classes=len(self.labels),
            fs_hz=self.preprocessing.fs_hz,
            band_hz=self.preprocessing.effective_band_hz,
            config=self.config.cnn,
        )

    def window_set(self, recordings: Sequence[Recording], *, with_td: bool = False,
                   rebuild_bad: bool = False) -> WindowSet:  # fmt: skip
        """The recordings' windows through the fixed CNN frontend (and the classic TD features if asked;
        `rebuild_bad`: the channels the server's quality monitor flags rebuilt, as `iter_windows`)."""
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
            rebuild_bad=rebuild_bad,
        )

    def fit_head(
        self, name: str, train: LabelledWindows, val: LabelledWindows, *, key: int
    ) -> tuple[RohdeCNN, TrainResult]:
        """Train a fresh model's head (seeded by `key`); returns it on the CPU in eval mode. With
        `augment.redonning_copies`, training and validation windows get re-donned copies (selection sees them too)."""
        copies = self.config.augment.redonning_copies
        if copies:
            rng, layout = seeded_rng(self.config.seed, 30, key), self.template.layout
            train = shift_augment_windows(*train, layout, shift_range=REDONNED_RANGE, copies=copies, rng=rng)
            val = shift_augment_windows(*val, layout, shift_range=REDONNED_RANGE, copies=copies, rng=rng)
        model = self.new_model(key)
        result = train_classifier(
            model.head,
            train,
            val,
            config=self.config.trainer,
            seed=self.config.seed * 100 + key,
            checkpoint_path=self.work_dir / "checkpoints" / f"{name}.pt",
            meta={"variant": name, "pipeline": json.dumps(self.config.to_dict())},
            desc=name,
        )
        return model.cpu().eval(), result


@dataclass(frozen=True)
class WindowSets:
    """The split's windows: the clean training and test sets also carry the classic TD features."""

    train: WindowSet
    val: WindowSet
    seen_disturbed: WindowSet
    test: WindowSet
    served_test: WindowSet  # the test windows RoHDE is served: with quality masking, flagged channels rebuilt


def build_window_sets(ctx: RunContext, split: DataSplit) -> WindowSets:
    test = ctx.window_set(split.test, with_td=True)
    return WindowSets(
        train=ctx.window_set(split.train, with_td=True),
        val=ctx.window_set(split.val),
        seen_disturbed=ctx.window_set(split.seen_disturbed),
        test=test,
        served_test=ctx.window_set(split.test, rebuild_bad=True) if ctx.config.augment.quality_masking else test,
    )
