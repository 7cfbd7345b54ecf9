"""The model package contract: `models/<name>/model.onnx` plus `models/<name>/metadata.json`.

The ONNX graph takes `input_name` of shape `(batch, n_channels, window_samples)` float32: the
window after `StreamFilter` (with `preprocessing`) and `Normalization` (with `normalization`), channels
in stream order. The graph itself places channels on the grids with the stored `layout`. It returns
`output_name` of shape `(batch, n_classes)`: class probabilities in the order of `labels`.

`load_model_package` refuses a package whose files are missing, whose metadata is inconsistent or
whose ONNX checksum differs from `onnx_sha256`. A package is untrusted input: whatever its files hold
(bytes that are not UTF-8, JSON nested a thousand deep, a file of gigabytes, values of the wrong type),
reading it raises `ModelPackageError` and nothing else, and every message names the package by its
folder name only, never by an absolute path (the messages reach API clients).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rohde.core.alignment import AlignmentReference
from rohde.core.errors import ConfigError, ModelMetadataError, ModelPackageError
from rohde.core.layouts import ElectrodeLayout
from rohde.core.preprocessing import Normalization, PreprocessingConfig
from rohde.core.recording import Recording
from rohde.core.windows import WindowConfig

SCHEMA_VERSION = 1
MODEL_FILE = "model.onnx"
METADATA_FILE = "metadata.json"
# The shipped metadata is about 30 KB (its metrics included); anything near this cap is not metadata.
MAX_METADATA_BYTES = 4 << 20
# The deepest real metadata (metrics: condition -> figure -> list) is about 5 levels deep.
MAX_METADATA_DEPTH = 32


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
    # AlignmentReference.to_dict() of the training data (rohde.core.alignment), for label-free
    # re-alignment after the array is put on again; None for packages made without one.
    alignment: dict[str, Any] | None = None
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


def check_recording_fits(meta: ModelMetadata, rec: Recording) -> None:
    """Refuse a recording a package cannot score or be tuned on: other channel count, rate or gesture names."""
    where = f"{rec.subject}/{rec.session}/{rec.trial}"
    if rec.n_channels != meta.n_channels or rec.fs_hz != meta.fs_hz:
        raise ConfigError(f"Recording {where} has {rec.n_channels} channels at {rec.fs_hz} Hz; model {meta.name!r} "
                          f"expects {meta.n_channels} at {meta.fs_hz} Hz.")
    if list(rec.gesture_names) != list(meta.labels):
        raise ConfigError(f"Recording {where} names gestures {list(rec.gesture_names)}; the model's labels are "
                          f"{meta.labels}.")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_consistency(meta: ModelMetadata) -> tuple[ElectrodeLayout, PreprocessingConfig, Normalization, WindowConfig]:
    """Cross-field checks; returns the parsed parts or raises ModelPackageError naming the field."""
    try:
        return _check_consistency(meta)
    except ModelPackageError:
        raise
    except Exception as exc:  # the parts are arbitrary JSON handed to other modules' parsers
        raise ModelMetadataError(f"Metadata has an invalid part: {type(exc).__name__}: {_clip(str(exc))}") from exc


def _check_consistency(meta: ModelMetadata) -> tuple[ElectrodeLayout, PreprocessingConfig, Normalization,
                                                        WindowConfig]:
    if meta.schema_version != SCHEMA_VERSION:
        raise ModelMetadataError(
            f"schema_version is {meta.schema_version}; this RoHDE reads {SCHEMA_VERSION}. Re-export the model."
        )
    layout = ElectrodeLayout.from_dict(meta.layout)
    preprocessing = PreprocessingConfig.from_dict(meta.preprocessing)
    normalization = Normalization.from_dict(meta.normalization)
    windows = WindowConfig(meta.window_ms, meta.hop_ms)
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
    if meta.alignment is not None:
        reference = AlignmentReference.from_dict(meta.alignment)
        if len(reference.activity_uv) != meta.n_channels:
            problems.append(f"alignment has {len(reference.activity_uv)} channels for {meta.n_channels}")
    if problems:
        raise ModelMetadataError("Inconsistent model metadata: " + "; ".join(problems) + ".")
    return layout, preprocessing, normalization, windows


def _clip(text: str, limit: int = 200) -> str:
    """`text` cut to `limit` characters: parts of a hostile file must not flood logs and responses."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _depth(value: Any) -> int:
    """Nesting depth of parsed JSON, counted without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_METADATA_DEPTH:
            break
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return deepest


def _validation_summary(exc: ValidationError, limit: int = 5) -> str:
    """The first few field errors as `field: message`, without pydantic's echo of the input."""
    errors = exc.errors(include_url=False, include_input=False)
    parts = [f"{'.'.join(str(p) for p in e['loc']) or 'top level'}: {e['msg']}" for e in errors[:limit]]
    more = f" (and {len(errors) - limit} more)" if len(errors) > limit else ""
    return _clip("; ".join(parts), 600) + more


def read_metadata(path: str | Path) -> ModelMetadata:
    """Parse and type-check `path/metadata.json`; any fault of the file is a ModelMetadataError."""
    path = Path(path)
    where = f"{METADATA_FILE} of package {path.name!r}"
    try:
        with (path / METADATA_FILE).open("rb") as fh:
            raw = fh.read(MAX_METADATA_BYTES + 1)
    except OSError as exc:
        raise ModelMetadataError(f"The {where} cannot be read ({exc.strerror or type(exc).__name__}).") from exc
    if len(raw) > MAX_METADATA_BYTES:
        raise ModelMetadataError(f"The {where} is larger than {MAX_METADATA_BYTES} bytes; it is not model metadata.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ModelMetadataError(f"The {where} is not UTF-8 text (byte {exc.start} is invalid).") from exc
    try:
        data = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError as exc:
        raise ModelMetadataError(f"The {where} is nested too deeply to be model metadata.") from exc
    except ValueError as exc:  # JSONDecodeError, NaN or Infinity, integers too long to convert
        raise ModelMetadataError(f"The {where} is not valid JSON: {_clip(str(exc))}.") from exc
    if _depth(data) > MAX_METADATA_DEPTH:
        raise ModelMetadataError(f"The {where} is nested more than {MAX_METADATA_DEPTH} levels deep; "
                                "it is not model metadata.")
    try:
        return ModelMetadata.model_validate(data)
    except ValidationError as exc:
        raise ModelMetadataError(f"The {where} is not valid model metadata: {_validation_summary(exc)}.") from exc


def load_model_package(path: str | Path) -> ModelPackage:
    """Read and validate `path/metadata.json` and `path/model.onnx`."""
    path = Path(path)
    for required in (METADATA_FILE, MODEL_FILE):
        if not _is_file(path / required):
            raise ModelPackageError(f"Model package {path.name!r} has no {required}; it is not a model package.")
    meta = read_metadata(path)
    try:
        layout, preprocessing, normalization, windows = check_consistency(meta)
    except ModelMetadataError as exc:
        raise ModelMetadataError(f"Package {path.name!r}: {exc}") from exc
    try:
        actual = sha256_of(path / MODEL_FILE)
    except OSError as exc:
        raise ModelPackageError(f"The {MODEL_FILE} of package {path.name!r} cannot be read "
                                f"({exc.strerror or type(exc).__name__}).") from exc
    if actual != meta.onnx_sha256:
        raise ModelPackageError(
            f"Checksum of {MODEL_FILE} in package {path.name!r} is {actual}, metadata says {meta.onnx_sha256}: "
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


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError as exc:  # a name too long, a permission: not a readable file, say which package
        raise ModelPackageError(f"Package {path.parent.name[:64]!r} cannot be read "
                                f"({exc.strerror or type(exc).__name__}).") from exc


def _holds_metadata(folder: Path) -> bool:
    try:
        return (folder / METADATA_FILE).is_file()
    except OSError:
        return True  # unreadable: listed all the same, and loading it says why


def list_model_packages(root: str | Path) -> list[Path]:
    """Folders under `root` that hold a metadata file (valid or not)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if _holds_metadata(p))
