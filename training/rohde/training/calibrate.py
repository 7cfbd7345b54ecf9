"""`rohde calibrate`: adapt a model package to a new placement of the array in well under a minute.

After the array is put on again, one short labelled recording of the new session (for example one
repetition of each gesture) is enough to adapt the model:

1. The package's CNN is rebuilt in PyTorch from its ONNX graph (`model_from_package`): the
   pipeline exports batch norm folded into the convolutions, so each convolution takes the folded
   weights and its batch norm becomes the identity; a parity check against ONNX Runtime refuses any
   graph that is not a RoHDE CNN.
2. With `align` (the default when the package carries an alignment reference), the shift and gain
   of the new placement are estimated from the recording without its labels
   (`rohde.core.alignment`) and the matrix that moves the new electrodes back onto the training
   grid becomes the first layer of the graph (`RemappedCNN`: `windows -> M @ windows -> CNN`).
3. The grid head is fine-tuned on the recording's windows (fixed epochs, batch norm frozen).
4. The result is exported as a new package (the same ONNX and metadata format, parity checked),
   ready for `PUT /models/active`; its metadata records the calibration and the shift found.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rohde.core.alignment import (
    AlignmentReference,
    ShiftEstimate,
    activity_map,
    alignment_matrix,
    estimate_shift,
)
from rohde.core.errors import ConfigError, ModelPackageError
from rohde.core.model_package import ModelPackage, check_recording_fits, load_model_package, write_metadata
from rohde.core.preprocessing import filter_recording
from rohde.core.recording import Recording
from rohde.training.cnn import RohdeCNN
from rohde.training.config import CNNConfig
from rohde.training.windows_dataset import build_window_set

logger = logging.getLogger(__name__)

PARITY_TOLERANCE = 1e-4  # max abs difference of probabilities, rebuilt PyTorch model vs ONNX Runtime
REMAP_NAME = "channel_remap"
# How closely the normalisation refitted on a package's training recordings must match the stored one for
# them to count as the data it was trained on (rohde-default on its data set made again: 1.4e-10 relative; on
# the clean trials of that set's test session instead: 2.7e-2).
NORMALIZATION_RTOL = 1e-6


class RemappedCNN(RohdeCNN):
    """A RohdeCNN whose input channels are first mixed by a constant `(C, C)` matrix (the alignment)."""

    def __init__(self, base: RohdeCNN, remap: np.ndarray) -> None:
        nn.Module.__init__(self)
        self.frontend = base.frontend
        self.head = base.head
        self.channel_remap: torch.Tensor
        self.register_buffer(REMAP_NAME, torch.tensor(np.array(remap, dtype=np.float32)), persistent=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.frontend(torch.matmul(self.channel_remap, x)))  # (C, C) @ (B, C, W)


def _initializers(path: Path) -> tuple[dict[str, np.ndarray], list[Any]]:
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    return {i.name: numpy_helper.to_array(i) for i in graph.initializer}, list(graph.node)


def _attribute(node: Any, name: str) -> list[int]:
    for attribute in node.attribute:
        if attribute.name == name:
            return list(attribute.ints)
    return []


def model_from_package(package: ModelPackage) -> tuple[RohdeCNN, np.ndarray | None]:
    """The package's CNN in PyTorch (eval mode) and its channel remap `(C, C)` if it has one."""
    weights, nodes = _initializers(package.onnx_path)
    fs_hz = package.preprocessing.fs_hz
    try:
        bank = weights["model.frontend.conv.weight"]  # (F, 1, 1, taps)
        convs = [n for n in nodes if n.op_type == "Conv"]
        stride = _attribute(convs[0], "strides")[-1]
        grid_convs = [(weights[n.input[1]], weights[n.input[2]]) for n in convs[1:]]
        hidden = weights["model.head.head.2.weight"].shape[0]
        config = CNNConfig(
            n_bands=int(bank.shape[0]),
            kernel_ms=bank.shape[-1] * 1000.0 / fs_hz,
            stride_ms=stride * 1000.0 / fs_hz,
            conv_channels=tuple(int(w.shape[0]) for w, _ in grid_convs),
            hidden=int(hidden),
        )
        model = RohdeCNN(
            layout=package.layout,
            n_classes=len(package.metadata.labels),
            fs_hz=fs_hz,
            band_hz=package.preprocessing.effective_band_hz,
            config=config,
        )
        state = model.state_dict()
        for name in state:
            if f"model.{name}" in weights:
                state[name] = torch.as_tensor(weights[f"model.{name}"].copy())
        conv_modules = [m for m in model.head.convs if isinstance(m, nn.Conv2d)]
        norm_modules = [m for m in model.head.convs if isinstance(m, nn.BatchNorm2d)]
        model.load_state_dict(state)
        with torch.no_grad():
            for module, norm, (w, b) in zip(conv_modules, norm_modules, grid_convs, strict=True):
                module.weight.copy_(torch.as_tensor(w.copy()))
                module.bias.copy_(torch.as_tensor(b.copy()))  # type: ignore[union-attr]
                # Folded into the convolution by the export: the identity here.
                norm.load_state_dict(
                    {
                        "running_mean": torch.zeros(norm.num_features),
                        "running_var": torch.full((norm.num_features,), 1.0 - norm.eps),
                        "weight": torch.ones(norm.num_features),
                        "bias": torch.zeros(norm.num_features),
                        "num_batches_tracked": torch.tensor(0),
                    }
                )
    except (KeyError, IndexError, ValueError, RuntimeError, ConfigError) as exc:
        raise ModelPackageError(
            f"Package {package.path.name!r} is not a RoHDE CNN graph that calibration can rebuild ({exc!r})."
        ) from exc
    remap = weights.get(f"model.{REMAP_NAME}")
    model.eval()
    _check_parity(model if remap is None else RemappedCNN(model, remap), package)
    return model, remap


def _check_parity(model: RohdeCNN, package: ModelPackage) -> None:
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, package.metadata.n_channels, package.metadata.window_samples)).astype(np.float32)
    with torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(x)), dim=-1).numpy()
    session = ort.InferenceSession(str(package.onnx_path), providers=["CPUExecutionProvider"])
    got = session.run([package.metadata.output_name], {package.metadata.input_name: x})[0]
    error = float(np.max(np.abs(got - expected)))
    if error > PARITY_TOLERANCE:
        raise ModelPackageError(
            f"The rebuilt model of package {package.path.name!r} differs from its ONNX graph by {error:.2e}; "
            "calibration supports the RoHDE CNN graph only."
        )


@dataclass(frozen=True)
class CalibrationResult:
    package: ModelPackage
    estimate: ShiftEstimate | None  # None when not aligned
    n_windows: int  # labelled windows fine-tuned on
    accuracy_before: float  # on the calibration windows, before fine-tuning (after alignment)
    accuracy_after: float  # on the calibration windows, after fine-tuning
    seconds: dict[str, float]


def _features(model: RohdeCNN, windows: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.frontend(torch.from_numpy(windows)).numpy()


def fine_tune(
    model: RohdeCNN, features: np.ndarray, labels: np.ndarray, *, epochs: int, lr: float, seed: int
) -> RohdeCNN:
    """Fine-tune the grid head in place on features `(N, C, F)` and labels; batch norm frozen."""
    if len(labels) < 2:
        raise ConfigError("Calibration needs at least two labelled windows; record one repetition of each gesture.")
    head = model.head
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW([p for p in head.parameters() if p.requires_grad], lr=lr, weight_decay=1e-3)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    xt, yt = torch.as_tensor(features, dtype=torch.float32), torch.as_tensor(labels, dtype=torch.int64)
    for _ in range(epochs):
        head.train()
        for module in head.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()  # a calibration recording is too short for batch statistics
        order = torch.randperm(len(yt), generator=generator)
        for start in range(0, len(order), 128):
            idx = order[start : start + 128]
            if len(idx) < 2:
                continue
            optimiser.zero_grad(set_to_none=True)
            loss_fn(head(xt[idx]), yt[idx]).backward()
            optimiser.step()
    return model.eval()


def _accuracy(model: RohdeCNN, features: np.ndarray, labels: np.ndarray) -> float:
    with torch.no_grad():
        predicted = model.head(torch.as_tensor(features)).argmax(dim=1).numpy()
    return float(np.mean(predicted == labels))


def calibrate_package(
    model_dir: str | Path,
    recordings: list[Recording],
    out_dir: str | Path,
    *,
    align: bool | None = None,
    epochs: int = 40,
    lr: float = 5e-4,
    seed: int = 0,
    name: str | None = None,
    reference: AlignmentReference | None = None,
) -> CalibrationResult:
    """Adapt the package at `model_dir` to labelled `recordings` of a new session; write `out_dir`.

    `align`: None aligns when the package has an alignment reference, True requires one.
    `reference` replaces (or supplies) the package's alignment reference and is stored in the new one.
    """
    from rohde.training.export import export_package

    seconds: dict[str, float] = {}
    started = time.perf_counter()
    package = load_model_package(model_dir)
    meta = package.metadata
    if reference is not None:
        meta = meta.model_copy(update={"alignment": reference.to_dict()})
    if not recordings:
        raise ConfigError("Calibration needs at least one labelled recording of the new session.")
    for rec in recordings:
        check_recording_fits(meta, rec)
    if align and meta.alignment is None:
        raise ConfigError(f"Package {package.name!r} has no alignment reference; calibrate without --align.")
    do_align = meta.alignment is not None if align is None else align
    model, _ = model_from_package(package)  # any earlier remap is replaced by this session's
    seconds["load"] = time.perf_counter() - started

    estimate = None
    remap = np.eye(meta.n_channels)
    if do_align and meta.alignment is not None:
        t0 = time.perf_counter()
        stored = AlignmentReference.from_dict(meta.alignment)
        filtered = np.concatenate([filter_recording(r.samples, package.preprocessing) for r in recordings])
        estimate = estimate_shift(stored, activity_map(filtered), package.layout)
        remap = alignment_matrix(package.layout, estimate)
        seconds["align"] = time.perf_counter() - t0
        logger.info("Shift found: %s (score %.2f, unshifted %.2f)", estimate.shift, estimate.score,
                    estimate.score_unshifted)  # fmt: skip

    t0 = time.perf_counter()
    remapped = RemappedCNN(model, remap).eval()
    window_set = build_window_set(
        recordings,
        preprocessing=package.preprocessing,
        normalization=package.normalization,
        windows=package.windows,
        featurize=lambda x: _features(remapped, _remap(remap, x)),
    )
    features, labels = window_set.features[window_set.valid], window_set.labels[window_set.valid]
    before = _accuracy(remapped, features, labels)
    fine_tune(remapped, features, labels, epochs=epochs, lr=lr, seed=seed)
    after = _accuracy(remapped, features, labels)
    seconds["fine_tune"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    parity_windows = _first_windows(recordings[0], package)
    exported, _ = export_package(
        remapped,
        out_dir,
        name=name or f"{meta.name}-calibrated",
        version=meta.version,
        labels=list(meta.labels),
        layout=package.layout,
        preprocessing=package.preprocessing,
        normalization=package.normalization,
        windows=package.windows,
        parity_windows=parity_windows,
        training_data={
            **meta.training_data,
            "calibration": {
                "from_package": meta.name,
                "recordings": [f"{r.subject}/{r.session}/{r.trial}" for r in recordings],
                "windows": int(len(labels)),
                "epochs": epochs,
                "accuracy_before": before,
                "accuracy_after": after,
                "alignment": estimate.to_dict() if estimate is not None else None,
            },
        },
        metrics=meta.metrics,
        # The training reference is kept: a later session aligns against it again.
        alignment=AlignmentReference.from_dict(meta.alignment) if meta.alignment is not None else None,
    )
    seconds["export"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - started
    logger.info("Calibrated %s on %d windows: accuracy %.3f -> %.3f in %.1f s", meta.name, len(labels), before, after,
                seconds["total"])  # fmt: skip
    return CalibrationResult(exported, estimate, int(len(labels)), before, after, seconds)


def _remap(matrix: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """Windows `(n, C, W)` with their channels mixed by `matrix` `(C, C)`."""
    return np.einsum("ij,njw->niw", matrix.astype(np.float32), windows).astype(np.float32)


def _first_windows(recording: Recording, package: ModelPackage, n: int = 8) -> np.ndarray:
    from rohde.training.windows_dataset import iter_windows

    windows, _, _ = next(
        iter_windows(
            recording,
            preprocessing=package.preprocessing,
            normalization=package.normalization,
            windows=package.windows,
            chunk_windows=n,
        )  # fmt: skip
    )
    return windows


def with_alignment_reference(package_dir: str | Path, recordings: list[Recording]) -> ModelPackage:
    """Store the MAV map of `recordings` (the model's training data) as the package's alignment reference,
    as `rohde train` stores it; the weights and `model.onnx` are left as they are."""
    package = load_model_package(package_dir)
    reference = AlignmentReference.from_recordings(recordings, package.preprocessing)
    write_metadata(package.path, package.metadata.model_copy(update={"alignment": reference.to_dict()}))
    return load_model_package(package.path)


def training_recordings(package: ModelPackage, data_dir: str | Path) -> list[Recording]:
    """The clean training trials of a package `rohde train` wrote (`training_data["split"]["train"]`), found
    among the recordings under `data_dir` (the data set it was trained on, made again by the same command).

    Refuses a folder that lacks any of them, and one whose trials are not those the model saw: the
    normalisation fitted on them again must equal the package's (relative `NORMALIZATION_RTOL`).
    """
    from rohde.core.datasets import find_recordings, load_any
    from rohde.training.split import recording_id
    from rohde.training.windows_dataset import fit_normalization

    split = package.metadata.training_data.get("split")
    wanted = split.get("train") if isinstance(split, dict) else None
    if not wanted or not all(isinstance(w, str) for w in wanted):
        raise ConfigError(f"Package {package.name!r} names no training recordings (training_data.split.train, "
                          "written by rohde train); pass its training recordings to rohde calibrate --reference-data.")
    found: dict[str, Recording] = {}
    for path in find_recordings(data_dir):  # one at a time: only the training trials stay in memory
        rec = load_any(path)
        if recording_id(rec) in wanted:
            found[recording_id(rec)] = rec
    missing = [w for w in wanted if w not in found]
    if missing:
        raise ConfigError(f"{len(missing)} of the {len(wanted)} training recordings of {package.name!r} are not under "
                          f"{str(data_dir)!r} (first: {missing[0]}); make the data set again with the command in "
                          "the package's report.")
    recordings = [found[w] for w in wanted]
    refit = np.asarray(fit_normalization(recordings, package.preprocessing).scale_uv)
    stored = np.asarray(package.normalization.scale_uv)
    if not np.allclose(refit, stored, rtol=NORMALIZATION_RTOL, atol=0.0):
        raise ConfigError(f"The recordings under {str(data_dir)!r} are not those {package.name!r} was trained on: "
                          f"their normalisation scale is {refit[0]:.6g} uV, the package's {stored[0]:.6g} uV. Make "
                          "the data set again with the command in the package's report.")
    return recordings
