"""Placeable disturbance patches: a conditional WGAN-GP over small neighbourhoods of the electrode grid.

The region GAN (`rohde.training.gan`) learns one fixed channel set per condition (CA's last electrodes,
LC's last rows), so what it makes fits only there. This one learns a **patch**: `rows x cols`
neighbouring sites of one grid over `segment_ms` (sites in row-major order, `(rows * cols, T)` uV),
conditioned on the disturbance kind, so the same generator fills any neighbourhood of any layout:

- **Training data** are patches cut where the ground-truth disturbance mask says a kind acts
  (`extract_patches`): every `rows x cols` block of a grid whose sites all lie inside the disturbed
  electrode set, at every window during which any of its sites is masked.
- **What is learned** depends on how a kind acts on the signal (`REPLACING_KINDS`): a kind that
  takes the electrode over (LC: contact lost; saturation: the input at its rail) is learned and
  spliced as the recorded signal, which **replaces** the clean one; every other kind (CA, pop,
  motion, sway, hum) sums with the EMG, so it is learned as the disturbance alone (disturbed minus
  clean, which the simulator's paired trials give) and spliced by **adding** it to the clean EMG.
  `dead` is not generated: after the per-segment mean is removed (as for every GAN segment, see
  `rohde.training.gan_models.remove_segment_mean`) a dead patch is all zeros.
- **Splicing** (`PatchGAN.splice`): the electrodes are drawn with `rohde.simulation.placement` (any
  shape, any layout), covered by a grid of `rows x cols` blocks at a random offset, and each block gets
  its own generated patch track (segments joined in time by `rohde.training.gan.tile_segments`).
  Sites of one block are coherent; neighbouring blocks are independent draws.

The networks, the signed-log scaling, the gradient penalty and the training loop are the region GAN's
(`train_disturbance_gan`, with one "region" of `rows * cols` channels per kind); this module only adds
the patch geometry. The held-out kind (`HELD_OUT_KIND`) is refused there as everywhere in training.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rohde.core.errors import ConfigError
from rohde.core.layouts import ElectrodeLayout
from rohde.core.recording import Recording
from rohde.simulation.disturbances import ensure_trainable
from rohde.simulation.placement import Placement, place
from rohde.training.gan import DisturbanceGAN, tile_segments, train_disturbance_gan
from rohde.training.gan_models import GANConfig

logger = logging.getLogger(__name__)

# Trainable kinds the patch GAN generates (bridge is held out; dead is a constant, see the docstring).
PATCH_KINDS: tuple[str, ...] = ("CA", "LC", "pop", "saturation", "motion", "sway", "hum")
# Kinds whose recorded signal replaces the clean one; the others are learned as, and added as, disturbance alone.
REPLACING_KINDS = frozenset({"LC", "saturation"})


@dataclass(frozen=True)
class PatchShape:
    rows: int = 3  # sites of a patch along a grid's columns (grid rows it spans)
    cols: int = 3  # sites of a patch along a grid's rows (grid columns it spans)

    def __post_init__(self) -> None:
        if self.rows < 1 or self.cols < 1:
            raise ConfigError(f"PatchShape needs rows >= 1 and cols >= 1, got {self.rows} x {self.cols}.")

    @property
    def n_sites(self) -> int:
        return self.rows * self.cols


def grid_blocks(layout: ElectrodeLayout, shape: PatchShape) -> np.ndarray:
    """Channels `(n_blocks, rows * cols)` int64 of every complete `rows x cols` block of every grid (row-major)."""
    blocks = []
    for grid in layout.grids:
        index = grid.index_array()  # (R, C)
        for r in range(index.shape[0] - shape.rows + 1):
            for c in range(index.shape[1] - shape.cols + 1):
                block = index[r : r + shape.rows, c : c + shape.cols].ravel()
                if (block >= 0).all():
                    blocks.append(block)
    if not blocks:
        raise ConfigError(f"Layout {layout.name!r} has no grid of at least {shape.rows} x {shape.cols} electrodes.")
    return np.asarray(blocks, dtype=np.int64)


def extract_patches(
    disturbed: Recording,
    kind: str,
    *,
    shape: PatchShape,
    segment_samples: int,
    hop_samples: int,
    clean: Recording | None = None,
) -> np.ndarray:
    """Training patches `(N, rows * cols, segment_samples)` float32 uV where `disturbed`'s mask says `kind` acts.

    A block qualifies when all its sites are in the disturbed set (channels masked at any time); a
    window (every `hop_samples`) when any of the block's sites is masked in it. Replacing kinds give
    the recorded signal; additive ones the disturbance alone, `disturbed - clean`, so they need the
    `clean` twin (same EMG, same length). `patch_sources` gives the recorded and clean patches too.
    """
    return patch_sources(disturbed, kind, shape=shape, segment_samples=segment_samples, hop_samples=hop_samples,
                         clean=clean)["target"]  # fmt: skip


def patch_sources(
    disturbed: Recording,
    kind: str,
    *,
    shape: PatchShape,
    segment_samples: int,
    hop_samples: int,
    clean: Recording | None = None,
) -> dict[str, np.ndarray]:
    """`{"target", "recorded", "clean"}`: aligned `(N, rows * cols, T)` patches at the places `extract_patches` cuts.

    `target` is what the GAN learns (see `extract_patches`), `recorded` the disturbed signal, `clean` the
    clean twin's signal (zeros without one).
    """
    ensure_trainable(kind)
    if disturbed.disturbance_mask is None:
        raise ConfigError("The disturbed recording has no disturbance_mask; patches are cut where the mask is set.")
    if segment_samples < 1 or hop_samples < 1:
        raise ConfigError(f"segment_samples and hop_samples must be >= 1, got {segment_samples}, {hop_samples}.")
    if clean is not None and clean.samples.shape != disturbed.samples.shape:
        raise ConfigError(f"clean has shape {clean.samples.shape}; its disturbed twin {disturbed.samples.shape}.")
    if kind not in REPLACING_KINDS and clean is None:
        raise ConfigError(
            f"Kind {kind!r} is added to the EMG, so its patches are disturbed minus clean: give the clean twin "
            "of the disturbed recording (same shape) as clean=."
        )
    clean_samples = clean.samples if clean is not None else np.zeros_like(disturbed.samples)
    sources = {"recorded": disturbed.samples, "clean": clean_samples}
    sources["target"] = disturbed.samples if kind in REPLACING_KINDS else disturbed.samples - clean_samples
    mask = disturbed.disturbance_mask
    touched: np.ndarray = np.asarray(mask.any(axis=0))  # (C,)
    blocks = grid_blocks(disturbed.layout, shape)
    blocks = blocks[touched[blocks].all(axis=1)]
    starts = np.arange(0, disturbed.n_samples - segment_samples + 1, hop_samples)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in sources}
    if blocks.size and starts.size:
        # Masked samples per (window, channel) from a cumulative sum over time.
        counts = np.concatenate([np.zeros((1, mask.shape[1]), dtype=np.int64), np.cumsum(mask, axis=0)])
        active = (counts[starts + segment_samples] - counts[starts]) > 0  # (W, C)
        for block in blocks:
            rows = starts[active[:, block].any(axis=1)]
            if rows.size:
                idx = rows[:, None] + np.arange(segment_samples)[None, :]  # (N, T)
                for name, x in sources.items():
                    parts[name].append(x[idx][:, :, block].transpose(0, 2, 1))  # (N, S, T)
    empty = np.zeros((0, shape.n_sites, segment_samples), dtype=np.float32)
    return {name: np.ascontiguousarray(np.concatenate(p), dtype=np.float32) if p else empty
            for name, p in parts.items()}  # fmt: skip


class PatchGAN:
    """A trained patch generator: `sample` patches of a kind, `splice` them into raw recordings of any layout."""

    def __init__(self, gan: DisturbanceGAN, shape: PatchShape) -> None:
        for kind in gan.conditions:
            if len(gan.region_channels[kind]) != shape.n_sites:
                raise ConfigError(f"The GAN's {kind!r} output has {len(gan.region_channels[kind])} channels, "
                                  f"not the {shape.n_sites} sites of a {shape.rows} x {shape.cols} patch.")  # fmt: skip
        self.gan = gan
        self.shape = shape

    @property
    def kinds(self) -> tuple[str, ...]:
        return self.gan.conditions

    @property
    def segment_samples(self) -> int:
        return self.gan.segment_samples

    def sample(self, kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
        """`n` patches `(n, rows * cols, segment_samples)` float32 uV (sites row-major), zero-mean per site."""
        return self.gan.sample(kind, n, rng)

    def splice(
        self,
        samples: np.ndarray,
        layout: ElectrodeLayout,
        kind: str,
        rng: np.random.Generator,
        *,
        placement: Placement | None = None,
        channels: Sequence[int] | None = None,
        fade_ms: float = 10.0,
        search_ms: float = 10.0,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Generated `kind` on electrodes of raw clean `(n_samples, n_channels)` uV samples, over the whole span.

        The electrodes are `channels`, else a draw of `placement` (default `Placement("patch", (0.02, 0.1))`).
        They are covered by `rows x cols` blocks of their grid at a random offset; each block's sites take
        one generated patch track. Replacing kinds overwrite the samples, the others are added. Returns the
        float32 copy and the mask `(n_samples, n_channels)` bool, True on the electrodes.
        """
        ensure_trainable(kind)
        if kind not in self.kinds:
            raise ConfigError(f"This patch GAN generates {list(self.kinds)}, not {kind!r}.")
        samples = np.asarray(samples)
        if samples.ndim != 2 or samples.shape[1] != layout.n_channels:
            raise ConfigError(
                f"samples must be (n_samples, {layout.n_channels}) for layout {layout.name!r}, got {samples.shape}."
            )
        if channels is None:
            chosen = place(layout, placement or Placement("patch", (0.02, 0.1)), rng)
        else:
            chosen = np.unique(np.asarray(channels, dtype=np.int64))
            if chosen.size == 0 or chosen.min() < 0 or chosen.max() >= layout.n_channels:
                raise ConfigError(f"channels must be non-empty and within 0..{layout.n_channels - 1}.")
        n_samples = samples.shape[0]
        out = np.array(samples, dtype=np.float32, copy=True)
        mask = np.zeros(samples.shape, dtype=bool)
        if n_samples == 0:
            return out, mask
        seg = self.segment_samples
        fade = min(max(1, int(round(fade_ms * self.gan.fs_hz / 1000.0))), seg // 4)
        search = min(max(0, int(round(search_ms * self.gan.fs_hz / 1000.0))), seg // 4)
        n_seg = 1 + max(0, -(-(n_samples - seg) // max(1, seg - fade - search)))
        wanted = set(int(c) for c in chosen)
        for grid in layout.grids:
            index = grid.index_array()  # (R, C)
            off_r, off_c = int(rng.integers(self.shape.rows)), int(rng.integers(self.shape.cols))
            block_of: dict[tuple[int, int], list[tuple[int, int]]] = {}  # block -> [(channel, site)]
            for r, c in zip(*np.nonzero(index >= 0), strict=True):
                ch = int(index[r, c])
                if ch not in wanted:
                    continue
                br, sr = divmod(int(r) + off_r, self.shape.rows)
                bc, sc = divmod(int(c) + off_c, self.shape.cols)
                block_of.setdefault((br, bc), []).append((ch, sr * self.shape.cols + sc))
            for members in block_of.values():
                track = tile_segments(self.sample(kind, n_seg, rng), n_samples, fade=fade, search=search)  # (n, S)
                chans = [m[0] for m in members]
                sites = [m[1] for m in members]
                if kind in REPLACING_KINDS:
                    out[:, chans] = track[:, sites]
                else:
                    out[:, chans] += track[:, sites]
                mask[:, chans] = True
        return out, mask

    def splice_recording(
        self, recording: Recording, kind: str, rng: np.random.Generator, *, placement: Placement | None = None
    ) -> Recording:
        """A copy of a clean recording with generated `kind` patches spliced in; labels kept."""
        samples, mask = self.splice(recording.samples, recording.layout, kind, rng, placement=placement)
        if recording.disturbance_mask is not None:
            mask |= recording.disturbance_mask
        return recording.with_samples(samples, condition=kind, disturbance_mask=mask,
                                      provenance={**recording.provenance, "augment": f"gan_patch:{kind}"})  # fmt: skip


def train_patch_gan(
    patches: dict[str, np.ndarray],
    *,
    fs_hz: float,
    config: GANConfig,
    shape: PatchShape,
    seed: int = 0,
    out_dir: Path | None = None,
    num_threads: int | None = None,
) -> PatchGAN:
    """Train the conditional WGAN-GP on `{kind: (N, rows * cols, T) uV}` patches (the region GAN's loop).

    `config.steps = 0` gives the untrained generator of the same seed and scaling (the reference a
    trained one must beat).
    """
    for kind, x in patches.items():
        if x.ndim != 3 or x.shape[1] != shape.n_sites:
            raise ConfigError(f"patches[{kind!r}] must be (N, {shape.n_sites}, T), got shape {x.shape}.")
    sites = list(range(shape.n_sites))
    gan = train_disturbance_gan(patches, fs_hz=fs_hz, config=config, region_channels={k: sites for k in patches},
                                out_dir=out_dir, seed=seed, num_threads=num_threads)  # fmt: skip
    return PatchGAN(gan, shape)
