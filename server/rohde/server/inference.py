"""ONNX Runtime inference and the active-model slot with atomic hot swap.

`InferenceEngine` wraps one ORT session built from a validated model package. `ModelManager` holds
the active engine; activating another package loads and test-runs it first and only then replaces
the active one in a single reference assignment, so a failed activation leaves the running model
untouched. Each activation gets a new `generation`; a window is prepared for one generation and
run with exactly that engine (see `jobs.WindowJob`), so no batch mixes models.

Package names come from clients: a name must be a plain folder name inside the models folder (at most
255 characters, no separator, no leading dot, no link leading outside), else it is refused before the
file system is touched. The listing says `valid` only for a package that really loads (metadata,
checksum and an ONNX Runtime session that runs a test batch); the verdict is cached per package by the
size and modification time of its two files, so listing stays cheap. Every message names a package by
its folder name, never by an absolute path.

The provider reported everywhere (`InferenceEngine.provider`, /health, /ready, the log) is the one the real
session runs on (`session.get_providers()`), never the list asked for: onnxruntime-gpu lists CUDA as
available without a GPU or without the CUDA and cuDNN libraries, and then quietly runs on CPU. With
`require_gpu` a model whose session does not run on CUDA is refused (`GpuRequiredError`): at start-up the
server does not start, a later activation keeps the current model.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from rohde.core.errors import ModelPackageError
from rohde.core.model_package import METADATA_FILE, MODEL_FILE, ModelPackage, list_model_packages, load_model_package
from rohde.server.security import loggable

logger = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
MAX_NAME_CHARS = 255  # the longest folder name common file systems allow


def _runtime_message(exc: Exception, package: ModelPackage) -> str:
    """ONNX Runtime's text for `exc`, with the package's absolute path replaced by its folder name and
    cut short (ORT names the file it failed to load; the text reaches API clients)."""
    text = str(exc).replace(str(package.path.resolve()), package.path.name).replace(str(package.path),
                                                                                     package.path.name)
    return text if len(text) <= 300 else text[:300] + "..."


class GpuRequiredError(ModelPackageError):
    """A GPU is required (`require_gpu`) but ONNX Runtime cannot run the model on CUDA."""


def choose_providers(preferred: Sequence[str] | None = None, *, require_gpu: bool = False) -> list[str]:
    """The providers to ask for: `preferred` if given, else CUDA (when this build has it) then CPU.

    With `require_gpu` the list must hold CUDA and this ONNX Runtime build must offer it. That CUDA is
    offered does not mean it works: the session built with this list says which provider really runs.
    """
    available = ort.get_available_providers()
    if require_gpu and CUDA not in available:
        raise GpuRequiredError(
            f"A GPU is required (require_gpu) but this ONNX Runtime build offers only {available}: install "
            "onnxruntime-gpu in place of onnxruntime (pip install '.[gpu]' after uninstalling onnxruntime, or "
            "the image docker/Dockerfile.server-gpu), or start without --require-gpu to serve on CPU."
        )
    if preferred:
        unknown = [p for p in preferred if p not in available]
        if unknown:
            raise ModelPackageError(
                f"ONNX Runtime providers {unknown} are not available here; available: {available}."
            )
        if require_gpu and CUDA not in preferred:
            raise GpuRequiredError(f"A GPU is required (require_gpu) but the providers asked for, {list(preferred)}, "
                                   f"do not include {CUDA}; add it or leave providers unset.")
        return list(preferred)
    return [CUDA, CPU] if CUDA in available else [CPU]


class InferenceEngine:
    """One ORT session for one package; `run` maps `(batch, C, W)` float32 -> `(batch, n_classes)`."""

    def __init__(self, package: ModelPackage, *, providers: Sequence[str] | None = None,
                 require_gpu: bool = False, warmup_batch: int = 0) -> None:
        self.package = package
        meta = package.metadata
        options = ort.SessionOptions()
        # One thread: the server shares its cores with ingestion; batching gives the throughput.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        requested = choose_providers(providers, require_gpu=require_gpu)
        try:
            self.session = ort.InferenceSession(str(package.onnx_path), sess_options=options, providers=requested)
        except ModelPackageError:
            raise
        except Exception as exc:  # ORT raises its own untyped errors for unreadable graphs
            raise ModelPackageError(f"ONNX Runtime cannot load {MODEL_FILE} of package {package.path.name!r}: "
                                    f"{_runtime_message(exc, package)}") from exc
        # onnxruntime-gpu lists CUDA even without a GPU and silently falls back: report what is used.
        self.provider: str = self.session.get_providers()[0]
        if CUDA in requested and self.provider != CUDA:
            message = (f"CUDA was asked for model {loggable(meta.name)} but its ONNX Runtime session runs on "
                       f"{self.provider}: no usable GPU, or the CUDA 13 / cuDNN 9 libraries onnxruntime-gpu needs "
                       "are missing (docker/README.md, GPU image).")
            if require_gpu:
                raise GpuRequiredError(message + " Refused: a GPU is required (require_gpu).")
            logger.warning("%s Serving on CPU.", message)
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        if meta.input_name not in inputs or meta.output_name not in outputs:
            raise ModelPackageError(
                f"model.onnx has inputs {sorted(inputs)} and outputs {sorted(outputs)}; the metadata names "
                f"input {meta.input_name!r} and output {meta.output_name!r}."
            )
        self.n_classes = len(meta.labels)
        self._check_with_zeros()
        if warmup_batch > 2:
            # ORT's memory arena grows to the largest batch it has run and never shrinks: running the largest
            # batch the server will send once, now, makes that plateau the start-up footprint instead of a
            # slow climb whenever a rare large batch arrives (measured: +24 MB over a 30-minute soak).
            self.run(np.zeros((warmup_batch, meta.n_channels, meta.window_samples), dtype=np.float32))

    def _check_with_zeros(self) -> None:
        meta = self.package.metadata
        probe = np.zeros((2, meta.n_channels, meta.window_samples), dtype=np.float32)
        try:
            out = self.run(probe)
        except Exception as exc:
            raise ModelPackageError(f"Model {loggable(meta.name)} fails on a test batch of zeros: "
                                    f"{_runtime_message(exc, self.package)}") from exc
        if out.shape != (2, self.n_classes):
            raise ModelPackageError(
                f"Model {loggable(meta.name)} returns shape {out.shape} for a batch of 2; "
                f"expected (2, {self.n_classes})."
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


_Stamp = tuple[int, int, int, int]  # size and mtime_ns of metadata.json and model.onnx


class ModelManager:
    """Lists packages under `models_dir` and owns the active model."""

    def __init__(self, models_dir: Path, *, providers: Sequence[str] | None = None, keep_engines: int = 4,
                 require_gpu: bool = False, warmup_batch: int = 0) -> None:
        self.models_dir = Path(models_dir)
        self.warmup_batch = warmup_batch  # the inference loop's largest batch (see InferenceEngine)
        self.providers = list(providers) if providers else None
        self.require_gpu = require_gpu  # activate only models whose session really runs on CUDA
        self._lock = threading.Lock()
        self._active: ActiveModel | None = None
        self._engines: dict[int, InferenceEngine] = {}
        self._keep = keep_engines
        self.last_error: str | None = None
        self._verdicts: dict[str, tuple[_Stamp, dict[str, object]]] = {}
        self._verdicts_lock = threading.Lock()

    @property
    def active(self) -> ActiveModel | None:
        return self._active

    @property
    def active_provider(self) -> str | None:
        """The provider the active model's session really runs on; None without an active model."""
        active = self._active
        return None if active is None else active.engine.provider

    def engine_for(self, generation: int) -> InferenceEngine | None:
        return self._engines.get(generation)

    def available(self) -> list[dict[str, object]]:
        """Every package folder with whether it really loads (and why not)."""
        paths = list_model_packages(self.models_dir)
        with self._verdicts_lock:
            rows = [self._verdict(path) for path in paths]
            listed = {path.name for path in paths}
            for gone in set(self._verdicts) - listed:
                del self._verdicts[gone]
        return rows

    def _verdict(self, path: Path) -> dict[str, object]:
        stamp = _stamp(path)
        cached = self._verdicts.get(path.name)
        if stamp is not None and cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            package = self._load(path.name)
            InferenceEngine(package, providers=self.providers)  # built and test-run, then dropped
            meta = package.metadata
            row: dict[str, object] = {"name": path.name, "valid": True, "version": meta.version,
                                      "labels": meta.labels, "n_channels": meta.n_channels, "fs_hz": meta.fs_hz,
                                      "error": None}
        except ModelPackageError as exc:
            row = _invalid_row(path.name, str(exc))
        if stamp is not None:
            self._verdicts[path.name] = (stamp, row)
        return row

    def check_name(self, name: str) -> None:
        """Refuse a name that is not a plain folder name (what a client may ask to activate)."""
        problem = None
        if not name:
            problem = "is empty"
        elif len(name) > MAX_NAME_CHARS:
            problem = f"has {len(name)} characters (at most {MAX_NAME_CHARS})"
        elif any(sep in name for sep in ("/", "\\", "\0")) or name.startswith("."):
            problem = "holds a separator, a NUL or a leading dot"
        if problem:
            raise ModelPackageError(f"Model name {loggable(name)} {problem}: it is not a folder name in the "
                                    "models folder.")

    def resolve_path(self, name: str) -> Path:
        """The package folder `name` inside the models folder, or ModelPackageError saying why not."""
        self.check_name(name)
        path = self.models_dir / name
        try:
            exists = path.is_dir()
            inside = exists and path.resolve().parent == self.models_dir.resolve()
        except OSError as exc:
            raise ModelPackageError(f"Model package {loggable(name)} cannot be read "
                                    f"({exc.strerror or type(exc).__name__}).") from exc
        if not exists:
            known = [p.name for p in list_model_packages(self.models_dir)]
            raise ModelPackageError(f"No model package {loggable(name)} in the models folder; available: {known}.")
        if not inside:
            raise ModelPackageError(f"Model package {loggable(name)} is a link leading out of the models folder; "
                                    "packages are served only from inside it.")
        return path

    def _load(self, name: str) -> ModelPackage:
        """`load_model_package` behind the name check; an unexpected error of a hostile package is logged
        and refused like any other fault, since a package must never stop the server."""
        path = self.resolve_path(name)
        try:
            return load_model_package(path)
        except ModelPackageError:
            raise
        except Exception as exc:
            logger.exception("Reading model package %s failed unexpectedly.", loggable(name))
            raise ModelPackageError(f"Model package {loggable(name)} cannot be read ({type(exc).__name__}; the "
                                    "server log has the details).") from exc

    def activate(self, name: str) -> ActiveModel:
        """Load, check and activate package `name`; on any error the current model stays active."""
        with self._lock:
            try:
                package = self._load(name)
                engine = InferenceEngine(package, providers=self.providers, require_gpu=self.require_gpu,
                                         warmup_batch=self.warmup_batch)
            except ModelPackageError as exc:
                self.last_error = str(exc)
                logger.error("Model %s refused, keeping %s: %s", loggable(name), self.describe_active(),
                             loggable(exc, 600))
                raise
            generation = (self._active.generation + 1) if self._active else 1
            self._engines[generation] = engine
            for old in sorted(self._engines)[: -self._keep]:
                del self._engines[old]
            self._active = ActiveModel(generation, engine)  # the swap: one reference assignment
            self.last_error = None
            logger.info("Model %s v%s active (generation %d, provider %s).",
                        loggable(package.metadata.name), loggable(package.metadata.version), generation,
                        engine.provider)
            return self._active

    def describe_active(self) -> str:
        active = self._active
        return "no model" if active is None else loggable(active.package.metadata.name)


def _stamp(path: Path) -> _Stamp | None:
    """Size and modification time of a package's two files; None when either cannot be read."""
    try:
        meta, onnx = os.stat(path / METADATA_FILE), os.stat(path / MODEL_FILE)
    except OSError:
        return None
    return meta.st_size, meta.st_mtime_ns, onnx.st_size, onnx.st_mtime_ns


def _invalid_row(name: str, error: str) -> dict[str, object]:
    return {"name": name, "valid": False, "version": None, "labels": None, "n_channels": None, "fs_hz": None,
            "error": error}
