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

Kinds placed at random (their params carry a `Placement`; see `rohde.simulation.placement`), each
with the physical effect and amplitudes in its params' docstring, anchored where possible on the
real flexemg recordings (band 0.5-10 Hz RMS: median 21 uV, p90 172 uV, p99 0.9 mV; steps of the
median-filtered signal: p90 3.8 mV, p99 6.2 mV; 60 Hz hum 4-23 uV, p10-p99 over channels):

- **pop** (`PopParams`): electrode pops and baseline steps;
- **saturation** (`SaturationParams`): amplifier saturation, the input clipped at its rail;
- **motion** (`MotionParams`): slow, large motion artifacts (skin stretch under the electrodes);
- **sway** (`SwayParams`): cable sway (triboelectric and capacitive pick-up of moving leads);
- **hum** (`HumParams`): mains hum of high-impedance electrodes, 50 or 60 Hz, any amplitude;
- **dead** (`DeadParams`): dead channels, zero or a constant;
- **bridge** (`BridgeParams`): bridged neighbours (gel or sweat shorting adjacent electrodes).
  This is `HELD_OUT_KIND`: no GAN and no augmentation may train on it (`ensure_trainable` raises),
  it exists only to test generalisation to a disturbance never seen.

Every kind, the four above included, accepts `placement=Placement(...)` (in its params or as an
argument of `disturbance_field` / `apply_disturbance` / `inject`) to sit at random electrodes with a
chosen severity; without it CA and LC keep their fixed regions of the recording protocol.

Conditions may be combined with `+` (for example `"CA+LC"`); each part then uses its defaults.
`simulate_recording`, `LiveSimulator` and `inject` all build disturbances with
`disturbance_field`, so there is one implementation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from scipy import signal

from rohde.core.errors import ConfigError
from rohde.core.layouts import ElectrodeLayout
from rohde.core.recording import Recording
from rohde.simulation.electrode_geometry import electrode_geometry, physical_order
from rohde.simulation.placement import Placement, adjacency, place

logger = logging.getLogger(__name__)

PLACED_KINDS: tuple[str, ...] = ("pop", "saturation", "motion", "sway", "hum", "dead", "bridge")
DISTURBANCE_CONDITIONS: tuple[str, ...] = ("CA", "LC", "powerline", "dropout", *PLACED_KINDS)
# Never used to train (GAN or augmentation): it measures generalisation to an unseen disturbance.
HELD_OUT_KIND = "bridge"


class HeldOutDisturbanceError(ConfigError):
    """A held-out disturbance kind was asked for where training data are made."""


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
    placement: Placement | None = None  # None: the fixed region above; else the pen's reach is drawn


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
    placement: Placement | None = None  # None: the fixed rows above; else the lifted electrodes are drawn


@dataclass(frozen=True)
class PowerlineParams:
    """Power-line interference on every electrode (poor grounding, nearby mains equipment)."""

    powerline_hz: float = 50.0  # mains frequency (50 or 60)
    amplitude_uv: tuple[float, float] = (20.0, 200.0)  # per-channel fundamental amplitude range
    harmonic_ratios: tuple[float, ...] = (0.05, 0.25, 0.03, 0.1)  # 2nd..5th harmonic / fundamental
    mains_drift_hz: float = 0.02  # slow wander of the mains frequency (standard deviation)
    placement: Placement | None = None  # None: every electrode; else only the drawn ones


@dataclass(frozen=True)
class DropoutParams:
    """Channel dropout: inputs that fail for a while (lead off, connector contact)."""

    channel_fraction: float = 0.05  # share of electrodes that drop out (at least one)
    duration_s: tuple[float, float] = (0.5, 3.0)  # length of each dropout episode
    episodes: int = 1  # episodes per affected channel
    floor_uv: float = 0.5  # RMS of the noise left on a dropped channel
    placement: Placement | None = None  # None: channel_fraction of all; else every drawn electrode drops out


@dataclass(frozen=True)
class PopParams:
    """Electrode pop and baseline steps: the half-cell potential jumps when the contact shifts.

    A pop is a step of hundreds of uV to several mV (flexemg: steps up to 3.8 mV at p90, 6.2 mV at
    p99) that recovers exponentially over tens of ms to seconds; a long recovery is a baseline step.
    """

    placement: Placement = Placement("patch", (0.0, 0.05))  # usually one to a few electrodes
    rate_hz: float = 1.0  # mean rate of pops on the placed electrodes
    step_uv: tuple[float, float] = (300.0, 5000.0)  # size of the jump
    recovery_s: tuple[float, float] = (0.02, 2.0)  # exponential recovery time constant (log-uniform)
    mask_recoveries: float = 3.0  # masked for this many time constants after the jump


@dataclass(frozen=True)
class SaturationParams:
    """Amplifier saturation: an offset excursion drives the input to its rail, where it is clipped.

    The output sits at the rail (flat) or clips the EMG peaks, for tenths of a second to seconds;
    rails of high-gain EMG front ends are a few mV (the server flags |x| >= 6 mV as saturated).
    """

    placement: Placement = Placement("patch", (0.0, 0.05))
    rail_uv: tuple[float, float] = (2500.0, 6000.0)  # symmetric input range of the amplifier
    offset_rail_ratio: tuple[float, float] = (0.9, 1.3)  # offset during an episode / rail (> 1: fully flat)
    episode_rate_hz: float = 0.5  # mean rate of saturation episodes
    episode_s: tuple[float, float] = (0.2, 2.0)  # duration of an episode


@dataclass(frozen=True)
class MotionParams:
    """Motion artifact: skin stretch under the electrodes moves their potential slowly and by a lot.

    0.5-5 Hz, 0.3-5 mV peak, spatially smooth over a patch (flexemg 0.5-10 Hz peak-to-peak: 0.3 mV
    median, 4 mV p90, 12.7 mV p99), in episodes of a movement.
    """

    placement: Placement = Placement("patch", (0.02, 0.2))
    frequency_hz: tuple[float, float] = (0.5, 5.0)  # main frequency of the movement
    amplitude_uv: tuple[float, float] = (300.0, 5000.0)  # peak under the patch centre
    episode_rate_hz: float = 0.4  # mean rate of movement episodes
    episode_s: tuple[float, float] = (0.3, 2.0)  # duration of an episode


@dataclass(frozen=True)
class SwayParams:
    """Cable sway: moving leads pick up charge (triboelectric) and coupling changes (capacitive).

    A quasi-periodic 1-8 Hz swing of 50-800 uV with broadband crackle, shared by the leads of one
    cable (a row of the connector), in episodes.
    """

    placement: Placement = Placement("rows", (0.03, 0.15))
    frequency_hz: tuple[float, float] = (1.0, 8.0)  # swing frequency
    amplitude_uv: tuple[float, float] = (50.0, 800.0)  # swing amplitude
    crackle_share: float = 0.3  # broadband crackle RMS relative to the swing amplitude
    episode_rate_hz: float = 0.3  # mean rate of sway episodes
    episode_s: tuple[float, float] = (1.0, 5.0)  # duration of an episode


@dataclass(frozen=True)
class HumParams:
    """Mains hum on electrodes of high contact impedance, at any amplitude, 50 or 60 Hz.

    From a few uV (flexemg: 60 Hz at 4-23 uV, p10-p99 over channels) to mV when a contact is poor.
    """

    placement: Placement = Placement("any", (0.0, 0.1))
    amplitude_uv: tuple[float, float] = (10.0, 3000.0)  # fundamental amplitude, log-uniform per draw
    powerline_hz: float | None = None  # 50 or 60; None draws one of the two per recording
    harmonic_ratios: tuple[float, ...] = (0.05, 0.3, 0.03, 0.12)  # 2nd..5th harmonic / fundamental
    mains_drift_hz: float = 0.02  # slow wander of the mains frequency (standard deviation)


@dataclass(frozen=True)
class DeadParams:
    """Dead channels: a broken lead or amplifier input records zero or a constant (its last value)."""

    placement: Placement = Placement("scatter", (0.0, 0.05))
    zero_share: float = 0.5  # share of dead channels that read exactly zero; the rest hold a constant
    constant_uv: tuple[float, float] = (-3000.0, 3000.0)  # the held constant


@dataclass(frozen=True)
class BridgeParams:
    """Bridged neighbours: gel or sweat shorts adjacent electrodes, which then record nearly one signal.

    Each electrode of a bridged pair records (1 - w) of its own potential and w of its partner's.
    """

    placement: Placement = Placement("patch", (0.0, 0.05))
    weight: tuple[float, float] = (0.4, 0.5)  # w: the partner's share (0.5: both identical)


DisturbanceParams = (
    CAParams | LCParams | PowerlineParams | DropoutParams | PopParams | SaturationParams | MotionParams
    | SwayParams | HumParams | DeadParams | BridgeParams
)  # fmt: skip
_PARAM_TYPES: dict[str, type] = {
    "CA": CAParams, "LC": LCParams, "powerline": PowerlineParams, "dropout": DropoutParams, "pop": PopParams,
    "saturation": SaturationParams, "motion": MotionParams, "sway": SwayParams, "hum": HumParams,
    "dead": DeadParams, "bridge": BridgeParams,
}  # fmt: skip


@dataclass
class DisturbanceField:
    """A disturbance over `n_samples` on a subset of channels.

    `x[:, ch] = clip(mixed * gain + additive, -clip_uv, clip_uv)`, where `mixed` is the channel's own
    signal, or `(1 - w) * own + w * partner's` for a bridged channel (`partner` >= 0).
    """

    channels: np.ndarray  # (k,) int channel indices
    gain: np.ndarray  # (n_samples, k) float32 multiplicative factor on the EMG
    additive: np.ndarray  # (n_samples, k) float32 uV added
    mask: np.ndarray  # (n_samples, k) bool, True where the disturbance acts
    partner: np.ndarray | None = None  # (k,) int channel mixed into each channel, -1 for none
    partner_weight: np.ndarray | None = None  # (k,) float32 share w of the partner's signal
    clip_uv: np.ndarray | None = None  # (k,) float32 rail of each channel, inf for none

    @property
    def n_samples(self) -> int:
        return int(self.gain.shape[0])

    def apply(self, samples: np.ndarray, mask: np.ndarray, *, start: int = 0) -> None:
        """Apply samples `[start, start + len(samples))` of the field in place to `samples` and `mask`."""
        n = samples.shape[0]
        sl = slice(start, start + n)
        own = samples[:, self.channels]
        if self.partner is not None and self.partner_weight is not None:
            bridged = self.partner >= 0
            w = self.partner_weight[bridged]
            own[:, bridged] = (1 - w) * own[:, bridged] + w * samples[:, self.partner[bridged]]
        out = own * self.gain[sl] + self.additive[sl]
        if self.clip_uv is not None:
            out = np.clip(out, -self.clip_uv, self.clip_uv)
        samples[:, self.channels] = out
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


def ensure_trainable(condition: str) -> None:
    """Raise `HeldOutDisturbanceError` when `condition` uses the held-out kind (no training may see it)."""
    if HELD_OUT_KIND in split_condition(condition):
        raise HeldOutDisturbanceError(
            f"Disturbance {HELD_OUT_KIND!r} is held out: it may appear only in tests and evaluation, never in "
            f"GAN training or augmentation (asked for {condition!r}); use one of "
            f"{[c for c in DISTURBANCE_CONDITIONS if c != HELD_OUT_KIND]}."
        )


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
        if getattr(p, "placement", None) is not None:
            raise ConfigError(
                f"Condition {part!r} is placed at random (its params carry a Placement), so it has no fixed "
                "channels; read the disturbance mask of a drawn recording instead."
            )
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
    placement: Placement | None = None,
) -> DisturbanceField:
    """Build the disturbance of one condition over `n_samples` (a `+` combination merges parts).

    `powerline_hz` (50 or 60) sets the mains frequency of default LC / powerline params (the
    recording's own mains); explicit `params` keep their own value. `placement` overrides the
    params' placement of every part (each part drawn on its own electrodes).
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
        if placement is not None:
            p = replace(p, placement=placement)
        where = p.placement
        if where is None:
            channels = np.asarray(affected_channels(layout, part, p), dtype=np.int64)
        else:
            channels = place(layout, where, rng)
            if isinstance(p, DropoutParams):
                p = replace(p, channel_fraction=1.0)  # the drawn electrodes are the ones that fail
        builder = _BUILDERS[part]
        fields.append(builder(n_samples, fs_hz, layout, channels, rng, p))
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
    partner = np.full(channels.size, -1, dtype=np.int64)
    weight = np.zeros(channels.size, dtype=np.float32)
    clip = np.full(channels.size, np.inf, dtype=np.float32)
    for f in fields:
        cols = np.searchsorted(channels, f.channels)
        # (x * g1 + a1) * g2 + a2 = x * g1 g2 + (a1 g2 + a2)
        gain[:, cols] *= f.gain
        add[:, cols] = add[:, cols] * f.gain + f.additive
        mask[:, cols] |= f.mask
        # Approximations of a combination: the bridge mixes the inputs first, the tightest rail clips last.
        if f.partner is not None and f.partner_weight is not None:
            partner[cols], weight[cols] = f.partner, f.partner_weight
        if f.clip_uv is not None:
            clip[cols] = np.minimum(clip[cols], f.clip_uv)
    bridged = bool((partner >= 0).any())
    clipped = bool(np.isfinite(clip).any())
    return DisturbanceField(channels, gain, add, mask, partner if bridged else None, weight if bridged else None,
                            clip if clipped else None)  # fmt: skip


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


def _episodes(
    n: int, fs_hz: float, rng: np.random.Generator, rate_hz: float, duration_s: tuple[float, float]
) -> list[tuple[int, int]]:
    """(start, length) of Poisson-timed episodes; at least one, so a drawn disturbance always shows."""
    count = max(1, int(rng.poisson(rate_hz * n / fs_hz)))
    out = []
    for _ in range(count):
        length = max(1, min(n, int(rng.uniform(*duration_s) * fs_hz)))
        out.append((int(rng.integers(0, max(1, n - length + 1))), length))
    return out


def _spatial_weight(layout: ElectrodeLayout, channels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(k,) weights falling smoothly from a random electrode of the set (0.3 at the far edge, 1 at the centre)."""
    dist = _distances_ied(layout, channels)[int(rng.integers(channels.size))]
    return (1.0 - 0.7 * dist / max(float(dist.max()), 1.0)).astype(np.float32)


def _pop_field(
    n: int, fs_hz: float, layout: ElectrodeLayout, channels: np.ndarray, rng: np.random.Generator, p: PopParams
) -> DisturbanceField:
    k = channels.size
    add = np.zeros((n, k), dtype=np.float32)
    mask = np.zeros((n, k), dtype=bool)
    for t0, _ in _episodes(n, fs_hz, rng, p.rate_hz, (0.0, 0.0)):
        hit = rng.choice(k, size=int(rng.integers(1, k + 1)), replace=False)
        tau_s = float(np.exp(rng.uniform(np.log(p.recovery_s[0]), np.log(p.recovery_s[1]))))
        length = min(n - t0, int(8 * tau_s * fs_hz) + 1)
        wave = np.exp(-np.arange(length) / (tau_s * fs_hz)).astype(np.float32)
        step = rng.uniform(*p.step_uv, hit.size) * rng.choice([-1.0, 1.0]) * rng.uniform(0.7, 1.0, hit.size)
        add[t0 : t0 + length, hit] += wave[:, None] * step[None, :].astype(np.float32)
        mask[t0 : t0 + min(length, int(p.mask_recoveries * tau_s * fs_hz) + 1), hit] = True
    return DisturbanceField(channels, np.ones((n, k), dtype=np.float32), add, mask)


def _saturation_field(
    n: int, fs_hz: float, layout: ElectrodeLayout, channels: np.ndarray, rng: np.random.Generator,
    p: SaturationParams,
) -> DisturbanceField:  # fmt: skip
    k = channels.size
    rail = rng.uniform(*p.rail_uv)  # one amplifier: one rail for all its inputs
    add = np.zeros((n, k), dtype=np.float32)
    mask = np.zeros((n, k), dtype=bool)
    for t0, length in _episodes(n, fs_hz, rng, p.episode_rate_hz, p.episode_s):
        offset = rail * rng.uniform(*p.offset_rail_ratio, k) * rng.choice([-1.0, 1.0])
        # A fast (~5 ms) drive into the rail and back, as the input's DC offset runs away and recovers.
        ramp = np.minimum(1.0, np.minimum(np.arange(length), np.arange(length)[::-1]) / (0.005 * fs_hz))
        add[t0 : t0 + length] += (ramp[:, None] * offset[None, :]).astype(np.float32)
        mask[t0 : t0 + length] = True
    clip = np.full(k, rail, dtype=np.float32)
    return DisturbanceField(channels, np.ones((n, k), dtype=np.float32), add, mask, clip_uv=clip)


def _motion_field(
    n: int, fs_hz: float, layout: ElectrodeLayout, channels: np.ndarray, rng: np.random.Generator, p: MotionParams
) -> DisturbanceField:
    k = channels.size
    add = np.zeros((n, k), dtype=np.float32)
    mask = np.zeros((n, k), dtype=bool)
    for t0, length in _episodes(n, fs_hz, rng, p.episode_rate_hz, p.episode_s):
        t = np.arange(length) / fs_hz
        freq = rng.uniform(*p.frequency_hz)
        # One shared movement (a smooth bump plus a swing), stronger near the patch centre.
        envelope = np.sin(np.pi * np.arange(length) / length) ** 2
        wave = envelope * (0.6 * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi)) + 0.6 * rng.choice([-1, 1]))
        weight = _spatial_weight(layout, channels, rng) * rng.uniform(0.8, 1.0, k).astype(np.float32)
        add[t0 : t0 + length] += (rng.uniform(*p.amplitude_uv) * wave[:, None] * weight[None, :]).astype(np.float32)
        mask[t0 : t0 + length] = True
    return DisturbanceField(channels, np.ones((n, k), dtype=np.float32), add, mask)


def _sway_field(
    n: int, fs_hz: float, layout: ElectrodeLayout, channels: np.ndarray, rng: np.random.Generator, p: SwayParams
) -> DisturbanceField:
    k = channels.size
    add = np.zeros((n, k), dtype=np.float32)
    mask = np.zeros((n, k), dtype=bool)
    crackle_sos = signal.butter(2, [20.0, min(400.0, 0.45 * fs_hz)], btype="bandpass", fs=fs_hz, output="sos")
    for t0, length in _episodes(n, fs_hz, rng, p.episode_rate_hz, p.episode_s):
        t = np.arange(length) / fs_hz
        freq = rng.uniform(*p.frequency_hz) * (1 + 0.1 * np.sin(2 * np.pi * 0.3 * t))  # a swinging cable
        swing = np.sin(2 * np.pi * np.cumsum(freq) / fs_hz + rng.uniform(0, 2 * np.pi))
        amplitude = rng.uniform(*p.amplitude_uv)
        lead_gain = rng.uniform(0.5, 1.0, k)  # leads of one cable move together, each its own coupling
        crackle = signal.sosfilt(crackle_sos, rng.standard_normal((length, k)), axis=0)
        crackle *= (rng.random((length, 1)) < 0.05) * 8.0  # sparse bursts of charge
        wave = swing[:, None] * lead_gain[None, :] + p.crackle_share * crackle
        add[t0 : t0 + length] += (amplitude * wave).astype(np.float32)
        mask[t0 : t0 + length] = True
    return DisturbanceField(channels, np.ones((n, k), dtype=np.float32), add, mask)


def _local_hum_field(
    n: int, fs_hz: float, layout: ElectrodeLayout, channels: np.ndarray, rng: np.random.Generator, p: HumParams
) -> DisturbanceField:
    k = channels.size
    mains_hz = p.powerline_hz if p.powerline_hz is not None else float(rng.choice([50.0, 60.0]))
    phase = _mains(n, fs_hz, rng, mains_hz, p.mains_drift_hz)
    ratios = tuple(r for h, r in enumerate(p.harmonic_ratios, start=2) if h * mains_hz < 0.49 * fs_hz)
    lo, hi = p.amplitude_uv
    level = np.exp(rng.uniform(np.log(lo), np.log(hi)))
    add = _hum(phase, level * rng.uniform(0.5, 1.5, k), ratios, rng)
    return DisturbanceField(channels, np.ones((n, k), dtype=np.float32), add, np.ones((n, k), dtype=bool))


def _dead_field(
    n: int, fs_hz: float, layout: ElectrodeLayout, channels: np.ndarray, rng: np.random.Generator, p: DeadParams
) -> DisturbanceField:
    k = channels.size
    constant = np.where(rng.random(k) < p.zero_share, 0.0, rng.uniform(*p.constant_uv, k)).astype(np.float32)
    add = np.broadcast_to(constant, (n, k)).copy()
    return DisturbanceField(channels, np.zeros((n, k), dtype=np.float32), add, np.ones((n, k), dtype=bool))


def _bridge_field(
    n: int, fs_hz: float, layout: ElectrodeLayout, channels: np.ndarray, rng: np.random.Generator, p: BridgeParams
) -> DisturbanceField:
    """Pair each drawn electrode with an adjacent one (preferably drawn too); both ends of a bridge are masked."""
    near = adjacency(layout)
    chosen = {int(c) for c in channels}
    # Electrodes with the fewest drawn neighbours pair first, so few are left to pair outside the draw.
    todo = sorted((int(c) for c in rng.permutation(channels)), key=lambda c: sum(b in chosen for b in near.get(c, [])))
    pairs: list[tuple[int, int]] = []
    paired: set[int] = set()
    for a in todo:
        if a in paired:
            continue
        options = [b for b in near.get(a, []) if b not in paired]
        inside = [b for b in options if b in chosen]
        pool = inside or options
        if not pool:
            continue  # an electrode with every neighbour bridged already stays as it is
        b = int(rng.choice(pool))
        pairs.append((a, b))
        paired |= {a, b}
    ends = np.asarray(sorted(paired), dtype=np.int64)
    partner = np.full(ends.size, -1, dtype=np.int64)
    weight = np.zeros(ends.size, dtype=np.float32)
    for a, b in pairs:
        w = rng.uniform(*p.weight)
        ia, ib = np.searchsorted(ends, [a, b])
        partner[ia], partner[ib] = b, a
        weight[ia] = weight[ib] = w
    k = ends.size
    return DisturbanceField(ends, np.ones((n, k), dtype=np.float32), np.zeros((n, k), dtype=np.float32),
                            np.ones((n, k), dtype=bool), partner=partner, partner_weight=weight)  # fmt: skip


_BUILDERS: dict[str, Callable[..., DisturbanceField]] = {
    "CA": _ca_field, "LC": _lc_field, "powerline": _powerline_field, "dropout": _dropout_field, "pop": _pop_field,
    "saturation": _saturation_field, "motion": _motion_field, "sway": _sway_field, "hum": _local_hum_field,
    "dead": _dead_field, "bridge": _bridge_field,
}  # fmt: skip


def apply_disturbance(
    samples: np.ndarray,
    *,
    fs_hz: float,
    layout: ElectrodeLayout,
    condition: str,
    rng: np.random.Generator,
    params: DisturbanceParams | None = None,
    powerline_hz: float | None = None,
    placement: Placement | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Disturb `(n_samples, n_channels)` uV samples; returns (float32 disturbed copy, bool mask).

    `powerline_hz`, `placement`: see `disturbance_field`.
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
        placement=placement,
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
    placement: Placement | None = None,
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
        placement=placement,
    )
    if recording.disturbance_mask is not None:
        mask |= recording.disturbance_mask
    new_condition = condition if recording.condition == "clean" else f"{recording.condition}+{condition}"
    provenance = dict(recording.provenance)
    entry: dict[str, object] = {"condition": condition, "seed": seed}
    if placement is not None:
        entry["placement"] = {"shape": placement.shape, "severity": placement.severity}
    provenance["disturbances"] = [*provenance.get("disturbances", []), entry]
    logger.debug("Injected %s into a %s recording of %.1f s", condition, recording.condition, recording.duration_s)
    return replace(recording, samples=samples, disturbance_mask=mask, condition=new_condition, provenance=provenance)
