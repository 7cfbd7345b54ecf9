"""Conditional WGAN-GP that learns what electrode disturbances (CA, LC) look like in raw HD-EMG.

What the GAN models
-------------------
Real data never show the disturbance alone: a disturbed recording holds the disturbance *and*
the EMG underneath, and the clean EMG under a disturbed electrode is not observable. So the GAN
learns the observable thing: the **raw disturbed multi-channel segment of the affected region**
(`(n_region_channels, segment_samples)`, microvolts, before any filtering), conditioned on the
disturbance type. Training segments come from disturbed recordings only (`extract_disturbance_segments`).

How a generated segment enters a clean recording (`DisturbanceGAN.splice`) depends on the physics:

- **LC (loose contact) replaces.** The electrode lost the skin: what it records is the disturbed
  signal (attenuated EMG, drift, mains pick-up), not the clean EMG plus something. The generated
  region replaces the clean region.
- **CA (contact artifact) adds.** A pen strike is an electrode-skin transient that sums with the
  EMG, which is still there between strikes. The generated segment also carries EMG-level activity
  between its strikes, so adding all of it raises the EMG-band power of the region a little beyond
  the disturbance alone. `splice(..., ca_gated=True)` adds only the parts whose 10 ms envelope
  clearly exceeds the EMG level (`ca_gate`). The default adds everything, because that was measured
  closer to real CA trials after the band-pass (median region RMS: real 65 uV, clean 21 uV, spliced
  50 uV ungated vs 26 uV gated on held-out simulated recordings): the generator's strikes are still
  weaker than real ones, and gating them leaves too little disturbance.
- Any other condition replaces (the conservative choice: the region shows what was learned).

Each training segment loses its per-channel mean first (`remove_segment_mean`): the GAN models what
happens within a segment, not DC offsets or slow baseline wander, which the band-pass removes anyway
and which, tiled, would put a step at every join.

Amplitude: CA transients reach hundreds of uV to mV while EMG is tens of uV, so the networks work on
a signed-log signal `sign(x) * log1p(|x| / scale)` with one stored `scale` per condition (by default the
75th percentile of |x| of its training segments, `GANConfig.scale_percentile`), and the inverse is
clipped to 1.25 x the largest training value.

GANConfig, the networks and the scaling are in `gan_models.py`; the quality figures and the plot are
in `gan_quality.py`.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rohde.core.errors import ConfigError, RohdeError
from rohde.core.recording import Recording
from rohde.training.distributed import (
    average_gradients,
    broadcast_from_main,
    current_world,
    require_same_on_all_ranks,
    sum_over_ranks,
)
from rohde.training.gan_models import (
    Critic,
    GANConfig,
    Generator,
    amplitude_scale,
    gradient_penalty,
    inverse_signed_log,
    make_generator,
    remove_segment_mean,
    signed_log,
)

logger = logging.getLogger(__name__)

MODEL_FORMAT_VERSION = 2  # 2: linear upsampling and noise inputs in the generator
_MODEL_JSON = "gan.json"
_MODEL_WEIGHTS = "generator.pt"
CHECKPOINT_NAME = "checkpoint.pt"
# Conditions whose generated region is added to the clean signal; every other one replaces it.
ADDITIVE_CONDITIONS = frozenset({"CA"})
_CA_GATE_WINDOW_MS = 10.0  # envelope window of the CA gate
_CA_GATE_START = 2.0  # envelope / EMG RMS at which the gate starts to open
_CA_GATE_FULL = 4.0  # envelope / EMG RMS at which it is fully open
_GAUSS_RMS_PER_MEDIAN_ABS = 1.4826  # RMS of a Gaussian in units of its median |x|


# ----------------------------------------------------------------------------- data


def extract_disturbance_segments(
    recordings: Sequence[Recording],
    *,
    condition: str,
    segment_ms: float,
    hop_ms: float,
    region_channels: Sequence[int] | None = None,
) -> np.ndarray:
    """Raw segments `(N, n_region_channels, T)` float32 uV of the affected region of disturbed recordings.

    Only recordings whose `condition` equals `condition` are used. The region is `region_channels`
    or, by default, `rohde.simulation.disturbances.affected_channels(layout, condition)`. When a recording
    has a `disturbance_mask`, segments are taken from the disturbed episode only (first to last
    sample where the mask is set in the region); the whole episode, so the quiet stretches between
    CA strikes keep their share. Without a mask (real data), the whole recording is used.
    """
    if segment_ms <= 0 or hop_ms <= 0:
        raise ConfigError(f"segment_ms and hop_ms must be positive, got {segment_ms} and {hop_ms}.")
    chosen = [r for r in recordings if r.condition == condition]
    if not chosen:
        found = sorted({r.condition for r in recordings})
        raise ConfigError(f"No recording has condition {condition!r} (conditions given: {found}).")
    fs_values = {r.fs_hz for r in chosen}
    if len(fs_values) != 1:
        raise ConfigError(f"Recordings of condition {condition!r} mix sampling rates {sorted(fs_values)}.")
    fs_hz = fs_values.pop()
    seg = max(1, int(round(segment_ms * fs_hz / 1000.0)))
    hop = max(1, int(round(hop_ms * fs_hz / 1000.0)))
    parts: list[np.ndarray] = []
    n_region = -1
    for rec in chosen:
        region = list(region_channels) if region_channels is not None else _affected_channels(rec, condition)
        if not region or min(region) < 0 or max(region) >= rec.n_channels:
            raise ConfigError(
                f"Region channels of {condition!r} must be non-empty and within 0..{rec.n_channels - 1}, got {region}."
            )
        if n_region not in (-1, len(region)):
            raise ConfigError(f"Recordings of condition {condition!r} have regions of different sizes.")
        n_region = len(region)
        start, stop = 0, rec.n_samples
        if rec.disturbance_mask is not None:
            active = np.flatnonzero(rec.disturbance_mask[:, region].any(axis=1))
            if active.size == 0:
                logger.info("Recording %s/%s/%s has no disturbed sample in the region; skipped.",
                            rec.subject, rec.session, rec.trial)  # fmt: skip
                continue
            start, stop = int(active[0]), int(active[-1]) + 1
        starts = np.arange(start, stop - seg + 1, hop)
        if starts.size == 0:
            continue
        idx = starts[:, None] + np.arange(seg)[None, :]  # (N, T)
        parts.append(rec.samples[idx][:, :, region].transpose(0, 2, 1))  # (N, R, T)
    if not parts:
        raise ConfigError(f"Recordings of condition {condition!r} are shorter than one {segment_ms} ms segment.")
    return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)


def _affected_channels(rec: Recording, condition: str) -> list[int]:
    from rohde.simulation.disturbances import affected_channels  # the simulator's region definition

    return [int(c) for c in affected_channels(rec.layout, condition)]


# ----------------------------------------------------------------------------- model


class DisturbanceGAN:
    """A trained generator plus what it needs to make raw disturbed regions in microvolts."""

    def __init__(
        self,
        generator: Generator,
        *,
        config: GANConfig,
        conditions: Sequence[str],
        region_channels: dict[str, list[int]],
        segment_samples: int,
        fs_hz: float,
        scales_uv: dict[str, float],
        clips: dict[str, float],
    ) -> None:
        self.generator = generator.cpu().eval()
        self.config = config
        self.conditions: tuple[str, ...] = tuple(conditions)
        self.region_channels = {c: [int(ch) for ch in region_channels[c]] for c in self.conditions}
        self.segment_samples = int(segment_samples)
        self.fs_hz = float(fs_hz)
        self.scales_uv = {c: float(scales_uv[c]) for c in self.conditions}
        self.clips = {c: float(clips[c]) for c in self.conditions}

    def _check_condition(self, condition: str) -> int:
        if condition not in self.conditions:
            raise ConfigError(f"This GAN knows conditions {list(self.conditions)}, not {condition!r}.")
        return self.conditions.index(condition)

    def sample(self, condition: str, n: int, rng: np.random.Generator) -> np.ndarray:
        """`n` generated raw segments `(n, n_region_channels, segment_samples)` float32 uV, zero-mean per channel.

        The noise comes from `rng` alone, so the same rng state gives the same segments.
        """
        index = self._check_condition(condition)
        if n < 0:
            raise ConfigError(f"n must be >= 0, got {n}.")
        n_region = len(self.region_channels[condition])
        if n == 0:
            return np.zeros((0, n_region, self.segment_samples), dtype=np.float32)
        z = rng.standard_normal((n, self.config.latent_dim)).astype(np.float32)
        noise_source = torch.Generator().manual_seed(int(rng.integers(2**62)))
        with torch.inference_mode():
            y = self.generator(torch.from_numpy(z), torch.full((n,), index, dtype=torch.long), noise_source)
        y_np = y[:, :n_region, :].numpy()
        # The training segments were zero-mean in uV; make the generated ones so exactly.
        return remove_segment_mean(inverse_signed_log(y_np, self.scales_uv[condition], self.clips[condition]))

    def splice(
        self,
        samples: np.ndarray,
        condition: str,
        rng: np.random.Generator,
        *,
        fade_ms: float = 10.0,
        search_ms: float = 25.0,
        ca_gated: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Put a generated disturbance into clean raw `(n_samples, n_channels)` uV samples.

        Generated segments are tiled over the whole span on the condition's region channels by
        `tile_segments` (each joined where it best continues the previous one, within `search_ms`,
        with a `fade_ms` cross-fade, so mains hum keeps its phase across joins); the
        region is replaced (LC and others) or the generated segments are added (CA; with `ca_gated`
        only their strike-like parts, see `ca_gate`), see the module docstring. Returns (disturbed
        float32 copy, mask `(n_samples, n_channels)` bool, True on the region over the whole span).
        Labels are not touched: a disturbance does not change the gesture.
        """
        self._check_condition(condition)
        samples = np.asarray(samples)
        if samples.ndim != 2:
            raise ConfigError(f"samples must be (n_samples, n_channels), got shape {samples.shape}.")
        region = self.region_channels[condition]
        n_samples, n_channels = samples.shape
        if max(region) >= n_channels:
            raise ConfigError(
                f"Condition {condition!r} acts on channels up to {max(region)}, but samples have only "
                f"{n_channels} channels; use recordings of the layout the GAN was trained on."
            )
        out = np.array(samples, dtype=np.float32, copy=True)
        mask = np.zeros(samples.shape, dtype=bool)
        if n_samples == 0:
            return out, mask
        track = self._tile(condition, n_samples, rng, fade_ms=fade_ms, search_ms=search_ms)  # (n_samples, R)
        if condition in ADDITIVE_CONDITIONS and ca_gated:
            emg_floor_uv = _GAUSS_RMS_PER_MEDIAN_ABS * self.scales_uv[condition]
            out[:, region] += ca_gate(track, out[:, region], fs_hz=self.fs_hz, emg_floor_uv=emg_floor_uv) * track
        elif condition in ADDITIVE_CONDITIONS:
            out[:, region] += track
        else:
            out[:, region] = track
        mask[:, region] = True
        return out, mask

    def splice_recording(self, recording: Recording, condition: str, rng: np.random.Generator) -> Recording:
        """A copy of a clean recording with `condition` spliced in; labels and everything else kept."""
        disturbed, mask = self.splice(recording.samples, condition, rng)
        if recording.disturbance_mask is not None:
            mask |= recording.disturbance_mask
        provenance = {**recording.provenance, "gan_splice": condition}
        return recording.with_samples(disturbed, condition=condition, disturbance_mask=mask, provenance=provenance)

    def _tile(
        self, condition: str, n_samples: int, rng: np.random.Generator, *, fade_ms: float, search_ms: float
    ) -> np.ndarray:
        seg = self.segment_samples
        fade = min(max(1, int(round(fade_ms * self.fs_hz / 1000.0))), seg // 4)
        search = min(max(0, int(round(search_ms * self.fs_hz / 1000.0))), seg // 4)
        n_seg = 1 + max(0, math.ceil((n_samples - seg) / (seg - fade - search)))  # enough for the worst case
        return tile_segments(self.sample(condition, n_seg, rng), n_samples, fade=fade, search=search)

    # ------------------------------------------------------------------ persistence

    def _meta(self) -> dict[str, Any]:
        return {
            "format_version": MODEL_FORMAT_VERSION,
            "config": self.config.to_dict(),
            "conditions": list(self.conditions),
            "region_channels": self.region_channels,
            "segment_samples": self.segment_samples,
            "fs_hz": self.fs_hz,
            "scales_uv": self.scales_uv,
            "clips": self.clips,
            "n_channels": self.generator.n_channels,
        }

    def save(self, path: Path) -> None:
        """Write `path/generator.pt` (a state dict) and `path/gan.json` (everything else)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        torch.save(self.generator.state_dict(), path / _MODEL_WEIGHTS)
        (path / _MODEL_JSON).write_text(json.dumps(self._meta(), indent=2))

    @classmethod
    def load(cls, path: Path) -> DisturbanceGAN:
        """Read a folder written by `save`; tensors only, no pickled objects."""
        path = Path(path)
        if not (path / _MODEL_JSON).is_file() or not (path / _MODEL_WEIGHTS).is_file():
            raise RohdeError(f"{str(path)!r} is not a saved DisturbanceGAN (needs {_MODEL_JSON} and {_MODEL_WEIGHTS}).")
        meta = json.loads((path / _MODEL_JSON).read_text())
        if meta.get("format_version") != MODEL_FORMAT_VERSION:
            raise RohdeError(
                f"{str(path)!r} has GAN format_version {meta.get('format_version')!r}; "
                f"this reads {MODEL_FORMAT_VERSION}."
            )
        config = GANConfig.from_dict(meta["config"])
        conditions = list(meta["conditions"])
        region_channels = {c: [int(x) for x in meta["region_channels"][c]] for c in conditions}
        generator = make_generator(config, conditions, region_channels, int(meta["n_channels"]),
                                    int(meta["segment_samples"]))  # fmt: skip
        generator.load_state_dict(torch.load(path / _MODEL_WEIGHTS, map_location="cpu", weights_only=True))
        return cls(generator, config=config, conditions=conditions, region_channels=region_channels,
                   segment_samples=int(meta["segment_samples"]), fs_hz=float(meta["fs_hz"]),
                   scales_uv=meta["scales_uv"], clips=meta["clips"])  # fmt: skip


def tile_segments(segments: np.ndarray, n_samples: int, *, fade: int, search: int) -> np.ndarray:
    """Join `(S, R, T)` segments into one `(n_samples, R)` track, WSOLA-style.

    Each next segment starts at the offset k in [0, search] where its first `fade` samples best
    match (normalised correlation over all channels) the last `fade` samples written so far, and is
    cross-faded in over those samples: linearly when they match well (correlated signals keep their
    amplitude), equal-power otherwise (independent noise keeps its variance). Independent joins
    break periodic components: tiled real LC segments came out about 5x stronger than real LC after
    the 50 Hz notch, whose narrow band cannot follow hum whose phase jumps every segment.
    Raises when the segments are too few to fill `n_samples`.
    """
    n_seg, n_region, seg = segments.shape
    if not 0 < fade < seg or search < 0 or seg - fade - search < 1:
        raise ConfigError(f"tile_segments needs 0 < fade < T and T - fade - search >= 1; got fade={fade}, "
                          f"search={search}, T={seg}.")  # fmt: skip
    track = np.zeros((n_region, n_samples + seg), dtype=np.float32)
    track[:, :seg] = segments[0]
    pos = seg  # samples written so far
    ramp = (np.arange(fade, dtype=np.float32) + 0.5) / fade
    s = 1
    while pos < n_samples:
        if s >= n_seg:
            raise ConfigError(f"{n_seg} segments of {seg} samples cannot fill {n_samples} samples.")
        nxt = segments[s]
        tail = track[:, pos - fade : pos]  # (R, fade)
        windows = np.lib.stride_tricks.sliding_window_view(nxt[:, : search + fade], fade, axis=1)  # (R, K, fade)
        dots = np.einsum("rf,rkf->k", tail, windows)
        norms = np.sqrt(np.sum(tail**2) * np.einsum("rkf,rkf->k", windows, windows)) + 1e-12
        corr = dots / norms
        k = int(np.argmax(corr))
        fade_in, fade_out = (
            (ramp, 1 - ramp) if corr[k] >= 0.5 else (np.sin(0.5 * np.pi * ramp), np.cos(0.5 * np.pi * ramp))
        )
        track[:, pos - fade : pos] = tail * fade_out + nxt[:, k : k + fade] * fade_in
        rest = nxt[:, k + fade :]
        track[:, pos : pos + rest.shape[1]] = rest
        pos += rest.shape[1]
        s += 1
    return np.ascontiguousarray(track[:, :n_samples].T)


def ca_gate(track: np.ndarray, clean: np.ndarray, *, fs_hz: float, emg_floor_uv: float) -> np.ndarray:
    """Soft gate `(n_samples, R)` in [0, 1]: open where the generated `track` is well above the EMG.

    The EMG level per channel is the clean signal's RMS (about its mean), at least `emg_floor_uv`
    (the EMG level of the training data); the gate opens linearly as the track's 10 ms envelope
    goes from 2x to 4x that level, so strikes pass and EMG-level activity does not.
    """
    win = max(1, int(round(_CA_GATE_WINDOW_MS * fs_hz / 1000.0)))
    n = track.shape[0]
    power = np.cumsum(np.concatenate([np.zeros((1, track.shape[1])), track.astype(np.float64) ** 2]), axis=0)
    idx = np.arange(n)
    lo = np.clip(idx - win // 2, 0, n)
    hi = np.clip(idx + win - win // 2, 0, n)
    envelope = np.sqrt((power[hi] - power[lo]) / (hi - lo)[:, None])  # centred moving RMS
    clean_rms = np.sqrt(np.mean(np.square(clean - clean.mean(axis=0)), axis=0))  # (R,)
    ratio = envelope / np.maximum(clean_rms, emg_floor_uv)[None, :]
    gate = np.clip((ratio - _CA_GATE_START) / (_CA_GATE_FULL - _CA_GATE_START), 0.0, 1.0)
    return gate.astype(np.float32)


# ----------------------------------------------------------------------------- training


def _validate_segments(
    segments: dict[str, np.ndarray], region_channels: dict[str, list[int]], expected_t: int
) -> tuple[list[str], int]:
    if not segments:
        raise ConfigError("segments is empty; give at least one condition's disturbed segments.")
    conditions = sorted(segments)
    for c in conditions:
        x = segments[c]
        if c not in region_channels:
            raise ConfigError(f"region_channels has no entry for condition {c!r}; it has {sorted(region_channels)}.")
        if x.ndim != 3 or x.shape[0] == 0:
            raise ConfigError(f"segments[{c!r}] must be a non-empty (N, n_region, T) array, got shape {x.shape}.")
        if x.shape[1] != len(region_channels[c]):
            raise ConfigError(
                f"segments[{c!r}] has {x.shape[1]} channels but region_channels[{c!r}] lists {len(region_channels[c])}."
            )
        if x.shape[2] != expected_t:
            raise ConfigError(
                f"segments[{c!r}] are {x.shape[2]} samples long, but segment_ms and fs_hz give {expected_t}; "
                "extract them with the same segment_ms as the GANConfig."
            )
        if not np.all(np.isfinite(x)):
            raise ConfigError(f"segments[{c!r}] contain NaN or infinite values.")
    return conditions, max(len(region_channels[c]) for c in conditions)


def _resumable_fields(config: GANConfig) -> dict[str, Any]:
    """Config fields a resumed run must share (it may run longer, log or save at other intervals)."""
    free = {"steps", "progress", "log_interval", "checkpoint_interval"}
    return {k: v for k, v in config.to_dict().items() if k not in free}


def train_disturbance_gan(
    segments: dict[str, np.ndarray],
    *,
    fs_hz: float,
    config: GANConfig,
    region_channels: dict[str, list[int]],
    out_dir: Path | None = None,
    seed: int = 0,
    resume: bool = False,
    device: str | torch.device = "cpu",
    num_threads: int | None = None,
) -> DisturbanceGAN:
    """Train the conditional WGAN-GP on raw disturbed region segments `{condition: (N, R, T) uV}`.

    WGAN-GP (Gulrajani et al. 2017) as in the seed: `critic_steps` critic updates per generator
    update, gradient penalty `gp_weight`, Adam(lr, betas). Conditions are drawn with equal
    probability per sample. With `out_dir`, TensorBoard scalars go to `out_dir/tb`, a checkpoint
    (both networks, both optimisers, config, step, rng states) to `out_dir/checkpoint.pt` and the
    final model to `out_dir/model`; `resume=True` continues from the checkpoint's step.
    Bit-for-bit deterministic for a given seed on CPU (CUDA kernels may differ in the last bits unless
    `torch.use_deterministic_algorithms` is on). Under torchrun (`rohde.training.distributed`) every
    rank draws the whole batch, runs the generator on it and keeps its share for the critic, whose
    penalty and loss it computes on that share; gradients are averaged over the ranks, so the run equals
    one process's; only rank 0 writes to `out_dir`. `num_threads` sets torch's intra-op threads
    for the run (and restores them after): these networks are small, so on a busy CPU one thread is
    often several times faster than contending for more.
    """
    if num_threads is not None and num_threads < 1:
        raise ConfigError(f"num_threads must be >= 1 or None, got {num_threads}.")
    from rohde.simulation.disturbances import ensure_trainable

    for condition in segments:
        ensure_trainable(condition)  # the held-out kind never reaches the GAN
    previous_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        return _train(segments, fs_hz=fs_hz, config=config, region_channels=region_channels, out_dir=out_dir,
                      seed=seed, resume=resume, device=device)  # fmt: skip
    finally:
        torch.set_num_threads(previous_threads)


def _train(
    segments: dict[str, np.ndarray],
    *,
    fs_hz: float,
    config: GANConfig,
    region_channels: dict[str, list[int]],
    out_dir: Path | None,
    seed: int,
    resume: bool,
    device: str | torch.device,
) -> DisturbanceGAN:
    if fs_hz <= 0:
        raise ConfigError(f"fs_hz must be positive, got {fs_hz}.")
    if resume and out_dir is None:
        raise ConfigError("resume=True needs out_dir, where the checkpoint lives.")
    seg_t = config.segment_samples(fs_hz)
    conditions, n_channels = _validate_segments(segments, region_channels, seg_t)
    device = torch.device(device)
    regions = {c: [int(ch) for ch in region_channels[c]] for c in conditions}
    world = current_world()
    world.per_rank_batch(config.batch_size, "the GAN's batch_size")
    mine = world.shard(config.batch_size)  # this rank's rows of every batch

    def share(x: torch.Tensor) -> torch.Tensor:
        return x[mine] if world.parallel else x

    centred = {c: remove_segment_mean(segments[c]) for c in conditions}
    scales = {c: amplitude_scale(centred[c], percentile=config.scale_percentile) for c in conditions}
    pools, clips = [], {}
    for c in conditions:
        y = signed_log(centred[c], scales[c])
        clips[c] = 1.25 * float(np.abs(y).max()) + 1e-3
        padded = np.zeros((y.shape[0], n_channels, seg_t), dtype=np.float32)
        padded[:, : y.shape[1]] = y
        pools.append(torch.from_numpy(padded).to(device))

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = make_generator(config, conditions, regions, n_channels, seg_t).to(device)
        critic = Critic(n_conditions=len(conditions), n_channels=n_channels, width=config.c_width,
                        n_down=config.n_down, kernel_size=config.kernel_size,
                        segment_samples=seg_t if config.spectral_critic else None).to(device)  # fmt: skip
    if world.parallel:
        broadcast_from_main(generator)
        broadcast_from_main(critic)
    opt_g = torch.optim.Adam(generator.parameters(), lr=config.lr, betas=config.betas)
    opt_d = torch.optim.Adam(critic.parameters(), lr=config.lr, betas=config.betas)
    torch_rng = torch.Generator(device=device).manual_seed(seed + 1)
    np_rng = np.random.default_rng(seed)
    meta = {"conditions": conditions, "region_channels": regions, "segment_samples": seg_t, "fs_hz": float(fs_hz),
            "scales_uv": scales, "clips": clips, "n_channels": n_channels}  # fmt: skip
    step = 0

    ckpt_path = Path(out_dir) / CHECKPOINT_NAME if out_dir is not None else None
    if resume and ckpt_path is not None and ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
        saved_config = _resumable_fields(GANConfig.from_dict(json.loads(ckpt["config"])))
        if saved_config != _resumable_fields(config) or json.loads(ckpt["meta"]) != json.loads(json.dumps(meta)):
            raise ConfigError(
                f"Checkpoint {str(ckpt_path)!r} was made with another config or other data; "
                "resume with the same GANConfig and segments, or start afresh with resume=False."
            )
        generator.load_state_dict(ckpt["generator"])
        critic.load_state_dict(ckpt["critic"])
        opt_g.load_state_dict(ckpt["opt_g"])
        opt_d.load_state_dict(ckpt["opt_d"])
        torch_rng.set_state(ckpt["torch_rng"].cpu())
        np_rng.bit_generator.state = json.loads(ckpt["np_rng"])
        step = int(ckpt["step"])
        logger.info("Resumed GAN training from %s at step %s.", ckpt_path, step)
    elif resume:
        logger.info("No checkpoint at %s; training from step 0.", ckpt_path)
    if world.parallel:
        require_same_on_all_ranks(step, "the GAN's resumed step")

    writer = None
    if out_dir is not None and world.is_main:
        from torch.utils.tensorboard import SummaryWriter

        Path(out_dir).mkdir(parents=True, exist_ok=True)
        writer = SummaryWriter(log_dir=str(Path(out_dir) / "tb"))

    sizes = np.array([p.shape[0] for p in pools])

    def real_batch() -> tuple[torch.Tensor, torch.Tensor]:
        cond = np_rng.integers(len(conditions), size=config.batch_size)
        rows = (np_rng.random(config.batch_size) * sizes[cond]).astype(np.int64)
        if world.parallel:  # the whole batch is drawn (the same draws as one process), our share is kept
            cond_rows = zip(cond[mine], rows[mine], strict=True)
        else:
            cond_rows = zip(cond, rows, strict=True)
        x = torch.stack([pools[c][r] for c, r in cond_rows])  # (B / ranks, C, T)
        return x, torch.from_numpy(cond).to(device)  # conditions of the whole batch

    def noise() -> torch.Tensor:
        return torch.randn(config.batch_size, config.latent_dim, device=device, generator=torch_rng)

    def save_checkpoint() -> None:
        if ckpt_path is None or not world.is_main:
            return
        state = {
            "generator": generator.state_dict(), "critic": critic.state_dict(),
            "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
            "config": json.dumps(config.to_dict()), "meta": json.dumps(meta), "step": step,
            "torch_rng": torch_rng.get_state(), "np_rng": json.dumps(np_rng.bit_generator.state),
        }  # fmt: skip
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(ckpt_path)  # atomic: an interrupted save never leaves a broken checkpoint

    from tqdm.auto import tqdm

    generator.train()
    critic.train()
    bar = tqdm(total=config.steps, initial=step, desc="GAN", disable=not config.progress or not world.is_main,
               leave=False)  # fmt: skip
    try:
        while step < config.steps:
            for _ in range(config.critic_steps):
                real, cond = real_batch()
                with torch.no_grad():  # the whole batch: its noise inputs draw what one process draws
                    fake = share(generator(noise(), cond, torch_rng))
                cond = share(cond)
                d_real, d_fake = critic(real, cond).mean(), critic(fake, cond).mean()
                eps = share(torch.rand(config.batch_size, 1, 1, device=device, generator=torch_rng))
                gp = gradient_penalty(critic, real, fake, cond, eps=eps)
                loss_d = d_fake - d_real + config.gp_weight * gp
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                if world.parallel:
                    average_gradients(critic.parameters(), world)
                opt_d.step()
            cond = torch.from_numpy(np_rng.integers(len(conditions), size=config.batch_size)).to(device)
            loss_g = -critic(share(generator(noise(), cond, torch_rng)), share(cond)).mean()
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            if world.parallel:
                average_gradients(generator.parameters(), world)
            opt_g.step()
            step += 1
            bar.update(1)
            if step % config.log_interval == 0 or step == config.steps:
                logged = torch.stack([d_real - d_fake, gp, loss_d, loss_g]).detach()
                if world.parallel:  # the whole batch's figures: the mean of the equal shares'
                    logged = sum_over_ranks(logged) / world.size
                w_dist, gp_value, loss_d_value, loss_g_value = (float(v) for v in logged)
                bar.set_postfix(w=f"{w_dist:.3f}", gp=f"{gp_value:.3f}")
                if writer is not None:
                    writer.add_scalar("critic/wasserstein_estimate", w_dist, step)
                    writer.add_scalar("critic/gradient_penalty", gp_value, step)
                    writer.add_scalar("critic/loss", loss_d_value, step)
                    writer.add_scalar("generator/loss", loss_g_value, step)
            if step % config.checkpoint_interval == 0 or step == config.steps:
                save_checkpoint()
    finally:
        bar.close()
        if writer is not None:
            writer.close()

    gan = DisturbanceGAN(make_generator(config, conditions, regions, n_channels, seg_t), config=config,
                         conditions=conditions, region_channels=regions, segment_samples=seg_t, fs_hz=fs_hz,
                         scales_uv=scales, clips=clips)  # fmt: skip
    gan.generator.load_state_dict({k: v.detach().cpu() for k, v in generator.state_dict().items()})
    if out_dir is not None and world.is_main:
        gan.save(Path(out_dir) / "model")
    return gan
