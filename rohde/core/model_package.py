"""The model package contract: `models/<name>/model.onnx` plus `models/<name>/metadata.json`.

The ONNX graph takes `input_name` of shape `(batch, n_channels, window_samples)` float32: the
window after `StreamFilter` (with `preprocessing`) and `Normalization` (with `normalization`), channels
in stream order. The graph itself places channels on the grids with the stored `layout`. It returns
`output_name` of shape `(batch, n_classes)`: class probabilities in the order of `labels`.

`load_model_package` refuses a package whose files are missing, whose metadata is inconsistent or
whose ONNX checksum differs from `onnx_sha256`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rohde.core.errors import ModelPackageError, RohdeError
from rohde.core.layouts import ElectrodeLayout
from rohde.core.preprocessing import Normalization, PreprocessingConfig
from rohde.core.windows import WindowConfig

SCHEMA_VERSION = 1
MODEL_FILE = "model.onnx"
METADATA_FILE = "metadata.json"


class ModelMetadata(BaseModel):
    """Everything needed to use `model.onnx`; written by training, read by serving."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    schema_version: int = SCHEMA_VERSION
    name: str
    version: str
    created_utc: str
    labels: list[str] = Field(min_length=2)
    fs_hz: float = Field(gt=0)
    n_channels: int = Field(gt=0)
    layout: dict[str, Any]  # ElectrodeLayout.to_dict(): the explicit channel -> (grid, row, col) map
    channel_map: list[dict[str, int]]  # ElectrodeLayout.channel_map(), for readers without RoHDE
    window_ms: float = Field(gt=0)
    hop_ms: float = Field(gt=0)
    window_samples: int = Field(gt=0)
    preprocessing: dict[str, Any]  # PreprocessingConfig.to_dict()
    normalization: dict[str, Any]  # Normalization.to_dict()
    input_name: str
    input_shape: list[int | str]  # ["batch", n_channels, window_samples]
    input_dtype: str = "float32"
    output_name: str
    output_shape: list[int | str]  # ["batch", n_classes]
    training_data: dict[str, Any] = Field(default_factory=dict)  # what it was trained on
    metrics: dict[str, Any] = Field(default_factory=dict)  # per-condition evaluation results
    onnx_sha256: str = Field(min_length=64, max_length=64)


@dataclass(frozen=True)
class ModelPackage:
    """A validated package on disk."""

    path: Path
    metadata: ModelMetadata
    layout: ElectrodeLayout
    preprocessing: PreprocessingConfig
    normalization: Normalization
    windows: WindowConfig

    @property
    def onnx_path(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def name(self) -> str:
        return self.metadata.name


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_consistency(meta: ModelMetadata) -> tuple[ElectrodeLayout, PreprocessingConfig, Normalization, WindowConfig]:
    """Cross-field checks; returns the parsed parts or raises ModelPackageError naming the field."""
    if meta.schema_version != SCHEMA_VERSION:
        raise ModelPackageError(
            f"schema_version is {meta.schema_version}; this RoHDE reads {SCHEMA_VERSION}. Re-export the model."
        )
    try:
        layout = ElectrodeLayout.from_dict(meta.layout)
        preprocessing = PreprocessingConfig.from_dict(meta.preprocessing)
        normalization = Normalization.from_dict(meta.normalization)
        windows = WindowConfig(meta.window_ms, meta.hop_ms)
    except (RohdeError, KeyError, TypeError, ValueError) as exc:
        raise ModelPackageError(f"Metadata has an invalid part: {exc}") from exc
    problems = []
    if layout.n_channels != meta.n_channels:
        problems.append(f"layout has {layout.n_channels} channels, n_channels is {meta.n_channels}")
    if layout.channel_map() != meta.channel_map:
        problems.append("channel_map differs from the layout's map")
    if preprocessing.fs_hz != meta.fs_hz:
        problems.append(f"preprocessing.fs_hz {preprocessing.fs_hz} differs from fs_hz {meta.fs_hz}")
    if len(normalization.scale_uv) != meta.n_channels:
        problems.append(f"normalization has {len(normalization.scale_uv)} scales for {meta.n_channels} channels")
    if windows.window_samples(meta.fs_hz) != meta.window_samples:
        problems.append(f"window_ms {meta.window_ms} at {meta.fs_hz} Hz is not {meta.window_samples} samples")
    if meta.input_shape[1:] != [meta.n_channels, meta.window_samples]:
        problems.append(f"input_shape {meta.input_shape} is not [batch, {meta.n_channels}, {meta.window_samples}]")
    if meta.output_shape[1:] != [len(meta.labels)]:
        problems.append(f"output_shape {meta.output_shape} does not match {len(meta.labels)} labels")
    if len(set(meta.labels)) != len(meta.labels):
        problems.append("labels are not unique")
    if problems:
        raise ModelPackageError("Inconsistent model metadata: " + "; ".join(problems) + ".")
    return layout, preprocessing, normalization, windows


def load_model_package(path: str | Path) -> ModelPackage:
    """Read and validate `path/metadata.json` and `path/model.onnx`."""
    path = Path(path)
    meta_path, onnx_path = path / METADATA_FILE, path / MODEL_FILE
    for required in (meta_path, onnx_path):
        if not required.is_file():
            raise ModelPackageError(f"Model package {str(path)!r} has no {required.name}; it is not a model package.")
    try:
        meta = ModelMetadata.model_validate(json.loads(meta_path.read_text()))
    except (json.JSONDecodeError, ValidationError) as exc:
        raise ModelPackageError(f"{str(meta_path)!r} is not valid model metadata: {exc}") from exc
    layout, preprocessing, normalization, windows = check_consistency(meta)
    actual = sha256_of(onnx_path)
    if actual != meta.onnx_sha256:
        raise ModelPackageError(
            f"Checksum of {str(onnx_path)!r} is {actual}, metadata says {meta.onnx_sha256}: "
            "the file was changed or belongs to another package."
        )
    return ModelPackage(path, meta, layout, preprocessing, normalization, windows)


def write_metadata(path: str | Path, meta: ModelMetadata) -> Path:
    """Write metadata.json beside an existing model.onnx, after checking it is consistent."""
    path = Path(path)
    check_consistency(meta)
    target = path / METADATA_FILE
    target.write_text(json.dumps(meta.model_dump(mode="json"), indent=2) + "\n")
    return target


def list_model_packages(root: str | Path) -> list[Path]:
    """Folders under `root` that hold a metadata file (valid or not)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / METADATA_FILE).is_file())
