"""Training configuration: frozen dataclasses, one per stage, read from one JSON file.

`configs/tiny.json` runs the whole pipeline in about a minute on a laptop CPU (tests),
`configs/default.json` is the real run on the simulator's default data set and
`configs/flexemg.json` the run on the real flexemg recordings.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from rohde.core.errors import ConfigError


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    """Instantiate a config dataclass from a dict, rejecting unknown keys with the known ones."""
    if not isinstance(data, dict):
        raise ConfigError(f"Config section {where!r} must be a JSON object, got {type(data).__name__}.")
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"Unknown keys {sorted(unknown)} in config section {where!r}; known keys: {sorted(known)}.")
    values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()}
    return cls(**values)


@dataclass(frozen=True)
class WindowSettings:
    window_ms: float = 200.0  # decision window; 200 ms keeps decisions well under 300 ms after onset
    hop_ms: float = 50.0  # one decision every 50 ms (20 Hz), so a 3-vote majority still lands < 300 ms
    notch_hz: float | None = 50.0  # power-line notch of the shared preprocessing (60 for flexemg)
    bandpass_hz: tuple[float, float] = (20.0, 450.0)  # shared preprocessing band


@dataclass(frozen=True)
class CNNConfig:
    n_bands: int = 4  # temporal filter bank size (log band power per channel)
    kernel_ms: float = 16.0  # length of each temporal filter
    stride_ms: float = 4.0  # stride of the filter bank: cuts time early, power needs no full rate
    conv_channels: tuple[int, ...] = (16, 16)  # 3x3 convolutions over each electrode grid
    hidden: int = 64  # units of the dense layer before the output
    dropout: float = 0.3  # dropout before the dense layers

    def __post_init__(self) -> None:
        if self.n_bands < 1 or self.kernel_ms <= 0 or self.stride_ms <= 0:
            raise ConfigError("cnn.n_bands, cnn.kernel_ms and cnn.stride_ms must be positive.")
        if not self.conv_channels or min(self.conv_channels) < 1:
            raise ConfigError(f"cnn.conv_channels must list positive sizes, got {self.conv_channels}.")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"cnn.dropout must be in [0, 1), got {self.dropout}.")


@dataclass(frozen=True)
class TrainerConfig:
    max_epochs: int = 60  # upper bound; early stopping usually ends sooner
    batch_size: int = 256  # windows per optimiser step
    lr: float = 2e-3  # AdamW learning rate
    weight_decay: float = 1e-3  # AdamW weight decay
    patience: int = 8  # epochs without validation improvement before stopping
    label_smoothing: float = 0.05  # softer targets calibrate the confidences used for rejection
    device: str = "auto"  # "auto" (CUDA when available), "cpu" or "cuda"

    def __post_init__(self) -> None:
        if self.max_epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise ConfigError("trainer.max_epochs, trainer.batch_size and trainer.patience must be >= 1.")
        if self.lr <= 0:
            raise ConfigError(f"trainer.lr must be positive, got {self.lr}.")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"trainer.device must be 'auto', 'cpu' or 'cuda', got {self.device!r}.")


@dataclass(frozen=True)
class AugmentConfig:
    synthetic_fraction: float = 0.5  # share of training windows that carry a generated disturbance
    copies: int = 2  # independently disturbed copies of every training recording per condition
    conditions: tuple[str, ...] = ("CA", "LC")  # disturbances the robust model learns
    fraction_sweep: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)  # paper figure b; () skips it
    block_ms: float = 1000.0  # generic augmentation draws new random parameters every block
    noise_rel: float = 1.0  # generic Gaussian noise up to this multiple of the channel RMS
    dropout_prob: float = 0.1  # generic: share of channels zeroed in a block
    spike_rate_hz: float = 4.0  # generic: random spikes per second per affected channel
    gain_range: tuple[float, float] = (0.5, 1.5)  # generic: per-channel gain range
    # Quality-aware inference: RoHDE's generated twins get random electrode sets rebuilt from their neighbours
    # (`augment.mask_augment`, the server's rebuild), beside one rebuilt twin of each clean trial, and its package
    # asks the server to rebuild the channels its detector flags (`training_data["quality_masking"]`).
    quality_masking: bool = True
    mask_severity: tuple[float, float] = (0.0, 0.3)  # share of electrodes rebuilt, drawn anew every block_ms
    # Every CNN also trains on this many copies of each window re-donned at random and moved back
    # (`augment.REDONNED_RANGE`): a model that stays accurate behind the server's label-free alignment after
    # the array is put on again (docs/cross_day.md). 0: off.
    redonning_copies: int = 0

    def __post_init__(self) -> None:
        low, high = self.mask_severity
        if not 0 <= low <= high <= 1:
            raise ConfigError(f"augment.mask_severity must be a range (low, high) within [0, 1], got "
                              f"{self.mask_severity}.")  # fmt: skip
        if not 0 <= self.synthetic_fraction <= 1:
            raise ConfigError(f"augment.synthetic_fraction must be in [0, 1], got {self.synthetic_fraction}.")
        if self.quality_masking and self.synthetic_fraction == 0:
            raise ConfigError("augment.quality_masking needs augment.synthetic_fraction above 0 (the rebuilt channels "
                              "come with the generated twins); raise it or set quality_masking to false.")
        if self.copies < 1:
            raise ConfigError(f"augment.copies must be >= 1, got {self.copies}.")
        if self.redonning_copies < 0:
            raise ConfigError(f"augment.redonning_copies must be >= 0, got {self.redonning_copies}.")
        if any(not 0 <= f <= 1 for f in self.fraction_sweep):
            raise ConfigError(f"augment.fraction_sweep values must be in [0, 1], got {self.fraction_sweep}.")


@dataclass(frozen=True)
class SplitConfig:
    # "sessions": recordings of one folder split by their session field (simulated data sets);
    # "folders": `train_dirs` / `test_dirs` below the data folder hold the two sessions (flexemg);
    # "repetitions": a user's calibration recordings (`rohde record`), split by hold (see split.py).
    mode: str = "sessions"
    train_sessions: tuple[str, ...] = ()  # sessions for training; () = the first session found
    test_sessions: tuple[str, ...] = ()  # sessions for testing only; () = every other session
    train_dirs: tuple[str, ...] = ()  # "folders" mode: sub-folders of --data used for training
    test_dirs: tuple[str, ...] = ()  # "folders" mode: sub-folders of --data used for testing
    val_trials: int = 1  # clean training trials held out (per subject) for model selection
    disturbed_trials: int = 1  # real disturbed trials per condition and subject the GAN and (b) see
    inject_missing: bool = True  # inject CA/LC with the disturbance models where the data has none
    inject_test: bool = False  # also inject CA/LC into every clean test trial (paired clean/disturbed tests)
    drop_edge_fraction: float = 0.0  # drop this share of each gesture segment at both ends (flexemg)
    train_paths: tuple[str, ...] = ()  # "repetitions" mode: recordings (files or folders) split by repetition
    test_paths: tuple[str, ...] = ()  # "repetitions" mode: recordings for testing only; () = each one's last holds
    settle_ms: float = 0.0  # "repetitions" mode: unusable start of every cued segment (the user's reaction)

    def __post_init__(self) -> None:
        if self.mode not in ("sessions", "folders", "repetitions"):
            raise ConfigError(f"split.mode must be 'sessions', 'folders' or 'repetitions', got {self.mode!r}.")
        if self.mode == "repetitions" and not self.train_paths:
            raise ConfigError("split.mode 'repetitions' needs split.train_paths (rohde train --data or --train).")
        if self.settle_ms < 0:
            raise ConfigError(f"split.settle_ms must be >= 0, got {self.settle_ms}.")
        if self.mode == "folders" and (not self.train_dirs or not self.test_dirs):
            raise ConfigError("split.mode 'folders' needs split.train_dirs and split.test_dirs.")
        if self.val_trials < 1 or self.disturbed_trials < 1:
            raise ConfigError("split.val_trials and split.disturbed_trials must be >= 1.")
        if not 0 <= self.drop_edge_fraction < 0.5:
            raise ConfigError(f"split.drop_edge_fraction must be in [0, 0.5), got {self.drop_edge_fraction}.")


@dataclass(frozen=True)
class GANSettings:
    preset: str = "default"  # "tiny" uses GANConfig.tiny(); "default" uses GANConfig()
    overrides: dict[str, Any] = field(default_factory=dict)  # GANConfig fields to change
    hop_ms: float = 62.5  # hop between training segments cut from the real disturbed trials
    held_out_fraction: float = 0.25  # share of real segments kept for the quality report


@dataclass(frozen=True)
class EvaluationConfig:
    max_votes: int = 10  # majority vote over 1..max_votes decisions (paper figure a)
    latency_runs: int = 2000  # ONNX Runtime single-window runs for the latency median


@dataclass(frozen=True)
class PipelineConfig:
    name: str = "rohde-default"  # model name written into the package
    version: str = "1.0.0"  # model version written into the package
    seed: int = 0  # every random draw of the pipeline derives from it
    baselines: bool = True  # also train and score the compared models (a)-(c') and the LDA; False: RoHDE only
    windows: WindowSettings = field(default_factory=WindowSettings)
    cnn: CNNConfig = field(default_factory=CNNConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    gan: GANSettings = field(default_factory=GANSettings)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PipelineConfig:
        sections = {
            "windows": WindowSettings,
            "cnn": CNNConfig,
            "trainer": TrainerConfig,
            "augment": AugmentConfig,
            "split": SplitConfig,
            "gan": GANSettings,
            "evaluation": EvaluationConfig,
        }
        scalars = {"name", "version", "seed", "baselines"}
        unknown = set(data) - set(sections) - scalars
        if unknown:
            raise ConfigError(
                f"Unknown top-level config keys {sorted(unknown)}; known: {sorted(set(sections) | scalars)}."
            )
        values: dict[str, Any] = {k: data[k] for k in scalars if k in data}
        for key, section_cls in sections.items():
            if key in data:
                values[key] = _build(section_cls, data[key], key)
        return cls(**values)


def load_config(path: str | Path | None) -> PipelineConfig:
    """Read a JSON config; None gives the defaults. Raises ConfigError naming the problem."""
    if path is None:
        return PipelineConfig()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file {str(path)!r} does not exist.")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"Config file {str(path)!r} is not valid JSON: {exc}.") from exc
    return PipelineConfig.from_dict(data)


# `rohde train --quick`: what a personal model needs in a few minutes on 2 cores.
# A narrower GAN for fewer steps (the full run: widths 16, 800 steps): about a tenth of its time.
QUICK_GAN = {"steps": 60, "g_width": 8, "c_width": 8, "checkpoint_interval": 30}
QUICK_MAX_EPOCHS = 25


def quick_config(config: PipelineConfig) -> PipelineConfig:
    """`config` reduced to the GAN and the RoHDE classifier: no baselines, no fraction sweep (the configured
    fraction ships), one disturbed copy per condition, a shorter GAN and training, a short latency count."""
    return replace(
        config,
        baselines=False,
        augment=replace(config.augment, fraction_sweep=(), copies=1),
        gan=replace(config.gan, overrides={**config.gan.overrides, **QUICK_GAN}),
        trainer=replace(config.trainer, max_epochs=min(config.trainer.max_epochs, QUICK_MAX_EPOCHS),
                        patience=min(config.trainer.patience, 6)),
        evaluation=replace(config.evaluation, latency_runs=min(config.evaluation.latency_runs, 200)),
    )
