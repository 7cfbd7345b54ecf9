"""Model-package validation: missing files, wrong checksum, inconsistent metadata."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rohde.core.errors import ModelPackageError
from rohde.core.layouts import flexemg_layout
from rohde.core.model_package import (
    METADATA_FILE,
    MODEL_FILE,
    ModelMetadata,
    list_model_packages,
    load_model_package,
    sha256_of,
    write_metadata,
)
from rohde.core.preprocessing import Normalization, PreprocessingConfig


def _package(root: Path) -> Path:
    path = root / "pkg"
    path.mkdir()
    (path / MODEL_FILE).write_bytes(b"stand-in bytes: validation reads only the checksum")
    layout = flexemg_layout()
    meta = ModelMetadata(
        name="pkg",
        version="1",
        created_utc="2026-01-01T00:00:00Z",
        labels=["rest", "fist", "open"],
        fs_hz=1000.0,
        n_channels=64,
        layout=layout.to_dict(),
        channel_map=layout.channel_map(),
        window_ms=200.0,
        hop_ms=50.0,
        window_samples=200,
        preprocessing=PreprocessingConfig(fs_hz=1000.0, notch_hz=60.0).to_dict(),
        normalization=Normalization(scale_uv=tuple([10.0] * 64)).to_dict(),
        input_name="emg",
        input_shape=["batch", 64, 200],
        output_name="probabilities",
        output_shape=["batch", 3],
        onnx_sha256=sha256_of(path / MODEL_FILE),
    )
    write_metadata(path, meta)
    return path


def test_valid_package_loads(tmp_path: Path) -> None:
    package = load_model_package(_package(tmp_path))
    assert package.layout == flexemg_layout()
    assert package.windows.window_samples(package.metadata.fs_hz) == 200
    assert list_model_packages(tmp_path) == [tmp_path / "pkg"]


def test_missing_files_are_refused(tmp_path: Path) -> None:
    path = _package(tmp_path)
    (path / MODEL_FILE).unlink()
    with pytest.raises(ModelPackageError, match="no model.onnx"):
        load_model_package(path)
    with pytest.raises(ModelPackageError, match="no metadata.json"):
        load_model_package(tmp_path / "elsewhere")


def test_checksum_mismatch_is_refused(tmp_path: Path) -> None:
    path = _package(tmp_path)
    (path / MODEL_FILE).write_bytes(b"tampered")
    with pytest.raises(ModelPackageError, match="Checksum"):
        load_model_package(path)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("n_channels", 65, "layout has 64 channels"),
        ("window_samples", 100, "window_ms"),
        ("output_shape", ["batch", 4], "output_shape"),
        ("labels", ["rest", "rest", "open"], "not unique"),
        ("schema_version", 99, "schema_version"),
        ("unexpected_field", 1, "not valid model metadata"),
        ("fs_hz", -1, "not valid model metadata"),
    ],
)
def test_inconsistent_metadata_is_refused(tmp_path: Path, field: str, value: object, message: str) -> None:
    path = _package(tmp_path)
    meta = json.loads((path / METADATA_FILE).read_text())
    meta[field] = value
    (path / METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(ModelPackageError, match=message):
        load_model_package(path)
