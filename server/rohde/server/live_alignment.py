"""Label-free alignment of one live stream to the model's training grid.

A `StreamAlignment` sits between a stream's `WindowAssembler` and the inference queue. When the active
model's package carries an alignment reference (`ModelMetadata.alignment`: the MAV map of its training
data), it collects the first `warmup_s` seconds of the stream's filtered signal from the windows
themselves (the newest hop of each accepted window, back in uV), estimates the grid's shift and gain
against the reference (`rohde.core.alignment.LiveAlignment`, the estimator the offline tools use), and
from then on moves every window back onto the training grid before it is queued: the same linear map
as offline (`alignment_matrix`), taken into the normalised domain (`normalized_matrix`). A grid that
did not move snaps to no shift, so only the gain is corrected.

Disturbed channels stay out of the warm-up map (`LiveAlignment.collect` with `WindowJob.bad_channels`): each
channel's mean absolute value is taken over the windows in which the channel-quality estimate did not flag it,
and a channel flagged in more than half of the warm-up (`MIN_GOOD_SHARE`) is left out of the map's comparison
with the reference (`estimate_shift(known=...)`), so a tapped or lifted patch of electrodes during the first
seconds cannot pull the estimate towards a shift that is not there.
Rejected windows (`reject_reason`) are left out whole.

States (`/streams`, `GET /streams/{id}/alignment`): `disabled` (the server setting is off, or the
stream was switched off by `DELETE`), `unavailable` (the model carries no reference; `reason` says
so), `collecting`, `aligned` (an estimate is applied: `applied` says whether a shift or the gain only)
and `rejected` (the estimate's map correlation is under `min_score`: nothing applied). `restart`
(`POST`) collects again; a new model (hot swap) starts over with that model's reference.

Pure state behind one lock: `process` runs on the stream's worker thread, `restart`, `disable` and
`snapshot` on the API's. The estimate itself runs once per collection, outside the lock. A reference of
several subjects is searched map by map (the pooled map and each subject's; the best-correlated wins,
`reference` in the snapshot names it), sharing the moves built for the first: the shipped package (192
channels, four maps) takes 0.06 s of CPU on an idle 2-core machine (0.26 s before the moves were kept as four
weighted sources per channel instead of dense matrices).
The server runs it on one thread shared by every stream (`ALIGNMENT_POOL`), not on the stream's own: inline,
that stream's windows waited for it, and streams that start together finish their warm-ups together, so every
stream of a server stalled at once (measured: 10 streams, every window late by up to 6-8 s; now 0.1-0.2 s,
`bench/PROFILE.md`, round 6). Meanwhile the windows pass as they come, as during the warm-up; the windows after the
estimate are moved.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from concurrent.futures import Executor
from enum import StrEnum
from typing import Any

import numpy as np

from rohde.core.alignment import AlignmentReference, GridShift, LiveAlignment, resampling_matrix
from rohde.core.errors import ConfigError
from rohde.core.model_package import ModelPackage
from rohde.server.jobs import WindowJob
from rohde.server.threads import SharedThread

logger = logging.getLogger(__name__)

# Where the server's streams estimate their alignment: one thread for all, off the streams' own threads.
ALIGNMENT_POOL = SharedThread("alignment")


class AlignmentState(StrEnum):
    DISABLED = "disabled"
    UNAVAILABLE = "unavailable"
    COLLECTING = "collecting"
    ALIGNED = "aligned"
    REJECTED = "rejected"


def expected_reference(package: ModelPackage) -> AlignmentReference:
    """The activity map the package's input expects: its training reference, moved by the shift a
    calibration baked into the graph (`rohde calibrate` keeps the training reference in the metadata and
    records the shift in `training_data["calibration"]["alignment"]`). Against it, the session the
    package was calibrated on finds no shift again, and only a later move is corrected."""
    meta = package.metadata
    if meta.alignment is None:
        raise ConfigError(f"Model {meta.name!r} carries no alignment reference.")
    reference = AlignmentReference.from_dict(meta.alignment)
    calibration = meta.training_data.get("calibration")
    baked = calibration.get("alignment") if isinstance(calibration, dict) else None
    if not baked:
        return reference
    try:
        shift = GridShift.from_dict(baked["shift"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"Model {meta.name!r}: the calibration's alignment is malformed ({exc!r}).") from exc
    return reference.moved(resampling_matrix(package.layout, shift, include_gain=True))


class StreamAlignment:
    """One stream's live alignment: `use_model`, `process` each window, `restart` / `disable` on request."""

    def __init__(self, stream_id: str, *, enabled: bool, warmup_s: float, min_score: float,
                 executor: Executor | None = None) -> None:
        """`executor`: where the estimate runs (None: in the `process` call that completes the warm-up)."""
        if warmup_s <= 0:
            raise ConfigError(f"alignment_warmup_s must be positive, got {warmup_s}.")
        self.stream_id = stream_id
        self._enabled = enabled
        self._warmup_s = warmup_s
        self._min_score = min_score
        self._lock = threading.Lock()
        self._live: LiveAlignment | None = None
        self._hop = 1  # samples a window adds to the one before
        self._scale = np.ones(0, dtype=np.float32)  # (C,) the model's normalisation, to get back to uV
        self._generation = 0
        self._reason = "no model yet"
        self._estimated_at: float | None = None
        self._token = 0  # bumped by every restart, switch-off and model: an estimate made before is dropped
        self._executor = executor
        self._pending: int | None = None  # the token of the collection whose estimate is being made elsewhere

    def use_model(self, package: ModelPackage, generation: int) -> None:
        """Follow model `generation`; a new one starts over with its own reference (or none)."""
        with self._lock:
            if generation == self._generation:
                return
            self._generation = generation
            self._token += 1
            self._pending = None
            self._live = None
            self._estimated_at = None
            meta = package.metadata
            self._hop = package.windows.hop_samples(meta.fs_hz)
            self._scale = np.asarray(package.normalization.scale_uv, dtype=np.float32)
            if meta.alignment is None:
                self._reason = (f"model {meta.name!r} carries no alignment reference (rohde train stores one in every "
                                "package; rohde reference adds it to an older package)")
                return
            try:
                reference = expected_reference(package)
                self._live = LiveAlignment(reference, package.layout, meta.fs_hz, warmup_s=self._warmup_s,
                                           min_score=self._min_score, scale_uv=package.normalization.scale_uv)
            except ConfigError as exc:
                self._reason = f"model {meta.name!r}: {exc}"
                return
            self._reason = ""

    def restart(self) -> None:
        """Collect again from the next window on (and switch alignment on for this stream)."""
        self._reset(enabled=True)
        logger.info("Stream %s: alignment collects again.", self.stream_id)

    def disable(self) -> None:
        """No alignment for this stream until `restart`: windows pass unchanged."""
        self._reset(enabled=False)
        logger.info("Stream %s: alignment switched off.", self.stream_id)

    def _reset(self, *, enabled: bool) -> None:
        # A new token drops any estimate still running for the previous collection.
        with self._lock:
            self._enabled = enabled
            self._token += 1
            self._pending = None
            self._estimated_at = None
            if self._live is not None:
                self._live.restart()

    def process(self, job: WindowJob) -> WindowJob:
        """Take the window's newest samples while collecting; move it once an estimate is applied."""
        with self._lock:
            live = self._live
            if not self._enabled or live is None:
                return job
            if live.estimate is None:
                # Rejected windows stay out of the map, and so do the channels flagged bad in the others.
                if job.reject_reason is not None or self._pending == self._token:
                    return job
                chunk = job.window[:, -self._hop:].T  # (hop, C) normalised: filtered uV / scale
                if not live.collect(chunk, job.bad_channels, scale=self._scale):
                    return job
                activity, known, token = live.activity(), live.known, self._token
                self._pending = token
            else:
                if live.matrix is None:
                    return job
                return dataclasses.replace(job, window=np.ascontiguousarray(live.align_window(job.window)))
        # The warm-up is complete: the search runs outside the lock, so /streams never waits for it.
        if self._executor is None:
            self._estimate(live, token, activity, known)
        else:
            self._executor.submit(self._estimate, live, token, activity, known)
        return job

    def _estimate(self, live: LiveAlignment, token: int, activity: np.ndarray, known: np.ndarray) -> None:
        try:
            estimate = live.estimate_from(activity, known)
        except Exception:  # on the shared thread nobody else would see it; the stream goes on unaligned
            logger.exception("Stream %s: the alignment estimate failed; windows pass unaligned until a restart.",
                             self.stream_id)
            return
        with self._lock:
            if token != self._token or live is not self._live or live.estimate is not None:
                return  # restarted, switched off or another model meanwhile: this estimate is stale
            live.accept(estimate)
            self._estimated_at = time.time()
            self._pending = None
            state = live.state
        s = estimate.shift
        logger.info("Stream %s: alignment %s, %+.2f rows, %+.2f cols, gain %.2f (map correlation %.2f, unshifted "
                    "%.2f; %d channels flagged for most of the warm-up left out).",
                    self.stream_id, state, s.rows, s.cols, s.gain, estimate.score, estimate.score_unshifted,
                    int((~known).sum()))  # fmt: skip

    def snapshot(self) -> dict[str, Any]:
        """What `/streams` shows (`api_models.StreamAlignmentReport`)."""
        with self._lock:
            live = self._live
            if not self._enabled:
                state, reason = AlignmentState.DISABLED, "switched off"
            elif live is None:
                state, reason = AlignmentState.UNAVAILABLE, self._reason
            elif live.estimate is None:
                state, reason = AlignmentState.COLLECTING, ""
            elif live.matrix is None:
                state = AlignmentState.REJECTED
                reason = (f"map correlation {live.estimate.score:.2f} is under {self._min_score:g}: the first "
                          "seconds did not show the gestures' pattern clearly; nothing applied")
            else:
                state, reason = AlignmentState.ALIGNED, ""
            estimate = live.estimate if live is not None and self._enabled else None
            applied = None
            if estimate is not None:
                applied = "none" if state == AlignmentState.REJECTED else "shift" if estimate.moved else "gain_only"
            return {
                "state": state.value,
                "reason": reason,
                "collected_s": round(live.collected_s, 2) if live is not None and self._enabled else 0.0,
                "warmup_s": self._warmup_s,
                "applied": applied,
                "shift": None if estimate is None else {"rows": estimate.shift.rows, "cols": estimate.shift.cols,
                                                        "gain": estimate.shift.gain},
                "score": None if estimate is None else estimate.score,
                "score_unshifted": None if estimate is None else estimate.score_unshifted,
                "reference": None if estimate is None else estimate.reference,
                "estimated_at": self._estimated_at,
                "model_generation": self._generation,
            }
