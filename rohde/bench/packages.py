"""The model package a bench run serves: --model, the shipped default, or a random-weight CNN."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from rohde.bench.config import BenchConfig
from rohde.core.errors import ConfigError
from rohde.server.settings import default_models_dir


def resolve_model(config: BenchConfig, workdir: Path) -> tuple[Path, str]:
    """The package to serve and where it came from: --model, models/rohde-default, or a CNN built here."""
    source = config.model if config.model is not None else default_models_dir() / "rohde-default"
    if config.model is not None and not (config.model / "metadata.json").is_file():
        raise ConfigError(f"--model {str(config.model)!r} is not a model package folder (no metadata.json).")
    if (source / "metadata.json").is_file():
        from rohde.core.model_package import load_model_package

        # A private copy: a training run that rewrites the package meanwhile cannot change what is measured.
        copy = workdir / "models" / source.name
        shutil.copytree(source, copy)
        meta = load_model_package(copy).metadata
        return copy, (f"package {source} ({meta.name} v{meta.version}, created {meta.created_utc}, "
                      f"onnx sha256 {meta.onnx_sha256[:12]})")
    path = build_random_cnn_package(workdir / "models" / "bench-cnn")
    return path, "default-architecture CNN with random weights (no trained package was available)"


def build_random_cnn_package(target: Path) -> Path:
    """A valid 192-channel 2048 Hz package of the default CNN architecture with random weights
    (inference cost does not depend on the weights). Needs the training extra (torch)."""
    import torch

    from rohde.core.gestures import DEFAULT_GESTURES
    from rohde.core.layouts import default_layout
    from rohde.core.preprocessing import Normalization, PreprocessingConfig
    from rohde.core.windows import WindowConfig
    from rohde.training.cnn import RohdeCNN
    from rohde.training.config import CNNConfig
    from rohde.training.export import export_package

    layout = default_layout()
    preprocessing = PreprocessingConfig(fs_hz=2048.0)
    windows = WindowConfig(200.0, 50.0)
    torch.manual_seed(0)
    model = RohdeCNN(layout=layout, n_classes=len(DEFAULT_GESTURES), fs_hz=preprocessing.fs_hz,
                     band_hz=preprocessing.effective_band_hz, config=CNNConfig()).eval()
    parity = np.random.default_rng(0).standard_normal((4, layout.n_channels, windows.window_samples(2048.0)))
    export_package(model, target, name="bench-cnn", version="0", labels=list(DEFAULT_GESTURES), layout=layout,
                   preprocessing=preprocessing, normalization=Normalization(scale_uv=(20.0,) * layout.n_channels),
                   windows=windows, parity_windows=parity.astype(np.float32),
                   training_data={"source": "none: random weights for benchmarking"}, metrics={})
    return target
