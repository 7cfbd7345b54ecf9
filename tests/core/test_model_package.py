"""Model-package validation: missing files, wrong checksum, inconsistent, undecodable or hostile metadata."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rohde.core.errors import ModelMetadataError, ModelPackageError
from rohde.core.layouts import flexemg_layout
from rohde.core.model_package import (
    MAX_METADATA_BYTES,
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


def _assert_refused_by_name_only(path: Path, match: str) -> ModelPackageError:
    with pytest.raises(ModelPackageError, match=match) as refused:
        load_model_package(path)
    assert isinstance(refused.value, ModelMetadataError)
    assert str(path.parent) not in str(refused.value) and repr(path.name) in str(refused.value)
    return refused.value


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b'{"name": "caf\xe9"}', "not UTF-8 text"),
        ("\ufeff{}".encode(), "not valid JSON"),
        (b'{"name": ', "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"metrics": ' + b"[" * 200 + b"]" * 200 + b"}", "more than 32 levels deep"),
        (b'{"fs_hz": NaN}', "NaN is not a JSON number"),
        (b'{"n_channels": ' + b"9" * 5000 + b"}", "not valid JSON"),
        (b"[1, 2, 3]", "not valid model metadata: top level"),
        (b'"just a string"', "not valid model metadata"),
        (b"\x00\x01\x02", "not valid JSON"),
    ],
    ids=["latin-1", "bom", "truncated", "recursion", "deep", "nan", "long-int", "list", "string", "binary"],
)
def test_undecodable_metadata_is_a_package_error(tmp_path: Path, content: bytes, match: str) -> None:
    path = _package(tmp_path)
    (path / METADATA_FILE).write_bytes(content)
    _assert_refused_by_name_only(path, match)


def test_metadata_over_the_size_cap_is_not_read(tmp_path: Path) -> None:
    path = _package(tmp_path)
    (path / METADATA_FILE).write_bytes(b" " * (MAX_METADATA_BYTES + 1))
    _assert_refused_by_name_only(path, "larger than")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("layout", {"grids": "not a list"}),
        ("layout", {}),
        ("preprocessing", {"fs_hz": "fast"}),
        ("normalization", {"scale_uv": [[1.0]]}),
        ("window_ms", 1e308),
        ("channel_map", [{"channel": "x"}]),
    ],
)
def test_wrongly_typed_parts_are_a_package_error(tmp_path: Path, field: str, value: object) -> None:
    path = _package(tmp_path)
    meta = json.loads((path / METADATA_FILE).read_text())
    meta[field] = value
    (path / METADATA_FILE).write_text(json.dumps(meta))
    message = str(_assert_refused_by_name_only(path, "metadata|invalid part"))
    assert "Traceback" not in message and len(message) < 1200


def test_refusals_never_name_an_absolute_path(tmp_path: Path) -> None:
    path = _package(tmp_path)
    (path / MODEL_FILE).write_bytes(b"tampered")
    with pytest.raises(ModelPackageError, match="Checksum of model.onnx in package 'pkg'") as refused:
        load_model_package(path)
    assert str(tmp_path) not in str(refused.value)
    (path / MODEL_FILE).unlink()
    with pytest.raises(ModelPackageError, match="'pkg' has no model.onnx") as missing:
        load_model_package(path)
    assert str(tmp_path) not in str(missing.value)


def test_a_name_too_long_for_the_file_system_is_a_package_error(tmp_path: Path) -> None:
    with pytest.raises(ModelPackageError, match="cannot be read"):
        load_model_package(tmp_path / ("x" * 300))
