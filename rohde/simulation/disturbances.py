"""Electrode disturbances of surface EMG, applicable to any recording and layout.

Every model returns the disturbed samples and a mask `(n_samples, n_channels)` bool that is
True where the disturbance acts. Conditions:

- **CA, contact artifact** (`CAParams`): a pen tapped at 4-5 Hz on the electrodes of one end
  of the set-up. Pressing an electrode changes the electrode-skin interface: the half-cell
  potential jumps by hundreds of uV to a few mV and relaxes exponentially as the gel and skin
  re-equilibrate; the impact itself adds a short broadband mechanical transient. The pen tip
  hits a different spot each time, so each strike affects a spatially coherent patch whose
  amplitude falls off with distance from the tip. A strike is masked on its patch from its onset
  for `mask_recoveries` recovery time constants (what is left after is < 5 % of the jump, slow,
  and mostly removed by the 20 Hz high-pass).
  *Region rule*: the pen can reach the last `region_fraction` of the layout's electrodes in
  physical order (grid, then around the arm, then along it; see
  `rohde.simulation.electrode_geometry.physical_order`). The default fraction, 37/192, gives
  channels 156-192 (1-based) of the default 3 x 8 x 8 layout and the last three rows (12
  electrodes) of the 16 x 4 flexemg array.
- **LC, loose contact** (`LCParams`): the last two rows of a grid (default: the last grid)
  peeled back with a towel underneath. Without galvanic contact the EMG reaches those electrodes
  only through weak capacitive coupling (strongly attenuated); the electrode input becomes high
  impedance, so it picks up power-line hum (fundamental plus odd-dominant harmonics of the
  non-sinusoidal mains), its potential wanders slowly, and movements of the towel and leads give
  intermittent bursts ("pops"). The whole rows are masked for the whole recording.
- **powerline** (`PowerlineParams`): hum on every electrode, stronger where contact is worse.
- **dropout** (`DropoutParams`): channels whose input fails for a while (lead off, connector):
  the signal vanishes into a small noise floor.

Conditions may be combined with `+` (for example `"CA+LC"`); each part then uses its defaults.
`simulate_recording`, `LiveSimulator` and `inject` all build disturbances with
`disturbance_field`, so there is one implementation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np
from scipy import signal

from rohde.core.errors import ConfigError
from rohde.core.layouts import ElectrodeLayout
from rohde.core.recording import Recording
from rohde.simulation.electrode_geometry import electrode_geometry, physical_order

logger = logging.getLogger(__name__)

DISTURBANCE_CONDITIONS: tuple[str, ...] = ("CA", "LC", "powerline", "dropout")


@dataclass(frozen=True)
class CAParams:
    """Contact artifact: a pen tapped on the electrodes."""

    rate_hz: tuple[float, float] = (4.0, 5.0)  # range of the mean tapping rate; one value drawn per recording
    interval_jitter: float = 0.08  # relative standard deviation of the time between strikes
    region_fraction: float = 37 / 192  # share of electrodes (last in physical order) the pen can reach
    patch_radius_ied: tuple[float, float] = (1.0, 2.0)  # reach of a strike (weight = min_weight), electrode spacings
    amplitude_uv: tuple[float, float] = (300.0, 2500.0)  # half-cell potential jump under the tip (uV)
    recovery_ms: tuple[float, float] = (15.0, 40.0)  # exponential recovery time constant of the interface
    impact_ms: float = 3.0  # decay time of the broadband mechanical impact transient
    impact_share: float = 0.4  # impact transient amplitude relative to the potential jump
    mask_recoveries: float = 3.0  # a strike is masked for this many recovery time constants
    min_weight: float = 0.1  # electrodes pressed with less than this share of the tip's force are untouched


@dataclass(frozen=True)
class LCParams:
    """Loose contact: rows of a grid lifted off the skin with a towel underneath."""

    rows: int = 2  # number of last rows of the grid that are peeled back
    grid: int = -1  # which grid (index into the layout's grids, -1 = the last)
    residual_emg: tuple[float, float] = (0.02, 0.15)  # EMG left by capacitive coupling (fraction)
    hum_uv: tuple[float, float] = (300.0, 1500.0)  # power-line fundamental amplitude at high impedance
    powerline_hz: float = 50.0  # mains frequency (50 or 60)
    harmonic_ratios: tuple[float, ...] = (0.08, 0.35, 0.05, 0.2, 0.03, 0.1)  # 2nd..7th harmonic / fundamental
    mains_drift_hz: float = 0.02  # slow wander of the mains frequency (standard deviation)
    wander_uv: tuple[float, float] = (200.0, 1000.0)  # RMS of the slow baseline wander of the lifted input
    wander_hz: float = 1.0  # bandwidth of the baseline wander
    noise_uv: tuple[float, float] = (4.0, 12.0)  # broadband noise of the high-impedance input (RMS)
    pop_rate_hz: float = 0.7  # mean rate of intermittent bursts (towel or lead movement)
    pop_uv: tuple[float, float] = (200.0, 2000.0)  # burst amplitude
    pop_ms: tuple[float, float] = (20.0, 150.0)  # burst duration


@dataclass(frozen=True)
class PowerlineParams:
    """Power-line interference on every electrode (poor grounding, nearby mains equipment)."""

    powerline_hz: float = 50.0  # mains frequency (50 or 60)
    amplitude_uv: tuple[float, float] = (20.0, 200.0)  # per-channel fundamental amplitude range
    harmonic_ratios: tuple[float, ...] = (0.05, 0.25, 0.03, 0.1)  # 2nd..5th harmonic / fundamental
    mains_drift_hz: float = 0.02  # slow wander of the mains frequency (standard deviation)


@dataclass(frozen=True)
class DropoutParams:
    """Channel dropout: inputs that fail for a while (lead off, connector contact)."""

    channel_fraction: float = 0.05  # share of electrodes that drop out (at least one)
    duration_s: tuple[float, float] = (0.5, 3.0)  # length of each dropout episode
    episodes: int = 1  # episodes per affected channel
    floor_uv: float = 0.5  # RMS of the noise left on a dropped channel


DisturbanceParams = CAParams | LCParams | PowerlineParams | DropoutParams
_PARAM_TYPES: dict[str, type] = {"CA": CAParams, "LC": LCParams, "powerline": PowerlineParams, "dropout": DropoutParams}


@dataclass
class DisturbanceField:
    """A disturbance over `n_samples` on a subset of channels: `x[:, ch] = x[:, ch] * gain + additive`."""

    channels: np.ndarray  # (k,) int channel indices
    gain: np.ndarray  # (n_samples, k) float32 multiplicative factor on the EMG
    additive: np.ndarray  # (n_samples, k) float32 uV added
    mask: np.ndarray  # (n_samples, k) bool, True where the disturbance acts

    @property
    def n_samples(self) -> int:
        return int(self.gain.shape[0])

    def apply(self, samples: np.ndarray, mask: np.ndarray, *, start: int = 0) -> None:
        """Apply samples `[start, start + len(samples))` of the field in place to `samples` and `mask`."""
        n = samples.shape[0]
        sl = slice(start, start + n)
        samples[:, self.channels] = samples[:, self.channels] * self.gain[sl] + self.additive[sl]
        mask[:, self.channels] |= self.mask[sl]


def split_condition(condition: str) -> list[str]:
    """`"CA+LC"` -> `["CA", "LC"]`; `"clean"` -> `[]`; raises for unknown parts."""
    if condition == "clean":
        return []
    parts = condition.split("+")
    unknown = [p for p in parts if p not in DISTURBANCE_CONDITIONS]
    if unknown or not parts:
        raise ConfigError(
            f"Unknown disturbance condition {condition!r}; use 'clean', one of {list(DISTURBANCE_CONDITIONS)} "
            "or several joined with '+'."
        )
    return parts


def _check_params(condition: str, params: DisturbanceParams | None) -> DisturbanceParams:
    expected = _PARAM_TYPES[condition]
    if params is None:
        return expected()  # type: ignore[no-any-return]
    if not isinstance(params, expected):
        raise ConfigError(
            f"Condition {condition!r} takes {expected.__name__}, got {type(params).__name__}; "
            "pass matching params or None for the defaults."
        )
    return params


def affected_channels(layout: ElectrodeLayout, condition: str, params: DisturbanceParams | None = None) -> list[int]:
    """The channels a condition can touch on `layout` (sorted); all mapped channels for global ones."""
    channels: set[int] = set()
    for part in split_condition(condition):
        p = _check_params(part, params if len(split_condition(condition)) == 1 else None)
        if isinstance(p, CAParams):
            if not 0 < p.region_fraction <= 1:
                raise ConfigError(f"CAParams.region_fraction must be in (0, 1], got {p.region_fraction}.")
            order = physical_order(layout)
            n_region = max(1, int(round(p.region_fraction * len(order))))
            channels.update(order[-n_region:])
        elif isinstance(p, LCParams):
            try:
                grid = layout.grids[p.grid]
            except IndexError as exc:
                raise ConfigError(
                    f"LCParams.grid={p.grid} but layout {layout.name!r} has {len(layout.grids)} grids."
                ) from exc
            if not 1 <= p.rows <= grid.rows:
                raise ConfigError(f"LCParams.rows must be 1..{grid.rows} for grid {grid.name!r}, got {p.rows}.")
            channels.update(grid.row_channels(range(grid.rows - p.rows, grid.rows)))
        else:
            channels.update(physical_order(layout))
    return sorted(channels)


def disturbance_field(
    n_samples: int,
    *,
    fs_hz: float,
    layout: ElectrodeLayout,
    condition: str,
    rng: np.random.Generator,
    params: DisturbanceParams | None = None,
    powerline_hz: float | None = None,
) -> DisturbanceField:
    """Build the disturbance of one condition over `n_samples` (a `+` combination merges parts).

    `powerline_hz` (50 or 60) sets the mains frequency of default LC / powerline params (the
    recording's own mains); explicit `params` keep their own value.
    """
    if fs_hz <= 0:
        raise ConfigError(f"fs_hz must be positive, got {fs_hz}.")
    parts = split_condition(condition)
    if len(parts) > 1 and params is not None:
        raise ConfigError(f"Combined condition {condition!r} uses default params; pass params=None.")
    if not parts:
        empty = np.zeros((n_samples, 0), dtype=np.float32)
        return DisturbanceField(np.zeros(0, dtype=np.int64), empty, empty.copy(), empty.astype(bool))
    fields = []
    for part in parts:
        p = _check_params(part, params)
        if params is None and powerline_hz is not None and isinstance(p, LCParams | PowerlineParams):
            p = replace(p, powerline_hz=float(powerline_hz))
        channels = np.asarray(affected_channels(layout, part, p), dtype=np.int64)
        builder = {"CA": _ca_field, "LC": _lc_field, "powerline": _powerline_field, "dropout": _dropout_field}[part]
        fields.append(builder(n_samples, fs_hz, layout, channels, rng, p))  # type: ignore[operator]
    return _merge(fields)


def _merge(fields: list[DisturbanceField]) -> DisturbanceField:
    """Combine fields applied one after the other into one (gains multiply, additives chain)."""
    if len(fields) == 1:
        return fields[0]
    channels = np.unique(np.concatenate([f.channels for f in fields]))
    n = fields[0].n_samples
    gain = np.ones((n, channels.size), dtype=np.float32)
    add = np.zeros((n, channels.size), dtype=np.float32)
    mask = np.zeros((n, channels.size), dtype=bool)
    for f in fields:
        cols = np.searchsorted(channels, f.channels)
        # (x * g1 + a1) * g2 + a2 = x * g1 g2 + (a1 g2 + a2)
        gain[:, cols] *= f.gain
        add[:, cols] = add[:, cols] * f.gain + f.additive
        mask[:, cols] |= f.mask
    return DisturbanceField(channels, gain, add, mask)


def _distances_ied(layout: ElectrodeLayout, channels: np.ndarray) -> np.ndarray:
    """(k, k) distances between the given electrodes in units of their inter-electrode distance."""
    geo = electrode_geometry(layout)
    pos = np.stack([geo.circumferential_mm[channels], geo.longitudinal_mm[channels]], axis=1)
    dist = np.sqrt(((pos[:, None, :] - pos[None, :, :]) ** 2).sum(-1))
    return dist / geo.ied_mm[channels][:, None]


def strike_times(n_samples: int, fs_hz: float, rng: np.random.Generator, params: CAParams) -> np.ndarray:
    """Sample indices of the pen strikes: a jittered periodic tapping at a rate drawn from `rate_hz`."""
    lo, hi = params.rate_hz
    if not 0 < lo <= hi:
        raise ConfigError(f"CAParams.rate_hz must be (low, high) with 0 < low <= high, got {params.rate_hz}.")
    rate = rng.uniform(lo, hi)
    times: list[int] = []
    t = rng.uniform(0.0, 1.0 / rate)
    duration_s = n_samples / fs_hz
    while t < duration_s:
        times.append(int(t * fs_hz))
        t += max(0.3 / rate, rng.normal(1.0 / rate, params.interval_jitter / rate))
    return np.asarray(times, dtype=np.int64)


def _ca_field(
    n: int, fs_hz: float, layout: ElectrodeLayout, channels: np.ndarray, rng: np.random.Generator, p: CAParams
) -> DisturbanceField:
    k = channels.size
    gain = np.ones((n, k), dtype=np.float32)
    add = np.zeros((n, k), dtype=np.float32)
    mask = np.zeros((n, k), dtype=bool)
    dist = _distances_ied(layout, channels)
    for t0 in strike_times(n, fs_hz, rng, p):
        centre = rng.integers(k)
        # Gaussian pressure profile that falls to `min_weight` at the drawn reach.
        sigma = rng.uniform(*p.patch_radius_ied) / np.sqrt(2.0 * np.log(1.0 / p.min_weight))
        weight = np.exp(-0.5 * (dist[centre] / sigma) ** 2) * rng.uniform(0.7, 1.0, k)
        hit = np.flatnonzero(weight >= p.min_weight)
        amplitude = rng.uniform(*p.amplitude_uv) * rng.choice([-1.0, 1.0])
        tau_s = rng.uniform(*p.recovery_ms) / 1000.0
        length = min(n - t0, int(8 * tau_s * fs_hz) + 1)
        t = np.arange(length) / fs_hz
        # Potential jump with a ~1 ms rise, exponential recovery, plus a damped impact ringing.
        jump = (1.0 - np.exp(-t / 0.001)) * np.exp(-t / tau_s)
        ring_hz = rng.uniform(80.0, 250.0)
        impact = p.impact_share * np.sin(2 * np.pi * ring_hz * t) * np.exp(-t / (p.impact_ms / 1000.0))
        wave = (jump + impact).astype(np.float32)
        add[t0 : t0 + length, hit] += (amplitude * weight[hit])[None, :].astype(np.float32) * wave[:, None]
        mask_len = min(n - t0, int(p.mask_recoveries * tau_s * fs_hz) + 1)
        mask[t0 : t0 + mask_len, hit] = True
    return DisturbanceField(channels, gain, add, mask)


def _mains(n: int, fs_hz: float, rng: np.random.Generator, base_hz: float, drift_hz: float) -> np.ndarray:
    """(n,) instantaneous phase of a mains supply whose frequency wanders slowly around `base_hz`."""
    if base_hz not in (50.0, 60.0):
        raise ConfigError(f"powerline_hz must be 50 or 60, got {base_hz}.")
    sos = signal.butter(1, 0.2, fs=fs_hz, output="sos")
    wander = signal.sosfilt(sos, rng.standard_normal(n))
    wander *= drift_hz / max(float(np.std(wander)), 1e-12)
    return 2 * np.pi * np.cumsum(base_hz + wander) / fs_hz + rng.uniform(0, 2 * np.pi)


def _hum(phase: np.ndarray, amplitude: np.ndarray, ratios: tuple[float, ...], rng: np.random.Generator) -> np.ndarray:
    """(n, k) hum: fundamental and harmonics, per-channel amplitude and a small phase spread."""
    k = amplitude.size
    harmonics = (1.0, *ratios)
    # sin(h phi + o) = sin(h phi) cos(o) + cos(h phi) sin(o): one small matmul instead of n x k sines.
    basis = np.empty((phase.size, 2 * len(harmonics)))
    weights = np.empty((2 * len(harmonics), k))
    for i, ratio in enumerate(harmonics):
        offset = rng.normal(0.0, 0.2, k)
        basis[:, 2 * i] = np.sin((i + 1) * phase)
        basis[:, 2 * i + 1] = np.cos((i + 1) * phase)
        weights[2 * i] = ratio * amplitude * np.cos(offset)
        weights[2 * i + 1] = ratio * amplitude * np.sin(offset)
    return (basis @ weights).astype(np.float32)


def _lc_field(
    n: int, fs_hz: float, layout: ElectrodeLayout, channels: np.ndarray, rng: np.random.Generator, p: LCParams
) -> DisturbanceField:
    k = channels.size
    gain = np.broadcast_to(rng.uniform(*p.residual_emg, k).astype(np.float32), (n, k)).copy()
    phase = _mains(n, fs_hz, rng, p.powerline_hz, p.mains_drift_hz)
    ratios = tuple(r for h, r in enumerate(p.harmonic_ratios, start=2) if h * p.powerline_hz < 0.49 * fs_hz)
    add = _hum(phase, rng.uniform(*p.hum_uv, k), ratios, rng)
    # Slow wander of the floating electrode potential: low-passed noise, partly shared by the rows.
    sos = signal.butter(2, p.wander_hz, fs=fs_hz, output="sos")
    common = signal.sosfilt(sos, rng.standard_normal(n))
    own = signal.sosfilt(sos, rng.standard_normal((n, k)), axis=0)
    wander = 0.6 * common[:, None] + 0.8 * own
    wander *= rng.uniform(*p.wander_uv, k)[None, :] / max(float(np.std(wander)), 1e-12)
    add += wander.astype(np.float32)
    add += (rng.standard_normal((n, k)) * rng.uniform(*p.noise_uv, k)[None, :]).astype(np.float32)
    # Pops: a step with decay plus a broadband burst on a few of the lifted electrodes.
    n_pops = rng.poisson(p.pop_rate_hz * n / fs_hz)
    for _ in range(n_pops):
        t0 = int(rng.integers(n))
        length = min(n - t0, int(rng.uniform(*p.pop_ms) / 1000.0 * fs_hz) + 1)
        hit = rng.choice(k, size=int(rng.integers(1, k + 1)), replace=False)
        t = np.arange(length) / length
        envelope = np.exp(-4.0 * t)
        burst = rng.standard_normal((length, hit.size)) * 0.5 + rng.choice([-1.0, 1.0])
        add[t0 : t0 + length, hit] += (rng.uniform(*p.pop_uv) * envelope[:, None] * burst).astype(np.float32)
    mask = np.ones((n, k), dtype=bool)
    return DisturbanceField(channels, gain, add, mask)


def _powerline_field(
    n: int, fs_hz: float, layout: ElectrodeLayout, channels: np.ndarray, rng: np.random.Generator, p: PowerlineParams
) -> DisturbanceField:
    k = channels.size
    phase = _mains(n, fs_hz, rng, p.powerline_hz, p.mains_drift_hz)
    ratios = tuple(r for h, r in enumerate(p.harmonic_ratios, start=2) if h * p.powerline_hz < 0.49 * fs_hz)
    lo, hi = p.amplitude_uv
    add = _hum(phase, np.exp(rng.uniform(np.log(lo), np.log(hi), k)), ratios, rng)
    return DisturbanceField(channels, np.ones((n, k), dtype=np.float32), add, np.ones((n, k), dtype=bool))


def _dropout_field(
    n: int, fs_hz: float, layout: ElectrodeLayout, channels: np.ndarray, rng: np.random.Generator, p: DropoutParams
) -> DisturbanceField:
    if not 0 < p.channel_fraction <= 1:
        raise ConfigError(f"DropoutParams.channel_fraction must be in (0, 1], got {p.channel_fraction}.")
    n_drop = max(1, int(round(p.channel_fraction * channels.size)))
    dropped = np.sort(rng.choice(channels, size=n_drop, replace=False))
    gain = np.ones((n, n_drop), dtype=np.float32)
    mask = np.zeros((n, n_drop), dtype=bool)
    for j in range(n_drop):
        for _ in range(p.episodes):
            length = min(n, int(rng.uniform(*p.duration_s) * fs_hz))
            t0 = int(rng.integers(0, max(1, n - length + 1)))
            gain[t0 : t0 + length, j] = 0.0
            mask[t0 : t0 + length, j] = True
    add = (rng.standard_normal((n, n_drop)) * p.floor_uv).astype(np.float32) * mask
    return DisturbanceField(dropped.astype(np.int64), gain, add, mask)


def apply_disturbance(
    samples: np.ndarray,
    *,
    fs_hz: float,
    layout: ElectrodeLayout,
    condition: str,
    rng: np.random.Generator,
    params: DisturbanceParams | None = None,
    powerline_hz: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Disturb `(n_samples, n_channels)` uV samples; returns (float32 disturbed copy, bool mask).

    `powerline_hz`: mains frequency for default LC / powerline params (see `disturbance_field`).
    """
    samples = np.asarray(samples)
    if samples.ndim != 2 or samples.shape[1] != layout.n_channels:
        raise ConfigError(
            f"samples must be (n_samples, {layout.n_channels}) for layout {layout.name!r}, got {samples.shape}."
        )
    field = disturbance_field(
        samples.shape[0],
        fs_hz=fs_hz,
        layout=layout,
        condition=condition,
        rng=rng,
        params=params,
        powerline_hz=powerline_hz,
    )
    out = samples.astype(np.float32, copy=True)
    mask = np.zeros(out.shape, dtype=bool)
    field.apply(out, mask)
    return out, mask


def inject(
    recording: Recording,
    condition: str,
    *,
    seed: int = 0,
    params: DisturbanceParams | None = None,
    powerline_hz: float | None = None,
) -> Recording:
    """A copy of `recording` with `condition` applied; its mask is OR'ed with any existing one.

    The new recording's condition is `condition`, or `"<old>+<condition>"` when the recording was
    already disturbed. The hum of default LC / powerline params uses `powerline_hz`, else the
    recording's `provenance["powerline_hz"]` when present, else 50 Hz.
    """
    rng = np.random.default_rng(seed)
    if powerline_hz is None and "powerline_hz" in recording.provenance:
        powerline_hz = float(recording.provenance["powerline_hz"])
    samples, mask = apply_disturbance(
        recording.samples,
        fs_hz=recording.fs_hz,
        layout=recording.layout,
        condition=condition,
        rng=rng,
        params=params,
        powerline_hz=powerline_hz,
    )
    if recording.disturbance_mask is not None:
        mask |= recording.disturbance_mask
    new_condition = condition if recording.condition == "clean" else f"{recording.condition}+{condition}"
    provenance = dict(recording.provenance)
    provenance["disturbances"] = [*provenance.get("disturbances", []), {"condition": condition, "seed": seed}]
    logger.debug("Injected %s into a %s recording of %.1f s", condition, recording.condition, recording.duration_s)
    return replace(recording, samples=samples, disturbance_mask=mask, condition=new_condition, provenance=provenance)
