"""Forward model of monopolar surface HD-EMG over the forearm (numpy/scipy only).

Physics, kept deliberately simple but grounded:

- **Muscles** (`MUSCLES`) sit at fixed places around the forearm (a fraction of the layout's
  circumferential span) at a depth. Each muscle is a few motor-unit *territories* (sub-sources);
  each territory fires a band-limited stochastic interference signal whose power follows the
  muscle's activation (surface EMG amplitude grows roughly linearly with drive).
- **Spectrum**: white noise shaped by a band-pass (differentiating low edge, two-pole high edge)
  that gives monopolar EMG a median frequency around 100-150 Hz after the 20-450 Hz band-pass.
  Fatigue compresses the spectrum (lower conduction velocity): each territory cross-fades towards a
  low-shifted copy of its filter, and its amplitude grows a little.
- **Volume conduction**: the amplitude seen by an electrode falls off with its circumferential
  distance `dx` to the territory as `(h^2 / (h^2 + dx^2))^0.75` (a dipole-like decay with depth `h`),
  so deep muscles spread widely and overlap, superficial ones give sharp hot spots.
- **Propagation**: action potentials travel from each territory's innervation zone along the fibres
  (the longitudinal axis) at the conduction velocity (~4 m/s), so an electrode `dy` mm away sees the
  signal `dy / v` later. A non-propagating share (far-field / end-of-fibre components, common to
  all electrodes over the muscle) adds the strong monopolar correlation of real grids.
- **Sensor**: per-channel gain (skin impedance), white amplifier noise, a small power-line pickup
  and a slow baseline wander.

`EmgGenerator` produces the signal block by block, carrying every filter state and the
propagation history, so blocks of any size join seamlessly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import signal

from rohde.core.errors import ConfigError
from rohde.core.gestures import REST_GESTURES
from rohde.core.layouts import ElectrodeLayout
from rohde.simulation.electrode_geometry import ElectrodeGeometry, electrode_geometry

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MuscleSpec:
    name: str
    u: float  # circumferential position as a fraction of the layout span (0 = first electrode column)
    depth: float  # depth of the muscle belly as a fraction of the layout span (0.05 of 250 mm ~ 12 mm)
    gain_uv: float  # monopolar RMS at the hot spot at full activation, before subject scaling
    spectrum_scale: float  # >1 shifts the spectrum up (superficial, fast fibres), <1 down (deep)


# Forearm cross-section unrolled from the ulnar-volar side around to the deep supinator.
MUSCLES: tuple[MuscleSpec, ...] = (
    MuscleSpec("flexor_carpi_ulnaris", 0.06, 0.045, 158.4, 1.05),
    MuscleSpec("flexor_digitorum_superficialis", 0.18, 0.060, 144.0, 1.00),
    MuscleSpec("flexor_carpi_radialis", 0.29, 0.040, 153.6, 1.10),
    MuscleSpec("pronator_teres", 0.39, 0.070, 124.8, 0.90),
    MuscleSpec("brachioradialis", 0.50, 0.040, 144.0, 1.05),
    MuscleSpec("extensor_carpi_radialis", 0.61, 0.045, 153.6, 1.10),
    MuscleSpec("extensor_digitorum", 0.73, 0.045, 148.8, 1.05),
    MuscleSpec("extensor_carpi_ulnaris", 0.85, 0.045, 153.6, 1.00),
    MuscleSpec("supinator", 0.66, 0.090, 115.2, 0.85),
)
MUSCLE_INDEX = {m.name: i for i, m in enumerate(MUSCLES)}

# Activation (fraction of maximal drive) of each muscle per gesture at nominal effort: distinct
# but overlapping synergies (co-contraction of antagonists stabilises the wrist).
SYNERGIES: dict[str, dict[str, float]] = {
    "no_movement": {},
    "wrist_supination": {"supinator": 0.55, "brachioradialis": 0.30, "extensor_carpi_radialis": 0.12,
                         "extensor_digitorum": 0.10},
    "wrist_pronation": {"pronator_teres": 0.55, "flexor_carpi_radialis": 0.22, "brachioradialis": 0.18,
                        "flexor_digitorum_superficialis": 0.08},
    "hand_close": {"flexor_digitorum_superficialis": 0.50, "flexor_carpi_ulnaris": 0.18,
                   "flexor_carpi_radialis": 0.18, "extensor_carpi_ulnaris": 0.15, "extensor_digitorum": 0.10},
    "hand_open": {"extensor_digitorum": 0.50, "extensor_carpi_ulnaris": 0.20, "extensor_carpi_radialis": 0.18,
                  "flexor_digitorum_superficialis": 0.08},
    "wrist_flexion": {"flexor_carpi_radialis": 0.45, "flexor_carpi_ulnaris": 0.42,
                      "flexor_digitorum_superficialis": 0.25, "pronator_teres": 0.08},
    "wrist_extension": {"extensor_carpi_radialis": 0.45, "extensor_carpi_ulnaris": 0.42,
                        "extensor_digitorum": 0.25, "supinator": 0.08},
}  # fmt: skip

N_TERRITORIES = 3  # motor-unit territories (independent sub-sources) per muscle
CONDUCTION_VELOCITY_M_S = 4.0  # mean muscle-fibre conduction velocity
STANDING_SHARE = 1.2  # non-propagating amplitude relative to the propagating one
SPECTRUM_FAST = 1.15  # spectral scale of the fastest (fresh, superficial) shaping filter
SPECTRUM_SLOW = 0.75  # spectral scale of the most compressed (deep or fatigued) shaping filter
MOD_CUTOFF_HZ = 1.5  # bandwidth of the slow drive fluctuation during a hold
WANDER_CUTOFF_HZ = 0.5  # bandwidth of the baseline wander of the electrode potentials
N_WANDER = 3  # slow wander processes (movement, breathing) shared by all electrodes with own weights


def synergy_matrix(gestures: tuple[str, ...]) -> np.ndarray:
    """(n_gestures, n_muscles) nominal activation of every muscle for each gesture name."""
    unknown = [g for g in gestures if g not in SYNERGIES and g not in REST_GESTURES]
    if unknown:
        raise ConfigError(
            f"The simulator has no muscle synergy for gestures {unknown}; use names from {sorted(SYNERGIES)}."
        )
    table = np.zeros((len(gestures), len(MUSCLES)))
    for gi, name in enumerate(gestures):
        for muscle, level in SYNERGIES.get(name, {}).items():
            table[gi, MUSCLE_INDEX[muscle]] = level
    return table


@dataclass(frozen=True)
class Anatomy:
    """One subject: where the muscles are and how strong and fast they are."""

    territory_u: np.ndarray  # (n_src,) circumferential position, fraction of the span
    territory_depth: np.ndarray  # (n_src,) depth, fraction of the span
    territory_iz_mm: np.ndarray  # (n_src,) innervation-zone position along the fibres (0 = grid centre)
    territory_gain_uv: np.ndarray  # (n_src,) hot-spot RMS at full activation
    territory_muscle: np.ndarray  # (n_src,) int muscle index
    spectrum_scale: np.ndarray  # (n_muscles,) per-muscle spectral shift
    conduction_velocity_m_s: float  # subject's mean fibre conduction velocity
    rest_tone: np.ndarray  # (n_muscles,) residual activation at rest (postural tone)
    fatigue_rate: float  # how fast sustained drive compresses the spectrum


def make_anatomy(rng: np.random.Generator) -> Anatomy:
    """Draw one subject: muscle positions, depths, gains and speeds vary between people."""
    n_m = len(MUSCLES)
    muscle_u = np.array([m.u for m in MUSCLES]) + rng.normal(0.0, 0.025, n_m)
    muscle_depth = np.array([m.depth for m in MUSCLES]) * rng.uniform(0.8, 1.3, n_m)
    muscle_gain = np.array([m.gain_uv for m in MUSCLES]) * rng.lognormal(0.0, 0.25, n_m)
    muscle_iz = rng.normal(0.0, 8.0, n_m)
    src_m = np.repeat(np.arange(n_m), N_TERRITORIES)
    n_src = src_m.size
    # Territories spread across the muscle's width; their powers add up to the muscle's power.
    share = rng.dirichlet(np.full(N_TERRITORIES, 4.0), n_m).ravel()
    return Anatomy(
        territory_u=muscle_u[src_m] + rng.normal(0.0, 0.35, n_src) * muscle_depth[src_m],
        territory_depth=muscle_depth[src_m] * rng.uniform(0.8, 1.2, n_src),
        territory_iz_mm=muscle_iz[src_m] + rng.normal(0.0, 6.0, n_src),
        territory_gain_uv=muscle_gain[src_m] * np.sqrt(share * N_TERRITORIES),
        territory_muscle=src_m,
        spectrum_scale=np.array([m.spectrum_scale for m in MUSCLES]) * rng.uniform(0.9, 1.1, n_m),
        conduction_velocity_m_s=CONDUCTION_VELOCITY_M_S * float(rng.uniform(0.9, 1.15)),
        rest_tone=rng.uniform(0.01, 0.025, n_m),
        fatigue_rate=float(rng.uniform(1.5, 3.0)),
    )


@dataclass(frozen=True)
class SessionPlacement:
    """One session: where the grids landed on the arm and how well each electrode makes contact."""

    shift_circ: float  # circumferential shift of all grids, fraction of the span
    shift_long_mm: float  # longitudinal shift of all grids
    channel_gain: np.ndarray  # (n_channels,) skin-impedance / gain factor
    noise_uv: np.ndarray  # (n_channels,) RMS of white amplifier + electrode noise
    offset_uv: np.ndarray  # (n_channels,) DC electrode offset
    hum_uv: np.ndarray  # (n_channels,) residual power-line pickup amplitude
    hum_phase: float  # phase of the power line at sample 0
    wander_uv: np.ndarray  # (N_WANDER, n_channels) weights of the shared slow baseline-wander processes


def make_session(rng: np.random.Generator, n_channels: int, *, noise_uv: float, hum_uv: float) -> SessionPlacement:
    """Draw one donning of the electrode grids."""
    return SessionPlacement(
        shift_circ=float(rng.uniform(-0.012, 0.012)),
        shift_long_mm=float(rng.uniform(-4.0, 4.0)),
        channel_gain=rng.lognormal(0.0, 0.08, n_channels),
        noise_uv=noise_uv * rng.lognormal(0.0, 0.2, n_channels),
        offset_uv=rng.normal(0.0, 40.0, n_channels),
        hum_uv=hum_uv * rng.lognormal(0.0, 0.4, n_channels),
        hum_phase=float(rng.uniform(0, 2 * np.pi)),
        wander_uv=rng.normal(0.0, 6.0, (N_WANDER, n_channels)),
    )


def _unit_power_lowpass(cutoff_hz: float, fs_hz: float) -> np.ndarray:
    """Second-order low-pass whose response to unit white noise has unit variance."""
    sos = signal.butter(2, cutoff_hz, btype="lowpass", fs=fs_hz, output="sos")
    impulse = np.zeros(int(20 * fs_hz / cutoff_hz))
    impulse[0] = 1.0
    gain = np.sqrt(np.sum(signal.sosfilt(sos, impulse) ** 2))
    sos = sos.copy()
    sos[0, :3] /= gain
    return sos


def _emg_shaping_sos(fs_hz: float, scale: float) -> np.ndarray:
    """Band-pass shaping white noise into a monopolar EMG spectrum; unit output variance."""
    nyq = fs_hz / 2
    low = min(55.0 * scale, 0.3 * nyq)
    high = min(170.0 * scale, 0.8 * nyq)
    sos = np.concatenate(
        [
            signal.butter(1, low, btype="highpass", fs=fs_hz, output="sos"),
            signal.butter(2, high, btype="lowpass", fs=fs_hz, output="sos"),
        ]
    )
    impulse = np.zeros(int(fs_hz))
    impulse[0] = 1.0
    sos[0, :3] /= np.sqrt(np.sum(signal.sosfilt(sos, impulse) ** 2))
    return sos


class EmgGenerator:
    """Stateful block generator of one subject and session on one layout.

    `generate(activation)` takes `(n_samples, n_muscles)` drive in [0, 1] and returns
    `(n_samples, n_channels)` float32 microvolts, continuing seamlessly from the previous call.
    """

    def __init__(
        self,
        *,
        layout: ElectrodeLayout,
        fs_hz: float,
        anatomy: Anatomy,
        session: SessionPlacement,
        powerline_hz: float = 50.0,
        fatigue: bool = True,
        drive_fluctuation: float = 0.3,
    ) -> None:
        if fs_hz <= 0:
            raise ConfigError(f"fs_hz must be positive, got {fs_hz}.")
        self.layout = layout
        self.fs_hz = float(fs_hz)
        self.anatomy = anatomy
        self.session = session
        self.powerline_hz = powerline_hz
        self.fatigue = fatigue
        self.drive_fluctuation = drive_fluctuation  # relative RMS of the slow drive fluctuation
        self.n_channels = layout.n_channels
        self.n_muscles = len(MUSCLES)
        self.n_src = anatomy.territory_muscle.size
        self._geometry = electrode_geometry(layout)
        self._build_mixing(self._geometry)
        # Two shaping filters bracket the spectra; each muscle sits between them (its spectral
        # scale) and fatigue moves it towards the compressed one (slower conduction).
        self._sos_fast = _emg_shaping_sos(self.fs_hz, SPECTRUM_FAST)
        self._sos_slow = _emg_shaping_sos(self.fs_hz, SPECTRUM_SLOW)
        self._zi_fast = np.zeros((self._sos_fast.shape[0], 2, self.n_src))
        self._zi_slow = np.zeros((self._sos_slow.shape[0], 2, self.n_src))
        self._base_slowness = np.clip(
            (SPECTRUM_FAST - anatomy.spectrum_scale) / (SPECTRUM_FAST - SPECTRUM_SLOW), 0.0, 1.0
        )
        self._sos_mod = _unit_power_lowpass(MOD_CUTOFF_HZ, self.fs_hz)
        self._zi_mod = np.zeros((self._sos_mod.shape[0], 2, self.n_muscles))
        self._sos_wander = _unit_power_lowpass(WANDER_CUTOFF_HZ, self.fs_hz)
        self._zi_wander = np.zeros((self._sos_wander.shape[0], 2, N_WANDER))
        self._history = np.zeros((self._max_delay, self.n_src), dtype=np.float32)
        self._noise_uv = session.noise_uv.astype(np.float32)[None, :]
        # Fatigue state: a slow leaky integral of each muscle's drive (time constant 30 s).
        self._fatigue_level = np.zeros(self.n_muscles)
        self._fatigue_alpha = 1.0 / (30.0 * self.fs_hz)
        self._t = 0  # samples generated so far

    def _build_mixing(self, geo: ElectrodeGeometry) -> None:
        """Per (territory, delay) pair the weights onto all channels: one matmul per block."""
        an, se = self.anatomy, self.session
        span = geo.span_mm
        mapped = geo.mapped
        circ = np.where(mapped, geo.circumferential_mm, 0.0) / span + se.shift_circ  # (C,) fraction of span
        longi = np.where(mapped, geo.longitudinal_mm, 0.0) + se.shift_long_mm  # (C,) mm
        dx = circ[None, :] - an.territory_u[:, None]  # (S, C)
        h = an.territory_depth[:, None]
        footprint = (h**2 / (h**2 + dx**2)) ** 0.75
        amp = an.territory_gain_uv[:, None] * footprint * (se.channel_gain * mapped)[None, :]  # (S, C)
        dy_mm = np.abs(longi[None, :] - an.territory_iz_mm[:, None])
        delay = np.rint(dy_mm * 1e-3 / an.conduction_velocity_m_s * self.fs_hz).astype(np.int64)  # (S, C)
        # Far-field share arrives when the wave reaches the fibre ends, alike for all electrodes.
        standing_delay = int(np.rint(0.03 / an.conduction_velocity_m_s * self.fs_hz))
        norm = 1.0 / np.sqrt(1.0 + STANDING_SHARE**2)
        pairs: dict[tuple[int, int], np.ndarray] = {}
        for s in range(self.n_src):
            for d in np.unique(delay[s]):
                w = np.where(delay[s] == d, amp[s], 0.0) * norm
                pairs[(s, int(d))] = w
            key = (s, standing_delay)
            pairs[key] = pairs.get(key, np.zeros(self.n_channels)) + amp[s] * STANDING_SHARE * norm
        keys = sorted(pairs)
        self._pair_src = np.array([k[0] for k in keys], dtype=np.int64)
        self._pair_delay = np.array([k[1] for k in keys], dtype=np.int64)
        # Sensor terms ride on the same matmul: power line, DC offset and the wander processes.
        sensor = np.vstack([se.hum_uv, se.offset_uv, se.wander_uv])  # (2 + N_WANDER, C)
        self._weights = np.vstack([np.stack([pairs[k] for k in keys]), sensor]).astype(np.float32)  # (P + 5, C)
        self._max_delay = int(self._pair_delay.max()) + 1
        logger.debug("EMG mixing: %s sources, %s (source, delay) pairs", self.n_src, len(keys))

    def generate(self, activation: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Next `(n_samples, n_channels)` float32 uV for drive `activation` `(n_samples, n_muscles)`."""
        if activation.ndim != 2 or activation.shape[1] != self.n_muscles:
            raise ConfigError(f"activation must be (n_samples, {self.n_muscles}), got {activation.shape}.")
        n = activation.shape[0]
        if n == 0:
            return np.zeros((0, self.n_channels), dtype=np.float32)
        an, se = self.anatomy, self.session
        # Slow independent fluctuation of each muscle's drive, as during any held contraction.
        mod_noise = rng.standard_normal((n, self.n_muscles))
        mod, self._zi_mod = signal.sosfilt(self._sos_mod, mod_noise, axis=0, zi=self._zi_mod)
        drive = np.clip(activation * (1.0 + self.drive_fluctuation * mod), 0.0, None)  # (n, M)
        drive = drive + an.rest_tone[None, :] * (1.0 + 0.1 * mod)
        # Fatigue: leaky integral of drive; exact per-sample recursion for a one-pole filter.
        fatigue_levels, self._fatigue_level = self._fatigue(drive)
        tired = np.clip(an.fatigue_rate * fatigue_levels, 0.0, 0.6) if self.fatigue else np.zeros_like(drive)
        white = rng.standard_normal((n, self.n_src))
        fast, self._zi_fast = signal.sosfilt(self._sos_fast, white, axis=0, zi=self._zi_fast)
        slow, self._zi_slow = signal.sosfilt(self._sos_slow, white, axis=0, zi=self._zi_slow)
        k = np.clip(self._base_slowness[None, :] + tired, 0.0, 1.0)[:, an.territory_muscle]  # (n, S)
        # Cross-fade towards the compressed spectrum; amplitude grows ~15 % when fully tired.
        muscle_gain = drive * (1.0 + 0.15 * tired)
        src = ((1.0 - k) * fast + k * slow) * muscle_gain[:, an.territory_muscle]
        hist = np.concatenate([self._history, src.astype(np.float32)], axis=0)  # (D + n, S)
        d0 = self._max_delay
        n_pairs = self._pair_src.size
        basis = np.empty((n, n_pairs + 2 + N_WANDER), dtype=np.float32)
        rows = (d0 - self._pair_delay)[None, :] + np.arange(n)[:, None]  # (n, P)
        basis[:, :n_pairs] = hist[rows, self._pair_src[None, :]]  # each territory at each of its delays
        self._history = hist[-d0:]
        t = (self._t + np.arange(n)) / self.fs_hz
        basis[:, n_pairs] = np.sin(2 * np.pi * self.powerline_hz * t + se.hum_phase)
        basis[:, n_pairs + 1] = 1.0
        wander, self._zi_wander = signal.sosfilt(
            self._sos_wander, rng.standard_normal((n, N_WANDER)), axis=0, zi=self._zi_wander
        )
        basis[:, n_pairs + 2 :] = wander
        out = basis @ self._weights  # (n, C)
        out += rng.standard_normal((n, self.n_channels), dtype=np.float32) * self._noise_uv
        self._t += n
        return out

    def _fatigue(self, drive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Leaky integral y[t] = (1-a) y[t-1] + a x[t] of each muscle's drive, with carried state."""
        a = self._fatigue_alpha
        b = np.array([a])
        den = np.array([1.0, -(1.0 - a)])
        zi = ((1.0 - a) * self._fatigue_level)[None, :]
        y, zf = signal.lfilter(b, den, drive, axis=0, zi=zi)
        return y, zf[0] / (1.0 - a)
