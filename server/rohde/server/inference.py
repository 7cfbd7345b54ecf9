"""ONNX Runtime inference and the active-model slot with atomic hot swap.

`InferenceEngine` wraps one ORT session built from a validated model package. `ModelManager` holds
the active engine; activating another package loads and test-runs it first and only then replaces
the active one in a single reference assignment, so a failed activation leaves the running model
untouched. Each activation gets a new `generation`; a window is prepared for one generation and
run with exactly that engine (see `jobs.WindowJob`), so no batch mixes models.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from rohde.core.errors import ModelPackageError
from rohde.core.model_package import ModelPackage, list_model_packages, load_model_package

logger = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def choose_providers(preferred: Sequence[str] | None = None) -> list[str]:
    """The providers to ask for: `preferred` if given, else CUDA (when this build has it) then CPU."""
    available = ort.get_available_providers()
    if preferred:
        unknown = [p for p in preferred if p not in available]
        if unknown:
            raise ModelPackageError(
                f"ONNX Runtime providers {unknown} are not available here; available: {available}."
            )
        return list(preferred)
    return [CUDA, CPU] if CUDA in available else [CPU]


class InferenceEngine:
    """One ORT session for one package; `run` maps `(batch, C, W)` float32 -> `(batch, n_classes)`."""

    def __init__(self, package: ModelPackage, *, providers: Sequence[str] | None = None) -> None:
        self.package = package
        meta = package.metadata
        options = ort.SessionOptions()
        # One thread: the server shares its cores with ingestion; batching gives the throughput.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                str(package.onnx_path), sess_options=options, providers=choose_providers(providers)
            )
        except ModelPackageError:
            raise
        except Exception as exc:  # ORT raises its own untyped errors for unreadable graphs
            raise ModelPackageError(f"ONNX Runtime cannot load {str(package.onnx_path)!r}: {exc}") from exc
        # onnxruntime-gpu lists CUDA even without a GPU and silently falls back: report what is used.
        self.provider = self.session.get_providers()[0]
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        if meta.input_name not in inputs or meta.output_name not in outputs:
            raise ModelPackageError(
                f"model.onnx has inputs {sorted(inputs)} and outputs {sorted(outputs)}; the metadata names "
                f"input {meta.input_name!r} and output {meta.output_name!r}."
            )
        self.n_classes = len(meta.labels)
        self._check_with_zeros()

    def _check_with_zeros(self) -> None:
        meta = self.package.metadata
        probe = np.zeros((2, meta.n_channels, meta.window_samples), dtype=np.float32)
        try:
            out = self.run(probe)
        except Exception as exc:
            raise ModelPackageError(f"Model {meta.name!r} fails on a test batch of zeros: {exc}") from exc
        if out.shape != (2, self.n_classes):
            raise ModelPackageError(
                f"Model {meta.name!r} returns shape {out.shape} for a batch of 2; expected (2, {self.n_classes})."
            )

    def run(self, batch: np.ndarray) -> np.ndarray:
        meta = self.package.metadata
        (out,) = self.session.run([meta.output_name], {meta.input_name: batch})
        return np.asarray(out, dtype=np.float32)


@dataclass(frozen=True)
class ActiveModel:
    generation: int
    engine: InferenceEngine

    @property
    def package(self) -> ModelPackage:
        return self.engine.package


class ModelManager:
    """Lists packages under `models_dir` and owns the active model."""

    def __init__(self, models_dir: Path, *, providers: Sequence[str] | None = None, keep_engines: int = 4) -> None:
        self.models_dir = Path(models_dir)
        self.providers = list(providers) if providers else None
        self._lock = threading.Lock()
        self._active: ActiveModel | None = None
        self._engines: dict[int, InferenceEngine] = {}
        self._keep = keep_engines
        self.last_error: str | None = None

    @property
    def active(self) -> ActiveModel | None:
        return self._active

    def engine_for(self, generation: int) -> InferenceEngine | None:
        return self._engines.get(generation)

    def available(self) -> list[dict[str, object]]:
        """Every package folder with whether it validates (and why not)."""
        rows: list[dict[str, object]] = []
        for path in list_model_packages(self.models_dir):
            try:
                meta = load_model_package(path).metadata
                rows.append({"name": path.name, "valid": True, "version": meta.version, "labels": meta.labels,
                             "n_channels": meta.n_channels, "fs_hz": meta.fs_hz, "error": None})
            except ModelPackageError as exc:
                rows.append({"name": path.name, "valid": False, "version": None, "labels": None,
                             "n_channels": None, "fs_hz": None, "error": str(exc)})
        return rows

    def resolve_path(self, name: str) -> Path:
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise ModelPackageError(f"Model name {name!r} is not a folder name under {str(self.models_dir)!r}.")
        path = self.models_dir / name
        if not path.is_dir():
            known = [p.name for p in list_model_packages(self.models_dir)]
            raise ModelPackageError(f"No model package {name!r} in {str(self.models_dir)!r}; available: {known}.")
        return path

    def activate(self, name: str) -> ActiveModel:
        """Load, check and activate package `name`; on any error the current model stays active."""
        with self._lock:
            try:
                package = load_model_package(self.resolve_path(name))
                engine = InferenceEngine(package, providers=self.providers)
            except ModelPackageError as exc:
                self.last_error = str(exc)
                logger.error("Model %r refused, keeping %s: %s", name, self.describe_active(), exc)
                raise
            generation = (self._active.generation + 1) if self._active else 1
            self._engines[generation] = engine
            for old in sorted(self._engines)[: -self._keep]:
                del self._engines[old]
            self._active = ActiveModel(generation, engine)  # the swap: one reference assignment
            self.last_error = None
            logger.info("Model %r v%s active (generation %d, provider %s).",
                        package.metadata.name, package.metadata.version, generation, engine.provider)
            return self._active

    def describe_active(self) -> str:
        active = self._active
        return "no model" if active is None else f"{active.package.metadata.name!r}"
